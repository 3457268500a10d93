package storetest

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/matryer/is"

	"spool/daemon"
	"spool/rpc"
	"spool/rpc/machine"
)

// The oracles check a store against its own event log: replaying the log gives
// what Get returns, the running jobs the log counts never exceed a queue's
// limit, and every tailer reads the log whole, in order, once.

// Replayed is a job as its events tell it.
type Replayed struct {
	State   rpc.State
	Steps   map[int]ReplayedStep
	Removed bool
}

// ReplayedStep is a step as its events tell it.
type ReplayedStep struct {
	State   rpc.State
	Attempt int
}

// Replay folds events, in seq order, into the state of every job they name: a
// pure function of the log. A step no event named is pending while its job is
// unfinished and skipped once it is final.
func Replay(evs []rpc.Event) map[int64]*Replayed {
	jobs := make(map[int64]*Replayed)
	for _, ev := range evs {
		j := jobs[ev.Job]
		if j == nil {
			j = &Replayed{Steps: map[int]ReplayedStep{}}
			jobs[ev.Job] = j
		}
		switch ev.Type {
		case rpc.EventSubmitted:
			j.State = ev.State
		case rpc.EventStarted:
			j.State = rpc.StateRunning
		case rpc.EventStepStarted, rpc.EventStepFinished, rpc.EventStepRetrying:
			j.Steps[*ev.Step] = ReplayedStep{State: ev.State, Attempt: ev.Attempt}
		case rpc.EventInterrupted:
			j.State = rpc.StateQueued
			if st, ok := j.Steps[*ev.Step]; ok && st.State == rpc.StateRunning {
				st.State = rpc.StatePending
				j.Steps[*ev.Step] = st
			}
		case rpc.EventSucceeded, rpc.EventFailed, rpc.EventCancelled:
			j.State = ev.State
			for i, st := range j.Steps {
				if !st.State.Final() {
					st.State = rpc.StateSkipped
					j.Steps[i] = st
				}
			}
		case rpc.EventRemoved:
			j.Removed = true
		}
	}
	return jobs
}

// checkReplay checks that replaying s's whole event log gives, for every job,
// the state, step states and attempts that Get returns.
func checkReplay(t *testing.T, s daemon.Store) int {
	t.Helper()
	is := is.New(t)
	is.Helper()
	ctx := context.Background()
	evs, err := s.Events(ctx, 0, 0)
	is.NoErr(err) // the log is readable
	for i, ev := range evs {
		is.Equal(ev.Seq, int64(i+1)) // whole, from 1
	}
	for id, j := range Replay(evs) {
		rec, err := s.Get(ctx, id)
		if j.Removed {
			is.Equal(code(err), rpc.CodeNotFound) // a removed job is gone
			continue
		}
		is.NoErr(err) // the job is stored
		if rec.State != j.State {
			t.Fatalf("job %d: the log says %s, Get %s", id, j.State, rec.State)
		}
		for i, st := range rec.Steps {
			want, ok := j.Steps[i]
			if !ok {
				want = ReplayedStep{State: rpc.StatePending}
				if j.State.Final() {
					want.State = rpc.StateSkipped
				}
			}
			if st.State != want.State || st.Attempt != want.Attempt {
				t.Fatalf("job %d step %d: the log says %s attempt %d, Get %s attempt %d", id, i, want.State, want.Attempt, st.State, st.Attempt)
			}
		}
	}
	return len(evs)
}

// checkRunningCounts computes from s's event log the running jobs of each queue
// at every seq and checks them against the queues' limits; queueOf gives each
// job's queue. It returns the highest count seen per queue.
func checkRunningCounts(t *testing.T, s daemon.Store, queueOf map[int64]string, limit map[string]int) map[string]int {
	t.Helper()
	is := is.New(t)
	is.Helper()
	evs, err := s.Events(context.Background(), 0, 0)
	is.NoErr(err) // the log is readable
	running := map[int64]bool{}
	count := map[string]int{}
	high := map[string]int{}
	for _, ev := range evs {
		q := queueOf[ev.Job]
		switch {
		case ev.Type == rpc.EventStarted:
			if running[ev.Job] {
				t.Fatalf("seq %d: job %d started twice", ev.Seq, ev.Job)
			}
			running[ev.Job] = true
			count[q]++
			high[q] = max(high[q], count[q])
			if l, ok := limit[q]; ok && count[q] > l {
				t.Fatalf("seq %d: %d jobs of queue %s running, its limit is %d", ev.Seq, count[q], q, l)
			}
		case ev.Type == rpc.EventInterrupted || finalEvent(ev):
			if running[ev.Job] {
				running[ev.Job] = false
				count[q]--
			}
		}
	}
	return high
}

// world is a workload's view of its store: the jobs it submitted and the
// owners it joined.
type world struct {
	t       *testing.T
	r       *Rig
	rng     *rand.Rand
	now     time.Time
	queueOf map[int64]string
	all     []int64
	owners  map[int64]machine.Owner
}

// ownerOf is the live owner of rec, if it is one of the world's.
func (w *world) ownerOf(rec rpc.Record) (machine.Owner, bool) {
	o, ok := w.owners[rec.Run.Epoch]
	return o, ok
}

// submitSome submits a batch of 1 to 4 random jobs.
func (w *world) submitSome(queues []string) {
	is := is.New(w.t)
	n := 1 + w.rng.IntN(4)
	var nj []rpc.NewJob
	for i := range n {
		sp := steps(fmt.Sprint("job", len(w.all)+i), 1+w.rng.IntN(3))
		sp.Queue = queues[w.rng.IntN(len(queues))]
		sp.Priority = w.rng.IntN(3)
		if w.rng.IntN(5) == 0 {
			sp.Steps[0].OnInterrupt = rpc.OnInterruptFail
		}
		if len(w.all) > 0 && w.rng.IntN(3) == 0 {
			sp.After = []int64{w.all[w.rng.IntN(len(w.all))]}
		}
		if i > 0 && w.rng.IntN(4) == 0 {
			sp.AfterIndex = []int{w.rng.IntN(i)}
		}
		if w.rng.IntN(5) == 0 {
			at := w.now.Add(time.Duration(w.rng.IntN(30)) * time.Second)
			sp.NotBefore = &at
		}
		nj = append(nj, NewJob(fmt.Sprintf("jobs[%d]", i), sp, w.now))
	}
	recs, _, err := w.r.S.Submit(context.Background(), nj)
	is.NoErr(err) // stored
	for _, rec := range recs {
		w.queueOf[rec.ID] = rec.Queue
		w.all = append(w.all, rec.ID)
	}
}

// act moves one random running job as its owner would.
func (w *world) act() {
	is := is.New(w.t)
	ctx := context.Background()
	running, err := w.r.S.Running(ctx)
	is.NoErr(err) // readable
	if len(running) == 0 {
		return
	}
	rec := running[w.rng.IntN(len(running))]
	o, ok := w.ownerOf(rec)
	if !ok {
		return // a job of a lease gone: Reap takes it
	}
	i := rec.CurrentStep
	var tr rpc.Transition
	switch st := rec.Steps[i].State; {
	case rec.Run.CancelReason != nil && st == rpc.StateRunning:
		r := own(rec)
		evs := machine.EndStep(&r, i, machine.Outcome{}, rpc.StateCancelled, *rec.Run.CancelReason, w.now)
		tr = rpc.Transition{Record: r, From: rpc.StateRunning, Events: evs, Epoch: o.Epoch}
	case rec.Run.CancelReason != nil:
		r := own(rec)
		evs := machine.EndUnstarted(&r, *rec.Run.CancelReason, rpc.StateCancelled, w.now)
		tr = rpc.Transition{Record: r, From: rpc.StateRunning, Events: evs, Epoch: o.Epoch}
	case st == rpc.StateRetrying:
		r := own(rec)
		evs := []rpc.Event{machine.StartStep(&r, i, w.now)}
		tr = rpc.Transition{Record: r, From: rpc.StateRunning, Events: evs, Epoch: o.Epoch}
	default:
		switch n := w.rng.IntN(20); {
		case n < 10:
			tr = succeedStep(rec, o, w.now)
		case n < 13:
			r := own(rec)
			evs := machine.StepRetrying(&r, i, machine.Outcome{Err: "exit status 1"}, w.now.Add(time.Second), w.now)
			tr = rpc.Transition{Record: r, From: rpc.StateRunning, Events: evs, Epoch: o.Epoch}
		case n < 16:
			tr = failStep(rec, o, w.now)
		case n < 18:
			tr = retryStep(rec, o, w.now)
		default:
			r := own(rec)
			evs := machine.FailRunning(&r, "timed out", w.now)
			tr = rpc.Transition{Record: r, From: rpc.StateRunning, Events: evs, Epoch: o.Epoch}
		}
	}
	_, err = w.r.S.Apply(ctx, []rpc.Transition{tr})
	is.NoErr(err) // the owner's write is stored
}

func testOracleReplay(t *testing.T, r *Rig) {
	is := is.New(t)
	ctx := context.Background()
	one, three := 1, 3
	is.NoErr(r.S.PutQueue(ctx, rpc.Queue{Name: "q1", Parallel: &one}))
	is.NoErr(r.S.PutQueue(ctx, rpc.Queue{Name: "q3", Parallel: &three}))
	is.NoErr(r.S.PutQueue(ctx, rpc.Queue{Name: "held", Paused: true}))
	queues := []string{"q1", "q3", "held", "default"}
	limit := map[string]int{"q1": 1, "q3": 3}
	w := &world{t: t, r: r, rng: rand.New(rand.NewPCG(15, 3)), now: epoch(), queueOf: map[int64]string{}, owners: map[int64]machine.Owner{}}
	joinAll := func() {
		w.owners = map[int64]machine.Owner{}
		for _, node := range []string{"a", "b"} {
			o := join(t, r.S, node)
			w.owners[o.Epoch] = o
		}
	}
	joinAll()
	ownerList := func() []machine.Owner {
		var os []machine.Owner
		for _, o := range w.owners {
			os = append(os, o)
		}
		slices.SortFunc(os, func(a, b machine.Owner) int { return int(a.Epoch - b.Epoch) })
		return os
	}
	reopened := false
	for round := range 600 {
		w.now = w.now.Add(time.Second)
		switch n := w.rng.IntN(20); {
		case n < 4:
			w.submitSome(queues)
		case n < 8:
			os := ownerList()
			claim(t, r.S, os[w.rng.IntN(len(os))], 1+w.rng.IntN(4), w.now)
		case n < 15:
			w.act()
		case n < 17:
			if len(w.all) > 0 {
				_, _, _, err := r.S.Cancel(ctx, w.all[w.rng.IntN(len(w.all))], "random cancel", w.now)
				is.True(err == nil || code(err) == rpc.CodeBadState) // a final job refuses
			}
		case n < 18:
			if len(w.all) > 0 {
				k := w.rng.IntN(len(w.all))
				gone, _, err := r.S.Remove(ctx, []int64{w.all[k]}, w.now)
				is.True(err == nil || code(err) == rpc.CodeBadState) // an unfinished or needed job stays
				if len(gone) > 0 {
					w.all = slices.Delete(w.all, k, k+1)
				}
			}
		case n < 19:
			is.NoErr(r.S.PutQueue(ctx, rpc.Queue{Name: "held", Paused: w.rng.IntN(2) == 0}))
		default:
			if round > 200 && r.h.Reopen != nil && !reopened {
				reopened = true
				r.reopen()
				joinAll()
			}
			_, _, err := r.S.Reap(ctx, w.now)
			is.NoErr(err) // reaped
		}
	}
	// Whatever was left running or waiting, the log and the records agree.
	n := checkReplay(t, r.S)
	high := checkRunningCounts(t, r.S, w.queueOf, limit)
	c := counts(t, r.S)
	t.Logf("%d jobs, %d events, counts %v, most running at once %v", len(w.all), n, c, high)
	is.True(c[rpc.StateSucceeded] > 0 && c[rpc.StateFailed] > 0 && c[rpc.StateCancelled] > 0) // the workload reached every end
	is.Equal(high["q1"], 1)                                                                   // the limited queues were full at times
}

func testOracleParallel(t *testing.T, r *Rig) {
	is := is.New(t)
	ctx := context.Background()
	s := r.S
	limit := map[string]int{"a": 1, "b": 2, "c": 3}
	for name, l := range limit {
		is.NoErr(s.PutQueue(ctx, rpc.Queue{Name: name, Parallel: &l}))
	}
	queues := []string{"a", "b", "c", "free"}
	queueOf := map[int64]string{}
	var specs []rpc.Spec
	for i := range 400 {
		specs = append(specs, inQueue(fmt.Sprint(i), queues[i%4], i%3))
	}
	for _, rec := range submit(t, s, specs...) {
		queueOf[rec.ID] = rec.Queue
	}
	owners := []machine.Owner{join(t, s, "a"), join(t, s, "b")}
	const workers = 6
	errs := make([]error, workers)
	var wg sync.WaitGroup
	for w := range workers {
		wg.Go(func() {
			rng := rand.New(rand.NewPCG(uint64(w), 7))
			o := owners[w%2]
			var held []rpc.Record
			for {
				recs, _, err := s.Claim(ctx, o, 2, epoch())
				if err != nil {
					errs[w] = err
					return
				}
				held = append(held, recs...)
				if len(held) == 0 {
					c, err := s.Counts(ctx)
					if err != nil {
						errs[w] = err
						return
					}
					if c[rpc.StateQueued] == 0 {
						return
					}
					time.Sleep(time.Millisecond)
					continue
				}
				if len(recs) > 0 && len(held) < 3 {
					continue
				}
				k := rng.IntN(len(held))
				tr := succeedStep(held[k], o, epoch())
				if rng.IntN(10) == 0 {
					tr = failStep(held[k], o, epoch())
				}
				held = slices.Delete(held, k, k+1)
				if _, err := s.Apply(ctx, []rpc.Transition{tr}); err != nil {
					errs[w] = err
					return
				}
			}
		})
	}
	wg.Wait()
	for _, err := range errs {
		is.NoErr(err) // every claim and write is stored
	}
	c := counts(t, s)
	is.Equal(c[rpc.StateSucceeded]+c[rpc.StateFailed], 400) // every job ran
	checkReplay(t, s)
	high := checkRunningCounts(t, s, queueOf, limit)
	t.Logf("most running at once: %v", high)
	qs, err := s.Queues(ctx)
	is.NoErr(err)
	for _, q := range qs {
		is.Equal(q.Running, 0) // every slot was given back
		is.Equal(q.Queued, 0)  // and nothing is left
	}
}

func testOracleTailers(t *testing.T, r *Rig) {
	is := is.New(t)
	ctx := context.Background()
	s := r.S
	_, last0 := bounds(t, s)
	const tailers = 4
	seen := make([][]int64, tailers)
	terrs := make([]error, tailers)
	target := make(chan int64, tailers)
	var tw sync.WaitGroup
	for k := range tailers {
		tw.Go(func() {
			last, goal := last0, int64(-1)
			for {
				evs, err := s.Events(ctx, last, 97)
				if err != nil {
					terrs[k] = err
					return
				}
				for _, ev := range evs {
					if ev.Seq != last+1 {
						terrs[k] = fmt.Errorf("tailer %d: seq %d after %d", k, ev.Seq, last)
						return
					}
					last = ev.Seq
					seen[k] = append(seen[k], ev.Seq)
				}
				if len(evs) > 0 {
					continue
				}
				if goal >= 0 && last >= goal {
					return
				}
				select {
				case <-s.Changed():
				case goal = <-target:
				case <-time.After(20 * time.Millisecond):
				}
			}
		})
	}

	o1, o2 := join(t, s, "a"), join(t, s, "b")
	var werrs []error
	var mu sync.Mutex
	fail := func(err error) {
		mu.Lock()
		werrs = append(werrs, err)
		mu.Unlock()
	}
	var submitters, workers sync.WaitGroup
	for k := range 3 {
		submitters.Go(func() {
			for i := range 60 {
				var nj []rpc.NewJob
				for j := range 1 + (i+k)%3 {
					nj = append(nj, NewJob(fmt.Sprintf("jobs[%d]", j), Spec(fmt.Sprint(k, i, j)), epoch()))
				}
				if _, _, err := s.Submit(ctx, nj); err != nil {
					fail(err)
					return
				}
			}
		})
	}
	subDone := make(chan struct{})
	go func() { submitters.Wait(); close(subDone) }()
	for k := range 2 {
		o := []machine.Owner{o1, o2}[k]
		workers.Go(func() {
			for {
				recs, _, err := s.Claim(ctx, o, 4, epoch())
				if err != nil {
					fail(err)
					return
				}
				var ts []rpc.Transition
				for _, rec := range recs {
					ts = append(ts, succeedStep(rec, o, epoch()))
				}
				for _, t := range ts {
					_, err := s.Apply(ctx, []rpc.Transition{t})
					if code(err) == rpc.CodeBadState {
						// A cancel stored since the claim is the outcome.
						var cur *rpc.Record
						if cur, err = s.Get(ctx, t.Record.ID); err == nil && cur.State == rpc.StateRunning && cur.Run.CancelReason != nil {
							end := own(*cur)
							evs := machine.EndUnstarted(&end, *cur.Run.CancelReason, rpc.StateCancelled, epoch())
							_, err = s.Apply(ctx, []rpc.Transition{{Record: end, From: rpc.StateRunning, Events: evs, Epoch: o.Epoch}})
						}
					}
					if err != nil {
						fail(err)
						return
					}
				}
				if len(ts) > 0 {
					continue
				}
				select {
				case <-subDone:
					c, err := s.Counts(ctx)
					if err != nil {
						fail(err)
						return
					}
					if c[rpc.StateQueued] == 0 {
						return
					}
				default:
				}
				time.Sleep(time.Millisecond)
			}
		})
	}
	workers.Go(func() {
		for i := range 50 {
			_, _, _, err := s.Cancel(ctx, int64(1+i*7), "tailer test", epoch())
			if err != nil && code(err) != rpc.CodeBadState && code(err) != rpc.CodeNotFound {
				fail(err)
				return
			}
			time.Sleep(time.Millisecond)
		}
	})
	submitters.Wait()
	workers.Wait()
	is.NoErr(errors.Join(werrs...)) // every write is stored
	_, last := bounds(t, s)
	for range tailers {
		target <- last
	}
	tw.Wait()
	want := make([]int64, 0, last-last0)
	for seq := last0 + 1; seq <= last; seq++ {
		want = append(want, seq)
	}
	for k := range tailers {
		is.NoErr(terrs[k])      // each tailer read without error
		is.Equal(seen[k], want) // every seq once, in order, none missing
	}
	t.Logf("%d tailers each read %d events", tailers, len(want))
}
