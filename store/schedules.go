package store

import (
	"context"
	"encoding/json"
	"fmt"
	"time"

	"spool/rpc"
)

// Schedules live in bSchedules (schema 4): name -> the schedule's JSON, with
// its last fired slot. A fire stores the slot, the job it made and their
// events in one transaction, guarded by the slot: two daemons on one database
// cannot both fire a slot.

// getSchedule reads a schedule in b's transaction, or nil.
func (b *txb) getSchedule(name string) (*rpc.Schedule, error) {
	raw := b.schedules.Get([]byte(name))
	if raw == nil {
		return nil, nil
	}
	var sc rpc.Schedule
	if err := json.Unmarshal(raw, &sc); err != nil {
		return nil, fmt.Errorf("decode schedule %q: %w", name, err)
	}
	return &sc, nil
}

// putSchedule writes sc, without what the daemon computes when it answers.
func (b *txb) putSchedule(sc *rpc.Schedule) error {
	stored := *sc
	stored.NextSlot = nil
	stored.Error = ""
	raw, err := json.Marshal(stored)
	if err != nil {
		return fmt.Errorf("encode schedule %q: %w", sc.Name, err)
	}
	if err := b.schedules.Put([]byte(sc.Name), raw); err != nil {
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
	var o *op
	o = &op{weight: 1024, apply: func(b *txb) error {
		next := sc
		old, err := b.getSchedule(sc.Name)
		if err != nil {
			return err
		}
		if old != nil {
			next.CreatedAt = old.CreatedAt
			next.LastSlot = old.LastSlot
			next.LastJob = old.LastJob
		}
		if err := b.putSchedule(&next); err != nil {
			return err
		}
		out = &next
		o.changed = true
		return nil
	}}
	if err := s.do(ctx, o); err != nil {
		return nil, err
	}
	return out, nil
}

// Schedule reads a schedule; 1001 when unknown.
func (s *Store) Schedule(ctx context.Context, name string) (*rpc.Schedule, error) {
	var out *rpc.Schedule
	err := s.view(ctx, func(b *txb) error {
		sc, err := b.getSchedule(name)
		if err != nil {
			return err
		}
		if sc == nil {
			return rpc.NoSchedule(name)
		}
		out = sc
		return nil
	})
	return out, err
}

// Schedules reads every schedule in name order.
func (s *Store) Schedules(ctx context.Context) ([]rpc.Schedule, error) {
	out := []rpc.Schedule{}
	err := s.view(ctx, func(b *txb) error {
		return b.schedules.ForEach(func(k, v []byte) error {
			var sc rpc.Schedule
			if err := json.Unmarshal(v, &sc); err != nil {
				return fmt.Errorf("decode schedule %q: %w", k, err)
			}
			out = append(out, sc)
			return nil
		})
	})
	if err != nil {
		return nil, err
	}
	return out, nil
}

// RemoveSchedule removes a schedule; 1001 when unknown. The jobs it made stay.
func (s *Store) RemoveSchedule(ctx context.Context, name string) error {
	var o *op
	o = &op{weight: 64, apply: func(b *txb) error {
		if b.schedules.Get([]byte(name)) == nil {
			return rpc.NoSchedule(name)
		}
		if err := b.schedules.Delete([]byte(name)); err != nil {
			return fmt.Errorf("delete schedule %q: %w", name, err)
		}
		o.changed = true
		return nil
	}}
	return s.do(ctx, o)
}

// PauseSchedule pauses (or resumes) a schedule, setting its updated_at to
// now; 1001 when unknown. It returns the schedule as stored.
func (s *Store) PauseSchedule(ctx context.Context, name string, paused bool, now time.Time) (*rpc.Schedule, error) {
	var out *rpc.Schedule
	var o *op
	o = &op{weight: 1024, apply: func(b *txb) error {
		sc, err := b.getSchedule(name)
		if err != nil {
			return err
		}
		if sc == nil {
			return rpc.NoSchedule(name)
		}
		sc.Paused = paused
		sc.UpdatedAt = now
		if err := b.putSchedule(sc); err != nil {
			return err
		}
		out = sc
		o.changed = true
		return nil
	}}
	if err := s.do(ctx, o); err != nil {
		return nil, err
	}
	return out, nil
}

// FireSchedule fires slot of schedule name in one transaction: it submits job
// (as Submit does, with its submitted event), appends a schedule_fired event
// naming the schedule, the slot and the job, and sets the schedule's last_slot
// and last_job. An unknown schedule answers 1001; a paused one, or one whose
// last_slot is not before slot, 1002, and nothing is stored.
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
	var evs []rpc.Event
	var o *op
	o = &op{weight: len(ss.raw) + 1024, apply: func(b *txb) error {
		sc, err := b.getSchedule(name)
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
		w := newWriter(b, s.clock())
		recs, _, err := submitTx(w, []rpc.NewJob{job}, []storedSpec{ss})
		if err != nil {
			return err
		}
		rec = recs[0]
		at := job.Event.Time
		if at.IsZero() {
			at = s.clock()
		}
		fired := slot
		if err := w.event(rpc.Event{Time: at, Type: rpc.EventScheduleFired, Job: rec.ID, Schedule: name, Slot: &fired}, rec.ID); err != nil {
			return err
		}
		id := rec.ID
		sc.LastSlot, sc.LastJob = &fired, &id
		if err := b.putSchedule(sc); err != nil {
			return err
		}
		evs = w.evs
		o.changed = true
		return nil
	}}
	if err := s.do(ctx, o); err != nil {
		return rpc.Record{}, nil, err
	}
	return rec, evs, nil
}

// checkSchedules checks that each stored schedule decodes, under its own name,
// with last_slot and last_job set together.
func checkSchedules(b *txb, report func(string, ...any)) {
	_ = b.schedules.ForEach(func(k, v []byte) error {
		var sc rpc.Schedule
		if err := json.Unmarshal(v, &sc); err != nil {
			report("schedule %q: %v", k, err)
			return nil
		}
		if sc.Name != string(k) {
			report("schedule %q: stored as %q", sc.Name, k)
		}
		if (sc.LastSlot == nil) != (sc.LastJob == nil) {
			report("schedule %q: last_slot and last_job must be set together", k)
		}
		return nil
	})
}
