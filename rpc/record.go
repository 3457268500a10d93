package rpc

import "time"

// Record is a job as the daemon stores it: the job (whose Spec the store keeps
// apart, written once at submit) and what the daemon needs to resume it.
type Record struct {
	Job
	Run RunState `json:"run"`
}

// RunState is the daemon's own bookkeeping of a job, stored with it and never sent
// to clients.
type RunState struct {
	// Procs are the processes started for the running step, stored so that a
	// daemon that starts after a crash can kill what is left of them.
	Procs []Proc `json:"procs"`
	// CancelReason is set once a cancel was stored; it is then the outcome.
	CancelReason *string `json:"cancel_reason"`
	// Deadline is the job's timeout deadline, set at its first start.
	Deadline *time.Time `json:"deadline"`
	// Interrupted is set when the daemon stopped while the job ran: the next start
	// of its step resumes the same attempt instead of counting a new one.
	Interrupted bool `json:"interrupted"`
	// Resumed says the attempt that runs now is one the daemon stopped while it
	// ran, started again with its number kept.
	Resumed bool `json:"resumed,omitempty"`
	// Node and Epoch name the daemon that claimed the running job and the epoch
	// of its lease; a store refuses a write of the job that names another epoch.
	// Epoch is 0 while the job is queued.
	Node  string `json:"node,omitempty"`
	Epoch int64  `json:"epoch,omitempty"`
	// Held says a queued job is held (job.hold): no claim takes it until it
	// is released.
	Held bool `json:"held,omitempty"`
	// OnFinish is the job's own hook, copied from its spec at submit so that
	// the store reads it without the spec.
	OnFinish *OnFinish `json:"on_finish,omitempty"`
	// HookDepth counts the hooks that led to this job (0 for one submitted
	// otherwise); see MaxHookDepth.
	HookDepth int `json:"hook_depth,omitempty"`
}

// Proc identifies the processes of a running step: the cgroup that holds them all,
// where the daemon has one, and the main process once it runs: its pid, its
// process group, and its start time (in clock ticks since boot, from /proc) so
// that a reused pid is not taken for it. A Proc with no pid is stored before the
// process exists, so that a daemon that crashes then looks for what it may have
// started.
type Proc struct {
	Step   int    `json:"step"`
	PID    int    `json:"pid"`
	PGID   int    `json:"pgid"`
	Start  uint64 `json:"start"`
	Cgroup string `json:"cgroup,omitempty"`
}

// NewJob is a job to submit: its initial record (ID 0, Spec set) and the submitted
// event, whose Job the store fills in.
type NewJob struct {
	Record Record
	Event  Event
	// Field is the path of the spec in the request ("job" or "jobs[3]"), for errors.
	Field string
}

// Transition replaces a job's stored record, guarded by the state it moves from.
type Transition struct {
	Record Record
	From   State
	Events []Event
	// Epoch, when not 0, fences the write: it applies only while the stored
	// record's Run.Epoch is still this one (the writer still owns the job).
	Epoch int64
}
