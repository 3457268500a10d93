package postgres

import (
	"context"
	"errors"
	"time"

	"github.com/jackc/pgx/v5"

	"spool/rpc"
)

// Group commit. Every transaction that stores events ends by taking the
// counter row's lock and holds it through its commit's WAL flush, so the
// transactions that store events commit one at a time: at one flush each, a
// daemon's runners would wait in line. Submit and Apply calls of one handle
// are instead gathered while a commit is in flight and stored together, in
// one transaction, by whichever caller finds none in flight (the leader).
// When one call of a group is refused (a guard fails: 1001, 1002, -32602,
// 1008), the whole transaction is rolled back and each call of the group runs
// again in a transaction of its own, so that the refusal is that call's alone.

// gop is one call's part of a group: run does its checks and changes in the
// group's writer, and leaves its consequences settled (dependents, hooks).
type gop struct {
	run func(w *writer) error
	// ids and epochs are the jobs and epochs the call reads, which the
	// group reads for all its calls at once.
	ids, epochs []int64
	done        chan struct{}
	err         error
	// evs are the events the call stored, with their seq.
	evs []rpc.Event
	// from and to delimit the call's events in the group's writer.
	from, to int
}

// maxGroup bounds the calls one transaction stores.
const maxGroup = 256

// group runs op in a group commit and returns its error once stored.
func (s *Store) group(ctx context.Context, op *gop) error {
	op.done = make(chan struct{})
	s.gmu.Lock()
	s.gqueue = append(s.gqueue, op)
	if s.gbusy {
		s.gmu.Unlock()
		// The leader stores it whatever this caller's context says: a call
		// that was sent may have been stored, and is not abandoned halfway.
		<-op.done
		return op.err
	}
	s.gbusy = true
	for len(s.gqueue) > 0 {
		n := min(len(s.gqueue), maxGroup)
		batch := s.gqueue[:n:n]
		s.gqueue = s.gqueue[n:]
		s.gmu.Unlock()
		s.runGroup(batch)
		s.gmu.Lock()
	}
	s.gbusy = false
	s.gmu.Unlock()
	<-op.done
	return op.err
}

// runGroup stores batch in one transaction, or each call alone when one is
// refused.
func (s *Store) runGroup(batch []*gop) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	var w *writer
	var refused error
	err := s.tx(ctx, func(tx pgx.Tx) error {
		refused = nil
		w = s.newWriter(ctx, tx, s.opts.Clock())
		var ids, epochs []int64
		for _, op := range batch {
			ids = append(ids, op.ids...)
			epochs = append(epochs, op.epochs...)
		}
		if err := w.prefetch(ids, epochs); err != nil {
			return err
		}
		for _, op := range batch {
			op.from = len(w.evs)
			if err := op.run(w); err != nil {
				var re *rpc.Error
				if errors.As(err, &re) {
					refused = err
				}
				return err
			}
			op.to = len(w.evs)
		}
		return w.flush()
	})
	if err != nil && refused != nil && len(batch) > 1 {
		for _, op := range batch {
			s.runGroup([]*gop{op})
		}
		return
	}
	if err == nil {
		s.done(w)
	}
	for _, op := range batch {
		op.err = err
		if err == nil {
			op.evs = append([]rpc.Event{}, w.evs[op.from:op.to]...)
		}
		close(op.done)
	}
}
