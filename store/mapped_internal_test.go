package store

import (
	"errors"
	"sync/atomic"
	"testing"
	"time"

	"github.com/matryer/is"
)

// waitFor polls cond until it holds, failing the test after a generous time
// (only there to end a hung test).
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("gave up waiting: %s", what)
		}
		time.Sleep(time.Millisecond)
	}
}

func TestReleaserPolicy(t *testing.T) {
	is := is.New(t)
	const floor, budget = 100, 50
	var rss atomic.Int64
	rss.Store(floor)
	var drops atomic.Int64
	finished := make(chan struct{})
	r := &releaser{
		budget:   budget,
		resident: func() (int64, error) { return rss.Load(), nil },
		drop: func(<-chan struct{}) error {
			drops.Add(1)
			rss.Store(floor + 5) // what the drop leaves is the new floor
			return nil
		},
		done: func() { close(finished) },
		wake: make(chan struct{}, 1),
	}
	quit := make(chan struct{})
	go r.run(quit)
	// With nothing growing, it goes to sleep, having taken its floor.
	waitFor(t, "the releaser to sleep at the start", r.idle.Load)

	rss.Store(floor + budget + 1)
	r.touch()
	waitFor(t, "a drop past the budget", func() bool { return drops.Load() == 1 })
	waitFor(t, "the releaser to sleep once nothing grows", r.idle.Load)

	// Asleep, it does not look: growth without a transaction goes unseen.
	rss.Store(floor + 5 + budget + 1)
	r.touch()               // a transaction wakes it
	is.True(!r.idle.Load()) // awake
	waitFor(t, "a drop after the wake", func() bool { return drops.Load() == 2 })
	is.Equal(r.drops.Load(), uint64(2)) // both drops counted

	// The floor it measures after a drop is what the budget counts from.
	rss.Store(floor + 5 + budget)
	r.touch()
	waitFor(t, "the releaser to sleep again", r.idle.Load)
	is.Equal(drops.Load(), int64(2)) // within the budget over the new floor: no drop

	close(quit)
	<-finished // run ends and releases what it holds
}

func TestReleaserGivesUpOnError(t *testing.T) {
	is := is.New(t)
	finished := make(chan struct{})
	calls := 0
	r := &releaser{
		budget: 1,
		resident: func() (int64, error) {
			calls++
			if calls > 1 {
				return 0, errors.New("no /proc")
			}
			return 1, nil
		},
		drop: func(<-chan struct{}) error { return nil },
		done: func() { close(finished) },
		wake: make(chan struct{}, 1),
	}
	go r.run(make(chan struct{}))
	<-finished                   // it stops by itself
	is.True(r.err.Load() != nil) // and says why
	r.touch()                    // a transaction after it stopped does not block
}
