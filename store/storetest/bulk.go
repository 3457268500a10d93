package storetest

// Cases for acting on many jobs at once: a bulk cancel is one transaction
// (and, where the store counts them, one commit), a bulk retry stores all or
// none, and job.list's filter selects by name glob, queue and labels.

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/matryer/is"

	"spool/rpc"
)

// committer is a store that counts its commits.
type committer interface{ Commits() uint64 }

func testBulkCancel(t *testing.T, r *Rig) {
	is := is.New(t)
	ctx := context.Background()
	s := r.S
	o := join(t, s, "one")
	run := submit(t, s, Spec("run"))[0]
	is.Equal(claim(t, s, o, 1, epoch())[0].ID, run.ID)
	done := submit(t, s, Spec("done"))[0]
	is.Equal(claim(t, s, o, 1, epoch())[0].ID, done.ID)
	apply(t, s, succeedStep(*get(t, s, done.ID), o, epoch()))
	is.Equal(get(t, s, done.ID).State, rpc.StateSucceeded)

	const n = 1000
	specs := make([]rpc.Spec, n)
	for i := range specs {
		specs[i] = Spec(fmt.Sprintf("q%d", i))
	}
	queued := submit(t, s, specs...)
	dep := submit(t, s, after("dep", queued[0].ID))[0]

	want := append(ids(queued), run.ID, done.ID, 1<<40) // a final and an unknown id are skipped
	_, last := bounds(t, s)
	var c0 uint64
	cs, counts := s.(committer)
	if counts {
		c0 = cs.Commits()
	}
	at := epoch().Add(time.Minute)
	recs, evs, err := s.CancelMany(ctx, want, "bulk", at)
	is.NoErr(err) // the bulk cancel is stored
	if counts {
		is.Equal(cs.Commits()-c0, uint64(1)) // in one commit
	}
	is.Equal(len(evs), 2*n+1)              // a step and a job event per queued job, one for the dependent
	is.True(consecutive(evs, last+1))      // seq dense, right after the last
	is.Equal(len(recs), n+2)               // the queued, the running (request stored), the dependent
	is.Equal(recs[len(recs)-1].ID, dep.ID) // the dependent comes last
	for _, q := range queued {
		g := get(t, s, q.ID)
		is.Equal(g.State, rpc.StateCancelled) // every queued job is cancelled
	}
	is.Equal(get(t, s, dep.ID).State, rpc.StateFailed)     // its dependent failed in it
	is.Equal(*get(t, s, run.ID).Run.CancelReason, "bulk")  // the running job got the request
	is.Equal(get(t, s, run.ID).State, rpc.StateRunning)    // and is left to its owner
	is.Equal(get(t, s, done.ID).State, rpc.StateSucceeded) // a final job is untouched
	ids1, err := s.Renew(ctx, o, at)
	is.NoErr(err)
	is.Equal(ids1, []int64{run.ID}) // the owner learns of the request

	// Nothing left to cancel: no write, no seq.
	_, last = bounds(t, s)
	recs, evs, err = s.CancelMany(ctx, ids(queued[:3]), "again", at)
	is.NoErr(err)          // final jobs are skipped
	is.Equal(len(recs), 0) // nothing changed
	is.Equal(len(evs), 0)  // no event
	_, l := bounds(t, s)
	is.Equal(l, last) // no seq used
}

func testBulkRetryAllOrNone(t *testing.T, r *Rig) {
	is := is.New(t)
	ctx := context.Background()
	s := r.S
	failed := submit(t, s, Spec("a"), Spec("b"))
	_, _, err := s.CancelMany(ctx, ids(failed), "x", epoch())
	is.NoErr(err)
	retry := func(rec rpc.Record, after []int64, field string) rpc.NewJob {
		sp := Spec(rec.Name)
		sp.After = after
		nj := NewJob(field, sp, epoch())
		id := rec.ID
		nj.Record.RetryOf = &id
		nj.Record.After = after
		return nj
	}
	_, last := bounds(t, s)
	bad := []rpc.NewJob{retry(failed[0], nil, "jobs[0]"), retry(failed[1], []int64{1 << 40}, "jobs[1]")}
	_, _, err = s.Submit(ctx, bad)
	is.Equal(code(err), rpc.CodeInvalidParams) // one bad retry refuses the batch
	_, l := bounds(t, s)
	is.Equal(l, last) // and nothing is stored
	good := []rpc.NewJob{retry(failed[0], nil, "jobs[0]"), retry(failed[1], nil, "jobs[1]")}
	recs, evs, err := s.Submit(ctx, good)
	is.NoErr(err)                            // the retries are stored
	is.Equal(len(recs), 2)                   // all of them
	is.True(consecutive(evs, last+1))        // in one dense run of seq
	is.Equal(*recs[1].RetryOf, failed[1].ID) // each says what it retries
}

func testListFilter(t *testing.T, r *Rig) {
	is := is.New(t)
	ctx := context.Background()
	s := r.S
	a, b, c := Spec("nightly-a"), Spec("nightly-b"), Spec("build")
	b.Queue = "slow"
	c.Labels = map[string]string{"team": "infra"}
	a.Labels = map[string]string{"team": "infra"}
	recs := submit(t, s, a, b, c)
	list := func(p rpc.ListParams) []int64 {
		is.Helper()
		p.Order = "asc"
		res, err := s.List(ctx, p)
		is.NoErr(err) // the list is read
		out := []int64{}
		for _, j := range res.Jobs {
			out = append(out, j.ID)
		}
		return out
	}
	is.Equal(list(rpc.ListParams{Name: "nightly-*"}), []int64{recs[0].ID, recs[1].ID})                                           // by name glob
	is.Equal(list(rpc.ListParams{Name: "nightly-*", Queue: "slow"}), []int64{recs[1].ID})                                        // and queue
	is.Equal(list(rpc.ListParams{Labels: map[string]string{"team": "infra"}}), []int64{recs[0].ID, recs[2].ID})                  // by label
	is.Equal(list(rpc.ListParams{Name: "nightly-*", Labels: map[string]string{"team": "infra"}, Limit: 1}), []int64{recs[0].ID}) // all must match
	is.Equal(list(rpc.ListParams{Name: "x*"}), []int64{})                                                                        // none
}
