// Package rpc is spool's contract, and nothing else: the protocol types (job spec,
// job, event, queue, template), the params and results of every method with
// their validation, the error codes, the default paths, the Service interface
// that both the daemon and the client implement, and the types' own JSON
// encoders. It imports only the standard library; every other package may
// import it. The machinery lives below it: rpc/codec decodes protocol JSON,
// rpc/unixsock makes and checks the Unix socket, and rpc/server serves a
// Service to JSON-RPC connections.
package rpc

import (
	"encoding/json"
	"fmt"
	"time"
)

// ProtocolVersion is the version of the protocol this package speaks.
const ProtocolVersion = 1

// Duration is a time.Duration written in JSON as a Go duration string ("90s"), and
// as null when zero.
//
// On the wire a duration is positive or null: null (or leaving the field out)
// is how to say none or the default, so that a zero duration ("0s"), which could
// mean "no limit" or "at once", is refused rather than read as one of them.
type Duration time.Duration

// D returns d as a time.Duration.
func (d Duration) D() time.Duration { return time.Duration(d) }

// String formats d as a Go duration string.
func (d Duration) String() string { return time.Duration(d).String() }

// MarshalJSON writes d as a duration string, or null when zero.
func (d Duration) MarshalJSON() ([]byte, error) {
	if d == 0 {
		return []byte("null"), nil
	}
	return json.Marshal(time.Duration(d).String())
}

// UnmarshalJSON reads a positive duration string or null.
func (d *Duration) UnmarshalJSON(b []byte) error {
	if string(b) == "null" {
		*d = 0
		return nil
	}
	var s string
	if err := json.Unmarshal(b, &s); err != nil {
		return fmt.Errorf("must be a duration string such as \"90s\"")
	}
	v, err := time.ParseDuration(s)
	if err != nil {
		return fmt.Errorf("invalid duration %q", s)
	}
	if v < 0 {
		return fmt.Errorf("duration %q must not be negative", s)
	}
	if v == 0 {
		return fmt.Errorf("duration %q must be positive (null, or no field, means none)", s)
	}
	*d = Duration(v)
	return nil
}

// State is the state of a job or of a step.
type State string

// Job and step states.
const (
	StateQueued    State = "queued"
	StateRunning   State = "running"
	StateSucceeded State = "succeeded"
	StateFailed    State = "failed"
	StateCancelled State = "cancelled"
	// Step-only states.
	StatePending  State = "pending"
	StateRetrying State = "retrying"
	StateSkipped  State = "skipped"
)

// Final reports whether s is a final job or step state.
func (s State) Final() bool {
	switch s {
	case StateSucceeded, StateFailed, StateCancelled, StateSkipped:
		return true
	}
	return false
}

// Spec is what a client submits: a job as a list of steps and its policies.
type Spec struct {
	Name       string            `json:"name"`
	Key        string            `json:"key"`
	Queue      string            `json:"queue"`
	Priority   int               `json:"priority"`
	Labels     map[string]string `json:"labels"`
	After      []int64           `json:"after"`
	AfterIndex []int             `json:"after_index"`
	NotBefore  *time.Time        `json:"not_before"`
	Timeout    Duration          `json:"timeout"`
	Dir        string            `json:"dir"`
	Env        map[string]string `json:"env"`
	Steps      []Step            `json:"steps"`
	// OnFinish is the job's hook when it ends (see OnFinish).
	OnFinish *OnFinish `json:"on_finish,omitempty"`
}

// Step is one step of a job spec; exactly one of Exec, Shell, Sleep and HTTP is set.
type Step struct {
	Name        string     `json:"name"`
	Exec        *ExecStep  `json:"exec,omitempty"`
	Shell       *ShellStep `json:"shell,omitempty"`
	Sleep       *SleepStep `json:"sleep,omitempty"`
	HTTP        *HTTPStep  `json:"http,omitempty"`
	Timeout     Duration   `json:"timeout"`
	Retry       *Retry     `json:"retry"`
	Result      string     `json:"result"`
	OnInterrupt string     `json:"on_interrupt"`
}

// Step kinds.
const (
	KindExec  = "exec"
	KindShell = "shell"
	KindSleep = "sleep"
	KindHTTP  = "http"
)

// Result modes of a step.
const (
	ResultText = "text"
	ResultJSON = "json"
	ResultNone = "none"
)

// On-interrupt policies of a step.
const (
	OnInterruptRetry = "retry"
	OnInterruptFail  = "fail"
)

// Kind names the kind of the step, or "" when none is set.
func (s Step) Kind() string {
	switch {
	case s.Exec != nil:
		return KindExec
	case s.Shell != nil:
		return KindShell
	case s.Sleep != nil:
		return KindSleep
	case s.HTTP != nil:
		return KindHTTP
	}
	return ""
}

// ExecStep runs a program directly.
type ExecStep struct {
	Argv  []string          `json:"argv"`
	Dir   string            `json:"dir"`
	Env   map[string]string `json:"env"`
	Stdin string            `json:"stdin"`
}

// ShellStep runs a script with /bin/sh -c.
type ShellStep struct {
	Script string            `json:"script"`
	Dir    string            `json:"dir"`
	Env    map[string]string `json:"env"`
	Stdin  string            `json:"stdin"`
}

// SleepStep waits for a duration.
type SleepStep struct {
	Duration Duration `json:"duration"`
}

// HTTPStep makes one HTTP request.
type HTTPStep struct {
	Method       string            `json:"method"`
	URL          string            `json:"url"`
	Headers      map[string]string `json:"headers"`
	Body         string            `json:"body"`
	ExpectStatus []int             `json:"expect_status"`
	MaxBody      int64             `json:"max_body"`
}

// Retry is a step's retry policy: Attempts tries in all, waits doubling from
// Backoff up to MaxBackoff.
type Retry struct {
	Attempts   int      `json:"attempts"`
	Backoff    Duration `json:"backoff"`
	MaxBackoff Duration `json:"max_backoff"`
}

// Progress is the latest progress a job reported.
type Progress struct {
	Done    *int64    `json:"done"`
	Total   *int64    `json:"total"`
	Percent *float64  `json:"percent"`
	Message string    `json:"message"`
	At      time.Time `json:"at"`
}

// StepStatus is the state of one step of a job.
type StepStatus struct {
	Name       string     `json:"name"`
	Kind       string     `json:"kind"`
	State      State      `json:"state"`
	Attempt    int        `json:"attempt"`
	RetryAt    *time.Time `json:"retry_at"`
	StartedAt  *time.Time `json:"started_at"`
	FinishedAt *time.Time `json:"finished_at"`
	ExitCode   *int       `json:"exit_code"`
	Signal     *string    `json:"signal"`
	Error      string     `json:"error"`
	OutputTail *string    `json:"output_tail,omitempty"`
	// Result is the step's result value (text as a JSON string, or parsed JSON);
	// null until the step succeeded or when its result mode is "none".
	Result json.RawMessage `json:"result"`
}

// TemplateRef names the template and params a job was made from.
type TemplateRef struct {
	Name   string            `json:"name"`
	Params map[string]string `json:"params"`
}

// Job is a job as the daemon reports it.
type Job struct {
	ID        int64             `json:"id"`
	Name      string            `json:"name"`
	Key       *string           `json:"key"`
	Queue     string            `json:"queue"`
	Priority  int               `json:"priority"`
	Labels    map[string]string `json:"labels"`
	After     []int64           `json:"after"`
	NotBefore *time.Time        `json:"not_before"`
	State     State             `json:"state"`
	Waiting   *string           `json:"waiting"`
	// PausedAt is set while the job is paused (job.pause), null otherwise.
	PausedAt    *time.Time   `json:"paused_at"`
	SubmittedAt time.Time    `json:"submitted_at"`
	StartedAt   *time.Time   `json:"started_at"`
	FinishedAt  *time.Time   `json:"finished_at"`
	CurrentStep int          `json:"current_step"`
	Steps       []StepStatus `json:"steps"`
	Progress    *Progress    `json:"progress"`
	// Result is the job's result once it succeeded. Listed jobs leave it out;
	// a single job carries it, as null while unset (see Null).
	Result          json.RawMessage `json:"result,omitempty"`
	ResultTruncated bool            `json:"result_truncated"`
	Error           string          `json:"error"`
	RetryOf         *int64          `json:"retry_of"`
	Template        *TemplateRef    `json:"template"`
	// Node is the daemon (its --node) that runs the job, or ran it last;
	// empty until it first starts. With several daemons it says where the
	// job's processes, files and live events are.
	Node string `json:"node,omitempty"`
	Spec *Spec  `json:"spec,omitempty"`
}

// Final reports whether the job is in a final state.
func (j *Job) Final() bool { return j.State.Final() }

// Event is one entry of the event log, or a live event (progress, heartbeat, output,
// done) that is not stored and has no seq.
type Event struct {
	Seq      int64           `json:"seq,omitempty"`
	Time     time.Time       `json:"time"`
	Job      int64           `json:"job,omitempty"`
	Type     string          `json:"type"`
	Step     *int            `json:"step,omitempty"`
	StepName string          `json:"step_name,omitempty"`
	State    State           `json:"state,omitempty"`
	Attempt  int             `json:"attempt,omitempty"`
	ExitCode *int            `json:"exit_code,omitempty"`
	Signal   *string         `json:"signal,omitempty"`
	Error    string          `json:"error,omitempty"`
	RetryAt  *time.Time      `json:"retry_at,omitempty"`
	Result   json.RawMessage `json:"result,omitempty"`
	Progress *Progress       `json:"progress,omitempty"`
	Elapsed  Duration        `json:"elapsed,omitempty"`
	LastLine *string         `json:"last_line,omitempty"`
	Offset   *int64          `json:"offset,omitempty"`
	Data     *string         `json:"data,omitempty"`
	// Changes is what an edited event changed: {"field": {"from": ..., "to": ...}}.
	Changes json.RawMessage `json:"changes,omitempty"`
	// Schedule and Slot name the schedule and slot of a schedule_fired event.
	Schedule string     `json:"schedule,omitempty"`
	Slot     *time.Time `json:"slot,omitempty"`
	// FollowUp is the job an on_finish event's hook submitted.
	FollowUp *int64 `json:"follow_up,omitempty"`

	// raw is the event's encoding once frozen; copies of the event share it.
	raw []byte
}

// Freeze encodes the event once, so that each watcher that sends it reuses the
// encoding. The event must not change afterwards.
func (e *Event) Freeze() {
	e.raw = nil
	if b, err := e.AppendJSON(make([]byte, 0, eventSizeHint)); err == nil {
		e.raw = b
	}
}

// JSON returns the event's encoding: the frozen one, or a new one.
func (e *Event) JSON() ([]byte, error) {
	if e.raw != nil {
		return e.raw, nil
	}
	b, err := e.AppendJSON(make([]byte, 0, eventSizeHint))
	if err != nil {
		return nil, err
	}
	return b, nil
}

// Event types.
const (
	EventSubmitted    = "submitted"
	EventStarted      = "started"
	EventStepStarted  = "step_started"
	EventStepRetrying = "step_retrying"
	EventStepFinished = "step_finished"
	EventInterrupted  = "interrupted"
	EventSucceeded    = "succeeded"
	EventFailed       = "failed"
	EventCancelled    = "cancelled"
	EventRemoved      = "removed"
	EventProgress     = "progress"
	EventHeartbeat    = "heartbeat"
	EventOutput       = "output"
	EventDone         = "done"
	// EventPaused: job.pause stopped the job's processes (paused_at is set).
	EventPaused = "paused"
	// EventResumed: job.resume let the job go again (paused_at is cleared).
	EventResumed = "resumed"
	// EventSignalled: job.signal sent the event's signal to the running step's
	// processes.
	EventSignalled = "signalled"
)

// Stored reports whether events of this type are stored in the log (and have a seq).
func (e *Event) Stored() bool {
	switch e.Type {
	case EventProgress, EventHeartbeat, EventOutput, EventDone:
		return false
	}
	return true
}

// Queue is a queue's settings and counts.
type Queue struct {
	Name     string `json:"name"`
	Parallel *int   `json:"parallel"`
	Paused   bool   `json:"paused"`
	Queued   int    `json:"queued"`
	Running  int    `json:"running"`
	// OnFinish is the hook of the queue's jobs that have none of their own.
	OnFinish *OnFinish `json:"on_finish,omitempty"`
}

// TemplateParam declares one parameter of a template.
type TemplateParam struct {
	Required bool    `json:"required"`
	Default  *string `json:"default"`
}

// Template is a named job spec with {{param}} placeholders.
type Template struct {
	Name      string                   `json:"name"`
	Spec      json.RawMessage          `json:"spec"`
	Params    map[string]TemplateParam `json:"params"`
	CreatedAt time.Time                `json:"created_at"`
	UpdatedAt time.Time                `json:"updated_at"`
}

// Info describes the running daemon.
type Info struct {
	Version     string        `json:"version"`
	Protocol    int           `json:"protocol"`
	PID         int           `json:"pid"`
	StartedAt   time.Time     `json:"started_at"`
	Socket      string        `json:"socket"`
	StateDir    string        `json:"state_dir"`
	StoreID     string        `json:"store_id"`
	MaxParallel int           `json:"max_parallel"`
	Counts      map[State]int `json:"counts"`
	LastSeq     int64         `json:"last_seq"`
	OldestSeq   int64         `json:"oldest_seq"`
	// Containment is how a step's processes are kept together: "cgroup" (a cgroup
	// v2 per step) or "group" (process groups, the subreaper role and each job's
	// environment mark). ContainmentNote says where the cgroups are, or why none.
	Containment     string `json:"containment"`
	ContainmentNote string `json:"containment_note"`
	// Node and Epoch name this daemon in its store: the name it joined with
	// and the epoch the store gave it, which fences its writes.
	Node  string `json:"node"`
	Epoch int64  `json:"epoch"`
	// Store says where jobs are kept: "bbolt" (the state folder's file, one
	// daemon) or "postgres" (a database several daemons may share).
	Store string `json:"store,omitempty"`
}
