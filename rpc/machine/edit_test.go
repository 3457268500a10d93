package machine_test

import (
	"encoding/json"
	"testing"
	"time"

	"github.com/matryer/is"

	"spool/rpc"
	"spool/rpc/machine"
)

func TestHoldRelease(t *testing.T) {
	is := is.New(t)
	rec := newRecord(3, 0, step("a", tries(1)))
	evs := machine.Hold(&rec, t0)
	is.Equal(types(evs), []string{rpc.EventHeld}) // one held event
	is.Equal(evs[0].Job, int64(3))                // for the job
	is.Equal(evs[0].State, rpc.StateQueued)       // which stays queued
	is.True(rec.Run.Held)                         // held
	is.Equal(*rec.Waiting, rpc.WaitingHeld)       // and says so
	is.True(!machine.Runnable(&rec, t0))          // a held job is not runnable
	evs = machine.Release(&rec, t0)
	is.Equal(types(evs), []string{rpc.EventReleased}) // one released event
	is.True(!rec.Run.Held)                            // no longer held
	is.True(machine.Runnable(&rec, t0))               // runnable again
	machine.Hold(&rec, t0)
	machine.EndUnstarted(&rec, "no", rpc.StateCancelled, t0)
	is.True(!rec.Run.Held) // a final job is not held
}

func TestEdit(t *testing.T) {
	is := is.New(t)
	rec := newRecord(5, 0, step("a", tries(1)))
	rec.Labels = map[string]string{"a": "1", "b": "2"}
	rec.After = []int64{1}
	before := rec.Labels
	x, nine, q := "x", 9, "other"
	later := t0.Add(time.Hour)
	evs, err := machine.Edit(&rec, rpc.EditParams{ID: 5, Priority: &nine, Queue: &q,
		Labels: map[string]*string{"a": nil, "c": &x}, NotBefore: rpc.OptionalTime{Set: true, Time: &later},
		After: &[]int64{2, 2, 1}}, t0)
	is.NoErr(err)
	is.Equal(types(evs), []string{rpc.EventEdited})             // one edited event
	is.Equal(rec.Priority, 9)                                   // priority replaced
	is.Equal(rec.Queue, "other")                                // queue replaced
	is.Equal(rec.Labels, map[string]string{"b": "2", "c": "x"}) // labels merged: one removed, one added
	is.Equal(before, map[string]string{"a": "1", "b": "2"})     // the old map untouched
	is.True(rec.NotBefore.Equal(later))                         // not_before set
	is.Equal(rec.After, []int64{2, 1})                          // after replaced, duplicates dropped
	var ch map[string]struct{ From, To json.RawMessage }
	is.NoErr(json.Unmarshal(evs[0].Changes, &ch))
	is.Equal(len(ch), 5)                            // every field changed is named
	is.Equal(string(ch["priority"].From), "0")      // with its value before
	is.Equal(string(ch["priority"].To), "9")        // and after
	is.Equal(string(ch["after"].To), "[2,1]")       // the list as stored
	is.Equal(string(ch["not_before"].From), "null") // none before

	evs, err = machine.Edit(&rec, rpc.EditParams{ID: 5, Priority: &nine, After: &[]int64{2, 1}}, t0)
	is.NoErr(err)
	is.Equal(len(evs), 0) // the same values: no change, no event
	evs, err = machine.Edit(&rec, rpc.EditParams{ID: 5, NotBefore: rpc.OptionalTime{Set: true}}, t0)
	is.NoErr(err)
	is.Equal(len(evs), 1)        // null clears not_before
	is.Equal(rec.NotBefore, nil) // cleared

	many := map[string]*string{}
	for i := range rpc.MaxLabels {
		many["l"+string(rune('A'+i))] = &x
	}
	keep := rec
	evs, err = machine.Edit(&rec, rpc.EditParams{ID: 5, Labels: many}, t0)
	is.Equal(rpc.CodeOf(err), rpc.CodeInvalidParams) // too many labels once merged
	is.Equal(len(evs), 0)                            // no event
	is.Equal(rec.Labels, keep.Labels)                // and nothing changed
}
