package daemon

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"time"

	"spool/rpc"
)

// errJobOver says the store moved a job on without its runner before one of the
// runner's transitions could be stored: it became final (a cancel won a race),
// or it is no longer this daemon's (its lease is gone). The runner has nothing
// left to do.
var errJobOver = errors.New("the job is no longer this runner's")

// apply stores transitions and publishes their events once committed.
func (d *Daemon) apply(ctx context.Context, ts []rpc.Transition) ([]rpc.Event, error) {
	evs, err := d.store.Apply(ctx, ts)
	if err != nil {
		return nil, fmt.Errorf("store transitions: %w", err)
	}
	d.hub.publish(evs)
	return evs, nil
}

// cloneRecord copies the parts of a record that transitions change.
func cloneRecord(r rpc.Record) rpc.Record {
	r.Steps = slices.Clone(r.Steps)
	r.Run.Procs = slices.Clone(r.Run.Procs)
	r.After = slices.Clone(r.After)
	if r.Progress != nil {
		p := *r.Progress
		r.Progress = &p
	}
	return r
}

// current copies the job's record for its next transition, or says errJobOver
// when the job is no longer this runner's. The caller holds js.mu.
func (d *Daemon) current(js *jobState) (rpc.Record, error) {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.jobs[js.rec.ID] != js || js.rec.State.Final() {
		return rpc.Record{}, errJobOver
	}
	return cloneRecord(js.rec), nil
}

// transition stores the change fn makes to the job's record, fenced by the
// epoch the job was claimed under: a store that finds the job in another state
// or owned by another epoch answers 1002, which ends the runner's work on the
// job (errJobOver), and so does a lease lost before the write. A failure of the
// store (1004, a lost connection) is tried again, 50 ms doubling up to 1 s,
// until it is stored, refused, the lease is lost or ctx ends: a store that
// restarts costs a delay, never a transition. The caller holds js.mu.
func (d *Daemon) transition(ctx context.Context, js *jobState, fn mutation) (rpc.Record, error) {
	if !d.claimStored(js) {
		return rpc.Record{}, errJobOver
	}
	var wait time.Duration
	var fails burst
	for {
		rec, err := d.transitionOnce(ctx, js, fn)
		if err == nil || errors.Is(err, errJobOver) || refused(err) || ctx.Err() != nil {
			if err == nil {
				fails.ok(d, "stored a transition")
			}
			return rec, err
		}
		fails.fail(d, fmt.Sprintf("store a transition of job %d", rec.ID), err)
		wait = storeRetry(wait)
		select {
		case <-time.After(wait):
		case <-ctx.Done():
			return rec, fmt.Errorf("store a transition of job %d: %w", rec.ID, err)
		case <-js.lease.ctx.Done():
			return rec, fmt.Errorf("%w: %w", errJobOver, context.Cause(js.lease.ctx))
		}
	}
}

// transitionOnce tries to store the change fn makes to the job's record once.
func (d *Daemon) transitionOnce(ctx context.Context, js *jobState, fn mutation) (rpc.Record, error) {
	rec, err := d.current(js)
	if err != nil {
		return rec, err
	}
	if js.lease.ctx.Err() != nil {
		// The lease is lost: nothing more is stored of the job.
		return rec, fmt.Errorf("%w: %w", errJobOver, context.Cause(js.lease.ctx))
	}
	from := rec.State
	evs := fn(&rec, d.clock.Now())
	t := rpc.Transition{Record: rec, From: from, Events: evs, Epoch: rec.Run.Epoch}
	if ac, ok := d.store.(ApplyClaimer); ok && rec.State.Final() {
		err = d.applyClaim(ctx, ac, js, t)
	} else {
		_, err = d.apply(ctx, []rpc.Transition{t})
	}
	if err == nil {
		d.mu.Lock()
		js.rec = rec
		d.mu.Unlock()
		return rec, nil
	}
	if rpc.CodeOf(err) == rpc.CodeBadState && rec.Run.CancelReason == nil && d.learnCancel(ctx, js) {
		// A cancel was stored for the job since its runner last looked, which
		// the store will not let a transition pass over: it is the outcome.
		return d.transitionOnce(ctx, js, fn)
	}
	if refused(err) {
		d.log.Warn("a transition lost its race", "id", rec.ID, "err", err)
		d.mu.Lock()
		if js.stopStep != nil {
			js.stopStep(errJobOver)
		}
		d.mu.Unlock()
		return rec, fmt.Errorf("%w: %v", errJobOver, err)
	}
	return rec, err
}

// applyClaim stores the transition that ends a job together with the claim of
// the jobs its slot, and any other free one, go to, under the daemon's current
// lease; with none (it is lost and not joined again), the transition alone.
func (d *Daemon) applyClaim(ctx context.Context, ac ApplyClaimer, js *jobState, t rpc.Transition) error {
	d.claimMu.Lock()
	defer d.claimMu.Unlock()
	d.mu.Lock()
	d.freeSlot(js)
	d.mu.Unlock()
	l := d.currentLease()
	if l == nil {
		_, err := d.apply(ctx, []rpc.Transition{t})
		return err
	}
	room := d.room()
	var evs []rpc.Event
	_, err := d.claimRound(l, func(begin func([]rpc.Record)) ([]rpc.Record, []rpc.Event, error) {
		var recs []rpc.Record
		var claimEvs []rpc.Event
		var err error
		evs, recs, claimEvs, err = ac.ApplyClaim(ctx, []rpc.Transition{t}, l.owner, room, d.clock.Now(), begin)
		return recs, claimEvs, err
	})
	if err != nil {
		return fmt.Errorf("store transitions: %w", err)
	}
	d.hub.publish(evs)
	return nil
}

// learnCancel reads the job from the store and, when it is still this runner's
// and has a cancel stored that the runner did not know, takes the cancel in:
// the step stops and the next transitions see it. The caller holds js.mu.
func (d *Daemon) learnCancel(ctx context.Context, js *jobState) bool {
	stored, err := d.store.Get(ctx, js.rec.ID)
	if err != nil || stored.State != rpc.StateRunning || stored.Run.Epoch != js.rec.Run.Epoch || stored.Run.CancelReason == nil {
		return false
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	if js.rec.Run.CancelReason != nil {
		return false
	}
	js.rec.Run.CancelReason = stored.Run.CancelReason
	if js.stopStep != nil {
		js.stopStep(errCancelRequested)
	}
	close(js.cancelled)
	return true
}

// update stores the change fn makes to the job, taking its lock.
func (d *Daemon) update(ctx context.Context, js *jobState, fn mutation) error {
	if err := js.mu.lock(ctx); err != nil {
		return err
	}
	defer js.mu.unlock()
	return d.finish(ctx, js, fn)
}

// finish stores the change fn makes to the job (the caller holds js.mu) and, when
// it made the job final, gives its slot back; the store fails its queued
// dependents, and theirs, in the same transaction.
func (d *Daemon) finish(ctx context.Context, js *jobState, fn mutation) error {
	rec, err := d.transition(ctx, js, fn)
	if err != nil || !rec.State.Final() {
		return err
	}
	d.mu.Lock()
	reaped := js.reaped
	d.release(js)
	d.mu.Unlock()
	d.kick()
	d.logFinal(rec)
	// An empty results folder goes with the job's end (after it was told: the
	// removal is no part of it), once no process of the job is left to write
	// into it; one that holds what the job left goes when the job is removed.
	dir := d.jobResultDir(rec.ID)
	if reaped != nil {
		d.bg.Add(1)
		go func() {
			defer d.bg.Done()
			<-reaped
			d.folders.release(dir)
		}()
	} else {
		d.folders.release(dir)
	}
	return nil
}

func (d *Daemon) logFinal(rec rpc.Record) {
	// Asked first: the arguments would cost allocations even when not logged.
	if d.log.Enabled(context.Background(), slog.LevelInfo) {
		d.log.Info("job final", "id", rec.ID, "state", rec.State, "error", rec.Error)
	}
}
