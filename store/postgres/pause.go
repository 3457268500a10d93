package postgres

import (
	"context"
	"time"

	"github.com/jackc/pgx/v5"

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
	var w *writer
	err := s.tx(ctx, func(tx pgx.Tx) error {
		w = s.newWriter(ctx, tx, now)
		rec, err := w.get(id)
		if err != nil {
			return err
		}
		if rec == nil {
			return rpc.NotFound(id)
		}
		if rec.State != rpc.StateQueued || rec.PausedAt == nil {
			what := "not paused"
			if rec.State == rpc.StateRunning {
				what = "resume it through the daemon that runs it"
			}
			return rpc.BadState(id, rec.State, what)
		}
		w.events(machine.Resume(rec, now), id)
		if err := w.put(rec); err != nil {
			return err
		}
		if err := w.finish(); err != nil {
			return err
		}
		cp := *w.rows[id].rec
		out = &cp
		return nil
	})
	if err != nil {
		return nil, nil, err
	}
	s.done(w)
	return out, w.evs, nil
}
