package store

import (
	"sync/atomic"
	"time"
)

// bbolt reads the database through a read-only shared map of the file. Every
// page a read touches stays in the process's resident memory (and the kernel maps
// its neighbours with it) until the map lets it go: reads of random old jobs
// would make the daemon's resident size grow towards the size of the file. The
// releaser watches the file-backed pages of the process while transactions run,
// and past a budget asks the kernel to drop the map's pages from the process. The
// data stays in the system's page cache: a later read of a dropped page costs a
// minor fault, not a disk read. (Get, the read of random old jobs, does not go
// through the map at all: see pageFile.)

// Bounds of the mapped pages the process keeps.
const (
	// defaultMapBudget is how many bytes of mapped pages the process may gain
	// over its floor before the releaser drops them.
	defaultMapBudget = 48 << 20
	// releasePoll is how often the releaser looks at the process's file-backed
	// resident memory while the store is in use.
	releasePoll = 20 * time.Millisecond
	// releaseLinger is how long the releaser goes on looking once that memory
	// stopped growing, before it sleeps until the next transaction.
	releaseLinger = 250 * time.Millisecond
	// releaseChunk is the span of the map dropped in one read transaction, so
	// that a commit that grows the file never waits long for the map's lock.
	releaseChunk = 64 << 20
)

// releaser keeps the mapped pages of the database that the process holds within
// a budget. It costs a transaction one atomic load; while the store is idle, its
// goroutine sleeps until the next transaction.
type releaser struct {
	// budget is the bytes of file-backed memory the process may gain over
	// its floor before the mapped pages are dropped.
	budget int64
	// resident reads the process's file-backed resident memory, in bytes.
	resident func() (int64, error)
	// drop drops the database's mapped pages from the process; stop ends it
	// early when the store closes.
	drop func(stop <-chan struct{}) error
	// done releases what resident holds.
	done func()

	// idle is set while the goroutine sleeps until a transaction wakes it.
	idle atomic.Bool
	wake chan struct{}
	// drops counts the times the mapped pages were dropped.
	drops atomic.Uint64
	// err is why the releaser stopped early, if it did.
	err atomic.Pointer[error]
}

// touch tells the releaser that a transaction begins: it wakes the goroutine if
// it sleeps.
func (r *releaser) touch() {
	if r.idle.Load() && r.idle.CompareAndSwap(true, false) {
		select {
		case r.wake <- struct{}{}:
		default:
		}
	}
}

// fail records why the releaser stopped: it gives up rather than fail a read.
func (r *releaser) fail(err error) { r.err.Store(&err) }

// run watches the resident memory until quit is closed. It polls every
// releasePoll while the memory grows, sleeps once it stopped growing for
// releaseLinger, and drops the mapped pages whenever the memory exceeds its floor
// (the lowest seen: the program's own code and what the map keeps) by the budget.
func (r *releaser) run(quit <-chan struct{}) {
	defer r.done()
	floor, err := r.resident()
	if err != nil {
		r.fail(err)
		return
	}
	last := floor
	quiet := time.Duration(0)
	timer := time.NewTimer(releasePoll)
	defer timer.Stop()
	for {
		if quiet >= releaseLinger {
			r.idle.Store(true)
			select {
			case <-r.wake:
			case <-quit:
				return
			}
			quiet = 0
		}
		timer.Reset(releasePoll)
		select {
		case <-timer.C:
		case <-quit:
			return
		}
		rss, err := r.resident()
		if err != nil {
			r.fail(err)
			return
		}
		if rss > last {
			quiet = 0
		} else {
			quiet += releasePoll
		}
		floor = min(floor, rss)
		if rss-floor > r.budget {
			if err := r.drop(quit); err != nil {
				r.fail(err)
				return
			}
			r.drops.Add(1)
			if rss, err = r.resident(); err != nil {
				r.fail(err)
				return
			}
			// What the drop left is the new floor: pages it cannot give
			// back must not make it drop again at every poll.
			floor = rss
		}
		last = rss
	}
}
