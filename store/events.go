package store

import (
	"context"
	"fmt"
	"math"
	"time"

	"spool/rpc"
)

// trimChunk is how many events one transaction of TrimEvents removes at most.
const trimChunk = 10000

// Events reads up to limit stored events with seq > after, in seq order; a limit
// of 0 or less reads them all.
func (s *Store) Events(ctx context.Context, after int64, limit int) ([]rpc.Event, error) {
	evs := []rpc.Event{}
	if after == math.MaxInt64 {
		return evs, nil
	}
	err := s.view(ctx, func(b *txb) error {
		c := b.events.Cursor()
		for k, v := c.Seek(itob(max(after+1, 0))); k != nil; k, v = c.Next() {
			if limit > 0 && len(evs) >= limit {
				break
			}
			var ev rpc.Event
			if err := b.decode(v, &ev); err != nil {
				return fmt.Errorf("decode event %d: %w", btoi(k), err)
			}
			evs = append(evs, ev)
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	return evs, nil
}

// Bounds returns the oldest and the last stored seq; with no event stored, oldest
// is last+1. Last is the last seq ever given, even when trimmed.
func (s *Store) Bounds(ctx context.Context) (oldest, last int64, err error) {
	err = s.view(ctx, func(b *txb) error {
		last = int64(b.events.Sequence())
		oldest = last + 1
		if k, _ := b.events.Cursor().First(); k != nil {
			oldest = btoi(k)
		}
		return nil
	})
	return oldest, last, err
}

// TrimEvents removes the events older than before from the oldest end of the log,
// stopping at the first one that is not older, so that the log stays without a
// gap. It works in chunks of one transaction each and returns how many it removed.
func (s *Store) TrimEvents(ctx context.Context, before time.Time) (int, error) {
	total := 0
	for {
		var n int
		var done bool
		o := &op{weight: 64 * trimChunk, apply: func(b *txb) error {
			n, done = 0, false
			var seqs [][]byte
			c := b.events.Cursor()
			k, v := c.First()
			for ; k != nil && len(seqs) < trimChunk; k, v = c.Next() {
				var ev struct {
					Time time.Time `json:"time"`
				}
				if err := b.decode(v, &ev); err != nil {
					return fmt.Errorf("decode event %d: %w", btoi(k), err)
				}
				if !ev.Time.Before(before) {
					break
				}
				seqs = append(seqs, append([]byte{}, k...))
			}
			done = len(seqs) < trimChunk
			for _, seq := range seqs {
				if err := b.events.Delete(seq); err != nil {
					return fmt.Errorf("delete event %d: %w", btoi(seq), err)
				}
			}
			n = len(seqs)
			return nil
		}}
		if err := s.do(ctx, o); err != nil {
			return total, err
		}
		total += n
		if done {
			return total, nil
		}
	}
}
