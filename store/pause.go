package store

import (
	"context"
	"time"

	"spool/rpc"
	"spool/rpc/machine"
)

// Resume lets a queued paused job go (machine.Resume): one paused while it ran
// and queued again by a reap. It becomes claimable in the same transaction
// (filed by writer.put). It returns the record as stored, with its spec, and
// the resumed event. A job that is not queued and paused answers 1002 (a
// running paused job is resumed by its owner, with Apply), an unknown one
// 1001.
func (s *Store) Resume(ctx context.Context, id int64, now time.Time) (*rpc.Record, []rpc.Event, error) {
	var out *rpc.Record
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
		if r.State != rpc.StateQueued || r.PausedAt == nil {
			what := "not paused"
			if r.State == rpc.StateRunning {
				what = "resume it through the daemon that runs it"
			}
			return rpc.BadState(id, r.State, what)
		}
		rec, err := b.getFull(id, nil)
		if err != nil {
			return err
		}
		w := newWriter(b, now)
		old := *rec
		if err := w.events(machine.Resume(rec, now), id); err != nil {
			return err
		}
		if err := w.put(&old, rec); err != nil {
			return err
		}
		if err := w.finish(); err != nil {
			return err
		}
		o.changed = true
		out, evs = rec, w.evs
		return nil
	}}
	if err := s.do(ctx, o); err != nil {
		return nil, nil, err
	}
	return out, evs, nil
}
