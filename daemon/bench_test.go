package daemon

import (
	"container/heap"
	"fmt"
	"math/rand/v2"
	"testing"

	"spool/rpc"
)

// BenchmarkPickNext measures the scheduler's choice of the next job: queued jobs
// spread over 100 queues, with mixed priorities. Each op picks one job (the best
// head among the queues) and puts it back, so the number queued stays the same.
// The cost must not grow with the number of queued jobs: compare the sizes.
func BenchmarkPickNext(b *testing.B) {
	for _, n := range []int{1_000, 100_000} {
		b.Run(fmt.Sprintf("queued=%d/queues=100", n), func(b *testing.B) {
			d := &Daemon{
				cfg:        Config{MaxParallel: 1},
				clock:      SystemClock{},
				jobs:       map[int64]*jobState{},
				queues:     map[string]*queueState{},
				dependents: map[int64][]int64{},
			}
			rng := rand.New(rand.NewPCG(1, 2))
			for id := int64(1); id <= int64(n); id++ {
				rec := rpc.Record{Job: rpc.Job{ID: id, State: rpc.StateQueued,
					Queue: fmt.Sprintf("q%d", rng.IntN(100)), Priority: rng.IntN(5)}}
				d.admit(rec, nil)
			}
			b.ReportAllocs()
			b.ResetTimer()
			for b.Loop() {
				picks := d.pickLocked()
				if len(picks) != 1 {
					b.Fatalf("picked %d jobs, want 1", len(picks))
				}
				// Put it back as if its start could not be stored.
				js := picks[0]
				q := d.queues[js.rec.Queue]
				js.claimed = false
				q.running--
				q.queued++
				d.running--
				heap.Push(&q.ready, js)
			}
		})
	}
}

// BenchmarkPickBatch measures claiming 64 jobs at once (a scheduler pass after the
// global limit was raised or many jobs finished) from the same queues.
func BenchmarkPickBatch(b *testing.B) {
	for _, n := range []int{1_000, 100_000} {
		b.Run(fmt.Sprintf("queued=%d/queues=100", n), func(b *testing.B) {
			d := &Daemon{
				cfg:        Config{MaxParallel: 64},
				clock:      SystemClock{},
				jobs:       map[int64]*jobState{},
				queues:     map[string]*queueState{},
				dependents: map[int64][]int64{},
			}
			for id := int64(1); id <= int64(n); id++ {
				d.admit(rpc.Record{Job: rpc.Job{ID: id, State: rpc.StateQueued, Queue: fmt.Sprintf("q%d", id%100)}}, nil)
			}
			b.ReportAllocs()
			b.ResetTimer()
			for b.Loop() {
				picks := d.pickLocked()
				if len(picks) != 64 {
					b.Fatalf("picked %d jobs, want 64", len(picks))
				}
				for _, js := range picks {
					q := d.queues[js.rec.Queue]
					js.claimed = false
					q.running--
					q.queued++
					d.running--
					heap.Push(&q.ready, js)
				}
			}
		})
	}
}
