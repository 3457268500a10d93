package rpc

import (
	"context"
	"encoding/json"
	"time"
)

// Method names of the protocol.
const (
	MethodSubmit         = "job.submit"
	MethodGet            = "job.get"
	MethodList           = "job.list"
	MethodCancel         = "job.cancel"
	MethodWait           = "job.wait"
	MethodLogs           = "job.logs"
	MethodRetry          = "job.retry"
	MethodRemove         = "job.remove"
	MethodPrune          = "job.prune"
	MethodWatch          = "job.watch"
	MethodUnwatch        = "job.unwatch"
	MethodQueueList      = "queue.list"
	MethodQueueSet       = "queue.set"
	MethodTemplatePut    = "template.put"
	MethodTemplateGet    = "template.get"
	MethodTemplateList   = "template.list"
	MethodTemplateRemove = "template.remove"
	MethodTemplateRun    = "template.run"
	MethodInfo           = "daemon.info"
	MethodShutdown       = "daemon.shutdown"
	// MethodEvent is the notification that carries a watch's events.
	MethodEvent = "job.event"
	// MethodCancelRequest is the LSP-style notification that cancels a pending request.
	MethodCancelRequest = "$/cancelRequest"
)

// Service is the protocol as a Go interface. The daemon implements it in process;
// the client implements it over the socket; the server adapts one to connections.
type Service interface {
	Submit(ctx context.Context, p SubmitParams) (*SubmitResult, error)
	Get(ctx context.Context, p GetParams) (*Job, error)
	List(ctx context.Context, p ListParams) (*ListResult, error)
	Cancel(ctx context.Context, p CancelParams) (*Job, error)
	Wait(ctx context.Context, p WaitParams) (*Job, error)
	Logs(ctx context.Context, p LogsParams) (*LogsResult, error)
	Retry(ctx context.Context, p RetryParams) (*Job, error)
	Remove(ctx context.Context, p RemoveParams) (*RemoveResult, error)
	Prune(ctx context.Context, p PruneParams) (*RemoveResult, error)
	// Watch starts a watch. The caller reads its events with Next and ends it with
	// Close (job.unwatch over the wire).
	Watch(ctx context.Context, p WatchParams) (Watcher, error)
	QueueList(ctx context.Context) (*QueueListResult, error)
	QueueSet(ctx context.Context, p QueueSetParams) (*Queue, error)
	TemplatePut(ctx context.Context, p TemplatePutParams) (*Template, error)
	TemplateGet(ctx context.Context, p TemplateNameParams) (*Template, error)
	TemplateList(ctx context.Context) (*TemplateListResult, error)
	TemplateRemove(ctx context.Context, p TemplateNameParams) error
	TemplateRun(ctx context.Context, p TemplateRunParams) (*Job, error)
	Info(ctx context.Context) (*Info, error)
	Shutdown(ctx context.Context, p ShutdownParams) error
	// Edit, Hold and Release change a queued job (rpc/edit.go).
	Edit(ctx context.Context, p EditParams) (*Job, error)
	Hold(ctx context.Context, p HoldParams) (*Job, error)
	Release(ctx context.Context, p HoldParams) (*Job, error)
	// Acting on many jobs (bulk.go).
	JobsWait(ctx context.Context, p JobsWaitParams) (*JobsResult, error)
	JobsRetry(ctx context.Context, p JobsRetryParams) (*JobsRetryResult, error)
	JobsCancel(ctx context.Context, p JobsCancelParams) (*JobsResult, error)
	ScheduleService
	// Pauser: job.pause, job.resume, job.signal.
	Pauser
}

// Watcher is one watch: its response, then its events in order.
type Watcher interface {
	// Result is the watch's response (token, seq, store_id).
	Result() WatchResult
	// Next blocks until the next event, ctx is done, or the watch ended. After a
	// "done" event, or when the watch was closed, it returns io.EOF.
	Next(ctx context.Context) (*Event, error)
	// Close ends the watch; Next then returns io.EOF.
	Close() error
}

// BufferedWatcher is a Watcher that can tell how many events its Next returns
// without waiting. The server then writes those events together, in one write.
type BufferedWatcher interface {
	Watcher
	// Buffered is how many events Next returns at once.
	Buffered() int
}

// SubmitParams submits one job (Job) or several, all or none (Jobs).
type SubmitParams struct {
	Job  *Spec  `json:"job"`
	Jobs []Spec `json:"jobs"`
}

// SubmitResult is the answer to job.submit: the job when one was submitted, or the
// list when several were.
type SubmitResult struct {
	Job  *Job
	Jobs []Job
}

// MarshalJSON writes the single job, or {"jobs": [...]}. The jobs encode
// themselves (Job.AppendJSON) into one buffer.
func (r SubmitResult) MarshalJSON() ([]byte, error) {
	if r.Job != nil {
		return marshaled(r.Job.AppendJSON(make([]byte, 0, jobSizeHint)))
	}
	b := append(make([]byte, 0, 16+jobSizeHint*len(r.Jobs)), `{"jobs":`...)
	if r.Jobs == nil {
		return append(b, "[]}"...), nil
	}
	b, err := appendJobs(b, r.Jobs)
	if err != nil {
		return nil, err
	}
	return append(b, '}'), nil
}

// UnmarshalJSON reads either shape, in one pass: a job has no "jobs" field.
func (r *SubmitResult) UnmarshalJSON(b []byte) error {
	var both struct {
		Job
		Jobs *[]Job `json:"jobs"`
	}
	if err := json.Unmarshal(b, &both); err != nil {
		return err
	}
	if both.Jobs != nil {
		r.Job, r.Jobs = nil, *both.Jobs
		return nil
	}
	j := both.Job
	r.Job, r.Jobs = &j, nil
	return nil
}

// GetParams names a job.
type GetParams struct {
	ID int64 `json:"id"`
}

// ListParams filters and pages job.list.
type ListParams struct {
	State  []State           `json:"state"`
	Queue  string            `json:"queue"`
	Labels map[string]string `json:"labels"`
	Limit  int               `json:"limit"`
	Cursor *string           `json:"cursor"`
	Order  string            `json:"order"`
	// Name, OlderThan and NewerThan filter as Filter's fields do. They are
	// left out when unset, so that a client still talks to an older daemon.
	Name      string   `json:"name,omitempty"`
	OlderThan Duration `json:"older_than,omitempty"`
	NewerThan Duration `json:"newer_than,omitempty"`
}

// ListResult is one page of jobs.
type ListResult struct {
	Jobs       []Job   `json:"jobs"`
	NextCursor *string `json:"next_cursor"`
}

// MarshalJSON writes the page as encoding/json would, with the jobs encoding
// themselves (Job.AppendJSON) into one buffer, which encoding/json would compact
// once more.
func (r ListResult) MarshalJSON() ([]byte, error) {
	b := append(make([]byte, 0, 32+jobSizeHint*len(r.Jobs)), `{"jobs":`...)
	b, err := appendJobs(b, r.Jobs)
	if err != nil {
		return nil, err
	}
	b = append(b, `,"next_cursor":`...)
	b = appendStringPtr(b, r.NextCursor)
	return append(b, '}'), nil
}

// CancelParams names the job to cancel.
type CancelParams struct {
	ID     int64  `json:"id"`
	Reason string `json:"reason"`
}

// WaitParams names the job to wait for, and for how long at most (0: no limit).
type WaitParams struct {
	ID      int64    `json:"id"`
	Timeout Duration `json:"timeout"`
}

// StepRef names a step by name or by index; it is a string or a number in JSON.
type StepRef struct {
	Name  string
	Index *int
}

// MarshalJSON writes the index, the name, or null.
func (s StepRef) MarshalJSON() ([]byte, error) {
	if s.Index != nil {
		return json.Marshal(*s.Index)
	}
	if s.Name != "" {
		return json.Marshal(s.Name)
	}
	return []byte("null"), nil
}

// UnmarshalJSON reads a step name, an index, or null.
func (s *StepRef) UnmarshalJSON(b []byte) error {
	*s = StepRef{}
	if string(b) == "null" {
		return nil
	}
	var i int
	if err := json.Unmarshal(b, &i); err == nil {
		s.Index = &i
		return nil
	}
	return json.Unmarshal(b, &s.Name)
}

// IsZero reports whether no step was named.
func (s StepRef) IsZero() bool { return s.Index == nil && s.Name == "" }

// LogsParams reads part of a step's log.
type LogsParams struct {
	ID       int64   `json:"id"`
	Step     StepRef `json:"step"`
	Offset   int64   `json:"offset"`
	Limit    int     `json:"limit"`
	Encoding string  `json:"encoding"`
	// Stream picks the log: "all" (the default: stdout and stderr merged, as
	// written) or "stderr" (the step's stderr alone).
	Stream string `json:"stream,omitempty"`
	// Lines, when not 0, reads from the start of the log's last Lines lines
	// (as tail -n does) instead of from Offset, which must then be 0.
	Lines int `json:"lines,omitempty"`
}

// Log streams of job.logs.
const (
	StreamAll    = "all"
	StreamStderr = "stderr"
)

// LogsResult is a chunk of a step's log.
type LogsResult struct {
	Data   string `json:"data"`
	Offset int64  `json:"offset"`
	EOF    bool   `json:"eof"`
	// Step is the index of the step the chunk is from.
	Step int `json:"step"`
}

// RetryParams names a final job to run again as a new job.
type RetryParams struct {
	ID int64 `json:"id"`
}

// RemoveParams lists jobs to remove, all or none.
type RemoveParams struct {
	IDs []int64 `json:"ids"`
}

// RemoveResult counts removed jobs.
type RemoveResult struct {
	Removed int `json:"removed"`
}

// PruneParams selects final jobs to remove.
type PruneParams struct {
	States    []State  `json:"states"`
	OlderThan Duration `json:"older_than"`
}

// WatchParams opens a watch.
type WatchParams struct {
	Jobs      []int64  `json:"jobs"`
	Since     *int64   `json:"since"`
	Heartbeat Duration `json:"heartbeat"`
	Output    bool     `json:"output"`
	Token     string   `json:"token"`
}

// WatchResult answers job.watch.
type WatchResult struct {
	Token   string `json:"token"`
	Seq     int64  `json:"seq"`
	StoreID string `json:"store_id"`
}

// UnwatchParams ends a watch.
type UnwatchParams struct {
	Token string `json:"token"`
}

// EventParams are the params of a job.event notification.
type EventParams struct {
	Token string `json:"token"`
	Event *Event `json:"event"`
}

// QueueListResult lists the queues.
type QueueListResult struct {
	Queues []Queue `json:"queues"`
}

// QueueSetParams changes a queue's settings; fields left null are kept. A parallel
// of 0 removes the queue's own limit.
type QueueSetParams struct {
	Name     string `json:"name"`
	Parallel *int   `json:"parallel"`
	Paused   *bool  `json:"paused"`
	// OnFinish sets the queue's hook; one with an empty template removes it.
	OnFinish *OnFinish `json:"on_finish,omitempty"`
}

// TemplatePutParams stores a template.
type TemplatePutParams struct {
	Name   string                   `json:"name"`
	Spec   json.RawMessage          `json:"spec"`
	Params map[string]TemplateParam `json:"params"`
}

// TemplateNameParams names a template.
type TemplateNameParams struct {
	Name string `json:"name"`
}

// TemplateListResult lists the templates.
type TemplateListResult struct {
	Templates []Template `json:"templates"`
}

// TemplateRunParams makes a job from a template.
type TemplateRunParams struct {
	Name     string            `json:"name"`
	Params   map[string]string `json:"params"`
	Queue    *string           `json:"queue"`
	Priority *int              `json:"priority"`
	Labels   map[string]string `json:"labels"`
	After    []int64           `json:"after"`
	Key      *string           `json:"key"`
	// NotBefore replaces the template spec's not_before.
	NotBefore *time.Time `json:"not_before,omitempty"`
}

// ShutdownParams stops the daemon.
type ShutdownParams struct {
	Drain bool `json:"drain"`
}

// Empty is the result of methods that return {}.
type Empty struct{}

// Since is a helper that returns a pointer to seq, for WatchParams.Since.
func Since(seq int64) *int64 { return &seq }
