package store

import (
	"context"
	"fmt"
	"time"

	"spool/rpc"
	"spool/rpc/machine"
)

// Editing and holding a queued job. Each is one transaction through
// writer.put, which refiles the job (bReady, bTimers or neither: a held job is
// in neither), moves its queue's counts and its dependents entries.

// queuedForChange reads job id for a change that only a queued job allows:
// 1001 when it is unknown, 1002 with its state when it is not queued.
func queuedForChange(b *txb, id int64, what string) (*rpc.Record, error) {
	r, err := b.getIndexed(id)
	if err != nil {
		return nil, err
	}
	if r == nil {
		return nil, rpc.NotFound(id)
	}
	if r.State != rpc.StateQueued {
		return nil, rpc.BadState(id, r.State, "only a queued job can be "+what)
	}
	return b.getFull(id, nil)
}

// changeQueued runs one change of a queued job in one transaction: change
// checks and changes rec (its copy), returning the events to store, none when
// nothing changes (then nothing is written). It returns the record as stored,
// with its spec, and the events.
func (s *Store) changeQueued(ctx context.Context, id int64, what string, now time.Time, change func(b *txb, rec *rpc.Record) ([]rpc.Event, error)) (*rpc.Record, []rpc.Event, error) {
	var out *rpc.Record
	var evs []rpc.Event
	var o *op
	o = &op{weight: 2048, apply: func(b *txb) error {
		out, evs = nil, []rpc.Event{}
		rec, err := queuedForChange(b, id, what)
		if err != nil {
			return err
		}
		old := *rec
		es, err := change(b, rec)
		if err != nil {
			return err
		}
		if len(es) == 0 {
			out = &old
			return errNoWrite
		}
		w := newWriter(b, now)
		if err := w.events(es, id); err != nil {
			return err
		}
		if err := w.put(&old, rec); err != nil {
			return err
		}
		if err := w.finish(); err != nil {
			return err
		}
		out, evs = rec, w.evs
		o.changed = true
		return nil
	}}
	if err := s.do(ctx, o); err != nil {
		return nil, nil, err
	}
	return out, evs, nil
}

// Hold holds a queued job: no claim takes it until Release. Holding a held job
// changes nothing and stores no event. A queued job with a cancel stored (one
// reaped after its cancel) answers 1002: its next claim ends it.
func (s *Store) Hold(ctx context.Context, id int64, now time.Time) (*rpc.Record, []rpc.Event, error) {
	return s.changeQueued(ctx, id, "held", now, func(b *txb, rec *rpc.Record) ([]rpc.Event, error) {
		if rec.Run.Held {
			return nil, nil
		}
		if rec.Run.CancelReason != nil {
			return nil, rpc.BadState(id, rec.State, "a cancel is stored")
		}
		return machine.Hold(rec, now), nil
	})
}

// Release ends a queued job's hold: it is filed again by its priority and id
// (or its not_before, or its dependencies). Releasing a job that is not held
// changes nothing and stores no event.
func (s *Store) Release(ctx context.Context, id int64, now time.Time) (*rpc.Record, []rpc.Event, error) {
	return s.changeQueued(ctx, id, "released", now, func(b *txb, rec *rpc.Record) ([]rpc.Event, error) {
		if !rec.Run.Held {
			return nil, nil
		}
		return machine.Release(rec, now), nil
	})
}

// Edit changes a queued job as p says (machine.Edit). The ids of a new after
// must be stored jobs other than this one (-32602 naming after[i]), none of
// them final without success (it would fail the job at once: refused, -32602),
// and none may wait, through its own dependencies, for this job (a cycle:
// -32602). An edit that changes nothing stores no event.
func (s *Store) Edit(ctx context.Context, p rpc.EditParams, now time.Time) (*rpc.Record, []rpc.Event, error) {
	return s.changeQueued(ctx, p.ID, "edited", now, func(b *txb, rec *rpc.Record) ([]rpc.Event, error) {
		if p.After != nil {
			if err := b.checkAfter(p.ID, *p.After); err != nil {
				return nil, err
			}
		}
		return machine.Edit(rec, p, now)
	})
}

// checkAfter checks the new dependencies of job id.
func (b *txb) checkAfter(id int64, after []int64) error {
	for i, dep := range after {
		field := fmt.Sprintf("after[%d]", i)
		if dep == id {
			return rpc.InvalidParams(field, fmt.Sprintf("job %d cannot wait for itself", id))
		}
		st, err := b.stateOf(dep)
		if err != nil {
			return err
		}
		switch {
		case st == "":
			return rpc.InvalidParams(field, fmt.Sprintf("job %d not found", dep))
		case st.Final() && st != rpc.StateSucceeded:
			return rpc.InvalidParams(field, fmt.Sprintf("job %d is %s: a job that waits for it would fail at once", dep, st))
		case st.Final():
			continue
		}
		path, err := b.waitsFor(dep, id)
		if err != nil {
			return err
		}
		if path != nil {
			return rpc.InvalidParams(field, fmt.Sprintf("job %d waits for job %d (%s): a cycle", dep, id, pathString(path)))
		}
	}
	return nil
}

// waitsFor reports whether unfinished job from waits, through the dependencies
// of unfinished jobs, for job target: the chain of ids from from to target, or
// nil. Final jobs wait for nothing any more.
func (b *txb) waitsFor(from, target int64) ([]int64, error) {
	prev := map[int64]int64{from: 0}
	queue := []int64{from}
	for len(queue) > 0 {
		id := queue[0]
		queue = queue[1:]
		r, err := b.getIndexed(id)
		if err != nil {
			return nil, err
		}
		if r == nil || r.State.Final() {
			continue
		}
		for _, dep := range r.After {
			if _, seen := prev[dep]; seen {
				continue
			}
			prev[dep] = id
			if dep == target {
				var path []int64
				for at := dep; at != 0; at = prev[at] {
					path = append([]int64{at}, path...)
				}
				return path, nil
			}
			queue = append(queue, dep)
		}
	}
	return nil, nil
}

// pathString writes a chain of ids as "3 after 5 after 7".
func pathString(ids []int64) string {
	s := ""
	for i, id := range ids {
		if i > 0 {
			s += " after "
		}
		s += fmt.Sprint(id)
	}
	return s
}
