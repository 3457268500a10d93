// Package storetest is the conformance suite of daemon.Store: every store runs the
// same cases, so that another store can stand behind the daemon and behave alike.
// It imports daemon (for the Store interface) and rpc; only stores' tests import it.
package storetest

import (
	"context"
	"encoding/json"
	"fmt"
	"slices"
	"sort"
	"sync"
	"testing"
	"time"

	"github.com/matryer/is"

	"spool/daemon"
	"spool/rpc"
)

// Checker is a store that can verify its own invariants; Run calls Check after
// each case when the store has it.
type Checker interface {
	Check(ctx context.Context) error
}

// EnvCounter is a store that keeps each distinct environment (a spec's env) once,
// with the number of stored specs that refer to it; the suite checks the counts
// when the store has it, and the environments the store gives back in any case.
type EnvCounter interface {
	// EnvRefs is the reference count of each stored environment, in an
	// order of the store's.
	EnvRefs(ctx context.Context) ([]int64, error)
}

// Harness makes the stores the suite runs against.
type Harness struct {
	// Open makes a new, empty store and registers its closing with t.Cleanup.
	Open func(t *testing.T) daemon.Store
	// Reopen closes s and opens its database again, as the daemon's next boot
	// (or a daemon that lost its lease) would find it. Nil when the store
	// cannot: the cases that need it skip.
	Reopen func(t *testing.T, s daemon.Store) daemon.Store
	// Peer opens a second handle on s's database, as a second daemon
	// sharing it would, closed when t ends. Nil when the store is not
	// shared: the two-handle cases skip.
	Peer func(t *testing.T, s daemon.Store) daemon.Store
}

// Run runs every case of the suite, each against a new, empty store made by open.
// open registers the store's closing with t.Cleanup.
func Run(t *testing.T, open func(t *testing.T) daemon.Store) {
	RunWith(t, Harness{Open: open})
}

// RunWith runs every case of the suite with the stores h makes: the cases of
// the store's basic calls, then those of the seam that decides who runs what
// (seam.go).
func RunWith(t *testing.T, h Harness) {
	cases := []struct {
		name string
		fn   func(t *testing.T, s daemon.Store)
	}{
		{"StoreID", testStoreID},
		{"SubmitIDsInOrder", testSubmitIDsInOrder},
		{"SeqGapFree", testSeqGapFree},
		{"ApplyGuarded", testApplyGuarded},
		{"ApplyAllOrNone", testApplyAllOrNone},
		{"ApplySameJobTwice", testApplySameJobTwice},
		{"ApplyMovesIndexes", testApplyMovesIndexes},
		{"KeyIdempotency", testKeyIdempotency},
		{"KeyWithinBatch", testKeyWithinBatch},
		{"AfterResolution", testAfterResolution},
		{"AfterErrors", testAfterErrors},
		{"Remove", testRemove},
		{"RemoveAllOrNone", testRemoveAllOrNone},
		{"Prune", testPrune},
		{"TrimAndBounds", testTrimAndBounds},
		{"Events", testEvents},
		{"List", testList},
		{"ListFilters", testListFilters},
		{"Unfinished", testUnfinished},
		{"Counts", testCounts},
		{"Templates", testTemplates},
		{"Queues", testQueues},
		{"ConcurrentSubmits", testConcurrentSubmits},
		{"EnvShared", testEnvShared},
		{"EnvFreedByRemove", testEnvFreedByRemove},
		{"EnvFreedByPrune", testEnvFreedByPrune},
		{"EnvFailedBatch", testEnvFailedBatch},
		{"EnvKeyIdempotency", testEnvKeyIdempotency},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			s := h.Open(t)
			c.fn(t, s)
			checkStore(t, s)
		})
	}
	runSeam(t, h)
	runPeer(t, h)
}

// checkStore checks s's invariants when it can check them.
func checkStore(t *testing.T, s daemon.Store) {
	t.Helper()
	if ch, ok := s.(Checker); ok {
		is := is.New(t)
		is.NoErr(ch.Check(context.Background())) // the store's invariants hold after the case
	}
}

// epoch is the suite's clock: the time every case starts from.
func epoch() time.Time { return time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC) }

// Spec is a one-step job spec named name.
func Spec(name string) rpc.Spec {
	return rpc.Spec{
		Name:   name,
		Queue:  "default",
		Labels: map[string]string{},
		After:  []int64{},
		Env:    map[string]string{},
		Steps:  []rpc.Step{{Name: "run", Exec: &rpc.ExecStep{Argv: []string{"true"}}, Result: rpc.ResultText, OnInterrupt: rpc.OnInterruptRetry}},
	}
}

// NewJob is what the daemon would hand the store for sp, submitted at now.
func NewJob(field string, sp rpc.Spec, now time.Time) rpc.NewJob {
	var key *string
	if sp.Key != "" {
		k := sp.Key
		key = &k
	}
	steps := make([]rpc.StepStatus, len(sp.Steps))
	for i, st := range sp.Steps {
		steps[i] = rpc.StepStatus{Name: st.Name, Kind: st.Kind(), State: rpc.StatePending}
	}
	return rpc.NewJob{
		Record: rpc.Record{Job: rpc.Job{
			Name: sp.Name, Key: key, Queue: sp.Queue, Priority: sp.Priority, Labels: sp.Labels,
			NotBefore: sp.NotBefore, State: rpc.StateQueued, SubmittedAt: now, Steps: steps, Spec: &sp,
		}},
		Event: rpc.Event{Time: now, Type: rpc.EventSubmitted, State: rpc.StateQueued},
		Field: field,
	}
}

// submit stores specs as one call and returns the records.
func submit(t *testing.T, s daemon.Store, specs ...rpc.Spec) []rpc.Record {
	t.Helper()
	is := is.New(t)
	is.Helper()
	nj := make([]rpc.NewJob, len(specs))
	for i, sp := range specs {
		field := "job"
		if len(specs) > 1 {
			field = fmt.Sprintf("jobs[%d]", i)
		}
		nj[i] = NewJob(field, sp, epoch())
	}
	recs, _, err := s.Submit(context.Background(), nj)
	is.NoErr(err)                   // the submit is stored
	is.Equal(len(recs), len(specs)) // one record per spec
	return recs
}

// start moves rec from queued to running.
func start(rec rpc.Record, at time.Time) rpc.Transition {
	rec.Spec = nil
	rec.State = rpc.StateRunning
	rec.StartedAt = &at
	rec.Steps = slices.Clone(rec.Steps)
	rec.Steps[0].State = rpc.StateRunning
	rec.Run.Procs = []rpc.Proc{{Step: 0, PID: 4242, PGID: 4242, Start: 99}}
	return rpc.Transition{Record: rec, From: rpc.StateQueued, Events: []rpc.Event{
		{Time: at, Type: rpc.EventStarted, State: rpc.StateRunning},
	}}
}

// finish moves rec from its state to the final state st at time at.
func finish(rec rpc.Record, st rpc.State, at time.Time) rpc.Transition {
	from := rec.State
	rec.Spec = nil
	rec.State = st
	rec.FinishedAt = &at
	rec.Run.Procs = nil
	rec.Steps = slices.Clone(rec.Steps)
	tail := "last line\n"
	for i := range rec.Steps {
		rec.Steps[i].State = st
		rec.Steps[i].OutputTail = &tail
	}
	typ := string(st)
	if st == rpc.StateSucceeded {
		rec.Result = json.RawMessage(`"done"`)
	}
	return rpc.Transition{Record: rec, From: from, Events: []rpc.Event{{Time: at, Type: typ, State: st}}}
}

// apply stores ts and returns the events.
func apply(t *testing.T, s daemon.Store, ts ...rpc.Transition) []rpc.Event {
	t.Helper()
	is := is.New(t)
	is.Helper()
	evs, err := s.Apply(context.Background(), ts)
	is.NoErr(err) // the transitions are stored
	return evs
}

// get reads job id.
func get(t *testing.T, s daemon.Store, id int64) *rpc.Record {
	t.Helper()
	is := is.New(t)
	is.Helper()
	rec, err := s.Get(context.Background(), id)
	is.NoErr(err) // the job is stored
	return rec
}

// bounds reads the event log's bounds.
func bounds(t *testing.T, s daemon.Store) (int64, int64) {
	t.Helper()
	is := is.New(t)
	is.Helper()
	oldest, last, err := s.Bounds(context.Background())
	is.NoErr(err) // the bounds are readable
	return oldest, last
}

// counts reads the counts.
func counts(t *testing.T, s daemon.Store) map[rpc.State]int {
	t.Helper()
	is := is.New(t)
	is.Helper()
	c, err := s.Counts(context.Background())
	is.NoErr(err) // the counts are readable
	return c
}

// code is the protocol code of err, or 0 for nil.
func code(err error) int {
	if err == nil {
		return 0
	}
	return rpc.CodeOf(err)
}

// data is the structured part of err.
func data(err error) rpc.ErrorData {
	if e := rpc.AsError(err); e.Data != nil {
		return *e.Data
	}
	return rpc.ErrorData{}
}

// consecutive reports whether the events' seqs follow one another from first.
func consecutive(evs []rpc.Event, first int64) bool {
	for i, ev := range evs {
		if ev.Seq != first+int64(i) {
			return false
		}
	}
	return true
}

func testStoreID(t *testing.T, s daemon.Store) {
	is := is.New(t)
	id := s.StoreID()
	is.True(id != "")         // a store has an id
	is.Equal(id, s.StoreID()) // and keeps it
	is.True(len(id) >= 16)    // long enough to be random
}

func testSubmitIDsInOrder(t *testing.T, s daemon.Store) {
	is := is.New(t)
	ctx := context.Background()
	specs := []rpc.Spec{Spec("a"), Spec("b"), Spec("c")}
	nj := []rpc.NewJob{NewJob("jobs[0]", specs[0], epoch()), NewJob("jobs[1]", specs[1], epoch()), NewJob("jobs[2]", specs[2], epoch())}
	recs, evs, err := s.Submit(ctx, nj)
	is.NoErr(err)                      // the batch is stored
	is.Equal(len(recs), 3)             // one record per job
	is.Equal(len(evs), 3)              // one submitted event per job
	is.True(recs[0].ID > 0)            // ids are positive
	is.Equal(recs[1].ID, recs[0].ID+1) // ids follow the order given
	is.Equal(recs[2].ID, recs[1].ID+1) // ids follow the order given
	for i, rec := range recs {
		is.Equal(rec.Name, specs[i].Name)         // records come back in the order given
		is.True(rec.Spec != nil)                  // with their spec
		is.Equal(rec.Spec.Name, specs[i].Name)    // their own spec
		is.Equal(rec.State, rpc.StateQueued)      // as submitted
		is.Equal(len(rec.After), 0)               // no dependencies
		is.Equal(evs[i].Job, rec.ID)              // the event names the new id
		is.Equal(evs[i].Type, rpc.EventSubmitted) // the event is the one given
		is.True(evs[i].Time.Equal(epoch()))       // with its time
		got := get(t, s, rec.ID)
		is.Equal(got.ID, rec.ID)                                // Get reads the job
		is.True(got.Spec != nil)                                // with its spec
		is.Equal(got.Spec.Steps[0].Exec.Argv, []string{"true"}) // the spec as given
		is.True(got.SubmittedAt.Equal(epoch()))                 // the record as given
	}
	is.True(consecutive(evs, evs[0].Seq)) // seqs are consecutive within a call

	more := submit(t, s, Spec("d"))
	is.True(more[0].ID > recs[2].ID) // later calls get later ids

	_, err = s.Get(ctx, more[0].ID+100)
	is.Equal(code(err), rpc.CodeNotFound)  // an unknown id is 1001
	is.Equal(data(err).ID, more[0].ID+100) // naming the id

	recs, evs, err = s.Submit(ctx, nil)
	is.NoErr(err)          // an empty submit is no error
	is.Equal(len(recs), 0) // and stores nothing
	is.Equal(len(evs), 0)  // and has no event
}

func testSeqGapFree(t *testing.T, s daemon.Store) {
	is := is.New(t)
	ctx := context.Background()
	_, last0 := bounds(t, s)
	var all []rpc.Event
	_, evs, err := s.Submit(ctx, []rpc.NewJob{NewJob("jobs[0]", Spec("a"), epoch()), NewJob("jobs[1]", Spec("b"), epoch())})
	is.NoErr(err) // stored
	all = append(all, evs...)
	recs, evs, err := s.Submit(ctx, []rpc.NewJob{NewJob("job", Spec("c"), epoch())})
	is.NoErr(err) // stored
	all = append(all, evs...)
	tr := start(recs[0], epoch().Add(time.Second))
	tr.Events = append(tr.Events, rpc.Event{Time: epoch().Add(time.Second), Type: rpc.EventStepStarted, State: rpc.StateRunning})
	all = append(all, apply(t, s, tr)...)
	// A failing call takes no seq.
	_, err = s.Apply(ctx, []rpc.Transition{start(recs[0], epoch())})
	is.Equal(code(err), rpc.CodeBadState) // the job is no longer queued
	all = append(all, apply(t, s, finish(*get(t, s, recs[0].ID), rpc.StateSucceeded, epoch().Add(time.Minute)))...)

	is.Equal(len(all), 6)                 // every stored event was returned
	is.Equal(all[0].Seq, last0+1)         // the first follows what was there
	is.True(consecutive(all, all[0].Seq)) // no gap across calls, and a failed call used none
	oldest, last := bounds(t, s)
	is.Equal(oldest, all[0].Seq)        // nothing was trimmed
	is.Equal(last, all[len(all)-1].Seq) // last is the last stored
	stored, err := s.Events(ctx, last0, 0)
	is.NoErr(err)                   // the log is readable
	is.Equal(len(stored), len(all)) // every event is in the log
	for i := range stored {
		is.Equal(stored[i].Seq, all[i].Seq)   // in seq order
		is.Equal(stored[i].Type, all[i].Type) // as returned
		is.Equal(stored[i].Job, all[i].Job)   // with its job
	}
}

func testApplyGuarded(t *testing.T, s daemon.Store) {
	is := is.New(t)
	ctx := context.Background()
	recs := submit(t, s, Spec("a"))
	at := epoch().Add(time.Second)
	evs := apply(t, s, start(recs[0], at))
	is.Equal(len(evs), 1)            // the transition's event is stored
	is.Equal(evs[0].Job, recs[0].ID) // for the job
	is.True(evs[0].Seq > 0)          // with a seq
	got := get(t, s, recs[0].ID)
	is.Equal(got.State, rpc.StateRunning) // the record was replaced
	is.True(got.StartedAt.Equal(at))      // with what the transition said
	is.Equal(got.Run.Procs[0].PID, 4242)  // the run state is stored too
	is.True(got.Spec != nil)              // the spec stays
	is.Equal(got.Spec.Name, "a")          // unchanged

	_, last := bounds(t, s)
	_, err := s.Apply(ctx, []rpc.Transition{start(recs[0], at)})
	is.Equal(code(err), rpc.CodeBadState)       // the job is not queued any more
	is.Equal(data(err).State, rpc.StateRunning) // the error says where it is
	is.Equal(data(err).ID, recs[0].ID)          // and which job
	bad := start(recs[0], at)
	bad.Record.ID = recs[0].ID + 1000
	_, err = s.Apply(ctx, []rpc.Transition{bad})
	is.Equal(code(err), rpc.CodeNotFound) // an unknown job is 1001
	_, last2 := bounds(t, s)
	is.Equal(last2, last)                                   // failed calls store no event
	is.Equal(get(t, s, recs[0].ID).State, rpc.StateRunning) // nor change the job
}

func testApplyAllOrNone(t *testing.T, s daemon.Store) {
	is := is.New(t)
	ctx := context.Background()
	recs := submit(t, s, Spec("a"), Spec("b"))
	apply(t, s, start(recs[0], epoch()))
	before := counts(t, s)
	_, last := bounds(t, s)
	// The second transition is stale: nothing of the call may be stored.
	_, err := s.Apply(ctx, []rpc.Transition{start(recs[1], epoch()), start(recs[0], epoch())})
	is.Equal(code(err), rpc.CodeBadState)                  // the stale transition fails the call
	is.Equal(get(t, s, recs[1].ID).State, rpc.StateQueued) // the valid one was not applied
	_, last2 := bounds(t, s)
	is.Equal(last2, last)          // no event was stored
	is.Equal(counts(t, s), before) // the counts did not move
	evs, err := s.Events(ctx, last, 0)
	is.NoErr(err)         // the log is readable
	is.Equal(len(evs), 0) // and has nothing new
	// The next call's events follow without a gap.
	evs = apply(t, s, start(recs[1], epoch()))
	is.Equal(evs[0].Seq, last+1) // no seq was used by the failed call

	evs, err = s.Apply(ctx, nil)
	is.NoErr(err)         // no transitions is no error
	is.Equal(len(evs), 0) // and no event
}

func testApplySameJobTwice(t *testing.T, s daemon.Store) {
	is := is.New(t)
	recs := submit(t, s, Spec("a"))
	tr1 := start(recs[0], epoch())
	tr2 := finish(tr1.Record, rpc.StateFailed, epoch().Add(time.Second))
	evs := apply(t, s, tr1, tr2)
	is.Equal(len(evs), 2)                                  // both transitions' events
	is.Equal(evs[0].Type, rpc.EventStarted)                // in order
	is.Equal(evs[1].Type, rpc.EventFailed)                 // in order
	is.Equal(evs[1].Seq, evs[0].Seq+1)                     // consecutive
	is.Equal(get(t, s, recs[0].ID).State, rpc.StateFailed) // the later sees the earlier
	c := counts(t, s)
	is.Equal(c[rpc.StateFailed], 1)  // counted once, in its last state
	is.Equal(c[rpc.StateQueued], 0)  // not left queued
	is.Equal(c[rpc.StateRunning], 0) // nor running
}

func testApplyMovesIndexes(t *testing.T, s daemon.Store) {
	is := is.New(t)
	ctx := context.Background()
	a := Spec("a")
	a.Queue = "q1"
	a.Priority = 5
	recs := submit(t, s, a, Spec("b"))
	// A transition may change the queue and priority of a queued job.
	moved := recs[0]
	moved.Spec = nil
	moved.Queue = "q2"
	moved.Priority = -3
	evs := apply(t, s, rpc.Transition{Record: moved, From: rpc.StateQueued})
	is.Equal(len(evs), 0) // a transition may store no event
	got := get(t, s, recs[0].ID)
	is.Equal(got.Queue, "q2")  // the record moved
	is.Equal(got.Priority, -3) // with its priority
	res, err := s.List(ctx, rpc.ListParams{Queue: "q2"})
	is.NoErr(err)                        // listable
	is.Equal(len(res.Jobs), 1)           // by its new queue
	is.Equal(res.Jobs[0].ID, recs[0].ID) // the moved job
	un, err := s.Unfinished(ctx)
	is.NoErr(err)        // readable
	is.Equal(len(un), 2) // both are still unfinished
}

func testKeyIdempotency(t *testing.T, s daemon.Store) {
	is := is.New(t)
	ctx := context.Background()
	sp := Spec("nightly")
	sp.Key = "build-1"
	recs, evs, err := s.Submit(ctx, []rpc.NewJob{NewJob("job", sp, epoch())})
	is.NoErr(err)         // stored
	is.Equal(len(evs), 1) // with its event
	id := recs[0].ID
	is.True(recs[0].Key != nil && *recs[0].Key == "build-1") // the job has its key
	apply(t, s, start(recs[0], epoch()))
	before := counts(t, s)
	_, last := bounds(t, s)

	// The same spec again: the stored job, nothing new.
	again, evs, err := s.Submit(ctx, []rpc.NewJob{NewJob("job", sp, epoch().Add(time.Hour))})
	is.NoErr(err)                              // an equal spec with the same key is no error
	is.Equal(again[0].ID, id)                  // it is the stored job
	is.Equal(again[0].State, rpc.StateRunning) // as it is now
	is.True(again[0].Spec != nil)              // with its spec
	is.Equal(again[0].Spec.Name, "nightly")    // the stored spec
	is.Equal(len(evs), 0)                      // no event
	_, last2 := bounds(t, s)
	is.Equal(last2, last)          // nothing stored
	is.Equal(counts(t, s), before) // no job created

	// A different spec with the key: 1008, and the whole call fails.
	other := sp
	other.Name = "other"
	_, _, err = s.Submit(ctx, []rpc.NewJob{NewJob("jobs[0]", Spec("fresh"), epoch()), NewJob("jobs[1]", other, epoch())})
	is.Equal(code(err), rpc.CodeKeyConflict) // the key is taken by another spec
	is.Equal(data(err).Key, "build-1")       // the error names the key
	is.Equal(data(err).ID, id)               // and the job that has it
	_, last3 := bounds(t, s)
	is.Equal(last3, last)          // nothing stored
	is.Equal(counts(t, s), before) // the first job of the call was not created either

	// A batch mixing the stored key and a new job creates only the new one.
	recs, evs, err = s.Submit(ctx, []rpc.NewJob{NewJob("jobs[0]", sp, epoch()), NewJob("jobs[1]", Spec("new"), epoch())})
	is.NoErr(err)                    // stored
	is.Equal(recs[0].ID, id)         // the keyed entry is the stored job
	is.True(recs[1].ID > id)         // the other is new
	is.Equal(len(evs), 1)            // one event, for the new job
	is.Equal(evs[0].Job, recs[1].ID) // naming it
	is.Equal(evs[0].Seq, last+1)     // right after the last stored
}

func testKeyWithinBatch(t *testing.T, s daemon.Store) {
	is := is.New(t)
	ctx := context.Background()
	sp := Spec("k")
	sp.Key = "same"
	recs, evs, err := s.Submit(ctx, []rpc.NewJob{NewJob("jobs[0]", sp, epoch()), NewJob("jobs[1]", sp, epoch())})
	is.NoErr(err)                              // an equal spec twice in a batch is one job
	is.Equal(recs[0].ID, recs[1].ID)           // the same job
	is.Equal(len(evs), 1)                      // created once
	is.Equal(counts(t, s)[rpc.StateQueued], 1) // one job stored

	other := sp
	other.Key = "twice"
	diff := other
	diff.Name = "different"
	_, last := bounds(t, s)
	_, _, err = s.Submit(ctx, []rpc.NewJob{NewJob("jobs[0]", other, epoch()), NewJob("jobs[1]", diff, epoch())})
	is.Equal(code(err), rpc.CodeKeyConflict) // two specs with one key in a batch conflict
	is.Equal(data(err).Key, "twice")         // naming the key
	_, last2 := bounds(t, s)
	is.Equal(last2, last)                      // nothing stored
	is.Equal(counts(t, s)[rpc.StateQueued], 1) // no job created
}

func testAfterResolution(t *testing.T, s daemon.Store) {
	is := is.New(t)
	ctx := context.Background()
	x := submit(t, s, Spec("x"))[0]
	a := Spec("a")
	b := Spec("b")
	b.AfterIndex = []int{0}
	c := Spec("c")
	c.After = []int64{x.ID}
	c.AfterIndex = []int{0, 1}
	recs := submit(t, s, a, b, c)
	is.Equal(recs[1].After, []int64{recs[0].ID})                   // after_index names earlier entries of the batch
	is.Equal(recs[2].After, []int64{x.ID, recs[0].ID, recs[1].ID}) // after ids and after_index together
	got := get(t, s, recs[2].ID)
	is.Equal(got.After, []int64{x.ID, recs[0].ID, recs[1].ID}) // stored resolved
	is.Equal(got.Spec.AfterIndex, []int{0, 1})                 // the spec is kept as given

	// A job that unfinished jobs wait for is needed by them.
	apply(t, s, start(x, epoch()))
	apply(t, s, finish(*get(t, s, x.ID), rpc.StateSucceeded, epoch()))
	_, _, err := s.Remove(ctx, []int64{x.ID}, epoch())
	is.Equal(code(err), rpc.CodeBadState)             // x is needed
	is.Equal(data(err).NeededBy, []int64{recs[2].ID}) // by c
}

func testAfterErrors(t *testing.T, s daemon.Store) {
	is := is.New(t)
	ctx := context.Background()
	x := submit(t, s, Spec("x"))[0]
	before := counts(t, s)
	_, last := bounds(t, s)
	nothing := func() {
		t.Helper()
		_, l := bounds(t, s)
		is.Equal(l, last)              // nothing stored
		is.Equal(counts(t, s), before) // no job created
	}

	bad := Spec("bad")
	bad.After = []int64{x.ID, x.ID + 999}
	_, _, err := s.Submit(ctx, []rpc.NewJob{NewJob("jobs[0]", Spec("ok"), epoch()), NewJob("jobs[1]", bad, epoch())})
	is.Equal(code(err), rpc.CodeInvalidParams)                            // an unknown dependency is invalid
	is.Equal(data(err).Field, "jobs[1].after[1]")                         // naming the field
	is.Equal(data(err).Reason, fmt.Sprintf("job %d not found", x.ID+999)) // and the job
	nothing()

	self := Spec("self")
	self.AfterIndex = []int{1}
	_, _, err = s.Submit(ctx, []rpc.NewJob{NewJob("jobs[0]", Spec("ok"), epoch()), NewJob("jobs[1]", self, epoch())})
	is.Equal(code(err), rpc.CodeInvalidParams)          // after_index must name an earlier entry
	is.Equal(data(err).Field, "jobs[1].after_index[0]") // naming the field
	nothing()

	later := Spec("later")
	later.AfterIndex = []int{0, 5}
	_, _, err = s.Submit(ctx, []rpc.NewJob{NewJob("jobs[0]", Spec("ok"), epoch()), NewJob("jobs[1]", later, epoch())})
	is.Equal(code(err), rpc.CodeInvalidParams)          // an index past the batch
	is.Equal(data(err).Field, "jobs[1].after_index[1]") // naming the field
	nothing()

	neg := Spec("neg")
	neg.AfterIndex = []int{-1}
	_, _, err = s.Submit(ctx, []rpc.NewJob{NewJob("job", neg, epoch())})
	is.Equal(code(err), rpc.CodeInvalidParams)      // a negative index
	is.Equal(data(err).Field, "job.after_index[0]") // naming the field
	nothing()

	// The next job gets the next id: the failed calls took none visibly.
	next := submit(t, s, Spec("next"))[0]
	is.True(next.ID > x.ID) // ids still grow
	_, l := bounds(t, s)
	is.Equal(l, last+1) // and seqs run on without a gap
}

// finished submits a job and moves it to state st, finished at at.
func finished(t *testing.T, s daemon.Store, sp rpc.Spec, st rpc.State, at time.Time) rpc.Record {
	t.Helper()
	rec := submit(t, s, sp)[0]
	tr := start(rec, at)
	apply(t, s, tr)
	apply(t, s, finish(tr.Record, st, at))
	return *get(t, s, rec.ID)
}

func testRemove(t *testing.T, s daemon.Store) {
	is := is.New(t)
	ctx := context.Background()
	a := finished(t, s, Spec("a"), rpc.StateSucceeded, epoch())
	bs := Spec("b")
	bs.After = []int64{a.ID}
	b := submit(t, s, bs)[0]

	_, _, err := s.Remove(ctx, []int64{a.ID}, epoch())
	is.Equal(code(err), rpc.CodeBadState)       // a is needed by b
	is.Equal(data(err).ID, a.ID)                // naming a
	is.Equal(data(err).NeededBy, []int64{b.ID}) // and who needs it
	_, _, err = s.Remove(ctx, []int64{b.ID}, epoch())
	is.Equal(code(err), rpc.CodeBadState)      // b is not final
	is.Equal(data(err).State, rpc.StateQueued) // the error says its state

	tr := start(b, epoch())
	apply(t, s, tr)
	apply(t, s, finish(tr.Record, rpc.StateCancelled, epoch()))
	before := counts(t, s)
	_, last := bounds(t, s)
	now := epoch().Add(time.Hour)
	ids, evs, err := s.Remove(ctx, []int64{a.ID, b.ID, b.ID + 1000, a.ID}, now)
	is.NoErr(err)                      // final jobs nobody waits for can go
	is.Equal(ids, []int64{a.ID, b.ID}) // unknown ids are ignored, each once
	is.Equal(len(evs), 2)              // one removed event each
	for i, ev := range evs {
		is.Equal(ev.Type, rpc.EventRemoved) // a removed event
		is.Equal(ev.Job, ids[i])            // for the job
		is.True(ev.Time.Equal(now))         // at now
		is.Equal(ev.Seq, last+1+int64(i))   // with the next seqs
	}
	_, err = s.Get(ctx, a.ID)
	is.Equal(code(err), rpc.CodeNotFound) // the job is gone
	c := counts(t, s)
	is.Equal(c[rpc.StateSucceeded], before[rpc.StateSucceeded]-1) // counted out
	is.Equal(c[rpc.StateCancelled], before[rpc.StateCancelled]-1) // counted out
	stored, err := s.Events(ctx, 0, 0)
	is.NoErr(err)                                          // the log is readable
	is.Equal(stored[0].Job, a.ID)                          // a's own events are kept
	is.Equal(stored[len(stored)-1].Type, rpc.EventRemoved) // and the removal is logged

	ids, evs, err = s.Remove(ctx, []int64{a.ID}, now)
	is.NoErr(err)         // removing a removed job is no error
	is.Equal(len(ids), 0) // and removes nothing
	is.Equal(len(evs), 0) // with no event

	// A key is free again once its job is removed.
	k := Spec("k")
	k.Key = "again"
	kr := finished(t, s, k, rpc.StateSucceeded, epoch())
	_, _, err = s.Remove(ctx, []int64{kr.ID}, now)
	is.NoErr(err) // removed
	k.Name = "another spec"
	nr := submit(t, s, k)[0]
	is.True(nr.ID != kr.ID) // the key makes a new job
}

func testRemoveAllOrNone(t *testing.T, s daemon.Store) {
	is := is.New(t)
	ctx := context.Background()
	a := finished(t, s, Spec("a"), rpc.StateSucceeded, epoch())
	q := submit(t, s, Spec("q"))[0]
	before := counts(t, s)
	_, last := bounds(t, s)
	_, _, err := s.Remove(ctx, []int64{a.ID, q.ID}, epoch())
	is.Equal(code(err), rpc.CodeBadState) // q is not final
	is.Equal(data(err).ID, q.ID)          // naming q
	get(t, s, a.ID)                       // a is still there
	_, l := bounds(t, s)
	is.Equal(l, last)              // no event stored
	is.Equal(counts(t, s), before) // nothing counted out
}

func testPrune(t *testing.T, s daemon.Store) {
	is := is.New(t)
	ctx := context.Background()
	old := epoch().Add(-2 * time.Hour)
	oldOK := finished(t, s, Spec("old ok"), rpc.StateSucceeded, old)
	oldFail := finished(t, s, Spec("old fail"), rpc.StateFailed, old)
	newOK := finished(t, s, Spec("new ok"), rpc.StateSucceeded, epoch())
	needed := finished(t, s, Spec("needed"), rpc.StateSucceeded, old)
	ws := Spec("waiting")
	ws.After = []int64{needed.ID}
	waiting := submit(t, s, ws)[0]
	queued := submit(t, s, Spec("queued"))[0]

	_, last := bounds(t, s)
	now := epoch().Add(time.Minute)
	ids, evs, err := s.Prune(ctx, []rpc.State{rpc.StateSucceeded}, epoch().Add(-time.Hour), now)
	is.NoErr(err)                           // prune works
	is.Equal(ids, []int64{oldOK.ID})        // only old succeeded jobs that nobody needs
	is.Equal(len(evs), 1)                   // with a removed event
	is.Equal(evs[0].Type, rpc.EventRemoved) // of type removed
	is.Equal(evs[0].Job, oldOK.ID)          // for the job
	is.Equal(evs[0].Seq, last+1)            // next in the log
	is.True(evs[0].Time.Equal(now))         // at now

	ids, evs, err = s.Prune(ctx, nil, time.Time{}, now)
	is.NoErr(err) // prune works
	sort.Slice(ids, func(i, j int) bool { return ids[i] < ids[j] })
	is.Equal(ids, []int64{oldFail.ID, newOK.ID}) // every final job but the needed one
	is.Equal(len(evs), 2)                        // each with its event
	is.Equal(evs[1].Seq, evs[0].Seq+1)           // consecutive
	get(t, s, needed.ID)                         // the needed job stays
	get(t, s, waiting.ID)                        // unfinished jobs stay
	get(t, s, queued.ID)                         // unfinished jobs stay
	c := counts(t, s)
	is.Equal(c[rpc.StateSucceeded], 1) // only the needed one
	is.Equal(c[rpc.StateFailed], 0)    // pruned
	is.Equal(c[rpc.StateQueued], 2)    // untouched

	ids, _, err = s.Prune(ctx, []rpc.State{rpc.StateQueued}, time.Time{}, now)
	is.NoErr(err)         // asking for unfinished states is no error
	is.Equal(len(ids), 0) // but removes nothing
}

// submitAt submits a job whose submitted event has time at.
func submitAt(t *testing.T, s daemon.Store, name string, at time.Time) rpc.Event {
	t.Helper()
	is := is.New(t)
	is.Helper()
	_, evs, err := s.Submit(context.Background(), []rpc.NewJob{NewJob("job", Spec(name), at)})
	is.NoErr(err) // stored
	return evs[0]
}

func testTrimAndBounds(t *testing.T, s daemon.Store) {
	is := is.New(t)
	ctx := context.Background()
	oldest, last := bounds(t, s)
	is.Equal(oldest, last+1) // an empty log has oldest = last+1

	e1 := submitAt(t, s, "a", epoch())
	e2 := submitAt(t, s, "b", epoch().Add(time.Hour))
	e3 := submitAt(t, s, "c", epoch().Add(2*time.Hour))
	e4 := submitAt(t, s, "d", epoch()) // older than the one before it
	oldest, last = bounds(t, s)
	is.Equal(oldest, e1.Seq) // the oldest stored
	is.Equal(last, e4.Seq)   // the last stored

	n, err := s.TrimEvents(ctx, epoch().Add(90*time.Minute))
	is.NoErr(err)  // trim works
	is.Equal(n, 2) // the two older ones at the oldest end; e4 stays behind e3
	oldest, last = bounds(t, s)
	is.Equal(oldest, e3.Seq) // the log starts at the first kept
	is.Equal(last, e4.Seq)   // and still ends at the last
	evs, err := s.Events(ctx, 0, 0)
	is.NoErr(err)                // readable
	is.Equal(len(evs), 2)        // e3 and e4
	is.Equal(evs[0].Seq, e3.Seq) // without a gap
	is.Equal(evs[1].Seq, e4.Seq) // to the last
	_ = e2

	n, err = s.TrimEvents(ctx, epoch().Add(90*time.Minute))
	is.NoErr(err)  // trim again
	is.Equal(n, 0) // nothing more at the oldest end

	n, err = s.TrimEvents(ctx, epoch().Add(24*time.Hour))
	is.NoErr(err)  // trim everything
	is.Equal(n, 2) // the rest
	oldest, last = bounds(t, s)
	is.Equal(last, e4.Seq)   // last stays: seqs are never reused
	is.Equal(oldest, last+1) // the log is empty
	evs, err = s.Events(ctx, 0, 0)
	is.NoErr(err)         // readable
	is.Equal(len(evs), 0) // empty

	e5 := submitAt(t, s, "e", epoch())
	is.Equal(e5.Seq, e4.Seq+1) // the next seq follows the last given, not reused
	oldest, last = bounds(t, s)
	is.Equal(oldest, e5.Seq) // the log starts again
	is.Equal(last, e5.Seq)   // at the new event
}

func testEvents(t *testing.T, s daemon.Store) {
	is := is.New(t)
	ctx := context.Background()
	var all []rpc.Event
	for i := range 5 {
		all = append(all, submitAt(t, s, fmt.Sprint(i), epoch()))
	}
	evs, err := s.Events(ctx, all[1].Seq, 2)
	is.NoErr(err)                             // readable
	is.Equal(len(evs), 2)                     // at most limit
	is.Equal(evs[0].Seq, all[2].Seq)          // after the seq given
	is.Equal(evs[1].Seq, all[3].Seq)          // in order
	is.Equal(evs[0].Job, all[2].Job)          // as stored
	is.Equal(evs[0].Type, rpc.EventSubmitted) // as stored
	is.Equal(evs[0].State, rpc.StateQueued)   // as stored
	evs, err = s.Events(ctx, all[4].Seq, 10)
	is.NoErr(err)         // readable
	is.Equal(len(evs), 0) // nothing after the last
	evs, err = s.Events(ctx, 0, 0)
	is.NoErr(err)         // readable
	is.Equal(len(evs), 5) // a limit of 0 reads all
}

// listAll pages through List with p and returns every id.
func listAll(t *testing.T, s daemon.Store, p rpc.ListParams) []int64 {
	t.Helper()
	is := is.New(t)
	is.Helper()
	var ids []int64
	for range 100 {
		res, err := s.List(context.Background(), p)
		is.NoErr(err) // listable
		lim := p.Limit
		if lim == 0 {
			lim = 100
		}
		is.True(len(res.Jobs) <= lim) // a page holds at most limit
		for _, j := range res.Jobs {
			ids = append(ids, j.ID)
		}
		if res.NextCursor == nil {
			return ids
		}
		is.Equal(len(res.Jobs), p.Limit) // a page before the last is full
		p.Cursor = res.NextCursor
	}
	t.Fatal("List does not end")
	return nil
}

func testList(t *testing.T, s daemon.Store) {
	is := is.New(t)
	ctx := context.Background()
	var ids []int64
	for i := range 7 {
		ids = append(ids, submit(t, s, Spec(fmt.Sprint(i)))[0].ID)
	}
	desc := slices.Clone(ids)
	slices.Reverse(desc)

	res, err := s.List(ctx, rpc.ListParams{})
	is.NoErr(err)                     // listable
	is.Equal(len(res.Jobs), 7)        // all, within the default limit
	is.True(res.NextCursor == nil)    // nothing more
	is.Equal(res.Jobs[0].ID, desc[0]) // newest first by default

	is.Equal(listAll(t, s, rpc.ListParams{Limit: 2}), desc)                // pages of two, newest first
	is.Equal(listAll(t, s, rpc.ListParams{Limit: 3, Order: "asc"}), ids)   // oldest first
	is.Equal(listAll(t, s, rpc.ListParams{Limit: 7}), desc)                // a full last page ends
	is.Equal(listAll(t, s, rpc.ListParams{Limit: 1, Order: "desc"}), desc) // one at a time

	res, err = s.List(ctx, rpc.ListParams{Limit: 7})
	is.NoErr(err)                  // listable
	is.True(res.NextCursor == nil) // exactly limit jobs: no next page

	bad := "not a cursor"
	_, err = s.List(ctx, rpc.ListParams{Cursor: &bad})
	is.Equal(code(err), rpc.CodeInvalidParams) // a cursor that List did not make
}

func testListFilters(t *testing.T, s daemon.Store) {
	is := is.New(t)
	ctx := context.Background()
	mk := func(name, queue string, labels map[string]string) rpc.Spec {
		sp := Spec(name)
		sp.Queue = queue
		sp.Labels = labels
		return sp
	}
	a := finished(t, s, mk("a", "q1", map[string]string{"env": "prod", "team": "x"}), rpc.StateSucceeded, epoch())
	b := finished(t, s, mk("b", "q2", map[string]string{"env": "prod"}), rpc.StateFailed, epoch())
	c := submit(t, s, mk("c", "q1", map[string]string{"env": "dev"}))[0]
	d := submit(t, s, mk("d", "q1", map[string]string{"env": "prod", "team": "x"}))[0]
	apply(t, s, start(d, epoch()))
	e := finished(t, s, mk("e", "q2", nil), rpc.StateCancelled, epoch())

	list := func(p rpc.ListParams) []int64 { t.Helper(); return listAll(t, s, p) }
	is.Equal(list(rpc.ListParams{State: []rpc.State{rpc.StateSucceeded, rpc.StateFailed}, Limit: 1}), []int64{b.ID, a.ID})                                       // any of the states
	is.Equal(list(rpc.ListParams{State: []rpc.State{rpc.StateQueued, rpc.StateRunning, rpc.StateCancelled}, Order: "asc", Limit: 2}), []int64{c.ID, d.ID, e.ID}) // merged in id order
	is.Equal(list(rpc.ListParams{State: []rpc.State{rpc.StateRunning}}), []int64{d.ID})                                                                          // one state
	is.Equal(list(rpc.ListParams{Queue: "q1", Limit: 1}), []int64{d.ID, c.ID, a.ID})                                                                             // by queue
	is.Equal(list(rpc.ListParams{Labels: map[string]string{"env": "prod"}, Limit: 2}), []int64{d.ID, b.ID, a.ID})                                                // by label
	is.Equal(list(rpc.ListParams{Labels: map[string]string{"env": "prod", "team": "x"}, Limit: 5}), []int64{d.ID, a.ID})                                         // every label must match
	is.Equal(list(rpc.ListParams{Queue: "q1", State: []rpc.State{rpc.StateSucceeded, rpc.StateQueued}}), []int64{c.ID, a.ID})                                    // filters together
	is.Equal(len(list(rpc.ListParams{Queue: "nope"})), 0)                                                                                                        // no match

	res, err := s.List(ctx, rpc.ListParams{State: []rpc.State{rpc.StateSucceeded}})
	is.NoErr(err)              // listable
	is.Equal(len(res.Jobs), 1) // a
	j := res.Jobs[0]
	is.True(j.Spec == nil)                // listed jobs leave out the spec
	is.True(j.Result == nil)              // and the result
	is.True(j.Steps[0].OutputTail == nil) // and output tails
	is.Equal(j.Labels["team"], "x")       // but keep the rest
	full := get(t, s, a.ID)
	is.Equal(string(full.Result), `"done"`)  // Get has the result
	is.True(full.Steps[0].OutputTail != nil) // and the tails
}

func testUnfinished(t *testing.T, s daemon.Store) {
	is := is.New(t)
	ctx := context.Background()
	recs := submit(t, s, Spec("a"), Spec("b"), Spec("c"))
	apply(t, s, start(recs[1], epoch()))
	tr := start(recs[2], epoch())
	apply(t, s, tr)
	apply(t, s, finish(tr.Record, rpc.StateSucceeded, epoch()))
	un, err := s.Unfinished(ctx)
	is.NoErr(err)                           // readable
	is.Equal(len(un), 2)                    // queued and running jobs only
	is.Equal(un[0].ID, recs[0].ID)          // in id order
	is.Equal(un[0].State, rpc.StateQueued)  // queued
	is.Equal(un[1].ID, recs[1].ID)          // in id order
	is.Equal(un[1].State, rpc.StateRunning) // running
	is.True(un[1].Spec != nil)              // with specs
	is.Equal(un[1].Spec.Name, "b")          // their own
	is.Equal(un[1].Run.Procs[0].PGID, 4242) // with the run state, to kill leftovers
}

func testCounts(t *testing.T, s daemon.Store) {
	is := is.New(t)
	c := counts(t, s)
	for _, st := range []rpc.State{rpc.StateQueued, rpc.StateRunning, rpc.StateSucceeded, rpc.StateFailed, rpc.StateCancelled} {
		v, ok := c[st]
		is.True(ok)    // every job state is present
		is.Equal(v, 0) // and zero in an empty store
	}
	recs := submit(t, s, Spec("a"), Spec("b"), Spec("c"), Spec("d"))
	apply(t, s, start(recs[0], epoch()))
	tr := start(recs[1], epoch())
	apply(t, s, tr)
	apply(t, s, finish(tr.Record, rpc.StateFailed, epoch()))
	c = counts(t, s)
	is.Equal(c[rpc.StateQueued], 2)    // two left queued
	is.Equal(c[rpc.StateRunning], 1)   // one running
	is.Equal(c[rpc.StateFailed], 1)    // one failed
	is.Equal(c[rpc.StateSucceeded], 0) // none succeeded
}

func testTemplates(t *testing.T, s daemon.Store) {
	is := is.New(t)
	ctx := context.Background()
	def := "3"
	tb := rpc.Template{Name: "backup", Spec: json.RawMessage(`{"steps":[{"shell":{"script":"tar {{dir}}"}}]}`),
		Params: map[string]rpc.TemplateParam{"dir": {Required: true}, "level": {Default: &def}}, CreatedAt: epoch(), UpdatedAt: epoch()}
	ta := rpc.Template{Name: "archive", Spec: json.RawMessage(`{}`), CreatedAt: epoch(), UpdatedAt: epoch()}
	is.NoErr(s.PutTemplate(ctx, tb)) // stored
	is.NoErr(s.PutTemplate(ctx, ta)) // stored
	got, err := s.Template(ctx, "backup")
	is.NoErr(err)                               // readable
	is.Equal(got.Name, "backup")                // by name
	is.Equal(string(got.Spec), string(tb.Spec)) // with its spec
	is.True(got.Params["dir"].Required)         // and params
	is.Equal(*got.Params["level"].Default, "3") // with defaults
	all, err := s.Templates(ctx)
	is.NoErr(err)                    // readable
	is.Equal(len(all), 2)            // both
	is.Equal(all[0].Name, "archive") // in name order
	is.Equal(all[1].Name, "backup")  // in name order

	tb.Spec = json.RawMessage(`{"steps":[]}`)
	tb.UpdatedAt = epoch().Add(time.Hour)
	is.NoErr(s.PutTemplate(ctx, tb)) // replaced
	got, err = s.Template(ctx, "backup")
	is.NoErr(err)                              // readable
	is.Equal(string(got.Spec), `{"steps":[]}`) // the new spec
	is.True(got.UpdatedAt.Equal(tb.UpdatedAt)) // updated
	is.True(got.CreatedAt.Equal(epoch()))      // created as given

	is.NoErr(s.RemoveTemplate(ctx, "backup")) // removed
	_, err = s.Template(ctx, "backup")
	is.Equal(code(err), rpc.CodeNoTemplate)                             // gone
	is.Equal(data(err).Name, "backup")                                  // naming it
	is.Equal(code(s.RemoveTemplate(ctx, "backup")), rpc.CodeNoTemplate) // removing an unknown template is 1003
	all, err = s.Templates(ctx)
	is.NoErr(err)         // readable
	is.Equal(len(all), 1) // one left
}

func testQueues(t *testing.T, s daemon.Store) {
	is := is.New(t)
	ctx := context.Background()
	qs, err := s.Queues(ctx)
	is.NoErr(err)        // readable
	is.Equal(len(qs), 0) // none stored yet
	four := 4
	is.NoErr(s.PutQueue(ctx, rpc.Queue{Name: "slow", Parallel: &four}))             // stored
	is.NoErr(s.PutQueue(ctx, rpc.Queue{Name: "fast", Paused: true}))                // stored
	is.NoErr(s.PutQueue(ctx, rpc.Queue{Name: "slow", Parallel: nil, Paused: true})) // replaced
	qs, err = s.Queues(ctx)
	is.NoErr(err)                  // readable
	is.Equal(len(qs), 2)           // two queues
	is.Equal(qs[0].Name, "fast")   // in name order
	is.True(qs[0].Paused)          // as stored
	is.Equal(qs[1].Name, "slow")   // in name order
	is.True(qs[1].Parallel == nil) // replaced settings
	is.True(qs[1].Paused)          // replaced settings
}

func testConcurrentSubmits(t *testing.T, s daemon.Store) {
	is := is.New(t)
	ctx := context.Background()
	_, last := bounds(t, s)
	const workers, each = 8, 5
	var mu sync.Mutex
	var ids []int64
	var seqs []int64
	var errs []error
	var wg sync.WaitGroup
	for w := range workers {
		wg.Go(func() {
			for i := range each {
				recs, evs, err := s.Submit(ctx, []rpc.NewJob{NewJob("job", Spec(fmt.Sprintf("%d-%d", w, i)), epoch())})
				mu.Lock()
				if err != nil {
					errs = append(errs, err)
				} else {
					ids = append(ids, recs[0].ID)
					seqs = append(seqs, evs[0].Seq)
				}
				mu.Unlock()
			}
		})
	}
	wg.Wait()
	is.Equal(len(errs), 0) // every submit is stored
	slices.Sort(ids)
	is.Equal(len(slices.Compact(ids)), workers*each) // distinct ids
	slices.Sort(seqs)
	for i, seq := range seqs {
		is.Equal(seq, last+1+int64(i)) // seqs run without a gap
	}
	is.Equal(counts(t, s)[rpc.StateQueued], workers*each) // every job counted
}

// shellEnv is an environment like a shell's, told apart by which.
func shellEnv(which string) map[string]string {
	env := map[string]string{"SHELL": "/bin/bash", "WHICH": which}
	for i := range 100 {
		env[fmt.Sprintf("VAR_%03d", i)] = fmt.Sprintf("value %d of the shell %s, long enough to matter", i, which)
	}
	return env
}

// withEnv is Spec(name) with env.
func withEnv(name string, env map[string]string) rpc.Spec {
	sp := Spec(name)
	sp.Env = env
	return sp
}

// envRefs reads the reference counts of s's environments, sorted, or nil when s
// keeps none apart.
func envRefs(t *testing.T, s daemon.Store) []int64 {
	t.Helper()
	is := is.New(t)
	is.Helper()
	ec, ok := s.(EnvCounter)
	if !ok {
		return nil
	}
	refs, err := ec.EnvRefs(context.Background())
	is.NoErr(err) // the counts are readable
	slices.Sort(refs)
	return refs
}

// hasEnvCounter reports whether s counts its environments.
func hasEnvCounter(s daemon.Store) bool {
	_, ok := s.(EnvCounter)
	return ok
}

func testEnvShared(t *testing.T, s daemon.Store) {
	is := is.New(t)
	ctx := context.Background()
	one, other := shellEnv("one"), shellEnv("other")
	recs := submit(t, s, withEnv("a", one), withEnv("b", one), withEnv("c", other), Spec("none"))
	recs = append(recs, submit(t, s, withEnv("d", shellEnv("one")))...)
	if hasEnvCounter(s) {
		is.Equal(envRefs(t, s), []int64{1, 3}) // each distinct environment once: one shared by three specs, other by one
	}
	for i, want := range []map[string]string{one, one, other, {}, one} {
		got := get(t, s, recs[i].ID)
		is.Equal(got.Spec.Env, want)          // each job gets back exactly its environment
		is.Equal(got.Spec.Name, recs[i].Name) // with the rest of its spec
	}
	is.Equal(get(t, s, recs[3].ID).Spec.Env != nil, true) // an empty env stays empty, not null

	un, err := s.Unfinished(ctx)
	is.NoErr(err)        // readable
	is.Equal(len(un), 5) // every job is queued
	un[0].Spec.Env["WHICH"] = "changed by the caller"
	is.Equal(un[1].Spec.Env, one)                 // jobs sharing an environment do not share its map
	is.Equal(un[2].Spec.Env, other)               // and each has its own
	is.Equal(un[4].Spec.Env, one)                 // the one submitted in another call too
	is.Equal(get(t, s, recs[0].ID).Spec.Env, one) // and the stored one is untouched
}

func testEnvFreedByRemove(t *testing.T, s daemon.Store) {
	is := is.New(t)
	ctx := context.Background()
	one := shellEnv("one")
	a := finished(t, s, withEnv("a", one), rpc.StateSucceeded, epoch())
	b := finished(t, s, withEnv("b", one), rpc.StateFailed, epoch())
	c := finished(t, s, withEnv("c", shellEnv("other")), rpc.StateSucceeded, epoch())
	if hasEnvCounter(s) {
		is.Equal(envRefs(t, s), []int64{1, 2}) // two environments: one shared by two jobs
	}

	_, _, err := s.Remove(ctx, []int64{a.ID}, epoch())
	is.NoErr(err)                           // removed
	is.Equal(get(t, s, b.ID).Spec.Env, one) // the job sharing its environment keeps it
	if hasEnvCounter(s) {
		is.Equal(envRefs(t, s), []int64{1, 1}) // one reference fewer
	}
	_, _, err = s.Remove(ctx, []int64{b.ID, c.ID}, epoch())
	is.NoErr(err) // removed
	if hasEnvCounter(s) {
		is.Equal(len(envRefs(t, s)), 0) // the last references free both environments
	}

	// An environment freed is stored again by the next spec that has it.
	d := submit(t, s, withEnv("d", one))[0]
	is.Equal(get(t, s, d.ID).Spec.Env, one) // stored afresh
	if hasEnvCounter(s) {
		is.Equal(envRefs(t, s), []int64{1}) // counted afresh
	}
}

func testEnvFreedByPrune(t *testing.T, s daemon.Store) {
	is := is.New(t)
	ctx := context.Background()
	one := shellEnv("one")
	old := epoch().Add(-2 * time.Hour)
	finished(t, s, withEnv("old a", one), rpc.StateSucceeded, old)
	finished(t, s, withEnv("old b", shellEnv("other")), rpc.StateFailed, old)
	keep := finished(t, s, withEnv("new", one), rpc.StateSucceeded, epoch())
	queued := submit(t, s, withEnv("queued", one))[0]
	if hasEnvCounter(s) {
		is.Equal(envRefs(t, s), []int64{1, 3}) // one shared by three jobs, other by one
	}

	ids, _, err := s.Prune(ctx, nil, epoch().Add(-time.Hour), epoch())
	is.NoErr(err)         // pruned
	is.Equal(len(ids), 2) // the two old jobs
	if hasEnvCounter(s) {
		is.Equal(envRefs(t, s), []int64{2}) // other is freed; one keeps two references
	}
	is.Equal(get(t, s, keep.ID).Spec.Env, one)   // the jobs left keep their environment
	is.Equal(get(t, s, queued.ID).Spec.Env, one) // the jobs left keep their environment

	ids, _, err = s.Prune(ctx, nil, time.Time{}, epoch())
	is.NoErr(err)         // pruned
	is.Equal(len(ids), 1) // the newer final job
	if hasEnvCounter(s) {
		is.Equal(envRefs(t, s), []int64{1}) // the queued job's reference is left
	}
}

func testEnvFailedBatch(t *testing.T, s daemon.Store) {
	is := is.New(t)
	ctx := context.Background()
	one := shellEnv("one")
	submit(t, s, withEnv("a", one))
	before := envRefs(t, s)
	if hasEnvCounter(s) {
		is.Equal(before, []int64{1}) // one environment, one reference
	}

	bad := withEnv("bad", one)
	bad.After = []int64{9999}
	nj := []rpc.NewJob{
		NewJob("jobs[0]", withEnv("fine", one), epoch()),
		NewJob("jobs[1]", withEnv("new", shellEnv("other")), epoch()),
		NewJob("jobs[2]", bad, epoch()),
	}
	_, _, err := s.Submit(ctx, nj)
	is.Equal(code(err), rpc.CodeInvalidParams) // the batch fails on its last job
	is.Equal(envRefs(t, s), before)            // and counts no reference, stores no environment

	// Concurrent calls share commits: a failing one leaves the others' counts.
	var wg sync.WaitGroup
	errs := make([]error, 8)
	for i := range errs {
		wg.Add(1)
		go func() {
			defer wg.Done()
			sp := withEnv(fmt.Sprintf("c%d", i), one)
			if i%2 == 1 {
				sp.After = []int64{9999}
			}
			_, _, errs[i] = s.Submit(ctx, []rpc.NewJob{NewJob("job", sp, epoch())})
		}()
	}
	wg.Wait()
	for i, err := range errs {
		if i%2 == 1 {
			is.Equal(code(err), rpc.CodeInvalidParams) // the ones with a bad dependency are refused
		} else {
			is.NoErr(err) // the others are stored
		}
	}
	if hasEnvCounter(s) {
		is.Equal(envRefs(t, s), []int64{5}) // the first job and the four stored ones
	}
}

func testEnvKeyIdempotency(t *testing.T, s daemon.Store) {
	is := is.New(t)
	ctx := context.Background()
	sp := withEnv("keyed", shellEnv("one"))
	sp.Key = "k"
	first := submit(t, s, sp)[0]
	again := submit(t, s, sp)[0]
	is.Equal(again.ID, first.ID)              // the same spec and key is the same job
	is.Equal(again.Spec.Env, shellEnv("one")) // answered with its environment
	if hasEnvCounter(s) {
		is.Equal(envRefs(t, s), []int64{1}) // and counts no second reference
	}
	other := sp
	other.Env = shellEnv("other")
	_, _, err := s.Submit(ctx, []rpc.NewJob{NewJob("job", other, epoch())})
	is.Equal(code(err), rpc.CodeKeyConflict) // another environment is another spec
	if hasEnvCounter(s) {
		is.Equal(envRefs(t, s), []int64{1}) // and stores nothing
	}
}
