package daemon_test

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/matryer/is"

	"spool/daemon"
	"spool/rpc"
)

// TestLostRaceEndsTheRunnersWork: a job taken from its runner in the store (here
// by a write of another owner) makes the runner's next write fail with 1002:
// the runner ends its work on the job at once, gives its slot back and stores
// nothing more; the job stays as its new owner left it.
func TestLostRaceEndsTheRunnersWork(t *testing.T) {
	is := is.New(t)
	h := start(t, t.TempDir(), func(c *daemon.Config) { c.MaxParallel = 1 })
	gate := filepath.Join(h.dir, "gate")
	j := submit(t, h.d, rpc.Spec{Steps: []rpc.Step{shell("while [ ! -e " + gate + " ]; do sleep 0.01; done"), shell("echo second > " + filepath.Join(h.dir, "second"))}})
	eventually(t, "the job runs", func() bool { return get(t, h.d, j.ID).State == rpc.StateRunning })

	// Another owner takes the job: its record names another epoch.
	thief, err := h.st.Join(ctxT(t), "thief", time.Now())
	is.NoErr(err) // a second member joins
	rec, err := h.st.Get(ctxT(t), j.ID)
	is.NoErr(err) // read
	taken := *rec
	taken.Run.Node, taken.Run.Epoch = thief.Node, thief.Epoch
	_, err = h.st.Apply(ctxT(t), []rpc.Transition{{Record: taken, From: rpc.StateRunning}})
	is.NoErr(err) // stored behind the runner's back
	_, last, err := h.st.Bounds(ctxT(t))
	is.NoErr(err)

	is.NoErr(os.WriteFile(gate, nil, 0o600)) // the step ends; its runner's write is refused
	eventually(t, "the slot is given back", func() bool { return h.d.Stats().Running == 0 })
	// The slot is free: another job runs at once.
	other := submit(t, h.d, rpc.Spec{Steps: []rpc.Step{shell("true")}})
	is.Equal(wait(t, h.d, other.ID).State, rpc.StateSucceeded) // the freed slot runs it

	after, err := h.st.Get(ctxT(t), j.ID)
	is.NoErr(err)
	is.Equal(after.State, rpc.StateRunning)          // the job is as the thief left it
	is.Equal(after.Run.Epoch, thief.Epoch)           // owned by the thief
	is.Equal(after.Steps[0].State, rpc.StateRunning) // its step's end was not stored
	_, err = os.Stat(filepath.Join(h.dir, "second"))
	is.True(os.IsNotExist(err)) // and the runner went no further
	for _, ev := range stored(t, h, j.ID) {
		is.True(ev.Seq <= last) // nothing more was stored of the job
	}
}

// TestCancelBetweenAttemptsIsFinalAtOnce: a running job whose step waits for a
// retry is cancelled in the store's transaction, and its runner stops waiting.
func TestCancelBetweenAttemptsIsFinalAtOnce(t *testing.T) {
	is := is.New(t)
	h := start(t, t.TempDir(), nil)
	j := submit(t, h.d, rpc.Spec{Steps: []rpc.Step{{Shell: &rpc.ShellStep{Script: "exit 1"},
		Retry: &rpc.Retry{Attempts: 5, Backoff: rpc.Duration(time.Hour), MaxBackoff: rpc.Duration(time.Hour)}}}})
	eventually(t, "the step waits for a retry", func() bool { return get(t, h.d, j.ID).Steps[0].State == rpc.StateRetrying })
	start := time.Now()
	c, err := h.d.Cancel(ctxT(t), rpc.CancelParams{ID: j.ID, Reason: "enough"})
	is.NoErr(err)                                  // cancelled
	is.Equal(c.State, rpc.StateCancelled)          // final
	is.Equal(c.Steps[0].State, rpc.StateCancelled) // the waiting step too
	is.True(strings.Contains(c.Error, "enough"))   // with the reason
	is.True(time.Since(start) < time.Minute)       // not after the hour of backoff
	eventually(t, "the runner gives its slot back", func() bool { return h.d.Stats().Running == 0 })
}

// TestAnotherWritersJobsReachWatchersAndRun: jobs stored by another writer of the
// store (as another daemon on a shared store would) reach this daemon's watchers
// in seq order without a gap, through the tailer, and this daemon claims and
// runs them; job.wait answers for them from the event stream.
func TestAnotherWritersJobsReachWatchersAndRun(t *testing.T) {
	is := is.New(t)
	h := start(t, t.TempDir(), nil)
	w, err := h.d.Watch(ctxT(t), rpc.WatchParams{})
	is.NoErr(err) // watching every event
	defer w.Close()
	const n = 20
	now := time.Now().UTC()
	var ids []int64
	for range n {
		sp := rpc.Spec{Name: "elsewhere", Steps: []rpc.Step{shell("true")}}
		is.NoErr(rpc.NormalizeSpec("job", &sp)) // a valid spec
		rec := rpc.Record{Job: rpc.Job{Name: sp.Name, Queue: "default", State: rpc.StateQueued, SubmittedAt: now, Spec: &sp, After: []int64{},
			Steps: []rpc.StepStatus{{Name: sp.Steps[0].Name, Kind: sp.Steps[0].Kind(), State: rpc.StatePending}}}}
		recs, _, err := h.st.Submit(ctxT(t), []rpc.NewJob{{Record: rec, Event: rpc.Event{Time: now, Type: rpc.EventSubmitted, State: rpc.StateQueued}, Field: "job"}})
		is.NoErr(err) // stored by the other writer
		ids = append(ids, recs[0].ID)
	}
	for _, id := range ids {
		is.Equal(wait(t, h.d, id).State, rpc.StateSucceeded) // claimed and run here
	}
	_, last, err := h.st.Bounds(ctxT(t))
	is.NoErr(err)
	var seq int64
	for seq < last {
		ev, err := w.Next(ctxT(t))
		is.NoErr(err) // the stream goes on
		if !ev.Stored() {
			continue
		}
		is.Equal(ev.Seq, seq+1) // in seq order, no gap
		seq = ev.Seq
	}
}

// TestCancelStoredElsewhereStopsTheJob: a cancel that another writer stored (as
// a daemon that does not run the job would) reaches the runner through the lease
// renewal: the step stops and the job ends cancelled.
func TestCancelStoredElsewhereStopsTheJob(t *testing.T) {
	is := is.New(t)
	h := start(t, t.TempDir(), func(c *daemon.Config) { c.LeaseEvery = 50 * time.Millisecond })
	j := submit(t, h.d, rpc.Spec{Steps: []rpc.Step{shell("sleep 30")}})
	eventually(t, "the job runs", func() bool { return get(t, h.d, j.ID).Steps[0].State == rpc.StateRunning })
	st, _, evs, err := h.st.Cancel(ctxT(t), j.ID, "from elsewhere", time.Now())
	is.NoErr(err)                  // the request is stored
	is.Equal(st, rpc.StateRunning) // the job still runs
	is.Equal(len(evs), 0)          // no event yet: its owner stores the outcome
	done := wait(t, h.d, j.ID)
	is.Equal(done.State, rpc.StateCancelled)          // the owner learned of it
	is.Equal(done.Error, "from elsewhere")            // with its reason
	is.Equal(done.Steps[0].State, rpc.StateCancelled) // and stopped the step
}
