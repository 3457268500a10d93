package rpc

import (
	"fmt"
	"unicode/utf8"
)

// Methods that act on every job a filter selects, one call each.
const (
	MethodJobsWait   = "jobs.wait"
	MethodJobsRetry  = "jobs.retry"
	MethodJobsCancel = "jobs.cancel"
)

// MaxBulk is the most jobs one jobs.* call acts on, and its default limit.
const MaxBulk = 10000

// JobsWaitParams waits for the unfinished (queued or running) jobs the filter
// selects at call time, for at most Timeout (0: no limit). Limit bounds how
// many jobs that may be (default and most MaxBulk): more is -32602 naming
// limit, and nothing is waited for.
type JobsWaitParams struct {
	Filter  Filter   `json:"filter"`
	Timeout Duration `json:"timeout"`
	Limit   int      `json:"limit"`
}

// JobsRetryParams submits a retry (a new job, as job.retry does) of every
// failed or cancelled job the filter selects, all in one transaction.
type JobsRetryParams struct {
	Filter Filter `json:"filter"`
	Limit  int    `json:"limit"`
}

// JobsCancelParams cancels every queued or running job the filter selects.
type JobsCancelParams struct {
	Filter Filter `json:"filter"`
	Reason string `json:"reason"`
	Limit  int    `json:"limit"`
}

// JobsResult sums up the jobs a jobs.wait or jobs.cancel acted on: how many
// are in each state, the ids of those that did not succeed (failed,
// cancelled, or still unfinished when the timeout came), in id order, and
// whether every one is final. Cancelled lists the jobs jobs.cancel cancelled
// (a job may have ended on its own first).
type JobsResult struct {
	Jobs         int           `json:"jobs"`
	Counts       map[State]int `json:"counts"`
	NotSucceeded []int64       `json:"not_succeeded"`
	Done         bool          `json:"done"`
	Cancelled    []int64       `json:"cancelled,omitempty"`
}

// JobsRetryResult lists the new jobs, in the order of the jobs they retry
// (ascending id): IDs[i] is a retry of RetryOf[i]. Skipped lists the jobs
// the filter selected that were retried before (a job with retry_of naming
// them is stored): they are not retried twice.
type JobsRetryResult struct {
	IDs     []int64 `json:"ids"`
	RetryOf []int64 `json:"retry_of"`
	Skipped []int64 `json:"skipped"`
}

func checkBulkLimit(limit int) error {
	if limit < 0 || limit > MaxBulk {
		return InvalidParams("limit", fmt.Sprintf("must be 1 to %d (0 is %d)", MaxBulk, MaxBulk))
	}
	return nil
}

// WaitStates are the states jobs.wait's filter may name (and its default).
var WaitStates = []State{StateQueued, StateRunning}

// RetryStates are the states jobs.retry's filter may name (and its default).
var RetryStates = []State{StateFailed, StateCancelled}

// CancelStates are the states jobs.cancel's filter may name (and its default).
var CancelStates = WaitStates

// Validate checks the filter (only unfinished states), the timeout and the limit.
func (p JobsWaitParams) Validate() error {
	if err := p.Filter.Validate("filter"); err != nil {
		return err
	}
	if _, err := p.Filter.checkStates("filter", WaitStates, "jobs.wait waits for unfinished jobs: name queued, running or no state"); err != nil {
		return err
	}
	if p.Timeout < 0 {
		return InvalidParams("timeout", "must not be negative")
	}
	return checkBulkLimit(p.Limit)
}

// Validate checks the filter (only failed or cancelled) and the limit.
func (p JobsRetryParams) Validate() error {
	if err := p.Filter.Validate("filter"); err != nil {
		return err
	}
	if _, err := p.Filter.checkStates("filter", RetryStates, "jobs.retry retries failed or cancelled jobs: name failed, cancelled or no state (both)"); err != nil {
		return err
	}
	return checkBulkLimit(p.Limit)
}

// Validate checks the filter (only queued or running), the reason and the limit.
func (p JobsCancelParams) Validate() error {
	if err := p.Filter.Validate("filter"); err != nil {
		return err
	}
	if _, err := p.Filter.checkStates("filter", CancelStates, "jobs.cancel cancels unfinished jobs: name queued, running or no state (both)"); err != nil {
		return err
	}
	if utf8.RuneCountInString(p.Reason) > MaxReasonLen {
		return InvalidParams("reason", fmt.Sprintf("at most %d characters", MaxReasonLen))
	}
	return checkBulkLimit(p.Limit)
}

// States is the filter's states, or def when it names none.
func (f Filter) States(def []State) []State {
	if len(f.State) == 0 {
		return def
	}
	return f.State
}
