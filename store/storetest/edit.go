package storetest

import (
	"context"
	"encoding/json"
	"sync"
	"testing"
	"time"

	"github.com/matryer/is"

	"spool/daemon"
	"spool/rpc"
	"spool/rpc/machine"
)

// The cases of editing and holding queued jobs: each change is guarded (a
// running or final job answers 1002, an unknown one 1001, and neither changes
// anything nor uses a seq), evented with a dense seq, and files the job where
// Claim finds it, or does not.

// changed runs one change and checks its events: one, of type typ, for job id,
// with the next seq.
func changed(t *testing.T, s daemon.Store, id int64, typ string, f func() (*rpc.Record, []rpc.Event, error)) *rpc.Record {
	t.Helper()
	is := is.New(t)
	is.Helper()
	_, last := bounds(t, s)
	rec, evs, err := f()
	is.NoErr(err)                           // the change is stored
	is.Equal(len(evs), 1)                   // with one event
	is.Equal(evs[0].Type, typ)              // of its type
	is.Equal(evs[0].Job, id)                // for its job
	is.Equal(evs[0].State, rpc.StateQueued) // which stays queued
	is.Equal(evs[0].Seq, last+1)            // with the next seq
	_, now := bounds(t, s)
	is.Equal(now, last+1) // and no other
	is.Equal(rec.ID, id)  // the record returned is the job's
	return rec
}

// refused runs a change that must be refused with code, and checks that it
// stored nothing: no seq used, the job as it was.
func refused(t *testing.T, s daemon.Store, id int64, want int, f func() (*rpc.Record, []rpc.Event, error)) error {
	t.Helper()
	is := is.New(t)
	is.Helper()
	_, last := bounds(t, s)
	var before *rpc.Record
	if r, err := s.Get(context.Background(), id); err == nil {
		before = r
	}
	_, evs, err := f()
	is.Equal(code(err), want) // refused with its code
	is.Equal(len(evs), 0)     // storing no event
	_, now := bounds(t, s)
	is.Equal(now, last) // using no seq
	if before != nil {
		after := get(t, s, id)
		is.Equal(after.State, before.State)       // the job's state is kept
		is.Equal(after.Priority, before.Priority) // and its fields
		is.Equal(after.Queue, before.Queue)
		is.Equal(after.After, before.After)
		is.Equal(after.Run.Held, before.Run.Held)
	}
	return err
}

// unchanged runs a change that changes nothing: no event, no seq.
func unchanged(t *testing.T, s daemon.Store, f func() (*rpc.Record, []rpc.Event, error)) {
	t.Helper()
	is := is.New(t)
	is.Helper()
	_, last := bounds(t, s)
	_, evs, err := f()
	is.NoErr(err)         // answered
	is.Equal(len(evs), 0) // with no event
	_, now := bounds(t, s)
	is.Equal(now, last) // and no seq used
}

func waitingOf(t *testing.T, s daemon.Store, id int64) string {
	t.Helper()
	if w := get(t, s, id).Waiting; w != nil {
		return *w
	}
	return "<nil>"
}

func testHoldGuarded(t *testing.T, r *Rig) {
	is := is.New(t)
	ctx := context.Background()
	s := r.S
	o := join(t, s, "n")
	submit(t, s, Spec("run"))
	run := claim(t, s, o, 1, epoch())[0]
	done := finished(t, s, Spec("fin"), rpc.StateSucceeded, epoch())
	now := epoch()
	for _, id := range []int64{run.ID, done.ID} {
		refused(t, s, id, rpc.CodeBadState, func() (*rpc.Record, []rpc.Event, error) { return s.Hold(ctx, id, now) })
		refused(t, s, id, rpc.CodeBadState, func() (*rpc.Record, []rpc.Event, error) { return s.Release(ctx, id, now) })
		p := 9
		err := refused(t, s, id, rpc.CodeBadState, func() (*rpc.Record, []rpc.Event, error) {
			return s.Edit(ctx, rpc.EditParams{ID: id, Priority: &p}, now)
		})
		is.True(data(err).State != "") // 1002 says the state found
	}
	refused(t, s, 999, rpc.CodeNotFound, func() (*rpc.Record, []rpc.Event, error) { return s.Hold(ctx, 999, now) })
	refused(t, s, 999, rpc.CodeNotFound, func() (*rpc.Record, []rpc.Event, error) { return s.Release(ctx, 999, now) })
	p := 1
	refused(t, s, 999, rpc.CodeNotFound, func() (*rpc.Record, []rpc.Event, error) {
		return s.Edit(ctx, rpc.EditParams{ID: 999, Priority: &p}, now)
	})
}

func testHoldNeverClaimed(t *testing.T, r *Rig) {
	is := is.New(t)
	ctx := context.Background()
	s := r.S
	owners := []machine.Owner{join(t, s, "a"), join(t, s, "b")}
	recs := submit(t, s, inQueue("low", "default", 0), inQueue("high", "default", 9), inQueue("mid", "default", 5), inQueue("other", "q", 9))
	high := recs[1].ID
	rec := changed(t, s, high, rpc.EventHeld, func() (*rpc.Record, []rpc.Event, error) { return s.Hold(ctx, high, epoch()) })
	is.True(rec.Run.Held)                            // the record says held
	is.Equal(waitingOf(t, s, high), rpc.WaitingHeld) // and it waits, held
	unchanged(t, s, func() (*rpc.Record, []rpc.Event, error) { return s.Hold(ctx, high, epoch()) })

	// Two owners claim everything they can, at once: never the held job.
	var mu sync.Mutex
	var got []int64
	var wg sync.WaitGroup
	for _, o := range owners {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for range 3 {
				recs, _, err := s.Claim(ctx, o, 10, epoch().Add(time.Hour))
				if err != nil {
					t.Error(err)
					return
				}
				mu.Lock()
				got = append(got, ids(recs)...)
				mu.Unlock()
			}
		}()
	}
	wg.Wait()
	is.Equal(len(got), 3) // every other job was claimed, once
	for _, id := range got {
		is.True(id != high) // and the held one never
	}
	is.Equal(get(t, s, high).State, rpc.StateQueued) // it stays queued
	qs, err := s.Queues(ctx)
	is.NoErr(err)
	for _, q := range qs {
		if q.Name == "default" {
			is.Equal(q.Queued, 1) // and counted as queued
		}
	}

	// Released, it is claimable again.
	rec = changed(t, s, high, rpc.EventReleased, func() (*rpc.Record, []rpc.Event, error) { return s.Release(ctx, high, epoch()) })
	is.True(!rec.Run.Held) // no longer held
	unchanged(t, s, func() (*rpc.Record, []rpc.Event, error) { return s.Release(ctx, high, epoch()) })
	is.Equal(ids(claim(t, s, owners[0], 10, epoch())), []int64{high}) // and claimed
}

func testHoldKeepsPlace(t *testing.T, r *Rig) {
	is := is.New(t)
	ctx := context.Background()
	s := r.S
	o := join(t, s, "n")
	recs := submit(t, s, inQueue("a", "default", 1), inQueue("b", "default", 1), inQueue("c", "default", 1), inQueue("d", "default", 0))
	a := recs[0].ID
	changed(t, s, a, rpc.EventHeld, func() (*rpc.Record, []rpc.Event, error) { return s.Hold(ctx, a, epoch()) })
	changed(t, s, a, rpc.EventReleased, func() (*rpc.Record, []rpc.Event, error) { return s.Release(ctx, a, epoch()) })
	is.Equal(ids(claim(t, s, o, 2, epoch())), []int64{a, recs[1].ID}) // released, it is claimed in its place: priority, then id

	// Held across a reopen, it stays held.
	c := recs[2].ID
	changed(t, s, c, rpc.EventHeld, func() (*rpc.Record, []rpc.Event, error) { return s.Hold(ctx, c, epoch()) })
	s = r.reopen()
	o = join(t, s, "n")
	is.Equal(ids(claim(t, s, o, 10, epoch())), []int64{recs[3].ID}) // the held job is not claimed after a reopen
	is.Equal(waitingOf(t, s, c), rpc.WaitingHeld)                   // it is still held
	_, evs, err := s.Release(ctx, c, epoch())
	is.NoErr(err)
	is.Equal(len(evs), 1)                                  // released
	is.Equal(ids(claim(t, s, o, 10, epoch())), []int64{c}) // and claimed
}

func testHoldDependency(t *testing.T, r *Rig) {
	is := is.New(t)
	ctx := context.Background()
	s := r.S
	o := join(t, s, "n")
	dep := submit(t, s, Spec("dep"))[0]
	w := submit(t, s, after("waits", dep.ID))[0]
	changed(t, s, w.ID, rpc.EventHeld, func() (*rpc.Record, []rpc.Event, error) { return s.Hold(ctx, w.ID, epoch()) })
	run := claim(t, s, o, 10, epoch())
	is.Equal(ids(run), []int64{dep.ID}) // the dependency runs
	apply(t, s, succeedStep(run[0], o, epoch()))
	is.Equal(len(claim(t, s, o, 10, epoch())), 0)    // its success does not release a held dependent
	is.Equal(waitingOf(t, s, w.ID), rpc.WaitingHeld) // which is still held
	changed(t, s, w.ID, rpc.EventReleased, func() (*rpc.Record, []rpc.Event, error) { return s.Release(ctx, w.ID, epoch()) })
	is.Equal(ids(claim(t, s, o, 10, epoch())), []int64{w.ID}) // released, it runs

	// A held job whose dependency fails, fails with it.
	d2 := submit(t, s, Spec("dep2"))[0]
	w2 := submit(t, s, after("waits2", d2.ID))[0]
	changed(t, s, w2.ID, rpc.EventHeld, func() (*rpc.Record, []rpc.Event, error) { return s.Hold(ctx, w2.ID, epoch()) })
	_, _, _, err := s.Cancel(ctx, d2.ID, "no", epoch())
	is.NoErr(err)
	is.Equal(get(t, s, w2.ID).State, rpc.StateFailed) // the cascade fails a held dependent too
}

func testEditOrder(t *testing.T, r *Rig) {
	is := is.New(t)
	ctx := context.Background()
	s := r.S
	o := join(t, s, "n")
	recs := submit(t, s, inQueue("a", "q", 0), inQueue("b", "q", 0), inQueue("c", "q", 0))
	b := recs[1].ID
	ten := 10
	rec := changed(t, s, b, rpc.EventEdited, func() (*rpc.Record, []rpc.Event, error) {
		return s.Edit(ctx, rpc.EditParams{ID: b, Priority: &ten}, epoch())
	})
	is.Equal(rec.Priority, 10) // the record has the new priority
	evs, err := s.Events(ctx, 0, 1000)
	is.NoErr(err)
	var ch map[string]struct{ From, To any }
	is.NoErr(json.Unmarshal(evs[len(evs)-1].Changes, &ch)) // the event says what changed
	is.Equal(ch["priority"].From, float64(0))              // from
	is.Equal(ch["priority"].To, float64(10))               // to
	is.Equal(len(ch), 1)                                   // and nothing else
	unchanged(t, s, func() (*rpc.Record, []rpc.Event, error) {
		return s.Edit(ctx, rpc.EditParams{ID: b, Priority: &ten}, epoch())
	})
	is.Equal(ids(claim(t, s, o, 1, epoch())), []int64{b}) // the edited priority comes first

	// A queue change moves the job between queues: their counts and claims.
	is.NoErr(s.PutQueue(ctx, rpc.Queue{Name: "q", Paused: true}))
	c := recs[2].ID
	other := "other"
	rec = changed(t, s, c, rpc.EventEdited, func() (*rpc.Record, []rpc.Event, error) {
		return s.Edit(ctx, rpc.EditParams{ID: c, Queue: &other}, epoch())
	})
	is.Equal(rec.Queue, "other") // moved
	qs, err := s.Queues(ctx)
	is.NoErr(err)
	byName := map[string]rpc.Queue{}
	for _, q := range qs {
		byName[q.Name] = q
	}
	is.Equal(byName["q"].Queued, 1)                        // one left in the paused queue
	is.Equal(byName["other"].Queued, 1)                    // one in the other
	is.Equal(ids(claim(t, s, o, 10, epoch())), []int64{c}) // which is claimed, the paused queue's is not

	// Labels merge; not_before is set, then cleared.
	a := recs[0].ID
	v := "x"
	rec = changed(t, s, a, rpc.EventEdited, func() (*rpc.Record, []rpc.Event, error) {
		return s.Edit(ctx, rpc.EditParams{ID: a, Labels: map[string]*string{"k": &v}}, epoch())
	})
	is.Equal(rec.Labels, map[string]string{"k": "x"}) // a label set
	rec = changed(t, s, a, rpc.EventEdited, func() (*rpc.Record, []rpc.Event, error) {
		return s.Edit(ctx, rpc.EditParams{ID: a, Labels: map[string]*string{"k": nil, "j": &v}}, epoch())
	})
	is.Equal(rec.Labels, map[string]string{"j": "x"}) // one removed, one added
	is.NoErr(s.PutQueue(ctx, rpc.Queue{Name: "q"}))
	later := epoch().Add(time.Hour)
	changed(t, s, a, rpc.EventEdited, func() (*rpc.Record, []rpc.Event, error) {
		return s.Edit(ctx, rpc.EditParams{ID: a, NotBefore: rpc.OptionalTime{Set: true, Time: &later}}, epoch())
	})
	is.Equal(len(claim(t, s, o, 10, epoch())), 0) // not before its time
	at, err := s.NextNotBefore(ctx)
	is.NoErr(err)
	is.True(at.Equal(later)) // the timer is the edited time
	changed(t, s, a, rpc.EventEdited, func() (*rpc.Record, []rpc.Event, error) {
		return s.Edit(ctx, rpc.EditParams{ID: a, NotBefore: rpc.OptionalTime{Set: true}}, epoch())
	})
	is.Equal(ids(claim(t, s, o, 10, epoch())), []int64{a}) // cleared, it is claimable
}

func testEditAfter(t *testing.T, r *Rig) {
	is := is.New(t)
	ctx := context.Background()
	s := r.S
	o := join(t, s, "n")
	j1 := submit(t, s, Spec("j1"))[0].ID
	j2 := submit(t, s, after("j2", j1))[0].ID
	j3 := submit(t, s, after("j3", j2))[0].ID
	bad := finished(t, s, Spec("bad"), rpc.StateFailed, epoch()).ID
	edit := func(id int64, after ...int64) func() (*rpc.Record, []rpc.Event, error) {
		return func() (*rpc.Record, []rpc.Event, error) {
			return s.Edit(ctx, rpc.EditParams{ID: id, After: &after}, epoch())
		}
	}
	for _, c := range []struct {
		id    int64
		after []int64
		field string
	}{
		{j1, []int64{j3}, "after[0]"},      // j3 waits for j2, which waits for j1: a cycle
		{j1, []int64{j2}, "after[0]"},      // a direct one
		{j2, []int64{j1, j2}, "after[1]"},  // itself
		{j1, []int64{999}, "after[0]"},     // unknown
		{j3, []int64{j2, bad}, "after[1]"}, // failed: it would fail at once
	} {
		err := refused(t, s, c.id, rpc.CodeInvalidParams, edit(c.id, c.after...))
		is.Equal(data(err).Field, c.field) // the error names the id
	}

	// The dependents index follows: j3 now waits for j1 instead of j2.
	changed(t, s, j3, rpc.EventEdited, edit(j3, j1))
	changed(t, s, j2, rpc.EventEdited, edit(j2))                // no dependency left: claimable
	is.Equal(ids(claim(t, s, o, 10, epoch())), []int64{j1, j2}) // both run; j3 waits for j1
	is.Equal(waitingOf(t, s, j3), "after")
	run := get(t, s, j1)
	apply(t, s, succeedStep(*run, o, epoch()))
	is.Equal(ids(claim(t, s, o, 10, epoch())), []int64{j3}) // j1's success releases j3: the dependent was not lost
	// And the old dependency no longer holds anything: j2 can end and be removed.
	apply(t, s, succeedStep(*get(t, s, j2), o, epoch()))
	_, _, err := s.Remove(ctx, []int64{j2}, epoch())
	is.NoErr(err) // no unfinished job depends on j2 any more
}
