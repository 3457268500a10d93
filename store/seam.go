package store

import (
	"context"
	"errors"
	"fmt"
	"time"

	"spool/rpc"
	"spool/rpc/machine"
)

// With bbolt the lease is the boot: an epoch joined since Open is live until
// Close, and never expires; every other epoch (those of earlier boots, and 0,
// which versions before schema 3 wrote) is gone, its running jobs left for Reap.

// leaseGone is 1002 for a lease that is not live.
func leaseGone(o machine.Owner) error {
	return rpc.Errorf(rpc.CodeBadState, "the lease of node %q, epoch %d, is gone", o.Node, o.Epoch)
}

// liveLease reports whether o is a lease joined since Open.
func (s *Store) liveLease(o machine.Owner) bool {
	s.liveMu.Lock()
	defer s.liveMu.Unlock()
	node, ok := s.live[o.Epoch]
	return ok && node == o.Node
}

// liveEpochs is a copy of the epochs joined since Open.
func (s *Store) liveEpochs() map[int64]bool {
	s.liveMu.Lock()
	defer s.liveMu.Unlock()
	m := make(map[int64]bool, len(s.live))
	for e := range s.live {
		m[e] = true
	}
	return m
}

// Join makes node a member and returns its owner identity, with an epoch one
// above the last one the database gave (stored, so that it is never given
// again).
func (s *Store) Join(ctx context.Context, node string, now time.Time) (machine.Owner, error) {
	var epoch int64
	err := s.do(ctx, &op{weight: 64, apply: func(b *txb) error {
		epoch = 1
		if v := b.meta.Get([]byte(metaEpoch)); len(v) == 8 {
			epoch = btoi(v) + 1
		}
		if err := b.meta.Put([]byte(metaEpoch), itob(epoch)); err != nil {
			return fmt.Errorf("store epoch: %w", err)
		}
		return nil
	}})
	if err != nil {
		return machine.Owner{}, err
	}
	o := machine.Owner{Node: node, Epoch: epoch}
	s.liveMu.Lock()
	s.live[epoch] = node
	s.liveMu.Unlock()
	return o, nil
}

// Renew returns the ids of o's running jobs that have a cancel stored, in id
// order; 1002 when o was not joined since Open. The lease itself needs no
// renewing: it lasts as long as the store is open.
func (s *Store) Renew(ctx context.Context, o machine.Owner, now time.Time) ([]int64, error) {
	if !s.liveLease(o) {
		return nil, leaseGone(o)
	}
	ids := []int64{}
	err := s.view(ctx, func(b *txb) error {
		c := b.cancels.Cursor()
		for k, _ := c.First(); k != nil; k, _ = c.Next() {
			rec, err := b.getIndexed(btoi(k))
			if err != nil {
				return err
			}
			if rec != nil && rec.State == rpc.StateRunning && rec.Run.Epoch == o.Epoch {
				ids = append(ids, rec.ID)
			}
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	return ids, nil
}

// Reap takes the running jobs whose epoch is not live: each gets
// machine.Interrupt, queued again (claimable at once, its dependencies having
// succeeded) or failed with its queued dependents. It returns the records as
// stored, with their specs (the dependents failed after the jobs reaped), and
// the events.
func (s *Store) Reap(ctx context.Context, now time.Time) ([]rpc.Record, []rpc.Event, error) {
	var recs []rpc.Record
	var evs []rpc.Event
	var o *op
	o = &op{weight: 4096, apply: func(b *txb) error {
		live := s.liveEpochs()
		w := newWriter(b, now)
		recs = []rpc.Record{}
		for _, id := range idsWithPrefix(b.byState, statePrefix(rpc.StateRunning)) {
			r, err := b.getIndexed(id)
			if err != nil {
				return err
			}
			if r == nil || r.State != rpc.StateRunning || live[r.Run.Epoch] {
				continue
			}
			rec, err := b.getFull(id, nil)
			if err != nil {
				return err
			}
			old := *rec
			if err := w.events(machine.Interrupt(rec, now), id); err != nil {
				return err
			}
			if err := w.put(&old, rec); err != nil {
				return err
			}
			recs = append(recs, *rec)
		}
		if err := w.finish(); err != nil {
			return err
		}
		for _, rec := range w.extra {
			recs = append(recs, *rec)
		}
		evs = w.evs
		if len(evs) == 0 {
			return errNoWrite
		}
		o.changed = true
		return nil
	}}
	if err := s.do(ctx, o); err != nil {
		return nil, nil, err
	}
	return recs, evs, nil
}

// Claim moves up to limit claimable jobs to running, owned by o, in one
// transaction: first the jobs whose not_before came are made claimable, then
// the best job across the queues that are not paused and have room (priority
// descending, then id ascending) is taken, again and again. Each queue costs one
// seek per job taken, whatever the number of jobs it holds. 1002 when o was not
// joined since Open.
func (s *Store) Claim(ctx context.Context, o machine.Owner, limit int, now time.Time) ([]rpc.Record, []rpc.Event, error) {
	return s.ClaimEarly(ctx, o, limit, now, nil)
}

// ClaimEarly is Claim, and it calls picked, once, with the jobs it takes as
// soon as the transaction that stores the claim has chosen them, before its
// commit: the caller may start them while the commit runs. When ClaimEarly
// then fails, none of them was claimed, and the caller must stop what it
// started (daemon.EarlyClaimer). picked runs on the committing goroutine and
// must not block.
func (s *Store) ClaimEarly(ctx context.Context, o machine.Owner, limit int, now time.Time, picked func([]rpc.Record)) ([]rpc.Record, []rpc.Event, error) {
	if !s.liveLease(o) {
		return nil, nil, leaseGone(o)
	}
	// Most calls find nothing to claim (the scheduler asks after every change):
	// a read answers them without a turn in the commit queue.
	var some bool
	err := s.view(ctx, func(b *txb) error {
		if k, _ := b.timers.Cursor().First(); len(k) == 16 && !keyTime(k).After(now) {
			some = true
			return nil
		}
		hs, err := b.heads()
		some = len(hs) > 0
		return err
	})
	if err != nil || !some || limit <= 0 {
		return nil, nil, err
	}
	var recs []rpc.Record
	var evs []rpc.Event
	var call *op
	call = &op{weight: 2048 * max(limit, 1), urgent: true, apply: func(b *txb) error {
		w := newWriter(b, now)
		var err error
		if recs, err = claimTx(w, o, limit, now); err != nil {
			return err
		}
		if err := w.finish(); err != nil {
			return err
		}
		evs = w.evs
		call.changed = len(evs) > 0
		return nil
	}}
	if picked != nil {
		call.applied = func() {
			if len(recs) > 0 {
				picked(recs)
			}
		}
	}
	if err := s.do(ctx, call); err != nil {
		return nil, nil, err
	}
	return recs, evs, nil
}

// Cancel asks for job id to end as cancelled with reason. A queued job ends at
// once (machine.EndUnstarted), its queued dependents failed with it; the records
// stored (with their specs) and the events are returned. A running job gets the
// reason stored on its record, unless it has one already (the first is kept),
// and Renew tells its owner; the record, as stored, is returned, with no event.
// A final job answers 1002 with its state, an unknown one 1001.
func (s *Store) Cancel(ctx context.Context, id int64, reason string, now time.Time) (rpc.State, []rpc.Record, []rpc.Event, error) {
	var state rpc.State
	var recs []rpc.Record
	var evs []rpc.Event
	var o *op
	o = &op{weight: 2048, apply: func(b *txb) error {
		r, err := b.getIndexed(id)
		if err != nil {
			return err
		}
		if r == nil {
			return rpc.NotFound(id)
		}
		if r.State.Final() {
			return rpc.BadState(id, r.State, "already final")
		}
		rec, err := b.getFull(id, nil)
		if err != nil {
			return err
		}
		w := newWriter(b, now)
		state, evs = rec.State, []rpc.Event{}
		wrote, ended, err := cancelOne(w, rec, reason, now)
		if err != nil {
			return err
		}
		if !wrote {
			recs = []rpc.Record{*rec}
			return errNoWrite
		}
		o.changed = ended
		if err := w.finish(); err != nil {
			return err
		}
		state, evs = rec.State, w.evs
		recs = []rpc.Record{*rec}
		for _, x := range w.extra {
			recs = append(recs, *x)
		}
		return nil
	}}
	if err := s.do(ctx, o); err != nil {
		return "", nil, nil, err
	}
	return state, recs, evs, nil
}

// NextNotBefore is the earliest not_before of the queued jobs that wait only
// for it (the first timer), or the zero time when there is none. It may be past:
// Claim makes such a job claimable.
func (s *Store) NextNotBefore(ctx context.Context) (time.Time, error) {
	var at time.Time
	err := s.view(ctx, func(b *txb) error {
		if k, _ := b.timers.Cursor().First(); len(k) == 16 {
			at = keyTime(k)
		}
		return nil
	})
	return at, err
}

// Running reads every running job, with its spec, in id order.
func (s *Store) Running(ctx context.Context) ([]rpc.Record, error) {
	recs := []rpc.Record{}
	err := s.view(ctx, func(b *txb) error {
		cache := envCache{}
		for _, id := range idsWithPrefix(b.byState, statePrefix(rpc.StateRunning)) {
			rec, err := b.getFull(id, cache)
			if err != nil {
				return err
			}
			if rec == nil {
				return fmt.Errorf("running job %d is not stored", id)
			}
			recs = append(recs, *rec)
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	return recs, nil
}

// ApplyClaim stores transitions as Apply does and, in the same transaction,
// claims up to limit jobs as ClaimEarly does (picked is told of them before the
// commit): a runner that ends a job hands its slot to the next in the commit
// that records the end, one commit where two would be. When the transitions
// fail, nothing is stored and nothing claimed.
func (s *Store) ApplyClaim(ctx context.Context, ts []rpc.Transition, o machine.Owner, limit int, now time.Time, picked func([]rpc.Record)) ([]rpc.Event, []rpc.Record, []rpc.Event, error) {
	if !s.liveLease(o) {
		return nil, nil, nil, leaseGone(o)
	}
	var evs, claimEvs []rpc.Event
	var recs []rpc.Record
	var call *op
	call = &op{weight: 1024*len(ts) + 2048*max(limit, 1), urgent: true, apply: func(b *txb) error {
		recs, claimEvs = nil, nil
		w := newWriter(b, s.clock())
		var err error
		if evs, err = applyTx(w, ts); err != nil {
			return err
		}
		call.changed = len(evs) > 0 || w.moved
		if limit <= 0 {
			return nil
		}
		cw := newWriter(b, now)
		if recs, err = claimTx(cw, o, limit, now); err != nil {
			if errors.Is(err, errNoWrite) {
				recs = nil
				return nil
			}
			return err
		}
		if err := cw.finish(); err != nil {
			return err
		}
		claimEvs = cw.evs
		call.changed = call.changed || len(claimEvs) > 0
		return nil
	}}
	if picked != nil {
		call.applied = func() {
			if len(recs) > 0 {
				picked(recs)
			}
		}
	}
	if err := s.do(ctx, call); err != nil {
		return nil, nil, nil, err
	}
	return evs, recs, claimEvs, nil
}

// cancelOne applies a cancel to rec, read in w's transaction: a queued job, or a
// running one between two attempts of a step (no process runs), ends at once,
// keeping a reason stored before; a running one gets the request stored, for its
// owner. It reports whether it wrote (a running job with a request already is
// left as it is) and whether the job ended.
func cancelOne(w *writer, rec *rpc.Record, reason string, now time.Time) (wrote, ended bool, err error) {
	old := *rec
	retrying := rec.State == rpc.StateRunning && rec.Steps[rec.CurrentStep].State == rpc.StateRetrying
	switch {
	case rec.State == rpc.StateQueued || retrying:
		why := reason
		if rec.Run.CancelReason != nil {
			why = *rec.Run.CancelReason
		} else {
			rec.Run.CancelReason = &why
		}
		if err := w.events(machine.EndUnstarted(rec, why, rpc.StateCancelled, now), rec.ID); err != nil {
			return false, false, err
		}
		ended = true
	case rec.Run.CancelReason != nil:
		return false, false, nil
	default:
		why := reason
		rec.Run.CancelReason = &why
	}
	if err := w.put(&old, rec); err != nil {
		return false, false, err
	}
	return true, ended, nil
}
