package postgres

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
	return s.changeQueued(ctx, id, "resumed by the store: a running job is resumed through the daemon that runs it", now,
		func(w *writer, rec *rpc.Record) ([]rpc.Event, error) {
			if rec.PausedAt == nil {
				return nil, rpc.BadState(id, rec.State, "not paused")
			}
			return machine.Resume(rec, now), nil
		})
}
