package storetest

import (
	"context"
	"testing"
	"time"

	"github.com/matryer/is"

	"spool/rpc"
	"spool/rpc/machine"
)

// testPause pauses a running job with its owner's fenced Apply, reaps it with
// a reopen (a restart), checks that Claim never takes the queued paused job,
// and resumes it with Store.Resume: guarded, evented, seq dense.
func testPause(t *testing.T, r *Rig) {
	is := is.New(t)
	ctx := context.Background()
	s := r.S
	o := join(t, s, "one")
	timed := Spec("paused")
	timed.Timeout = rpc.Duration(time.Hour)
	recs := submit(t, s, timed)
	run := claim(t, s, o, 1, epoch())[0]
	is.Equal(run.ID, recs[0].ID)
	dl := *run.Run.Deadline

	t1 := epoch().Add(time.Minute)
	p := own(run)
	pevs := machine.Pause(&p, t1)
	_, err := s.Apply(ctx, []rpc.Transition{{Record: p, From: rpc.StateRunning, Epoch: o.Epoch + 1, Events: pevs}})
	is.Equal(code(err), rpc.CodeBadState) // another epoch's pause is refused
	_, last := bounds(t, s)
	evs := apply(t, s, rpc.Transition{Record: p, From: rpc.StateRunning, Epoch: o.Epoch, Events: pevs})
	is.Equal(len(evs), 1)                  // one event
	is.Equal(evs[0].Type, rpc.EventPaused) // paused
	is.Equal(evs[0].Seq, last+1)           // after the last
	got := get(t, s, run.ID)
	is.Equal(got.State, rpc.StateRunning) // still running
	is.True(got.PausedAt.Equal(t1))       // paused since t1
	_, _, err = s.Resume(ctx, run.ID, t1)
	is.Equal(code(err), rpc.CodeBadState) // a running job is resumed by its owner, not the store

	// A restart: the owner's lease is gone, the reap queues the job paused.
	queued := submit(t, s, Spec("queued"))[0]
	s = r.reopen()
	o2 := join(t, s, "two")
	t2 := t1.Add(time.Minute)
	reaped, _, err := s.Reap(ctx, t2)
	is.NoErr(err)
	is.Equal(ids(reaped), []int64{run.ID})     // reaped
	is.Equal(reaped[0].State, rpc.StateQueued) // queued again
	is.True(reaped[0].PausedAt.Equal(t1))      // still paused
	got = get(t, s, run.ID)
	is.Equal(*got.Waiting, "job_paused") // which is why it waits
	for range 3 {
		c, _, err := s.Claim(ctx, o2, 10, t2.Add(time.Hour))
		is.NoErr(err)
		for _, rec := range c {
			is.True(rec.ID != run.ID) // Claim never takes the paused job
		}
	}
	nb, err := s.NextNotBefore(ctx)
	is.NoErr(err)
	is.True(nb.IsZero()) // and no timer waits for it

	_, _, err = s.Resume(ctx, queued.ID, t2)
	is.Equal(code(err), rpc.CodeBadState) // a job that is not paused answers 1002
	_, _, err = s.Resume(ctx, 999999, t2)
	is.Equal(code(err), rpc.CodeNotFound) // an unknown one 1001

	t3 := t2.Add(time.Minute)
	_, last = bounds(t, s)
	rec, evs, err := s.Resume(ctx, run.ID, t3)
	is.NoErr(err)                                       // resumed
	is.Equal(rec.PausedAt, nil)                         // not paused
	is.Equal(len(evs), 1)                               // one event
	is.Equal(evs[0].Type, rpc.EventResumed)             // resumed
	is.Equal(evs[0].Seq, last+1)                        // after the last
	is.Equal(evs[0].Elapsed.D(), t3.Sub(t1))            // paused that long
	is.True(rec.Run.Deadline.Equal(dl.Add(t3.Sub(t1)))) // its deadline moved by as much
	is.Equal(get(t, s, run.ID).PausedAt, nil)           // as stored
	_, _, err = s.Resume(ctx, run.ID, t3)
	is.Equal(code(err), rpc.CodeBadState) // a second resume answers 1002
	c := claim(t, s, o2, 10, t3)
	is.Equal(ids(c), []int64{run.ID}) // now Claim takes it
	is.True(c[0].Run.Deadline.Equal(dl.Add(t3.Sub(t1))))
}
