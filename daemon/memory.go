package daemon

import (
	"runtime/debug"
	"sync"
	"time"
)

// burstJobs is how many jobs submitted since memory was last handed back make a
// burst worth handing back for: decoding and storing them takes heap that the
// daemon holds nothing of once they are stored (a queued job lives in the
// store), but that the runtime would return to the system only slowly.
const burstJobs = 10_000

// bursts hands the heap that a burst of submits took back to the system once the
// burst is over: no submit for releaseDelay.
type bursts struct {
	mu    sync.Mutex
	jobs  int    // submitted since the last hand-back
	gen   uint64 // raised by every submit, so that a timer sees a burst go on
	armed bool
}

// note counts n jobs submitted and, past burstJobs, arms the hand-back.
func (b *bursts) note(n int) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.jobs += n
	b.gen++
	if b.jobs < burstJobs || b.armed {
		return
	}
	b.armed = true
	b.wait(b.gen)
}

// wait hands memory back after releaseDelay unless submits went on meanwhile,
// then waits again; b.mu held.
func (b *bursts) wait(gen uint64) {
	time.AfterFunc(releaseDelay, func() {
		b.mu.Lock()
		if b.gen != gen {
			b.wait(b.gen)
			b.mu.Unlock()
			return
		}
		b.jobs, b.armed = 0, false
		b.mu.Unlock()
		debug.FreeOSMemory()
	})
}
