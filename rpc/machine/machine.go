// Package machine is the job and step lifecycle, written down once: each
// transition is a pure function that moves a record from the states it accepts to
// the next and returns the events to store with it. The daemon's runner, the
// scheduler's claim and every store implementation use these functions, so that a
// claim made by the PostgreSQL store and one made by bbolt leave the same record.
//
// STATE_MACHINE.md beside this file is the table a reader can check: which event
// moves which state to which, who may cause it, and what is stored with it.
//
// It imports rpc only.
package machine

import (
	"encoding/json"
	"strconv"
	"time"

	"spool/rpc"
)

// Owner names the daemon that runs a job: its node name and the epoch of its
// lease. A store guards every write of a running job by it.
type Owner struct {
	Node  string
	Epoch int64
}

// Claim moves a queued job to running, owned by o, and starts its current step
// unless that step waits for a retry (its attempt then starts when the wait is
// over). A job that resumes after an interruption keeps its step's attempt. The
// caller checks that rec is queued and runnable.
func Claim(rec *rpc.Record, o Owner, now time.Time) []rpc.Event {
	rec.State = rpc.StateRunning
	rec.Waiting = nil
	rec.Run.Node, rec.Run.Epoch = o.Node, o.Epoch
	rec.Node = o.Node
	if rec.StartedAt == nil {
		rec.StartedAt = &now
	}
	if rec.Spec != nil && rec.Spec.Timeout > 0 && rec.Run.Deadline == nil {
		dl := rec.StartedAt.Add(rec.Spec.Timeout.D())
		rec.Run.Deadline = &dl
	}
	evs := []rpc.Event{{Time: now, Job: rec.ID, Type: rpc.EventStarted, State: rpc.StateRunning}}
	if rec.Steps[rec.CurrentStep].State == rpc.StatePending {
		evs = append(evs, StartStep(rec, rec.CurrentStep, now))
	}
	return evs
}

// StartStep marks an attempt of step i as running and returns its event. An
// attempt that resumes after an interruption keeps its number and start time.
func StartStep(rec *rpc.Record, i int, now time.Time) rpc.Event {
	st := &rec.Steps[i]
	rec.Run.Resumed = rec.Run.Interrupted
	if rec.Run.Interrupted {
		rec.Run.Interrupted = false
		if st.Attempt == 0 {
			st.Attempt = 1
		}
		if st.StartedAt == nil {
			st.StartedAt = &now
		}
	} else {
		st.Attempt++
		st.StartedAt = &now
	}
	st.State = rpc.StateRunning
	st.RetryAt = nil
	st.FinishedAt = nil
	st.ExitCode, st.Signal, st.Error = nil, nil, ""
	rec.CurrentStep = i
	return StepEvent(rec, i, rpc.EventStepStarted, now)
}

// StepEvent is the event of step i as the record now has it.
func StepEvent(rec *rpc.Record, i int, typ string, now time.Time) rpc.Event {
	st := rec.Steps[i]
	idx := i
	return rpc.Event{Time: now, Job: rec.ID, Type: typ, Step: &idx, StepName: st.Name,
		State: st.State, Attempt: st.Attempt, ExitCode: st.ExitCode, Signal: st.Signal, Error: st.Error, RetryAt: st.RetryAt}
}

// Outcome is how one attempt of a step ended, as far as the record keeps it.
type Outcome struct {
	ExitCode  *int
	Signal    *string
	Err       string
	Result    json.RawMessage
	Truncated bool
	// KeepResult says the step's result mode is not "none".
	KeepResult bool
}

// StepSucceeded ends the running step i in success. When it was the last step the
// job succeeds too; otherwise the next step starts in the same transition. A
// cancel stored before the success is the outcome: the step and the job end
// cancelled instead (EndStep), whichever step it was.
func StepSucceeded(rec *rpc.Record, i int, out Outcome, now time.Time) []rpc.Event {
	if reason := rec.Run.CancelReason; reason != nil {
		out.Result, out.Truncated, out.KeepResult = nil, false, false
		return EndStep(rec, i, out, rpc.StateCancelled, *reason, now)
	}
	s := &rec.Steps[i]
	s.State = rpc.StateSucceeded
	s.FinishedAt = &now
	s.ExitCode, s.Signal, s.Error = out.ExitCode, out.Signal, ""
	s.RetryAt = nil
	if out.KeepResult {
		s.Result = out.Result
		rec.ResultTruncated = out.Truncated
	}
	rec.Run.Procs = nil
	evs := []rpc.Event{StepEvent(rec, i, rpc.EventStepFinished, now)}
	if i+1 < len(rec.Steps) {
		return append(evs, StartStep(rec, i+1, now))
	}
	return append(evs, Finalize(rec, rpc.StateSucceeded, "", now))
}

// StepRetrying ends a failed attempt of the running step i that will be tried
// again at at. The job stays running and keeps its slot.
func StepRetrying(rec *rpc.Record, i int, out Outcome, at, now time.Time) []rpc.Event {
	s := &rec.Steps[i]
	s.State = rpc.StateRetrying
	s.RetryAt = &at
	s.ExitCode, s.Signal, s.Error = out.ExitCode, out.Signal, out.Err
	rec.Run.Procs = nil
	return []rpc.Event{StepEvent(rec, i, rpc.EventStepRetrying, now)}
}

// EndStep ends step i in state (failed or cancelled), skips the rest and makes
// the job final in state with errText.
func EndStep(rec *rpc.Record, i int, out Outcome, state rpc.State, errText string, now time.Time) []rpc.Event {
	s := &rec.Steps[i]
	s.State = state
	s.FinishedAt = &now
	s.ExitCode, s.Signal = out.ExitCode, out.Signal
	s.Error = out.Err
	if state == rpc.StateCancelled {
		s.Error = errText
	} else if s.Error == "" {
		s.Error = errText
	}
	s.RetryAt = nil
	evs := []rpc.Event{StepEvent(rec, i, rpc.EventStepFinished, now)}
	for k := i + 1; k < len(rec.Steps); k++ {
		rec.Steps[k].State = rpc.StateSkipped
	}
	return append(evs, Finalize(rec, state, errText, now))
}

// FailRunning fails a running job with reason (its deadline passed): its current
// step fails unless it is over, the rest are skipped.
func FailRunning(rec *rpc.Record, reason string, now time.Time) []rpc.Event {
	i := rec.CurrentStep
	var evs []rpc.Event
	if s := &rec.Steps[i]; !s.State.Final() {
		s.State = rpc.StateFailed
		s.Error = reason
		s.RetryAt = nil
		s.FinishedAt = &now
		evs = append(evs, StepEvent(rec, i, rpc.EventStepFinished, now))
	}
	for k := i + 1; k < len(rec.Steps); k++ {
		rec.Steps[k].State = rpc.StateSkipped
	}
	return append(evs, Finalize(rec, rpc.StateFailed, reason, now))
}

// EndUnstarted makes final a job whose current step runs no process: a queued job
// that is cancelled or whose dependency failed, or a running one cancelled while
// it waits for a retry or before its step's process started. For a cancel its
// current step is cancelled, whether it was pending, running or waiting for a
// retry (the protocol's "the active step cancelled"); otherwise a current step
// that waits for a retry fails. Every other unfinished step is skipped.
func EndUnstarted(rec *rpc.Record, reason string, state rpc.State, now time.Time) []rpc.Event {
	var evs []rpc.Event
	for i := range rec.Steps {
		st := &rec.Steps[i]
		if st.State.Final() {
			continue
		}
		if i == rec.CurrentStep && state == rpc.StateCancelled {
			st.State = rpc.StateCancelled
			st.Error = reason
			st.RetryAt = nil
			st.FinishedAt = &now
			evs = append(evs, StepEvent(rec, i, rpc.EventStepFinished, now))
			continue
		}
		if st.State == rpc.StateRetrying && i == rec.CurrentStep {
			st.State = rpc.StateFailed
			st.RetryAt = nil
			st.FinishedAt = &now
			evs = append(evs, StepEvent(rec, i, rpc.EventStepFinished, now))
			continue
		}
		st.State = rpc.StateSkipped
	}
	return append(evs, Finalize(rec, state, reason, now))
}

// DependencyFailed is the reason a queued job fails when dep did not succeed.
func DependencyFailed(dep int64) string {
	return "dependency " + strconv.FormatInt(dep, 10) + " failed"
}

// Interrupt takes a running job from an owner that is gone (a daemon that
// stopped or crashed, a lease that expired). It stores an interrupted event and,
// as the running step's on_interrupt says, queues the job again at its first
// unfinished step (the step's attempt is kept: its next start resumes it) or
// fails it. A job with a cancel stored is queued, so that the cancel ends it.
func Interrupt(rec *rpc.Record, now time.Time) []rpc.Event {
	step := rec.CurrentStep
	evs := []rpc.Event{{Time: now, Job: rec.ID, Type: rpc.EventInterrupted, Step: &step, StepName: rec.Steps[step].Name, State: rpc.StateRunning}}
	st := &rec.Steps[step]
	rec.Run.Procs = nil
	rec.Run.Epoch = 0
	failIt := rec.Spec != nil && rec.Spec.Steps[step].OnInterrupt == rpc.OnInterruptFail
	if st.State == rpc.StateRunning && failIt && rec.Run.CancelReason == nil {
		st.State = rpc.StateFailed
		st.Error = "interrupted"
		st.FinishedAt = &now
		evs = append(evs, StepEvent(rec, step, rpc.EventStepFinished, now))
		for k := step + 1; k < len(rec.Steps); k++ {
			rec.Steps[k].State = rpc.StateSkipped
		}
		return append(evs, Finalize(rec, rpc.StateFailed, "interrupted", now))
	}
	if st.State == rpc.StateRunning {
		st.State = rpc.StatePending
		rec.Run.Interrupted = true
	}
	rec.State = rpc.StateQueued
	return evs
}

// Finalize sets a job's final state and returns its final event.
func Finalize(rec *rpc.Record, state rpc.State, errText string, now time.Time) rpc.Event {
	rec.State = state
	rec.Error = errText
	rec.FinishedAt = &now
	rec.Waiting = nil
	rec.PausedAt = nil
	rec.Run.Procs = nil
	rec.Run.Held = false
	typ := map[rpc.State]string{rpc.StateSucceeded: rpc.EventSucceeded, rpc.StateFailed: rpc.EventFailed, rpc.StateCancelled: rpc.EventCancelled}[state]
	ev := rpc.Event{Time: now, Job: rec.ID, Type: typ, State: state, Error: errText}
	if state == rpc.StateSucceeded {
		rec.Result = JobResult(rec)
		ev.Result = rec.Result
	}
	return ev
}

// JobResult is the result of the last step whose result mode is not "none", null
// when that step has none (a sleep step whose mode is "json"): an earlier step's
// result does not stand in for it. Without the spec the modes are unknown, and it
// is the last result a step has.
func JobResult(rec *rpc.Record) json.RawMessage {
	for i := len(rec.Steps) - 1; i >= 0; i-- {
		if rec.Spec != nil && i < len(rec.Spec.Steps) {
			if rec.Spec.Steps[i].Result == rpc.ResultNone {
				continue
			}
			return rec.Steps[i].Result
		}
		if rec.Steps[i].Result != nil {
			return rec.Steps[i].Result
		}
	}
	return nil
}

// Runnable reports whether a queued job may be claimed now as far as its own
// record says: it is queued, not held, and its not_before is due. Dependencies and queue
// limits are the store's to check. A queued job with a cancel stored (one reaped
// after its cancel was stored: Interrupt queues it) is runnable on purpose: its
// claimant's runner stores the cancel before any process starts, and nothing
// else would end it. A paused job (paused_at set: paused while it ran, then
// reaped) is not runnable until Resume.
func Runnable(rec *rpc.Record, now time.Time) bool {
	return rec.State == rpc.StateQueued && !rec.Run.Held && rec.PausedAt == nil && (rec.NotBefore == nil || !rec.NotBefore.After(now))
}
