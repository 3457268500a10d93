package storetest

import (
	"context"
	"encoding/json"
	"fmt"
	"slices"
	"testing"
	"time"

	"github.com/matryer/is"

	"spool/daemon"
	"spool/rpc"
	"spool/rpc/machine"
)

// The cases of the seam that makes a store decide who runs what: claims, leases
// and their fence, reaping, queue limits, dependencies, cancels, the change
// signal, and the oracles that check the event log against the records.

// Rig is a case's store, which a case may open again (Reopen).
type Rig struct {
	t *testing.T
	h Harness
	// S is the store as now open.
	S daemon.Store
}

// reopen closes the store and opens its database again; the case skips when
// the harness cannot.
func (r *Rig) reopen() daemon.Store {
	r.t.Helper()
	if r.h.Reopen == nil {
		r.t.Skip("the store cannot be opened again (Harness.Reopen is nil)")
	}
	r.S = r.h.Reopen(r.t, r.S)
	return r.S
}

// runSeam runs the seam's cases.
func runSeam(t *testing.T, h Harness) {
	cases := []struct {
		name string
		fn   func(t *testing.T, r *Rig)
	}{
		{"ClaimExclusive", testClaimExclusive},
		{"ClaimOrder", testClaimOrder},
		{"ClaimFence", testClaimFence},
		{"ClaimEarly", testClaimEarly},
		{"ApplyClaim", testApplyClaim},
		{"ReapNotLive", testReapNotLive},
		{"ReapAfterReopen", testReapAfterReopen},
		{"QueueLimits", testQueueLimits},
		{"QueueCounts", testQueueCounts},
		{"NotBefore", testNotBefore},
		{"DependencyCascade", testDependencyCascade},
		{"DependencyAtSubmit", testDependencyAtSubmit},
		{"Cancel", testCancel},
		{"Waiting", testWaiting},
		{"Changed", testChanged},
		{"SeqDenseEveryMethod", testSeqDenseEveryMethod},
		{"OracleReplay", testOracleReplay},
		{"OracleParallel", testOracleParallel},
		{"OracleTailers", testOracleTailers},
		{"HoldGuarded", testHoldGuarded},
		{"HoldNeverClaimed", testHoldNeverClaimed},
		{"HoldKeepsPlace", testHoldKeepsPlace},
		{"HoldDependency", testHoldDependency},
		{"EditOrder", testEditOrder},
		{"EditAfter", testEditAfter},
		{"BulkCancel", testBulkCancel},
		{"BulkRetryAllOrNone", testBulkRetryAllOrNone},
		{"ListFilter", testListFilter},
		{"ScheduleFire", testScheduleFire},
		{"SchedulePauseRemove", testSchedulePauseRemove},
		{"ScheduleFireRace", testScheduleFireRace},
		{"Pause", testPause},
		{"HookFinal", testHookFinal},
		{"HookStates", testHookStates},
		{"HookQueueCancel", testHookQueueCancel},
		{"HookTemplateRemoved", testHookTemplateRemoved},
		{"HookChainBound", testHookChainBound},
		{"HookBulkAndReap", testHookBulkAndReap},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			r := &Rig{t: t, h: h, S: h.Open(t)}
			c.fn(t, r)
			checkStore(t, r.S)
		})
	}
}

// join makes node a member.
func join(t *testing.T, s daemon.Store, node string) machine.Owner {
	t.Helper()
	is := is.New(t)
	is.Helper()
	o, err := s.Join(context.Background(), node, epoch())
	is.NoErr(err)          // the node joins
	is.Equal(o.Node, node) // under its name
	is.True(o.Epoch > 0)   // with an epoch
	return o
}

// claim claims up to n jobs for o at now.
func claim(t *testing.T, s daemon.Store, o machine.Owner, n int, now time.Time) []rpc.Record {
	t.Helper()
	is := is.New(t)
	is.Helper()
	recs, evs, err := s.Claim(context.Background(), o, n, now)
	is.NoErr(err)           // the claim is stored
	is.True(len(recs) <= n) // no more than asked
	if len(evs) > 0 {
		is.True(consecutive(evs, evs[0].Seq)) // its events are consecutive
	}
	return recs
}

// ids is the ids of recs, in their order.
func ids(recs []rpc.Record) []int64 {
	out := make([]int64, len(recs))
	for i, r := range recs {
		out[i] = r.ID
	}
	return out
}

// steps is a spec of n exec steps named s0, s1...
func steps(name string, n int) rpc.Spec {
	sp := Spec(name)
	sp.Steps = nil
	for i := range n {
		sp.Steps = append(sp.Steps, rpc.Step{Name: fmt.Sprintf("s%d", i), Exec: &rpc.ExecStep{Argv: []string{"true"}},
			Result: rpc.ResultText, OnInterrupt: rpc.OnInterruptRetry})
	}
	return sp
}

// inQueue is Spec(name) in queue q with priority p.
func inQueue(name, q string, p int) rpc.Spec {
	sp := Spec(name)
	sp.Queue = q
	sp.Priority = p
	return sp
}

// after is Spec(name) depending on deps.
func after(name string, deps ...int64) rpc.Spec {
	sp := Spec(name)
	sp.After = deps
	return sp
}

// own is rec as its owner changes it: a copy whose steps it may change.
func own(rec rpc.Record) rpc.Record {
	rec.Steps = slices.Clone(rec.Steps)
	return rec
}

// succeedStep is the owner o's transition that ends rec's current step in
// success (the next one starts, or the job succeeds).
func succeedStep(rec rpc.Record, o machine.Owner, now time.Time) rpc.Transition {
	r := own(rec)
	evs := machine.StepSucceeded(&r, r.CurrentStep, machine.Outcome{KeepResult: true, Result: json.RawMessage(`"ok"`)}, now)
	return rpc.Transition{Record: r, From: rpc.StateRunning, Events: evs, Epoch: o.Epoch}
}

// failStep is the owner o's transition that fails rec's current step, and the
// job with it.
func failStep(rec rpc.Record, o machine.Owner, now time.Time) rpc.Transition {
	r := own(rec)
	code := 1
	evs := machine.EndStep(&r, r.CurrentStep, machine.Outcome{ExitCode: &code, Err: "exit status 1"}, rpc.StateFailed, "step failed", now)
	return rpc.Transition{Record: r, From: rpc.StateRunning, Events: evs, Epoch: o.Epoch}
}

// retryStep is the owner o's transition that ends a failed attempt of rec's
// current step, to be tried again, and starts the next attempt.
func retryStep(rec rpc.Record, o machine.Owner, now time.Time) rpc.Transition {
	r := own(rec)
	code := 1
	evs := machine.StepRetrying(&r, r.CurrentStep, machine.Outcome{ExitCode: &code, Err: "exit status 1"}, now, now)
	evs = append(evs, machine.StartStep(&r, r.CurrentStep, now))
	return rpc.Transition{Record: r, From: rpc.StateRunning, Events: evs, Epoch: o.Epoch}
}

// finalEvent reports whether ev makes a job final.
func finalEvent(ev rpc.Event) bool {
	switch ev.Type {
	case rpc.EventSucceeded, rpc.EventFailed, rpc.EventCancelled:
		return true
	}
	return false
}

func testClaimExclusive(t *testing.T, r *Rig) {
	is := is.New(t)
	ctx := context.Background()
	s := r.S
	owners := []machine.Owner{join(t, s, "a"), join(t, s, "b")}
	is.True(owners[1].Epoch > owners[0].Epoch) // each join gets a new epoch
	const n = 3000
	for b := 0; b < n; b += 500 {
		var specs []rpc.Spec
		for i := range 500 {
			specs = append(specs, inQueue(fmt.Sprint(b+i), fmt.Sprintf("q%d", (b+i)%3), (b+i)%5))
		}
		submit(t, s, specs...)
	}

	type got struct {
		id    int64
		epoch int64
		node  string
	}
	const workers = 16
	results := make([][]got, workers)
	errs := make([]error, workers)
	done := make(chan int)
	for w := range workers {
		go func() {
			defer func() { done <- w }()
			o := owners[w%2]
			for {
				recs, _, err := s.Claim(ctx, o, 1+w%7, epoch())
				if err != nil {
					errs[w] = err
					return
				}
				if len(recs) == 0 {
					return
				}
				for _, rec := range recs {
					results[w] = append(results[w], got{rec.ID, rec.Run.Epoch, rec.Run.Node})
					if rec.Run.Epoch != o.Epoch || rec.Run.Node != o.Node || rec.State != rpc.StateRunning {
						errs[w] = fmt.Errorf("job %d claimed by %v is %s, owned by %s/%d", rec.ID, o, rec.State, rec.Run.Node, rec.Run.Epoch)
						return
					}
				}
			}
		}()
	}
	for range workers {
		<-done
	}
	seen := make(map[int64]got)
	for w := range workers {
		is.NoErr(errs[w]) // every claim is stored, as its claimer's
		for _, g := range results[w] {
			_, twice := seen[g.id]
			is.True(!twice) // no job is handed to two claimers
			seen[g.id] = g
		}
	}
	is.Equal(len(seen), n) // every job was claimed once
	c := counts(t, s)
	is.Equal(c[rpc.StateRunning], n) // and is running
	is.Equal(c[rpc.StateQueued], 0)  // none left
	for id, g := range seen {
		if id%97 != 0 {
			continue
		}
		rec := get(t, s, id)
		is.Equal(rec.Run.Epoch, g.epoch) // stored as owned by its claimer
		is.Equal(rec.Run.Node, g.node)   // by node too
		is.Equal(rec.Steps[0].State, rpc.StateRunning)
		is.Equal(rec.Steps[0].Attempt, 1) // its first step started
	}
}

func testClaimOrder(t *testing.T, r *Rig) {
	is := is.New(t)
	s := r.S
	o := join(t, s, "n")
	recs := submit(t, s, inQueue("a0", "a", 0), inQueue("a5", "a", 5), inQueue("b5", "b", 5),
		inQueue("b-1", "b", -1), inQueue("a5'", "a", 5), inQueue("b10", "b", 10))
	want := []int64{recs[5].ID, recs[1].ID, recs[2].ID, recs[4].ID, recs[0].ID, recs[3].ID}
	var order []int64
	for range recs {
		got := claim(t, s, o, 1, epoch())
		is.Equal(len(got), 1) // one at a time
		order = append(order, got[0].ID)
	}
	is.Equal(order, want)                        // priority first, then id, across queues
	is.Equal(len(claim(t, s, o, 5, epoch())), 0) // nothing left

	recs = submit(t, s, inQueue("a0", "a", 0), inQueue("a5", "a", 5), inQueue("b5", "b", 5),
		inQueue("b-1", "b", -1), inQueue("a5'", "a", 5), inQueue("b10", "b", 10))
	want = []int64{recs[5].ID, recs[1].ID, recs[2].ID, recs[4].ID, recs[0].ID, recs[3].ID}
	got := claim(t, s, o, 10, epoch())
	is.Equal(ids(got), want) // one claim of many takes them in the same order
	for _, rec := range got {
		is.True(rec.Spec != nil)                       // with their specs
		is.Equal(rec.Spec.Name, rec.Name)              // their own
		is.True(rec.StartedAt.Equal(epoch()))          // started at the claim's time
		is.Equal(rec.Steps[0].State, rpc.StateRunning) // first step running
	}
}

func testClaimFence(t *testing.T, r *Rig) {
	is := is.New(t)
	ctx := context.Background()
	s := r.S
	o0 := join(t, s, "zero")
	o1, o2 := join(t, s, "one"), join(t, s, "two")
	submit(t, s, steps("a", 2))
	rec := claim(t, s, o1, 1, epoch())[0]
	is.Equal(rec.Run.Epoch, o1.Epoch) // the claim names its owner

	before := get(t, s, rec.ID)
	_, last := bounds(t, s)
	cnt := counts(t, s)
	_, err := s.Apply(ctx, []rpc.Transition{succeedStep(rec, o2, epoch().Add(time.Second))})
	is.Equal(code(err), rpc.CodeBadState)       // another epoch's write is refused
	is.Equal(data(err).State, rpc.StateRunning) // naming the state found
	is.Equal(data(err).ID, rec.ID)              // and the job
	_, err = s.Apply(ctx, []rpc.Transition{succeedStep(rec, o0, epoch().Add(time.Second))})
	is.Equal(code(err), rpc.CodeBadState) // an older epoch's write is refused
	_, l := bounds(t, s)
	is.Equal(l, last) // and stores nothing
	// A fenced write fails the whole call, the good transitions with it.
	other := submit(t, s, Spec("b"))[0]
	_, last = bounds(t, s)
	mixed := start(other, epoch())
	_, err = s.Apply(ctx, []rpc.Transition{mixed, succeedStep(rec, o2, epoch())})
	is.Equal(code(err), rpc.CodeBadState) // the call fails
	_, l = bounds(t, s)
	is.Equal(l, last) // no event was stored, no seq used
	after := get(t, s, rec.ID)
	is.Equal(after.Steps, before.Steps)                             // the job did not change
	is.Equal(after.CurrentStep, before.CurrentStep)                 // at all
	is.Equal(get(t, s, other.ID).State, rpc.StateQueued)            // nor did the other one
	is.Equal(counts(t, s)[rpc.StateRunning], cnt[rpc.StateRunning]) // nor the counts

	ghost := machine.Owner{Node: "ghost", Epoch: o2.Epoch + 100}
	_, _, err = s.Claim(ctx, ghost, 5, epoch())
	is.Equal(code(err), rpc.CodeBadState) // a lease never joined claims nothing
	_, err = s.Renew(ctx, ghost, epoch())
	is.Equal(code(err), rpc.CodeBadState) // and renews nothing
	impostor := machine.Owner{Node: "two", Epoch: o1.Epoch}
	_, _, err = s.Claim(ctx, impostor, 5, epoch())
	is.Equal(code(err), rpc.CodeBadState) // an epoch is its node's only
	is.Equal(get(t, s, other.ID).State, rpc.StateQueued)

	evs := apply(t, s, succeedStep(rec, o1, epoch().Add(time.Second)))
	is.Equal(evs[0].Type, rpc.EventStepFinished) // the owner's write is stored
	is.Equal(evs[1].Type, rpc.EventStepStarted)  // and the next step starts
	is.Equal(get(t, s, rec.ID).CurrentStep, 1)   // as the record says
	_, err = s.Renew(ctx, o1, epoch())
	is.NoErr(err) // a live lease renews
}

func testReapNotLive(t *testing.T, r *Rig) {
	is := is.New(t)
	ctx := context.Background()
	s := r.S
	o := join(t, s, "live")
	recs := submit(t, s, Spec("old"), Spec("mine"))
	// A job marked running without an epoch, as versions before the seam wrote.
	apply(t, s, start(recs[0], epoch()))
	mine := claim(t, s, o, 1, epoch())
	is.Equal(ids(mine), []int64{recs[1].ID}) // the live owner's job
	now := epoch().Add(time.Minute)
	reaped, evs, err := s.Reap(ctx, now)
	is.NoErr(err)                                           // reaped
	is.Equal(ids(reaped), []int64{recs[0].ID})              // only the job of no live lease
	is.Equal(reaped[0].State, rpc.StateQueued)              // queued again
	is.Equal(len(evs), 1)                                   // with one event
	is.Equal(evs[0].Type, rpc.EventInterrupted)             // interrupted
	is.True(evs[0].Time.Equal(now))                         // at now
	is.Equal(get(t, s, recs[1].ID).State, rpc.StateRunning) // the live job is left alone
	again := claim(t, s, o, 5, now)
	is.Equal(ids(again), []int64{recs[0].ID}) // the reaped job is claimable again
	reaped, evs, err = s.Reap(ctx, now)
	is.NoErr(err)            // a second reap
	is.Equal(len(reaped), 0) // finds nothing
	is.Equal(len(evs), 0)    // and stores nothing
}

func testReapAfterReopen(t *testing.T, r *Rig) {
	is := is.New(t)
	ctx := context.Background()
	s := r.S
	o := join(t, s, "before")
	multi := steps("multi", 3)
	fragile := steps("fragile", 2)
	fragile.Steps[0].OnInterrupt = rpc.OnInterruptFail
	recs := submit(t, s, multi, fragile)
	dep := submit(t, s, after("dep", recs[1].ID))[0]
	dep2 := submit(t, s, after("dep2", dep.ID))[0]
	got := claim(t, s, o, 5, epoch())
	is.Equal(ids(got), []int64{recs[0].ID, recs[1].ID}) // the two without dependencies
	m := got[0]
	t1 := epoch().Add(time.Second)
	tr := succeedStep(m, o, t1)
	apply(t, s, tr)
	tr2 := retryStep(tr.Record, o, t1.Add(time.Second))
	apply(t, s, tr2)
	m = *get(t, s, m.ID)
	is.Equal(m.CurrentStep, 1)                   // step 1 runs
	is.Equal(m.Steps[1].Attempt, 2)              // its second attempt
	is.Equal(m.Steps[1].State, rpc.StateRunning) // running
	m.Run.Procs = []rpc.Proc{{Step: 1, PID: 77, PGID: 77}}
	apply(t, s, rpc.Transition{Record: m, From: rpc.StateRunning, Epoch: o.Epoch})

	s = r.reopen()
	_, _, err := s.Claim(ctx, o, 1, epoch())
	is.Equal(code(err), rpc.CodeBadState) // the lease of the last boot is gone
	_, err = s.Renew(ctx, o, epoch())
	is.Equal(code(err), rpc.CodeBadState) // and renews nothing
	o2 := join(t, s, "after")
	is.True(o2.Epoch > o.Epoch) // epochs only grow, across boots
	running, err := s.Running(ctx)
	is.NoErr(err)                                           // readable
	is.Equal(ids(running), []int64{recs[0].ID, recs[1].ID}) // what ran before the boot
	is.Equal(running[0].Run.Procs[0].PID, 77)               // with what it started, to kill leftovers
	is.True(running[0].Spec != nil)                         // and its spec

	now := epoch().Add(time.Hour)
	_, last := bounds(t, s)
	reaped, evs, err := s.Reap(ctx, now)
	is.NoErr(err) // reaped
	is.True(len(evs) > 0)
	is.Equal(evs[0].Seq, last+1)                                            // after the last event
	is.True(consecutive(evs, evs[0].Seq))                                   // without a gap
	is.Equal(ids(reaped), []int64{recs[0].ID, recs[1].ID, dep.ID, dep2.ID}) // the jobs reaped, then the dependents failed with them

	q := reaped[0]
	is.Equal(q.State, rpc.StateQueued)             // queued again
	is.Equal(q.CurrentStep, 1)                     // at its first unfinished step
	is.Equal(q.Steps[0].State, rpc.StateSucceeded) // the finished step stays finished
	is.Equal(q.Steps[1].State, rpc.StatePending)   // the interrupted one is pending
	is.Equal(q.Steps[1].Attempt, 2)                // with its attempts kept
	is.Equal(q.Steps[2].State, rpc.StatePending)   // the rest untouched
	is.True(q.Run.Interrupted)                     // marked interrupted: its next start resumes the attempt
	is.Equal(q.Run.Epoch, int64(0))                // owned by nobody
	is.Equal(len(q.Run.Procs), 0)                  // with nothing running
	is.Equal(get(t, s, q.ID).Steps, q.Steps)       // as stored

	f := reaped[1]
	is.Equal(f.State, rpc.StateFailed)           // on_interrupt fail fails the job
	is.Equal(f.Steps[0].State, rpc.StateFailed)  // and its step
	is.Equal(f.Steps[0].Error, "interrupted")    // saying why
	is.Equal(f.Steps[1].State, rpc.StateSkipped) // the rest skipped
	for i, d := range []rpc.Record{reaped[2], reaped[3]} {
		is.Equal(d.State, rpc.StateFailed)                                    // its dependents fail with it, transitively
		is.Equal(d.Error, machine.DependencyFailed([]int64{f.ID, dep.ID}[i])) // naming the dependency
		is.Equal(d.Steps[0].State, rpc.StateSkipped)                          // nothing ran
		is.True(d.Spec != nil)                                                // returned with its spec
	}
	types := map[int64][]string{}
	for _, ev := range evs {
		types[ev.Job] = append(types[ev.Job], ev.Type)
	}
	is.Equal(types[q.ID], []string{rpc.EventInterrupted})                                         // requeued: one event
	is.Equal(types[f.ID], []string{rpc.EventInterrupted, rpc.EventStepFinished, rpc.EventFailed}) // failed: interrupted, its step, the job
	is.Equal(types[dep.ID], []string{rpc.EventFailed})                                            // a dependent's failure
	is.Equal(types[dep2.ID], []string{rpc.EventFailed})                                           // and its dependent's, in the same commit

	// The fence holds against the old owner.
	_, err = s.Apply(ctx, []rpc.Transition{succeedStep(m, o, now)})
	is.Equal(code(err), rpc.CodeBadState)      // the old owner's write is refused
	is.Equal(data(err).State, rpc.StateQueued) // the job is queued now
	again := claim(t, s, o2, 5, now)
	is.Equal(ids(again), []int64{q.ID}) // claimable at once: its dependencies had succeeded
	g := again[0]
	is.Equal(g.Steps[1].State, rpc.StateRunning) // the interrupted step runs again
	is.Equal(g.Steps[1].Attempt, 2)              // resuming its attempt, not counting a new one
	is.True(!g.Run.Interrupted)                  // resumed
	_, err = s.Apply(ctx, []rpc.Transition{succeedStep(m, o, now)})
	is.Equal(code(err), rpc.CodeBadState) // the old owner is still fenced off
	apply(t, s, succeedStep(g, o2, now))  // the new owner's write is stored

	reaped, evs, err = s.Reap(ctx, now)
	is.NoErr(err)            // reaping again
	is.Equal(len(reaped), 0) // takes nothing of a live lease
	is.Equal(len(evs), 0)    // and stores nothing
}

func testQueueLimits(t *testing.T, r *Rig) {
	is := is.New(t)
	ctx := context.Background()
	s := r.S
	two := 2
	is.NoErr(s.PutQueue(ctx, rpc.Queue{Name: "q", Parallel: &two}))
	is.NoErr(s.PutQueue(ctx, rpc.Queue{Name: "p", Paused: true}))
	var specs []rpc.Spec
	for i := range 10 {
		specs = append(specs, inQueue(fmt.Sprint("q", i), "q", 0))
	}
	for i := range 5 {
		specs = append(specs, inQueue(fmt.Sprint("p", i), "p", 9), inQueue(fmt.Sprint("d", i), "default", 0))
	}
	submit(t, s, specs...)
	owners := []machine.Owner{join(t, s, "a"), join(t, s, "b")}

	claimed := make([][]rpc.Record, 8)
	errs := make([]error, 8)
	done := make(chan struct{})
	for w := range 8 {
		go func() {
			defer func() { done <- struct{}{} }()
			for range 4 {
				recs, _, err := s.Claim(ctx, owners[w%2], 3, epoch())
				if err != nil {
					errs[w] = err
					return
				}
				claimed[w] = append(claimed[w], recs...)
			}
		}()
	}
	for range 8 {
		<-done
	}
	byQueue := map[string][]rpc.Record{}
	for w := range 8 {
		is.NoErr(errs[w]) // claims are stored
		for _, rec := range claimed[w] {
			byQueue[rec.Queue] = append(byQueue[rec.Queue], rec)
		}
	}
	is.Equal(len(byQueue["q"]), 2)       // the limit holds across claimers
	is.Equal(len(byQueue["p"]), 0)       // a paused queue gives nothing, whatever its priority
	is.Equal(len(byQueue["default"]), 5) // an unlimited queue gives all

	// A slot given back is one more claim, not two.
	done1 := byQueue["q"][0]
	var owner machine.Owner
	for _, o := range owners {
		if o.Epoch == done1.Run.Epoch {
			owner = o
		}
	}
	apply(t, s, succeedStep(done1, owner, epoch()))
	is.Equal(len(claim(t, s, owners[1], 5, epoch())), 1) // one more
	is.Equal(len(claim(t, s, owners[0], 5, epoch())), 0) // and no more

	is.NoErr(s.PutQueue(ctx, rpc.Queue{Name: "p", Paused: false}))
	got := claim(t, s, owners[0], 10, epoch())
	is.Equal(len(got), 5) // unpaused, its jobs are claimable
	for _, rec := range got {
		is.Equal(rec.Queue, "p") // all of them from it
	}
	five := 5
	is.NoErr(s.PutQueue(ctx, rpc.Queue{Name: "q", Parallel: &five}))
	is.Equal(len(claim(t, s, owners[1], 10, epoch())), 3) // a raised limit gives the difference
	is.NoErr(s.PutQueue(ctx, rpc.Queue{Name: "q", Parallel: &five, Paused: true}))
	is.Equal(len(claim(t, s, owners[1], 10, epoch())), 0) // pausing stops claims
	zero := 0
	is.NoErr(s.PutQueue(ctx, rpc.Queue{Name: "q", Parallel: &zero}))
	is.Equal(len(claim(t, s, owners[1], 10, epoch())), 0) // so does a limit of 0
}

func testQueueCounts(t *testing.T, r *Rig) {
	is := is.New(t)
	ctx := context.Background()
	s := r.S
	o := join(t, s, "n")
	is.NoErr(s.PutQueue(ctx, rpc.Queue{Name: "empty", Paused: true}))
	recs := submit(t, s, inQueue("a", "jobs", 1), inQueue("b", "jobs", 0), inQueue("c", "jobs", 0), inQueue("d", "other", 0))
	claim(t, s, o, 1, epoch())
	qs, err := s.Queues(ctx)
	is.NoErr(err) // readable
	byName := map[string]rpc.Queue{}
	var names []string
	for _, q := range qs {
		byName[q.Name] = q
		names = append(names, q.Name)
	}
	is.Equal(names, []string{"empty", "jobs", "other"}) // queues with settings or jobs, in name order
	is.Equal(byName["jobs"].Queued, 2)                  // counted
	is.Equal(byName["jobs"].Running, 1)                 // counted
	is.Equal(byName["other"].Queued, 1)                 // a queue with jobs and no settings
	is.True(byName["empty"].Paused)                     // settings without jobs
	is.Equal(byName["empty"].Queued, 0)                 // and no counts

	rec := get(t, s, recs[0].ID)
	apply(t, s, succeedStep(*rec, o, epoch()))
	_, _, _, err = s.Cancel(ctx, recs[3].ID, "no", epoch())
	is.NoErr(err) // cancelled
	qs, err = s.Queues(ctx)
	is.NoErr(err)                                       // readable
	is.Equal(len(qs), 3)                                // a queue left without jobs stays listed
	is.Equal(qs[1], rpc.Queue{Name: "jobs", Queued: 2}) // the finished job left the counts
	is.Equal(qs[2], rpc.Queue{Name: "other"})           // with no jobs counted
}

func testNotBefore(t *testing.T, r *Rig) {
	is := is.New(t)
	ctx := context.Background()
	s := r.S
	o := join(t, s, "n")
	// Later than the store's own clock, for the waiting reason.
	at := time.Now().Add(time.Hour).Truncate(time.Second).UTC()
	later := Spec("later")
	later.NotBefore = &at
	latest := Spec("latest")
	at2 := at.Add(time.Hour)
	latest.NotBefore = &at2
	recs := submit(t, s, later, Spec("now"), latest)
	next, err := s.NextNotBefore(ctx)
	is.NoErr(err)           // readable
	is.True(next.Equal(at)) // the earliest not_before
	is.Equal(*get(t, s, recs[0].ID).Waiting, "not_before")
	got := claim(t, s, o, 10, at.Add(-time.Second))
	is.Equal(ids(got), []int64{recs[1].ID}) // a job whose not_before is ahead is not claimed
	got = claim(t, s, o, 10, at)
	is.Equal(ids(got), []int64{recs[0].ID}) // once now reaches it, it is
	next, err = s.NextNotBefore(ctx)
	is.NoErr(err)
	is.True(next.Equal(at2)) // the next one is the earliest now

	// A job with a not_before and an unfinished dependency waits for both.
	gated := after("gated", recs[1].ID)
	past := epoch().Add(-time.Hour)
	gated.NotBefore = &past
	g := submit(t, s, gated)[0]
	next, _ = s.NextNotBefore(ctx)
	is.True(next.Equal(at2)) // its not_before does not count while it waits for a dependency
	is.Equal(*get(t, s, g.ID).Waiting, "after")
	apply(t, s, succeedStep(got[0], o, at), succeedStep(*get(t, s, recs[1].ID), o, at))
	next, _ = s.NextNotBefore(ctx)
	is.True(next.Equal(past))                                 // now it does
	is.Equal(ids(claim(t, s, o, 10, epoch())), []int64{g.ID}) // and it is claimable, its time being past
	next, _ = s.NextNotBefore(ctx)
	is.True(next.Equal(at2)) // leaving the last
	_, _, _, err = s.Cancel(ctx, recs[2].ID, "never mind", epoch())
	is.NoErr(err)
	next, _ = s.NextNotBefore(ctx)
	is.True(next.IsZero()) // none left
}

func testDependencyCascade(t *testing.T, r *Rig) {
	is := is.New(t)
	ctx := context.Background()
	s := r.S
	o := join(t, s, "n")
	a := submit(t, s, Spec("a"))[0]
	b := submit(t, s, after("b", a.ID))[0]
	c := submit(t, s, after("c", b.ID))[0]
	d := submit(t, s, after("d", a.ID))[0]
	e := submit(t, s, Spec("e"))[0]
	got := claim(t, s, o, 10, epoch())
	is.Equal(ids(got), []int64{a.ID, e.ID}) // only the jobs without unfinished dependencies
	_, last := bounds(t, s)
	at := epoch().Add(time.Minute)
	evs := apply(t, s, failStep(got[0], o, at))
	is.Equal(evs[0].Seq, last+1)          // after the last
	is.True(consecutive(evs, evs[0].Seq)) // the cascade's events are in the same commit, without a gap
	var finals []int64
	for _, ev := range evs {
		if finalEvent(ev) {
			finals = append(finals, ev.Job)
			is.Equal(ev.Type, rpc.EventFailed) // each failed
		}
	}
	is.Equal(finals, []int64{a.ID, b.ID, d.ID, c.ID}) // a, its dependents, theirs
	for _, x := range []struct {
		id, dep int64
	}{{b.ID, a.ID}, {c.ID, b.ID}, {d.ID, a.ID}} {
		rec := get(t, s, x.id)
		is.Equal(rec.State, rpc.StateFailed)                       // failed
		is.Equal(rec.Error, machine.DependencyFailed(x.dep))       // naming its dependency
		is.Equal(rec.Steps[0].State, rpc.StateSkipped)             // nothing ran
		is.True(rec.FinishedAt != nil && rec.FinishedAt.Equal(at)) // when the dependency failed
	}
	is.Equal(get(t, s, e.ID).State, rpc.StateRunning) // an unrelated job is untouched

	// Success releases.
	x := submit(t, s, Spec("x"))[0]
	y := submit(t, s, after("y", x.ID))[0]
	z := submit(t, s, after("z", x.ID, y.ID))[0]
	got = claim(t, s, o, 10, epoch())
	is.Equal(ids(got), []int64{x.ID}) // y and z wait
	apply(t, s, succeedStep(got[0], o, at))
	got = claim(t, s, o, 10, epoch())
	is.Equal(ids(got), []int64{y.ID}) // y is released; z still waits for y
	apply(t, s, succeedStep(got[0], o, at))
	is.Equal(ids(claim(t, s, o, 10, epoch())), []int64{z.ID}) // z is released when both succeeded

	// A cancelled dependency fails its dependents too.
	p := submit(t, s, Spec("p"))[0]
	q := submit(t, s, after("q", p.ID))[0]
	_, recs, evs, err := s.Cancel(ctx, p.ID, "not wanted", at)
	is.NoErr(err)                            // cancelled
	is.Equal(ids(recs), []int64{p.ID, q.ID}) // with its dependent
	is.Equal(recs[1].State, rpc.StateFailed) // failed
	is.Equal(evs[len(evs)-1].Job, q.ID)      // the dependent's event last
	is.Equal(evs[len(evs)-1].Type, rpc.EventFailed)
}

func testDependencyAtSubmit(t *testing.T, r *Rig) {
	is := is.New(t)
	ctx := context.Background()
	s := r.S
	o := join(t, s, "n")
	bad := finished(t, s, Spec("bad"), rpc.StateFailed, epoch())
	good := finished(t, s, Spec("good"), rpc.StateSucceeded, epoch())
	gone := finished(t, s, Spec("gone"), rpc.StateCancelled, epoch())

	first := after("first", bad.ID)
	second := Spec("second")
	second.AfterIndex = []int{0}
	third := after("third", good.ID)
	at := epoch().Add(time.Hour)
	recs, evs, err := s.Submit(ctx, []rpc.NewJob{NewJob("jobs[0]", first, at), NewJob("jobs[1]", second, at), NewJob("jobs[2]", third, at)})
	is.NoErr(err)                            // stored
	is.Equal(recs[0].State, rpc.StateFailed) // a failed dependency fails the job at once
	is.Equal(recs[0].Error, machine.DependencyFailed(bad.ID))
	is.Equal(recs[1].State, rpc.StateFailed) // and a job of the batch after it
	is.Equal(recs[1].Error, machine.DependencyFailed(recs[0].ID))
	is.True(recs[1].Spec != nil)             // returned with its spec
	is.Equal(recs[2].State, rpc.StateQueued) // a succeeded dependency is no obstacle
	is.True(consecutive(evs, evs[0].Seq))    // one commit
	var types []string
	for _, ev := range evs {
		types = append(types, fmt.Sprint(ev.Job-recs[0].ID, ev.Type))
	}
	is.Equal(types, []string{"0submitted", "1submitted", "2submitted", "0failed", "1failed"}) // submitted, then the failures
	is.Equal(get(t, s, recs[1].ID).State, rpc.StateFailed)                                    // as stored
	is.Equal(ids(claim(t, s, o, 10, epoch())), []int64{recs[2].ID})                           // the released one is claimable

	later := after("later", gone.ID)
	recs, _, err = s.Submit(ctx, []rpc.NewJob{NewJob("job", later, at)})
	is.NoErr(err)
	is.Equal(recs[0].State, rpc.StateFailed) // a cancelled dependency fails it too
	c := counts(t, s)
	is.Equal(c[rpc.StateQueued], 0) // nothing left waiting for ever
}

func testCancel(t *testing.T, r *Rig) {
	is := is.New(t)
	ctx := context.Background()
	s := r.S
	o1, o2 := join(t, s, "one"), join(t, s, "two")
	recs := submit(t, s, Spec("run"), Spec("queued"))
	dep := submit(t, s, after("dep", recs[1].ID))[0]
	run := claim(t, s, o1, 1, epoch())[0]
	is.Equal(run.ID, recs[0].ID)

	at := epoch().Add(time.Minute)
	st, changed, evs, err := s.Cancel(ctx, recs[1].ID, "not needed", at)
	is.NoErr(err)                                           // a queued job is cancelled
	is.Equal(st, rpc.StateCancelled)                        // at once
	is.Equal(ids(changed), []int64{recs[1].ID, dep.ID})     // with its dependents
	is.Equal(changed[0].Steps[0].State, rpc.StateCancelled) // its step cancelled
	is.Equal(changed[0].Steps[0].Error, "not needed")       // with the reason
	is.Equal(changed[1].State, rpc.StateFailed)             // the dependent failed
	is.Equal(len(evs), 3)                                   // step, job, dependent
	is.Equal(evs[1].Type, rpc.EventCancelled)
	is.Equal(get(t, s, recs[1].ID).State, rpc.StateCancelled) // as stored

	_, last := bounds(t, s)
	st, changed, evs, err = s.Cancel(ctx, run.ID, "stop", at)
	is.NoErr(err)                                  // a running job gets the request
	is.Equal(st, rpc.StateRunning)                 // and stays running: its owner ends it
	is.Equal(len(evs), 0)                          // no event
	is.Equal(*changed[0].Run.CancelReason, "stop") // the request is on the record
	_, l := bounds(t, s)
	is.Equal(l, last) // no seq used
	ids1, err := s.Renew(ctx, o1, at)
	is.NoErr(err)                   // the owner renews
	is.Equal(ids1, []int64{run.ID}) // and learns of the cancel
	ids2, err := s.Renew(ctx, o2, at)
	is.NoErr(err)          // another owner
	is.Equal(len(ids2), 0) // learns nothing of it
	_, _, _, err = s.Cancel(ctx, run.ID, "again", at)
	is.NoErr(err)                                         // a second cancel
	is.Equal(*get(t, s, run.ID).Run.CancelReason, "stop") // keeps the first reason

	// An owner's write made without knowing of the request is refused: the
	// cancel is the outcome, so the owner must learn of it first.
	moved := own(run)
	moved.Progress = &rpc.Progress{Message: "half"}
	_, err = s.Apply(ctx, []rpc.Transition{{Record: moved, From: rpc.StateRunning, Epoch: o1.Epoch}})
	is.Equal(code(err), rpc.CodeBadState)     // refused
	is.Equal(get(t, s, run.ID).Progress, nil) // and nothing changed
	// An unfenced write keeps the request.
	apply(t, s, rpc.Transition{Record: moved, From: rpc.StateRunning})
	is.Equal(*get(t, s, run.ID).Run.CancelReason, "stop") // kept

	// The owner ends it.
	cur := *get(t, s, run.ID)
	end := own(cur)
	endEvs := machine.EndStep(&end, 0, machine.Outcome{}, rpc.StateCancelled, *cur.Run.CancelReason, at)
	apply(t, s, rpc.Transition{Record: end, From: rpc.StateRunning, Epoch: o1.Epoch, Events: endEvs})
	ids1, err = s.Renew(ctx, o1, at)
	is.NoErr(err)
	is.Equal(len(ids1), 0) // nothing more to tell

	_, _, _, err = s.Cancel(ctx, run.ID, "late", at)
	is.Equal(code(err), rpc.CodeBadState)         // a final job cannot be cancelled
	is.Equal(data(err).State, rpc.StateCancelled) // the error says its state
	_, _, _, err = s.Cancel(ctx, dep.ID+100, "who", at)
	is.Equal(code(err), rpc.CodeNotFound) // nor an unknown one
	_, l = bounds(t, s)
	is.Equal(l, last+2) // only the owner's events were stored
}

func testWaiting(t *testing.T, r *Rig) {
	is := is.New(t)
	ctx := context.Background()
	s := r.S
	o := join(t, s, "n")
	one := 1
	is.NoErr(s.PutQueue(ctx, rpc.Queue{Name: "one", Parallel: &one}))
	is.NoErr(s.PutQueue(ctx, rpc.Queue{Name: "held", Paused: true}))
	ahead := time.Now().Add(time.Hour)
	nb := Spec("nb")
	nb.NotBefore = &ahead
	recs := submit(t, s, inQueue("r1", "one", 0), inQueue("r2", "one", 0), inQueue("h", "held", 0), nb, Spec("free"))
	dep := submit(t, s, after("dep", recs[4].ID))[0]
	claim(t, s, o, 1, epoch())
	why := func(id int64) string {
		t.Helper()
		w := get(t, s, id).Waiting
		if w == nil {
			return "<nil>"
		}
		return *w
	}
	is.Equal(why(recs[0].ID), "<nil>")      // a running job waits for nothing
	is.Equal(why(recs[1].ID), "capacity")   // its queue's limit is reached
	is.Equal(why(recs[2].ID), "paused")     // its queue is paused
	is.Equal(why(recs[3].ID), "not_before") // its time has not come
	is.Equal(why(recs[4].ID), "<nil>")      // claimable
	is.Equal(why(dep.ID), "after")          // a dependency is unfinished
	res, err := s.List(ctx, rpc.ListParams{State: []rpc.State{rpc.StateQueued}, Order: "asc"})
	is.NoErr(err)
	var listed []string
	for _, j := range res.Jobs {
		w := "<nil>"
		if j.Waiting != nil {
			w = *j.Waiting
		}
		listed = append(listed, w)
	}
	is.Equal(listed, []string{"capacity", "paused", "not_before", "<nil>", "after"}) // List says the same
}

func testChanged(t *testing.T, r *Rig) {
	is := is.New(t)
	ctx := context.Background()
	s := r.S
	ch := s.Changed()
	drain := func() {
		for {
			select {
			case <-ch:
			default:
				return
			}
		}
	}
	signalled := func() bool {
		select {
		case <-ch:
			return true
		default:
			return false
		}
	}
	drain()
	o := join(t, s, "n")
	is.True(!signalled()) // a join changes nothing a tailer or scheduler waits for
	recs := submit(t, s, Spec("a"), Spec("b"))
	is.True(signalled())  // a submit stored events
	is.True(!signalled()) // once, lossily: a buffer of one
	submit(t, s, Spec("c"))
	submit(t, s, Spec("d"))
	is.True(signalled())  // two commits, one signal waiting
	is.True(!signalled()) // not two
	got := claim(t, s, o, 1, epoch())
	is.True(signalled()) // a claim stored events
	progress := own(got[0])
	progress.Progress = &rpc.Progress{Message: "half way"}
	apply(t, s, rpc.Transition{Record: progress, From: rpc.StateRunning, Epoch: o.Epoch})
	is.True(!signalled()) // a write without events that moves nothing
	back := own(progress)
	back.State, back.Run.Epoch = rpc.StateQueued, 0
	apply(t, s, rpc.Transition{Record: back, From: rpc.StateRunning, Epoch: o.Epoch})
	is.True(signalled()) // a job given back, without events, is claimable again
	got = claim(t, s, o, 1, epoch())
	is.Equal(got[0].ID, back.ID)
	is.True(signalled())
	is.Equal(len(claim(t, s, o, 0, epoch())), 0)
	is.True(!signalled()) // a claim of nothing stored nothing
	is.NoErr(s.PutQueue(ctx, rpc.Queue{Name: "q", Paused: true}))
	is.True(signalled()) // queue settings change what Claim gives
	_, _, _, err := s.Cancel(ctx, recs[0].ID, "stop", epoch())
	is.NoErr(err)
	is.True(!signalled()) // a cancel request of a running job stores no event
	_, _, _, err = s.Cancel(ctx, recs[1].ID, "stop", epoch())
	is.NoErr(err)
	is.True(signalled()) // a queued job's cancel does
	_, err = s.Apply(ctx, []rpc.Transition{start(recs[1], epoch())})
	is.Equal(code(err), rpc.CodeBadState)
	is.True(!signalled()) // a failed call stored nothing
}

func testSeqDenseEveryMethod(t *testing.T, r *Rig) {
	is := is.New(t)
	ctx := context.Background()
	s := r.S
	_, last0 := bounds(t, s)
	var all []rpc.Event
	add := func(what string, evs []rpc.Event, err error) {
		t.Helper()
		is.NoErr(err) // the call is stored
		if len(evs) > 0 {
			is.True(consecutive(evs, evs[0].Seq)) // consecutive within a call
		}
		all = append(all, evs...)
		_ = what
	}
	o := join(t, s, "n")
	recs, evs, err := s.Submit(ctx, []rpc.NewJob{NewJob("jobs[0]", steps("a", 2), epoch()), NewJob("jobs[1]", Spec("b"), epoch()),
		NewJob("jobs[2]", Spec("c"), epoch()), NewJob("jobs[3]", Spec("d"), epoch())})
	add("submit", evs, err)
	maxID := recs[3].ID
	got, evs, err := s.Claim(ctx, o, 2, epoch())
	add("claim", evs, err)
	evs, err = s.Apply(ctx, []rpc.Transition{succeedStep(got[0], o, epoch())})
	add("apply", evs, err)
	_, _, evs, err = s.Cancel(ctx, recs[2].ID, "queued", epoch())
	add("cancel queued", evs, err)
	_, _, evs, err = s.Cancel(ctx, got[1].ID, "running", epoch())
	add("cancel running", evs, err)
	_, err = s.Renew(ctx, o, epoch())
	is.NoErr(err)
	evs, err = s.Apply(ctx, []rpc.Transition{start(recs[3], epoch())}) // epoch 0: left for Reap
	add("apply start", evs, err)
	_, evs, err = s.Reap(ctx, epoch())
	add("reap", evs, err)
	_, _, evs, err = s.Cancel(ctx, recs[3].ID, "reaped", epoch())
	add("cancel reaped", evs, err)
	_, evs, err = s.Remove(ctx, []int64{recs[2].ID}, epoch())
	add("remove", evs, err)
	_, evs, err = s.Prune(ctx, nil, time.Time{}, epoch())
	add("prune", evs, err)

	// A batch of 10,000 jobs with one bad one: nothing stored, no seq, no id.
	_, lastBefore := bounds(t, s)
	cnt := counts(t, s)
	big := make([]rpc.NewJob, 10000)
	for i := range big {
		sp := Spec(fmt.Sprint("big", i))
		if i == 9999 {
			sp.After = []int64{maxID + 1_000_000}
		}
		big[i] = NewJob(fmt.Sprintf("jobs[%d]", i), sp, epoch())
	}
	_, _, err = s.Submit(ctx, big)
	is.Equal(code(err), rpc.CodeInvalidParams)       // the batch is refused
	is.Equal(data(err).Field, "jobs[9999].after[0]") // naming the bad job
	_, l := bounds(t, s)
	is.Equal(l, lastBefore)     // no event stored, no seq used
	is.Equal(counts(t, s), cnt) // no job stored
	recs, evs, err = s.Submit(ctx, []rpc.NewJob{NewJob("job", Spec("next"), epoch())})
	add("submit after", evs, err)
	is.Equal(recs[0].ID, maxID+1) // no id was used either

	is.True(len(all) > 10)
	is.Equal(all[0].Seq, last0+1)         // the first follows what was there
	is.True(consecutive(all, all[0].Seq)) // no gap across every method
	stored, err := s.Events(ctx, last0, 0)
	is.NoErr(err)
	is.Equal(len(stored), len(all)) // every stored event was returned by its call
	for i := range stored {
		is.Equal(stored[i].Seq, all[i].Seq)   // in order
		is.Equal(stored[i].Type, all[i].Type) // the same
		is.Equal(stored[i].Job, all[i].Job)   // for the same job
	}
}

// testClaimEarly: a store that tells its picks before the commit tells them once,
// exactly the jobs it then returns, before it returns.
func testClaimEarly(t *testing.T, r *Rig) {
	is := is.New(t)
	ctx := context.Background()
	ec, ok := r.S.(daemon.EarlyClaimer)
	if !ok {
		t.Skip("the store does not tell its picks early (daemon.EarlyClaimer)")
	}
	o := join(t, r.S, "a")
	submit(t, r.S, Spec("a"), Spec("b"), Spec("c"))
	var told [][]rpc.Record
	recs, evs, err := ec.ClaimEarly(ctx, o, 2, epoch(), func(rs []rpc.Record) {
		told = append(told, slices.Clone(rs))
	})
	is.NoErr(err)           // claimed
	is.Equal(len(told), 1)  // told once
	is.Equal(told[0], recs) // of exactly the jobs it returned
	is.Equal(len(evs), 4)   // started and step_started for each
	for _, rec := range recs {
		is.Equal(get(t, r.S, rec.ID).State, rpc.StateRunning) // stored
	}
	told = nil
	_, _, err = ec.ClaimEarly(ctx, machine.Owner{Node: "ghost", Epoch: o.Epoch + 100}, 5, epoch(), func(rs []rpc.Record) {
		told = append(told, rs)
	})
	is.Equal(code(err), rpc.CodeBadState) // a lease that is gone claims nothing
	is.Equal(len(told), 0)                // and tells nothing
}

// testApplyClaim: the end of a job and the claim of the next in one transaction;
// when the end is refused, nothing is claimed.
func testApplyClaim(t *testing.T, r *Rig) {
	is := is.New(t)
	ctx := context.Background()
	ac, ok := r.S.(daemon.ApplyClaimer)
	if !ok {
		t.Skip("the store cannot apply and claim in one transaction (daemon.ApplyClaimer)")
	}
	o, other := join(t, r.S, "a"), join(t, r.S, "b")
	submit(t, r.S, Spec("a"), Spec("b"), Spec("c"))
	first := claim(t, r.S, o, 1, epoch())[0]
	_, last := bounds(t, r.S)

	// Another owner's end is refused: nothing stored, nothing claimed.
	var told []rpc.Record
	_, recs, _, err := ac.ApplyClaim(ctx, []rpc.Transition{succeedStep(first, other, epoch())}, other, 2, epoch(), func(rs []rpc.Record) {
		told = append(told, rs...)
	})
	is.Equal(code(err), rpc.CodeBadState) // refused
	is.Equal(len(recs), 0)                // nothing claimed
	is.Equal(len(told), 0)                // nor told
	_, l := bounds(t, r.S)
	is.Equal(l, last)                                       // no seq used
	is.Equal(counts(t, r.S)[rpc.StateQueued], 2)            // the others still queued
	is.Equal(get(t, r.S, first.ID).State, rpc.StateRunning) // and the first still runs

	evs, recs, claimEvs, err := ac.ApplyClaim(ctx, []rpc.Transition{succeedStep(first, o, epoch())}, o, 2, epoch(), func(rs []rpc.Record) {
		told = append(told, rs...)
	})
	is.NoErr(err)                                             // the end and the claim
	is.Equal(get(t, r.S, first.ID).State, rpc.StateSucceeded) // the first ended
	is.Equal(len(recs), 2)                                    // both others claimed
	is.Equal(told, recs)                                      // and told before the return
	is.Equal(evs[0].Seq, last+1)                              // the end's events come first
	is.Equal(claimEvs[0].Seq, evs[len(evs)-1].Seq+1)          // then the claim's, dense
	for _, rec := range recs {
		is.Equal(get(t, r.S, rec.ID).Run.Epoch, o.Epoch) // owned by the claimer
	}
	// Nothing left to claim: the end alone is stored.
	evs, recs, _, err = ac.ApplyClaim(ctx, []rpc.Transition{succeedStep(recs[0], o, epoch())}, o, 2, epoch(), nil)
	is.NoErr(err)          // stored
	is.Equal(len(recs), 0) // nothing claimed
	is.True(len(evs) > 0)  // the end's events
}
