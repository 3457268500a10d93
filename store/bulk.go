package store

import (
	"context"
	"time"

	"spool/rpc"
)

// CancelMany cancels many jobs in one transaction, as Cancel does one: each
// queued job (or running one between two attempts of a step) ends at once as
// cancelled, its queued dependents failed in the same transaction; each other
// running job gets the request stored (a second request keeps the first
// reason). Jobs that are unknown or already final are skipped: they ended
// between the caller's choice and this call. It returns the records it
// changed (with the dependents it failed) and the events, seq dense.
func (s *Store) CancelMany(ctx context.Context, ids []int64, reason string, now time.Time) ([]rpc.Record, []rpc.Event, error) {
	var recs []rpc.Record
	var evs []rpc.Event
	var o *op
	o = &op{weight: 2048 + 512*len(ids), apply: func(b *txb) error {
		recs, evs = nil, nil
		w := newWriter(b, now)
		wrote := false
		for _, id := range ids {
			r, err := b.getIndexed(id)
			if err != nil {
				return err
			}
			if r == nil || r.State.Final() {
				continue
			}
			rec, err := b.getFull(id, nil)
			if err != nil {
				return err
			}
			if rec.State.Final() {
				// A queued dependent failed earlier in this call.
				continue
			}
			did, ended, err := cancelOne(w, rec, reason, now)
			if err != nil {
				return err
			}
			if !did {
				continue
			}
			if ended {
				o.changed = true
			}
			// Dependents failed by an earlier cancel of this call are
			// drained now, so that a later id sees them final.
			if err := w.drain(); err != nil {
				return err
			}
			wrote = true
			recs = append(recs, *rec)
		}
		if !wrote {
			return errNoWrite
		}
		if err := w.finish(); err != nil {
			return err
		}
		evs = w.evs
		for _, x := range w.extra {
			recs = append(recs, *x)
		}
		return nil
	}}
	if err := s.do(ctx, o); err != nil {
		return nil, nil, err
	}
	if evs == nil {
		evs = []rpc.Event{}
	}
	return recs, evs, nil
}
