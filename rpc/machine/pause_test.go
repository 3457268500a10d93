package machine_test

import (
	"testing"
	"time"

	"github.com/matryer/is"

	"spool/rpc"
	"spool/rpc/machine"
)

func TestPauseResume(t *testing.T) {
	is := is.New(t)
	rec := newRecord(1, time.Hour, step("a", tries(3)), step("b"))
	machine.Claim(&rec, machine.Owner{Node: "n", Epoch: 1}, t0)
	dl := *rec.Run.Deadline

	t1 := t0.Add(time.Minute)
	evs := machine.Pause(&rec, t1)
	is.Equal(len(evs), 1)                          // one event
	is.Equal(evs[0].Type, rpc.EventPaused)         // paused
	is.Equal(*evs[0].Step, 0)                      // naming the current step
	is.Equal(rec.State, rpc.StateRunning)          // the job stays running
	is.True(rec.PausedAt.Equal(t1))                // paused since now
	is.Equal(rec.Steps[0].State, rpc.StateRunning) // its step untouched
	is.True(!machine.Runnable(&rec, t1))

	// Reaped while paused: queued, still paused, not runnable.
	machine.Interrupt(&rec, t1.Add(time.Second))
	is.Equal(rec.State, rpc.StateQueued)
	is.True(rec.PausedAt.Equal(t1))                     // Interrupt keeps paused_at
	is.True(!machine.Runnable(&rec, t1.Add(time.Hour))) // a paused job is never runnable

	t2 := t1.Add(10 * time.Minute)
	evs = machine.Resume(&rec, t2)
	is.Equal(evs[0].Type, rpc.EventResumed)                   // resumed
	is.Equal(evs[0].Elapsed.D(), 10*time.Minute)              // after ten minutes paused
	is.Equal(rec.PausedAt, nil)                               // not paused
	is.True(rec.Run.Deadline.Equal(dl.Add(10 * time.Minute))) // the deadline moved as much
	is.True(machine.Runnable(&rec, t2))                       // runnable again

	// A step waiting for a retry waits the time paused longer.
	machine.Claim(&rec, machine.Owner{Node: "n", Epoch: 2}, t2)
	machine.StepRetrying(&rec, 0, machine.Outcome{ExitCode: ptr(1)}, t2.Add(time.Minute), t2)
	machine.Pause(&rec, t2)
	machine.Resume(&rec, t2.Add(5*time.Minute))
	is.True(rec.Steps[0].RetryAt.Equal(t2.Add(6 * time.Minute))) // retry_at moved by the pause

	// The end of a paused job clears paused_at.
	machine.Pause(&rec, t2)
	machine.EndUnstarted(&rec, "stop", rpc.StateCancelled, t2)
	is.Equal(rec.PausedAt, nil) // a final job is not paused
}

func TestSignalled(t *testing.T) {
	is := is.New(t)
	rec := newRecord(1, 0, step("a"))
	machine.Claim(&rec, machine.Owner{Node: "n", Epoch: 1}, t0)
	before := cloneSteps(rec)
	ev := machine.Signalled(&rec, "SIGHUP", t0)
	is.Equal(ev.Type, rpc.EventSignalled) // signalled
	is.Equal(*ev.Signal, "SIGHUP")        // naming the signal
	is.Equal(ev.Attempt, 1)               // and the attempt it reached
	is.Equal(cloneSteps(rec), before)     // nothing else changes
}

func cloneSteps(rec rpc.Record) []rpc.StepStatus { return append([]rpc.StepStatus(nil), rec.Steps...) }
