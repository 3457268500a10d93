package postgres

import (
	"context"
	"encoding/json"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"

	"spool/rpc"
)

// Schedules are rows of spool_schedules: name and the schedule's JSON, with
// its last fired slot. A fire locks the row, so that of two daemons firing a
// slot at once the second finds it fired.

// readSchedule reads schedule name, locked for update when lock says so, or
// nil when there is none.
func readSchedule(ctx context.Context, q querier, name string, lock bool) (*rpc.Schedule, error) {
	sql := "SELECT body FROM spool_schedules WHERE name = $1"
	if lock {
		sql += " FOR UPDATE"
	}
	var raw []byte
	err := q.QueryRow(ctx, sql, name).Scan(&raw)
	if err == pgx.ErrNoRows {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("read schedule %q: %w", name, err)
	}
	var sc rpc.Schedule
	if err := json.Unmarshal(raw, &sc); err != nil {
		return nil, fmt.Errorf("decode schedule %q: %w", name, err)
	}
	return &sc, nil
}

// writeSchedule stores sc, without what the daemon computes when it answers.
func writeSchedule(ctx context.Context, tx pgx.Tx, sc *rpc.Schedule) error {
	stored := *sc
	stored.NextSlot = nil
	stored.Error = ""
	raw, err := json.Marshal(stored)
	if err != nil {
		return fmt.Errorf("encode schedule %q: %w", sc.Name, err)
	}
	if _, err := tx.Exec(ctx, "INSERT INTO spool_schedules (name, body) VALUES ($1, $2) ON CONFLICT (name) DO UPDATE SET body = excluded.body", sc.Name, raw); err != nil {
		return fmt.Errorf("put schedule %q: %w", sc.Name, err)
	}
	return nil
}

// PutSchedule stores a schedule, replacing one of the same name but keeping
// its created_at, last_slot and last_job: a slot fired before is never fired
// again. It returns the schedule as stored.
func (s *Store) PutSchedule(ctx context.Context, sc rpc.Schedule) (*rpc.Schedule, error) {
	if sc.Name == "" {
		return nil, rpc.InvalidParams("name", "must not be empty")
	}
	var out *rpc.Schedule
	err := s.tx(ctx, func(tx pgx.Tx) error {
		next := sc
		old, err := readSchedule(ctx, tx, sc.Name, true)
		if err != nil {
			return err
		}
		if old != nil {
			next.CreatedAt = old.CreatedAt
			next.LastSlot = old.LastSlot
			next.LastJob = old.LastJob
		}
		if err := writeSchedule(ctx, tx, &next); err != nil {
			return err
		}
		out = &next
		return nil
	})
	if err != nil {
		return nil, err
	}
	s.committed() // the other daemons' schedulers learn of it
	return out, nil
}

// Schedule reads a schedule; 1001 when unknown.
func (s *Store) Schedule(ctx context.Context, name string) (*rpc.Schedule, error) {
	sc, err := readSchedule(ctx, s.pool, name, false)
	if err != nil {
		return nil, rpc.Storage(err)
	}
	if sc == nil {
		return nil, rpc.NoSchedule(name)
	}
	return sc, nil
}

// Schedules reads every schedule in name order (byte order, as the names
// compare in Go).
func (s *Store) Schedules(ctx context.Context) ([]rpc.Schedule, error) {
	rows, err := s.pool.Query(ctx, `SELECT name, body FROM spool_schedules ORDER BY name COLLATE "C"`)
	if err != nil {
		return nil, rpc.Storage(fmt.Errorf("read schedules: %w", err))
	}
	defer rows.Close()
	out := []rpc.Schedule{}
	for rows.Next() {
		var name string
		var raw []byte
		if err := rows.Scan(&name, &raw); err != nil {
			return nil, rpc.Storage(fmt.Errorf("read schedules: %w", err))
		}
		var sc rpc.Schedule
		if err := json.Unmarshal(raw, &sc); err != nil {
			return nil, rpc.Storage(fmt.Errorf("decode schedule %q: %w", name, err))
		}
		out = append(out, sc)
	}
	if err := rows.Err(); err != nil {
		return nil, rpc.Storage(fmt.Errorf("read schedules: %w", err))
	}
	return out, nil
}

// RemoveSchedule removes a schedule; 1001 when unknown. The jobs it made stay.
func (s *Store) RemoveSchedule(ctx context.Context, name string) error {
	tag, err := s.pool.Exec(ctx, "DELETE FROM spool_schedules WHERE name = $1", name)
	if err != nil {
		return rpc.Storage(fmt.Errorf("remove schedule %q: %w", name, err))
	}
	if tag.RowsAffected() == 0 {
		return rpc.NoSchedule(name)
	}
	s.committed()
	return nil
}

// PauseSchedule pauses (or resumes) a schedule, setting its updated_at to
// now; 1001 when unknown. It returns the schedule as stored.
func (s *Store) PauseSchedule(ctx context.Context, name string, paused bool, now time.Time) (*rpc.Schedule, error) {
	var out *rpc.Schedule
	err := s.tx(ctx, func(tx pgx.Tx) error {
		sc, err := readSchedule(ctx, tx, name, true)
		if err != nil {
			return err
		}
		if sc == nil {
			return rpc.NoSchedule(name)
		}
		sc.Paused = paused
		sc.UpdatedAt = now
		if err := writeSchedule(ctx, tx, sc); err != nil {
			return err
		}
		out = sc
		return nil
	})
	if err != nil {
		return nil, err
	}
	s.committed()
	return out, nil
}

// FireSchedule fires slot of schedule name in one transaction, under the
// schedule row's lock: it submits job (as Submit does, with its submitted
// event), appends a schedule_fired event naming the schedule, the slot and
// the job, and sets the schedule's last_slot and last_job. An unknown
// schedule answers 1001; a paused one, or one whose last_slot is not before
// slot, 1002, and nothing is stored: a slot fires once, whichever daemon
// tries.
func (s *Store) FireSchedule(ctx context.Context, name string, slot time.Time, job rpc.NewJob) (rpc.Record, []rpc.Event, error) {
	if job.Record.Spec == nil {
		return rpc.Record{}, nil, rpc.InvalidParams(job.Field, "the job has no spec")
	}
	ss, err := encodeSpec(job.Record.Spec)
	if err != nil {
		return rpc.Record{}, nil, rpc.InvalidParams(job.Field, "the spec cannot be encoded: "+err.Error())
	}
	slot = slot.UTC()
	var rec rpc.Record
	var w *writer
	err = s.tx(ctx, func(tx pgx.Tx) error {
		sc, err := readSchedule(ctx, tx, name, true)
		if err != nil {
			return err
		}
		switch {
		case sc == nil:
			return rpc.NoSchedule(name)
		case sc.Paused:
			return rpc.SchedulePaused(name)
		case sc.LastSlot != nil && !slot.After(*sc.LastSlot):
			return rpc.SlotFired(name, slot, *sc.LastSlot)
		}
		now := s.opts.Clock()
		w = s.newWriter(ctx, tx, now)
		recs, err := w.submit([]rpc.NewJob{job}, []storedSpec{ss})
		if err != nil {
			return err
		}
		rec = recs[0]
		at := job.Event.Time
		if at.IsZero() {
			at = now
		}
		fired := slot
		w.event(rpc.Event{Time: at, Type: rpc.EventScheduleFired, Job: rec.ID, Schedule: name, Slot: &fired}, rec.ID)
		if err := w.finish(); err != nil {
			return err
		}
		id := rec.ID
		sc.LastSlot, sc.LastJob = &fired, &id
		return writeSchedule(ctx, tx, sc)
	})
	if err != nil {
		return rpc.Record{}, nil, err
	}
	s.done(w)
	return rec, w.evs, nil
}
