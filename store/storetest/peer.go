package storetest

import (
	"context"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/matryer/is"

	"spool/daemon"
	"spool/rpc"
	"spool/rpc/machine"
)

// The two-handle cases: two handles on one database, as two daemons open it,
// each with its own owners. They run when Harness.Peer is set.

// runPeer runs the two-handle cases.
func runPeer(t *testing.T, h Harness) {
	cases := []struct {
		name string
		fn   func(t *testing.T, a, b daemon.Store)
	}{
		{"PeerClaimExclusive", testPeerClaimExclusive},
		{"PeerSignalsAndCancels", testPeerSignalsAndCancels},
		{"PeerDependencyRace", testPeerDependencyRace},
		{"PeerKeyRace", testPeerKeyRace},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			if h.Peer == nil {
				t.Skip("the store is not shared by several daemons (Harness.Peer is nil)")
			}
			a := h.Open(t)
			b := h.Peer(t, a)
			c.fn(t, a, b)
			checkStore(t, a)
		})
	}
}

// testPeerClaimExclusive has 16 workers, half on each handle, claim and
// finish 1,200 jobs of three queues, one limited to 3: each job runs once,
// the limit holds across the handles, and the log is dense and replays to
// the records.
func testPeerClaimExclusive(t *testing.T, a, b daemon.Store) {
	is := is.New(t)
	ctx := context.Background()
	three := 3
	is.NoErr(b.PutQueue(ctx, rpc.Queue{Name: "q0", Parallel: &three}))
	const n = 1200
	queueOf := map[int64]string{}
	for k := 0; k < n; k += 300 {
		var specs []rpc.Spec
		for i := range 300 {
			specs = append(specs, inQueue(fmt.Sprint(k+i), fmt.Sprintf("q%d", (k+i)%3), (k+i)%4))
		}
		s := a
		if k%600 != 0 {
			s = b
		}
		for _, rec := range submit(t, s, specs...) {
			queueOf[rec.ID] = rec.Queue
		}
	}
	stores := []daemon.Store{a, b}
	owners := []machine.Owner{join(t, a, "a"), join(t, b, "b")}
	const workers = 16
	var mu sync.Mutex
	ran := map[int64]int{}
	errs := make([]error, workers)
	var wg sync.WaitGroup
	for w := range workers {
		wg.Go(func() {
			s, o := stores[w%2], owners[w%2]
			for {
				recs, _, err := s.Claim(ctx, o, 1+w%4, epoch())
				if err != nil {
					errs[w] = fmt.Errorf("claim: %w", err)
					return
				}
				if len(recs) == 0 {
					return
				}
				for _, rec := range recs {
					mu.Lock()
					ran[rec.ID]++
					mu.Unlock()
					if _, err := s.Apply(ctx, []rpc.Transition{succeedStep(rec, o, epoch())}); err != nil {
						errs[w] = fmt.Errorf("finish job %d: %w", rec.ID, err)
						return
					}
				}
			}
		})
	}
	wg.Wait()
	for w := range workers {
		is.NoErr(errs[w]) // every claim and end is stored
	}
	is.Equal(len(ran), n) // every job ran
	for id, k := range ran {
		if k != 1 {
			t.Fatalf("job %d was claimed %d times", id, k)
		}
	}
	is.Equal(counts(t, b)[rpc.StateSucceeded], n) // and succeeded, as both handles say
	is.Equal(counts(t, a)[rpc.StateSucceeded], n)
	checkReplay(t, a)
	high := checkRunningCounts(t, b, queueOf, map[string]int{"q0": 3})
	t.Logf("most running at once: %v", high)
}

// testPeerSignalsAndCancels: a commit through one handle signals Changed on
// the other, and a cancel stored through one reaches the owner that claimed
// the job through the other at its renewal.
func testPeerSignalsAndCancels(t *testing.T, a, b daemon.Store) {
	is := is.New(t)
	ctx := context.Background()
	drain := func(s daemon.Store) {
		for {
			select {
			case <-s.Changed():
			case <-time.After(200 * time.Millisecond):
				return
			}
		}
	}
	drain(b)
	rec := submit(t, a, Spec("x"))[0]
	select {
	case <-b.Changed():
	case <-time.After(10 * time.Second):
		t.Fatal("a submit through one handle did not signal the other")
	}
	oa := join(t, a, "a")
	got := claim(t, a, oa, 1, epoch())
	is.Equal(ids(got), []int64{rec.ID}) // claimed through a
	_, _, _, err := b.Cancel(ctx, rec.ID, "from b", epoch())
	is.NoErr(err) // the cancel is stored through b
	cancels, err := a.Renew(ctx, oa, epoch())
	is.NoErr(err)                                       // a renews
	is.Equal(cancels, []int64{rec.ID})                  // and learns of it
	is.Equal(get(t, a, rec.ID).State, rpc.StateRunning) // the job runs until its owner stops it
	ob := join(t, b, "b")
	_, err = b.Apply(ctx, []rpc.Transition{succeedStep(got[0], ob, epoch())})
	is.Equal(code(err), rpc.CodeBadState) // b's owner cannot write a's job
}

// testPeerDependencyRace submits jobs after a dependency through one handle
// while the other ends it: each dependent ends up released (the dependency
// succeeded) or failed with it, never left waiting.
func testPeerDependencyRace(t *testing.T, a, b daemon.Store) {
	is := is.New(t)
	ctx := context.Background()
	ob := join(t, b, "b")
	for round := range 30 {
		dep := submit(t, b, Spec(fmt.Sprint("dep", round)))[0]
		got := claim(t, b, ob, 1, epoch())
		is.Equal(ids(got), []int64{dep.ID}) // the dependency runs
		var wg sync.WaitGroup
		var dependents []int64
		var mu sync.Mutex
		for range 4 {
			wg.Go(func() {
				recs, _, err := a.Submit(ctx, []rpc.NewJob{NewJob("job", after("after", dep.ID), epoch())})
				if err != nil {
					t.Errorf("submit after %d: %v", dep.ID, err)
					return
				}
				mu.Lock()
				dependents = append(dependents, recs[0].ID)
				mu.Unlock()
			})
		}
		end := succeedStep(got[0], ob, epoch())
		if round%2 == 1 {
			end = failStep(got[0], ob, epoch())
		}
		wg.Go(func() {
			if _, err := b.Apply(ctx, []rpc.Transition{end}); err != nil {
				t.Errorf("end %d: %v", dep.ID, err)
			}
		})
		wg.Wait()
		for _, id := range dependents {
			rec := get(t, a, id)
			if round%2 == 1 {
				is.Equal(rec.State, rpc.StateFailed) // its dependency failed: so does it
				continue
			}
			is.Equal(rec.State, rpc.StateQueued) // its dependency succeeded
			if rec.Waiting != nil && *rec.Waiting == "after" {
				t.Fatalf("round %d: job %d waits for %d, which succeeded", round, id, dep.ID)
			}
		}
		// Clear the way for the next round.
		for {
			recs, _, err := b.Claim(ctx, ob, 10, epoch())
			is.NoErr(err)
			if len(recs) == 0 {
				break
			}
			for _, r := range recs {
				_, err := b.Apply(ctx, []rpc.Transition{succeedStep(r, ob, epoch())})
				is.NoErr(err)
			}
		}
	}
}

// testPeerKeyRace submits one spec with one key from many callers of both
// handles at once: one job, the same id for all.
func testPeerKeyRace(t *testing.T, a, b daemon.Store) {
	is := is.New(t)
	ctx := context.Background()
	sp := Spec("keyed")
	sp.Key = "once"
	var wg sync.WaitGroup
	var mu sync.Mutex
	got := map[int64]int{}
	for i := range 16 {
		s := a
		if i%2 == 1 {
			s = b
		}
		wg.Go(func() {
			recs, _, err := s.Submit(ctx, []rpc.NewJob{NewJob("job", sp, epoch())})
			if err != nil {
				t.Errorf("submit: %v", err)
				return
			}
			mu.Lock()
			got[recs[0].ID]++
			mu.Unlock()
		})
	}
	wg.Wait()
	is.Equal(len(got), 1) // one job for every caller
	c := counts(t, a)
	is.Equal(c[rpc.StateQueued], 1) // stored once
}
