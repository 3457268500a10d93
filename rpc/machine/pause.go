package machine

import (
	"time"

	"spool/rpc"
)

// Pause marks a running job paused at now (paused_at) and returns its paused
// event, which names the current step. The job stays running and keeps its
// slot; the caller checks that it is running and not paused, and stops its
// processes once the transition is stored.
func Pause(rec *rpc.Record, now time.Time) []rpc.Event {
	rec.PausedAt = &now
	i := rec.CurrentStep
	return []rpc.Event{{Time: now, Job: rec.ID, Type: rpc.EventPaused, Step: &i, StepName: rec.Steps[i].Name, State: rec.State}}
}

// Resume lets a paused job go again: paused_at is cleared and the time it was
// paused is added to what waited while it was: the job's deadline (run.deadline)
// and the retry_at of a step that waits for a retry. A queued job (paused, then
// reaped by a restart) becomes claimable again. The event's elapsed is the time
// paused. The caller checks that the job is running or queued, and paused.
func Resume(rec *rpc.Record, now time.Time) []rpc.Event {
	var paused time.Duration
	if rec.PausedAt != nil && now.After(*rec.PausedAt) {
		paused = now.Sub(*rec.PausedAt)
	}
	rec.PausedAt = nil
	if rec.Run.Deadline != nil {
		dl := rec.Run.Deadline.Add(paused)
		rec.Run.Deadline = &dl
	}
	i := rec.CurrentStep
	if st := &rec.Steps[i]; st.State == rpc.StateRetrying && st.RetryAt != nil {
		at := st.RetryAt.Add(paused)
		st.RetryAt = &at
	}
	return []rpc.Event{{Time: now, Job: rec.ID, Type: rpc.EventResumed, Step: &i, StepName: rec.Steps[i].Name, State: rec.State, Elapsed: rpc.Duration(paused)}}
}

// Signalled is the event of a signal sent to the processes of a running job's
// current step (job.signal). It changes nothing on the record.
func Signalled(rec *rpc.Record, signal string, now time.Time) rpc.Event {
	i := rec.CurrentStep
	return rpc.Event{Time: now, Job: rec.ID, Type: rpc.EventSignalled, Step: &i, StepName: rec.Steps[i].Name, State: rec.State, Attempt: rec.Steps[i].Attempt, Signal: &signal}
}
