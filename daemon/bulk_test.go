package daemon_test

import (
	"context"
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/matryer/is"

	"spool/daemon"
	"spool/rpc"
)

// bulkJob is a one-step shell job in queue q with labels.
func bulkJob(name, q, script string, labels map[string]string) rpc.Spec {
	return rpc.Spec{Name: name, Queue: q, Labels: labels, Steps: []rpc.Step{shell(script)}}
}

func TestJobsWaitForAQueue(t *testing.T) {
	is := is.New(t)
	dir := t.TempDir()
	h := start(t, dir, nil)
	g := newGate(t, dir, "go")
	ok := submit(t, h.d, bulkJob("ok", "x", g.wait(), nil))
	bad := submit(t, h.d, bulkJob("bad", "x", g.wait()+"; exit 3", nil))
	other := submit(t, h.d, bulkJob("other", "y", "sleep 30", nil))

	// A timeout answers with the states as they are.
	res, err := h.d.JobsWait(ctxT(t), rpc.JobsWaitParams{Filter: rpc.Filter{Queue: "x"}, Timeout: dur(50 * time.Millisecond)})
	is.NoErr(err)                                      // a timeout is an answer
	is.True(!res.Done)                                 // not every job is final
	is.Equal(res.Jobs, 2)                              // only queue x's jobs
	is.Equal(res.NotSucceeded, []int64{ok.ID, bad.ID}) // unfinished ones did not succeed (yet)

	type answer struct {
		res *rpc.JobsResult
		err error
	}
	got := make(chan answer, 1)
	go func() {
		r, err := h.d.JobsWait(ctxT(t), rpc.JobsWaitParams{Filter: rpc.Filter{Queue: "x"}})
		got <- answer{r, err}
	}()
	g.open(t)
	a := <-got
	is.NoErr(a.err)                                         // the wait answers
	is.True(a.res.Done)                                     // once queue x is done
	is.Equal(a.res.Counts[rpc.StateSucceeded], 1)           // one succeeded
	is.Equal(a.res.Counts[rpc.StateFailed], 1)              // one failed
	is.Equal(a.res.NotSucceeded, []int64{bad.ID})           // the failed one is named
	is.Equal(get(t, h.d, other.ID).State, rpc.StateRunning) // queue y's job did not count

	// Nothing unfinished matches: the answer is at once.
	res, err = h.d.JobsWait(ctxT(t), rpc.JobsWaitParams{Filter: rpc.Filter{Queue: "x"}})
	is.NoErr(err)
	is.True(res.Done)     // nothing to wait for
	is.Equal(res.Jobs, 0) // and no job

	_, err = h.d.JobsWait(ctxT(t), rpc.JobsWaitParams{Filter: rpc.Filter{State: []rpc.State{rpc.StateFailed}}})
	is.Equal(errData(err).Field, "filter.state[0]") // a final state cannot be waited for
}

func TestJobsWaitLimit(t *testing.T) {
	is := is.New(t)
	h := start(t, t.TempDir(), func(c *daemon.Config) { c.MaxParallel = 1 })
	for i := range 3 {
		submit(t, h.d, bulkJob(fmt.Sprint(i), "x", "sleep 30", nil))
	}
	_, err := h.d.JobsWait(ctxT(t), rpc.JobsWaitParams{Limit: 2})
	is.Equal(rpc.CodeOf(err), rpc.CodeInvalidParams) // more jobs match than the limit
	is.Equal(errData(err).Field, "limit")            // the error names limit
	_, err = h.d.JobsCancel(ctxT(t), rpc.JobsCancelParams{Limit: 2})
	is.Equal(errData(err).Field, "limit")                   // so does a cancel
	is.Equal(len(listState(t, h.d, rpc.StateCancelled)), 0) // which cancelled nothing
	res, err := h.d.JobsCancel(ctxT(t), rpc.JobsCancelParams{})
	is.NoErr(err)                               // the default limit is enough
	is.Equal(res.Counts[rpc.StateCancelled], 3) // every job is cancelled
}

func listState(t *testing.T, d *daemon.Daemon, st rpc.State) []rpc.Job {
	t.Helper()
	res, err := d.List(ctxT(t), rpc.ListParams{State: []rpc.State{st}, Limit: 1000})
	if err != nil {
		t.Fatalf("list: %v", err)
	}
	return res.Jobs
}

func TestJobsCancelByLabel(t *testing.T) {
	is := is.New(t)
	h := start(t, t.TempDir(), func(c *daemon.Config) { c.MaxParallel = 1 })
	infra := map[string]string{"team": "infra"}
	run := submit(t, h.d, bulkJob("run", "x", "sleep 30", infra))
	eventually(t, "the first job runs", func() bool { return get(t, h.d, run.ID).State == rpc.StateRunning })
	queued := submit(t, h.d, bulkJob("queued", "x", "true", infra))
	dep := submit(t, h.d, rpc.Spec{Name: "dep", After: []int64{queued.ID}, Steps: []rpc.Step{shell("true")}})
	keep := submit(t, h.d, bulkJob("keep", "x", "true", map[string]string{"team": "web"}))

	res, err := h.d.JobsCancel(ctxT(t), rpc.JobsCancelParams{Filter: rpc.Filter{Labels: infra}, Reason: "bulk"})
	is.NoErr(err)                                             // the cancel answers
	is.True(res.Done)                                         // once both are final
	is.Equal(res.Cancelled, []int64{run.ID, queued.ID})       // exactly the labelled ones
	is.Equal(get(t, h.d, run.ID).State, rpc.StateCancelled)   // the running one was stopped
	is.Equal(get(t, h.d, queued.ID).Error, "bulk")            // with the reason
	is.Equal(get(t, h.d, dep.ID).State, rpc.StateFailed)      // the dependent failed with it
	is.Equal(wait(t, h.d, keep.ID).State, rpc.StateSucceeded) // the other label ran
}

func TestJobsRetryFailed(t *testing.T) {
	is := is.New(t)
	h := start(t, t.TempDir(), nil)
	a := submit(t, h.d, bulkJob("nightly-a", "x", "exit 1", nil))
	b := submit(t, h.d, bulkJob("nightly-b", "x", "true", nil))
	c := submit(t, h.d, bulkJob("other", "x", "exit 1", nil))
	for _, j := range []*rpc.Job{a, b, c} {
		wait(t, h.d, j.ID)
	}
	res, err := h.d.JobsRetry(ctxT(t), rpc.JobsRetryParams{Filter: rpc.Filter{Name: "nightly-*"}})
	is.NoErr(err)                        // the retry is stored
	is.Equal(res.RetryOf, []int64{a.ID}) // only the failed nightly job
	is.Equal(len(res.IDs), 1)            // one new job
	j := get(t, h.d, res.IDs[0])
	is.Equal(*j.RetryOf, a.ID)    // which says what it retries
	is.Equal(j.Name, "nightly-a") // with the same spec

	wait(t, h.d, j.ID)
	again, err := h.d.JobsRetry(ctxT(t), rpc.JobsRetryParams{Filter: rpc.Filter{Name: "nightly-*"}})
	is.NoErr(err)                          // a second bulk retry
	is.Equal(again.Skipped, []int64{a.ID}) // does not retry a job twice
	is.Equal(again.RetryOf, []int64{j.ID}) // but retries its retry, which failed too
	is.Equal(*get(t, h.d, again.IDs[0]).RetryOf, j.ID)

	_, err = h.d.JobsRetry(ctxT(t), rpc.JobsRetryParams{Filter: rpc.Filter{State: []rpc.State{rpc.StateSucceeded}}})
	is.Equal(errData(err).Field, "filter.state[0]") // succeeded jobs are not retried in bulk
	_, err = h.d.JobsRetry(ctxT(t), rpc.JobsRetryParams{Limit: rpc.MaxBulk + 1})
	is.Equal(errData(err).Field, "limit") // the limit is bounded
}

func TestJobsWaitCancellable(t *testing.T) {
	is := is.New(t)
	h := start(t, t.TempDir(), nil)
	j := submit(t, h.d, bulkJob("long", "x", "sleep 30", nil))
	eventually(t, "the job runs", func() bool { return get(t, h.d, j.ID).State == rpc.StateRunning })
	ctx, cancel := context.WithCancel(ctxT(t))
	errs := make(chan error, 1)
	go func() {
		_, err := h.d.JobsWait(ctx, rpc.JobsWaitParams{})
		errs <- err
	}()
	cancel()
	is.True(errors.Is(<-errs, context.Canceled))        // a cancelled call ends
	is.Equal(get(t, h.d, j.ID).State, rpc.StateRunning) // and the job goes on
}
