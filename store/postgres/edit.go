package postgres

import (
	"context"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"

	"spool/rpc"
	"spool/rpc/machine"
)

// Editing and holding a queued job. Each is one transaction through
// writer.put, which refiles the job: claimable, or not (held, waiting for a
// dependency).

// changeQueued runs one change of a queued job in one transaction: change
// checks and changes rec (a copy read locked), returning the events to store,
// none when nothing changes (then nothing is written). what says what only a
// queued job can be, for the 1002 of another state. It returns the record as
// stored, with its spec, and the events.
func (s *Store) changeQueued(ctx context.Context, id int64, what string, now time.Time, change func(w *writer, rec *rpc.Record) ([]rpc.Event, error)) (*rpc.Record, []rpc.Event, error) {
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
		if rec.State != rpc.StateQueued {
			return rpc.BadState(id, rec.State, "only a queued job can be "+what)
		}
		old := *rec
		evs, err := change(w, rec)
		if err != nil {
			return err
		}
		if len(evs) == 0 {
			out = &old
			return nil
		}
		w.events(evs, id)
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

// Hold holds a queued job: no claim takes it until Release. Holding a held job
// changes nothing and stores no event. A queued job with a cancel stored (one
// reaped after its cancel) answers 1002: its next claim ends it.
func (s *Store) Hold(ctx context.Context, id int64, now time.Time) (*rpc.Record, []rpc.Event, error) {
	return s.changeQueued(ctx, id, "held", now, func(_ *writer, rec *rpc.Record) ([]rpc.Event, error) {
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
	return s.changeQueued(ctx, id, "released", now, func(_ *writer, rec *rpc.Record) ([]rpc.Event, error) {
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
	return s.changeQueued(ctx, p.ID, "edited", now, func(w *writer, rec *rpc.Record) ([]rpc.Event, error) {
		if p.After != nil {
			if err := w.checkAfter(p.ID, *p.After); err != nil {
				return nil, err
			}
		}
		before := rec.After
		evs, err := machine.Edit(rec, p, now)
		if err != nil || len(evs) == 0 {
			return evs, err
		}
		if p.Queue != nil {
			if w.queues == nil {
				w.queues = map[string]bool{}
			}
			w.queues[rec.Queue] = true
		}
		if !slices.Equal(before, rec.After) {
			if err := w.refileDeps(rec.ID, rec.After); err != nil {
				return nil, err
			}
		}
		return evs, nil
	})
}

// refileDeps replaces the stored dependencies of job id by after, so that the
// end of each releases or fails it.
func (w *writer) refileDeps(id int64, after []int64) error {
	if _, err := w.tx.Exec(w.ctx, "DELETE FROM spool_deps WHERE job = $1", id); err != nil {
		return fmt.Errorf("replace the dependencies of job %d: %w", id, err)
	}
	for _, dep := range after {
		w.newDeps = append(w.newDeps, [2]int64{dep, id})
	}
	return nil
}

// checkAfter checks the new dependencies of job id.
func (w *writer) checkAfter(id int64, after []int64) error {
	// One edit of dependencies at a time in the cluster: two edits that
	// each add half of a cycle would not see each other's rows.
	if _, err := w.tx.Exec(w.ctx, "SELECT pg_advisory_xact_lock(7345003)"); err != nil {
		return fmt.Errorf("lock dependency edits: %w", err)
	}
	states, err := w.lockedStates(after)
	if err != nil {
		return err
	}
	for i, dep := range after {
		field := fmt.Sprintf("after[%d]", i)
		if dep == id {
			return rpc.InvalidParams(field, fmt.Sprintf("job %d cannot wait for itself", id))
		}
		st := states[dep]
		switch {
		case st == "":
			return rpc.InvalidParams(field, fmt.Sprintf("job %d not found", dep))
		case st.Final() && st != rpc.StateSucceeded:
			return rpc.InvalidParams(field, fmt.Sprintf("job %d is %s: a job that waits for it would fail at once", dep, st))
		case st.Final():
			continue
		}
		path, err := w.waitsFor(dep, id)
		if err != nil {
			return err
		}
		if path != nil {
			return rpc.InvalidParams(field, fmt.Sprintf("job %d waits for job %d (%s): a cycle", dep, id, pathString(path)))
		}
	}
	return nil
}

// waitsFor reports whether unfinished job from waits, through the
// dependencies of unfinished jobs, for job target: the chain of ids from from
// to target, or nil. It walks the stored dependencies, which only unfinished
// jobs keep, a level of the walk per query.
func (w *writer) waitsFor(from, target int64) ([]int64, error) {
	prev := map[int64]int64{from: 0}
	level := []int64{from}
	for len(level) > 0 {
		rows, err := w.tx.Query(w.ctx, "SELECT job, dep FROM spool_deps WHERE job = ANY($1) ORDER BY job, dep", level)
		if err != nil {
			return nil, fmt.Errorf("read dependencies: %w", err)
		}
		var edges [][2]int64
		for rows.Next() {
			var e [2]int64
			if err := rows.Scan(&e[0], &e[1]); err != nil {
				rows.Close()
				return nil, fmt.Errorf("read dependencies: %w", err)
			}
			edges = append(edges, e)
		}
		rows.Close()
		if err := rows.Err(); err != nil {
			return nil, fmt.Errorf("read dependencies: %w", err)
		}
		level = level[:0:0]
		for _, e := range edges {
			job, dep := e[0], e[1]
			if _, seen := prev[dep]; seen {
				continue
			}
			prev[dep] = job
			if dep == target {
				var path []int64
				for at := dep; at != 0; at = prev[at] {
					path = append([]int64{at}, path...)
				}
				return path, nil
			}
			level = append(level, dep)
		}
	}
	return nil, nil
}

// pathString writes a chain of ids as "3 after 5 after 7".
func pathString(ids []int64) string {
	parts := make([]string, len(ids))
	for i, id := range ids {
		parts[i] = strconv.FormatInt(id, 10)
	}
	return strings.Join(parts, " after ")
}
