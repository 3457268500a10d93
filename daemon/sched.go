package daemon

import (
	"context"
	"fmt"
	"time"

	"spool/rpc"
)

// jobState is a job this daemon claimed and runs. mu serialises its transitions:
// it is held from reading rec to storing the next record, never while a step runs.
// Queued jobs are the store's: the daemon keeps nothing of them.
type jobState struct {
	mu  chanMutex
	rec rpc.Record // the latest stored record, with its spec; guarded by d.mu to read
	// lease is the daemon's lease the job was claimed under: its runner runs
	// in lease.ctx and stores nothing once the lease is lost.
	lease *lease

	freed bool // its slot was given back before its final commit

	// stored is closed once the claim that gave the job to this daemon is
	// stored, or failed (claimErr, guarded by d.mu): a runner may start the
	// job's step before, never store anything.
	stored   <-chan struct{}
	claimErr error

	// stopStep ends the context of the step that runs, if any; guarded by d.mu.
	stopStep context.CancelCauseFunc
	// cancelled is closed once a cancel of the job is known; guarded by d.mu.
	cancelled chan struct{}
	live      *liveState // progress and last output line of the running step
	// reaped is closed once no process of the last step that ran is left;
	// guarded by d.mu.
	reaped <-chan struct{}
	// pause is what job.pause reaches of the running step; guarded by d.mu.
	pause jobPause
}

// chanMutex is a mutex that can be taken with a context.
type chanMutex chan struct{}

func newChanMutex() chanMutex { return make(chanMutex, 1) }

func (m chanMutex) lock(ctx context.Context) error {
	select {
	case m <- struct{}{}:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

func (m chanMutex) unlock() { <-m }

// claim asks the store for as many runnable jobs as this daemon has room for and
// hands each to a runner; it repeats while the store gives all it was asked for.
// The store picks them (priority, then id, within the queue limits of every
// daemon on it) and stores their start in one transaction: the daemon's part is
// its own capacity, --max-parallel. claimMu is held from the claim until the jobs
// are in d.jobs, so that a cancel stored after the claim finds its runner. With
// a store that tells its picks before the commit (EarlyClaimer), the runners
// start then and store nothing until the claim is stored.
func (d *Daemon) claim(ctx context.Context) {
	d.claimMu.Lock()
	defer d.claimMu.Unlock()
	early, _ := d.store.(EarlyClaimer)
	for {
		l := d.currentLease()
		if l == nil {
			return // lost: keepLease joins again, then kicks
		}
		room := d.room()
		if room <= 0 {
			return
		}
		// The claim runs in the lease's context: a lease lost while a claim
		// hangs ends it.
		lctx := l.ctx
		n, err := d.claimRound(l, func(begin func([]rpc.Record)) ([]rpc.Record, []rpc.Event, error) {
			if early != nil {
				return early.ClaimEarly(lctx, l.owner, room, d.clock.Now(), begin)
			}
			recs, evs, err := d.store.Claim(lctx, l.owner, room, d.clock.Now())
			if err == nil {
				begin(recs)
			}
			return recs, evs, err
		})
		if err != nil {
			if ctx.Err() != nil || lctx.Err() != nil {
				return // the daemon stops, or keepLease joins again and kicks
			}
			if rpc.CodeOf(err) == rpc.CodeBadState {
				d.loseLease(l, fmt.Errorf("the store refused a claim: %w", err))
				return
			}
			// A failure of the store: claim again after a pause, longer
			// while it lasts, logged once for the run of failures.
			d.claimFails.fail(d, "claim jobs", err)
			d.claimWait = storeRetry(d.claimWait)
			time.AfterFunc(d.claimWait, d.kick)
			return
		}
		d.claimFails.ok(d, "claimed jobs")
		d.claimWait = 0
		if n < room {
			return
		}
	}
}

// room is how many more jobs the daemon can take now.
func (d *Daemon) room() int {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.closing {
		return 0
	}
	return d.cfg.MaxParallel - d.running
}

// claimRound runs one claim through call, claimMu held: call asks the store
// and hands begin the jobs it takes, before or after its commit. The jobs begun
// get a runner each; when call then fails, those runners stop and store
// nothing. It publishes the claim's events and returns how many jobs it took.
func (d *Daemon) claimRound(l *lease, call func(begin func([]rpc.Record)) ([]rpc.Record, []rpc.Event, error)) (int, error) {
	var started []*jobState
	stored := make(chan struct{})
	begin := func(recs []rpc.Record) {
		d.mu.Lock()
		defer d.mu.Unlock()
		for _, rec := range recs {
			js := &jobState{mu: newChanMutex(), rec: rec, lease: l, cancelled: make(chan struct{}), stored: stored}
			if rec.Run.CancelReason != nil {
				close(js.cancelled)
			}
			d.jobs[rec.ID] = js
			d.running++
			// Counted under d.mu: Run waits for the runners only after it set closing.
			d.runners.Add(1)
			started = append(started, js)
			go d.runJob(js)
		}
	}
	recs, evs, err := call(begin)
	if err != nil {
		// The jobs begun early were not claimed: their runners stop and store
		// nothing; the jobs stay queued.
		d.mu.Lock()
		for _, js := range started {
			js.claimErr = err
			if js.stopStep != nil {
				js.stopStep(errJobOver)
			}
		}
		d.mu.Unlock()
		close(stored)
		return 0, err
	}
	close(stored)
	d.hub.publish(evs)
	return len(recs), nil
}

// claimStored waits until the claim of the job is stored and reports whether
// it was: a runner stores nothing of a job whose claim failed.
func (d *Daemon) claimStored(js *jobState) bool {
	<-js.stored
	d.mu.Lock()
	defer d.mu.Unlock()
	return js.claimErr == nil
}

// claimFailed reports, without waiting, whether the job's claim is known to
// have failed; d.mu held.
func (js *jobState) claimFailed() bool {
	select {
	case <-js.stored:
		return js.claimErr != nil
	default:
		return false
	}
}

// freeSlot gives back a running job's slot of the daemon's capacity, once;
// d.mu held.
func (d *Daemon) freeSlot(js *jobState) {
	if js.freed {
		return
	}
	js.freed = true
	d.running--
}

// release takes a job this daemon no longer runs out of memory and gives its slot
// back; d.mu held.
func (d *Daemon) release(js *jobState) {
	if d.jobs[js.rec.ID] == js {
		delete(d.jobs, js.rec.ID)
	}
	d.freeSlot(js)
}

// nextTimer returns a channel that fires when the earliest not_before in the
// store is due, or nil when no job waits for one.
func (d *Daemon) nextTimer(ctx context.Context) <-chan time.Time {
	at, err := d.store.NextNotBefore(ctx)
	if err != nil {
		if ctx.Err() == nil {
			d.timerFails.fail(d, "read the next not_before", err)
		}
		return time.After(time.Second)
	}
	d.timerFails.ok(d, "read the next not_before")
	if at.IsZero() {
		return nil
	}
	return time.After(max(at.Sub(d.clock.Now()), 0))
}

// hasRoom reports whether the daemon can start another job; d.mu held.
func (d *Daemon) hasRoom() bool {
	return !d.closing && d.running < d.cfg.MaxParallel
}
