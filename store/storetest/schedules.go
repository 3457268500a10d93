package storetest

import (
	"context"
	"testing"
	"time"

	"github.com/matryer/is"

	"spool/daemon"
	"spool/rpc"
)

// The cases of schedules: a fire is one transaction with its job and its
// events, guarded by the slot; pause, remove, and a put that keeps the last
// slot.

// schedule is a stored schedule named name, of no particular expression: the
// store does not read it.
func schedule(name string) rpc.Schedule {
	return rpc.Schedule{Name: name, Cron: "@every 1m", TZ: "UTC", Template: "t", Params: map[string]string{"k": "v"},
		CatchUp: rpc.CatchUpLast, CatchUpMax: 10, CreatedAt: epoch(), UpdatedAt: epoch()}
}

// putSchedule stores sc.
func putSchedule(t *testing.T, s daemon.Store, sc rpc.Schedule) *rpc.Schedule {
	t.Helper()
	is := is.New(t)
	is.Helper()
	got, err := s.PutSchedule(context.Background(), sc)
	is.NoErr(err)               // the schedule is stored
	is.Equal(got.Name, sc.Name) // as given
	return got
}

// fire fires slot of name with a job of spec Spec(job).
func fire(s daemon.Store, name string, slot time.Time, job string) (rpc.Record, []rpc.Event, error) {
	return s.FireSchedule(context.Background(), name, slot, NewJob("job", Spec(job), slot))
}

func testScheduleFire(t *testing.T, r *Rig) {
	is := is.New(t)
	ctx := context.Background()
	s := r.S
	putSchedule(t, s, schedule("nightly"))
	_, last0 := bounds(t, s)
	slot := epoch().Add(time.Minute)
	rec, evs, err := fire(s, "nightly", slot, "a")
	is.NoErr(err)                        // the slot fires
	is.Equal(rec.State, rpc.StateQueued) // its job is queued
	is.Equal(len(evs), 2)                // with two events
	is.True(consecutive(evs, last0+1))   // dense after the last seq
	is.Equal(evs[0].Type, rpc.EventSubmitted)
	is.Equal(evs[0].Job, rec.ID) // the job's submitted event
	is.Equal(evs[1].Type, rpc.EventScheduleFired)
	is.Equal(evs[1].Job, rec.ID)         // the fire names the job
	is.Equal(evs[1].Schedule, "nightly") // and the schedule
	is.True(evs[1].Slot.Equal(slot))     // and the slot
	got := get(t, s, rec.ID)
	is.Equal(got.Spec.Name, "a") // the job is stored with its spec
	stored, err := s.Events(ctx, last0, 0)
	is.NoErr(err)
	is.Equal(len(stored), 2)                                     // both events are in the log
	is.Equal(stored[1].Schedule, "nightly")                      // the fire's as returned
	is.True(stored[1].Slot != nil && stored[1].Slot.Equal(slot)) // with its slot
	sc, err := s.Schedule(ctx, "nightly")
	is.NoErr(err)
	is.True(sc.LastSlot != nil && sc.LastSlot.Equal(slot)) // last_slot moved in the same transaction
	is.Equal(*sc.LastJob, rec.ID)                          // with the job

	// The same slot, or an earlier one, answers 1002 and stores nothing.
	c0 := counts(t, s)
	_, last1 := bounds(t, s)
	for _, at := range []time.Time{slot, slot.Add(-time.Second)} {
		_, evs, err = fire(s, "nightly", at, "b")
		is.Equal(code(err), rpc.CodeBadState) // a fired slot does not fire again
		is.Equal(len(evs), 0)                 // no events
	}
	_, last2 := bounds(t, s)
	is.Equal(last2, last1)     // nothing was stored
	is.Equal(counts(t, s), c0) // no job either
	_, _, err = fire(s, "nope", slot, "c")
	is.Equal(code(err), rpc.CodeNotFound) // an unknown schedule is 1001

	// The next slot fires, its seq dense after the first fire's.
	_, evs, err = fire(s, "nightly", slot.Add(time.Minute), "d")
	is.NoErr(err)                      // a later slot fires
	is.True(consecutive(evs, last2+1)) // dense

	// A put of the same name keeps the last slot: the fired slot stays fired.
	re := schedule("nightly")
	re.Cron = "0 3 * * *"
	put := putSchedule(t, s, re)
	is.True(put.LastSlot != nil && put.LastSlot.Equal(slot.Add(time.Minute))) // kept
	is.Equal(put.Cron, "0 3 * * *")                                           // the rest replaced
	_, _, err = fire(s, "nightly", slot.Add(time.Minute), "e")
	is.Equal(code(err), rpc.CodeBadState) // still refused

	// After a reopen, too.
	s = r.reopen()
	_, _, err = fire(s, "nightly", slot.Add(time.Minute), "f")
	is.Equal(code(err), rpc.CodeBadState) // the slot is durable
}

func testSchedulePauseRemove(t *testing.T, r *Rig) {
	is := is.New(t)
	ctx := context.Background()
	s := r.S
	putSchedule(t, s, schedule("a"))
	putSchedule(t, s, schedule("b"))
	later := epoch().Add(time.Hour)
	sc, err := s.PauseSchedule(ctx, "a", true, later)
	is.NoErr(err)                      // paused
	is.True(sc.Paused)                 // says so
	is.True(sc.UpdatedAt.Equal(later)) // at now
	_, last0 := bounds(t, s)
	_, _, err = fire(s, "a", later.Add(time.Minute), "x")
	is.Equal(code(err), rpc.CodeBadState) // a paused schedule does not fire
	_, last1 := bounds(t, s)
	is.Equal(last1, last0) // and stores nothing
	sc, err = s.PauseSchedule(ctx, "a", false, later)
	is.NoErr(err)       // resumed
	is.True(!sc.Paused) // says so
	_, _, err = fire(s, "a", later.Add(time.Minute), "y")
	is.NoErr(err) // fires again
	_, err = s.PauseSchedule(ctx, "zz", true, later)
	is.Equal(code(err), rpc.CodeNotFound) // unknown

	all, err := s.Schedules(ctx)
	is.NoErr(err)
	is.Equal(len(all), 2)      // both
	is.Equal(all[0].Name, "a") // in name order
	is.NoErr(s.RemoveSchedule(ctx, "a"))
	_, err = s.Schedule(ctx, "a")
	is.Equal(code(err), rpc.CodeNotFound) // removed
	is.Equal(code(s.RemoveSchedule(ctx, "a")), rpc.CodeNotFound)
	_, _, err = fire(s, "a", later.Add(2*time.Minute), "z")
	is.Equal(code(err), rpc.CodeNotFound) // a removed schedule does not fire
	all, err = s.Schedules(ctx)
	is.NoErr(err)
	is.Equal(len(all), 1) // b is left

	s = r.reopen()
	sc, err = s.Schedule(ctx, "b")
	is.NoErr(err)                 // schedules survive a reopen
	is.Equal(sc.Params["k"], "v") // whole
}

// testScheduleFireRace: fires of one slot at once store one job.
func testScheduleFireRace(t *testing.T, r *Rig) {
	is := is.New(t)
	s := r.S
	putSchedule(t, s, schedule("race"))
	slot := epoch().Add(time.Minute)
	errs := make(chan error, 8)
	for i := range 8 {
		go func() {
			_, _, err := fire(s, "race", slot, "r"+string(rune('a'+i)))
			errs <- err
		}()
	}
	ok := 0
	for range 8 {
		if err := <-errs; err == nil {
			ok++
		} else {
			is.Equal(code(err), rpc.CodeBadState) // the others are refused
		}
	}
	is.Equal(ok, 1)                            // one fire won
	is.Equal(counts(t, s)[rpc.StateQueued], 1) // one job
}
