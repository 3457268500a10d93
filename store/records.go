package store

import (
	"fmt"
	"slices"
	"time"

	"spool/rpc"
)

// indexed is the part of a stored record that its index entries derive from.
type indexed struct {
	ID       int64     `json:"id"`
	Queue    string    `json:"queue"`
	Priority int       `json:"priority"`
	State    rpc.State `json:"state"`
	After    []int64   `json:"after"`
	Key      *string   `json:"key"`
	// NotBefore and Run are what the scheduling buckets derive from.
	NotBefore *time.Time `json:"not_before"`
	// PausedAt keeps a paused queued job out of the scheduling buckets.
	PausedAt *time.Time `json:"paused_at"`
	Run      struct {
		CancelReason *string `json:"cancel_reason"`
		Epoch        int64   `json:"epoch"`
		Held         bool    `json:"held"`
	} `json:"run"`
}

// decode decodes stored JSON into v as encoding/json would, in one pass (the
// store's decoder). What it keeps is copied out of raw, which bbolt owns.
func (b *txb) decode(raw []byte, v any) error { return b.dec.Lenient(raw, v) }

// getIndexed reads only what a record's index entries and scheduling buckets
// derive from (cheaper than the whole record, which a transition replaces
// anyway).
func (b *txb) getIndexed(id int64) (*rpc.Record, error) {
	raw := b.jobs.Get(itob(id))
	if raw == nil {
		return nil, nil
	}
	var f indexed
	if err := b.decode(raw, &f); err != nil {
		return nil, fmt.Errorf("decode job %d: %w", id, err)
	}
	return &rpc.Record{Job: rpc.Job{ID: f.ID, Queue: f.Queue, Priority: f.Priority, State: f.State, After: f.After, Key: f.Key, NotBefore: f.NotBefore, PausedAt: f.PausedAt},
		Run: rpc.RunState{CancelReason: f.Run.CancelReason, Epoch: f.Run.Epoch, Held: f.Run.Held}}, nil
}

// sameIndex reports whether two versions of a record have the same index entries.
func sameIndex(a, b *rpc.Record) bool {
	return a.State == b.State && slices.Equal(a.After, b.After) && (a.Key == nil) == (b.Key == nil) && (a.Key == nil || *a.Key == *b.Key)
}

// getRecord reads job id without its spec; nil when there is no such job.
func (b *txb) getRecord(id int64) (*rpc.Record, error) {
	raw := b.jobs.Get(itob(id))
	if raw == nil {
		return nil, nil
	}
	var rec rpc.Record
	// The decoder copies what it keeps, so rec outlives the transaction.
	if err := b.decode(raw, &rec); err != nil {
		return nil, fmt.Errorf("decode job %d: %w", id, err)
	}
	return &rec, nil
}

// getSpec reads the spec of job id, with its environment. cache may be nil.
func (b *txb) getSpec(id int64, cache envCache) (*rpc.Spec, error) {
	raw := b.specs.Get(itob(id))
	if raw == nil {
		return nil, fmt.Errorf("job %d has no spec", id)
	}
	spec, err := b.decodeSpec(raw, cache)
	if err != nil {
		return nil, fmt.Errorf("decode spec of job %d: %w", id, err)
	}
	return spec, nil
}

// getFull reads job id with its spec; nil when there is no such job. cache may
// be nil.
func (b *txb) getFull(id int64, cache envCache) (*rpc.Record, error) {
	rec, err := b.getRecord(id)
	if err != nil || rec == nil {
		return rec, err
	}
	if rec.Spec, err = b.getSpec(id, cache); err != nil {
		return nil, err
	}
	return rec, nil
}

// putRecord writes rec, without its spec. bbolt keeps the value it is given until
// the transaction commits, so each record is encoded into a buffer of its own.
func (b *txb) putRecord(rec *rpc.Record) error {
	r := *rec
	r.Spec = nil
	raw, err := r.AppendJSON(make([]byte, 0, recordSize(&r)))
	if err != nil {
		return fmt.Errorf("encode job %d: %w", rec.ID, err)
	}
	if err := b.jobs.Put(itob(rec.ID), raw); err != nil {
		return fmt.Errorf("put job %d: %w", rec.ID, err)
	}
	return nil
}

// recordSize guesses the length of rec's encoding, so that it is encoded in one
// allocation mostly.
func recordSize(rec *rpc.Record) int {
	n := 640 + len(rec.Name) + len(rec.Error) + len(rec.Result) + 8*len(rec.After) + 48*len(rec.Run.Procs)
	for k, v := range rec.Labels {
		n += len(k) + len(v) + 6
	}
	for i := range rec.Steps {
		st := &rec.Steps[i]
		n += 256 + len(st.Name) + len(st.Error) + len(st.Result)
		if st.OutputTail != nil {
			n += len(*st.OutputTail) + 16
		}
	}
	if rec.Progress != nil {
		n += 128 + len(rec.Progress.Message)
	}
	return n
}

// eventSize guesses the length of ev's encoding, as recordSize does.
func eventSize(ev *rpc.Event) int {
	n := 192 + len(ev.Type) + len(ev.StepName) + len(ev.Error) + len(ev.Result)
	if ev.Progress != nil {
		n += 128 + len(ev.Progress.Message)
	}
	return n
}

// index adds the index entries of rec: by state, and for an unfinished job its
// dependencies; its key if it has one.
func (b *txb) index(rec *rpc.Record) error {
	if err := b.byState.Put(stateKey(rec.State, rec.ID), nil); err != nil {
		return fmt.Errorf("index job %d: %w", rec.ID, err)
	}
	if !rec.State.Final() {
		for _, dep := range rec.After {
			if err := b.dependents.Put(depKey(dep, rec.ID), nil); err != nil {
				return fmt.Errorf("index job %d: %w", rec.ID, err)
			}
		}
	}
	if rec.Key != nil && *rec.Key != "" {
		if err := b.keys.Put([]byte(*rec.Key), itob(rec.ID)); err != nil {
			return fmt.Errorf("index key of job %d: %w", rec.ID, err)
		}
	}
	return nil
}

// unindex removes the index entries that index added for rec.
func (b *txb) unindex(rec *rpc.Record) error {
	if err := b.byState.Delete(stateKey(rec.State, rec.ID)); err != nil {
		return fmt.Errorf("unindex job %d: %w", rec.ID, err)
	}
	if !rec.State.Final() {
		for _, dep := range rec.After {
			if err := b.dependents.Delete(depKey(dep, rec.ID)); err != nil {
				return fmt.Errorf("unindex job %d: %w", rec.ID, err)
			}
		}
	}
	if rec.Key != nil && *rec.Key != "" {
		if v := b.keys.Get([]byte(*rec.Key)); v != nil && btoi(v) == rec.ID {
			if err := b.keys.Delete([]byte(*rec.Key)); err != nil {
				return fmt.Errorf("unindex key of job %d: %w", rec.ID, err)
			}
		}
	}
	return nil
}

// appendEvent stores ev with the next seq, which it sets.
func (b *txb) appendEvent(ev *rpc.Event) error {
	seq, err := b.events.NextSequence()
	if err != nil {
		return fmt.Errorf("next seq: %w", err)
	}
	ev.Seq = int64(seq)
	// A buffer of its own, as bbolt keeps it until the transaction commits.
	raw, err := ev.AppendJSON(make([]byte, 0, eventSize(ev)))
	if err != nil {
		return fmt.Errorf("encode event %d: %w", seq, err)
	}
	if err := b.events.Put(itob(ev.Seq), raw); err != nil {
		return fmt.Errorf("put event %d: %w", seq, err)
	}
	return nil
}

// counts accumulates changes of the per-state counts within one call.
type counts map[rpc.State]int64

// write adds the changes to the stored counts.
func (c counts) write(b *txb) error {
	for st, d := range c {
		if d == 0 {
			continue
		}
		k := countKey(st)
		var n int64
		if v := b.meta.Get(k); v != nil {
			n = btoi(v)
		}
		if err := b.meta.Put(k, itob(n+d)); err != nil {
			return fmt.Errorf("update count of %s: %w", st, err)
		}
	}
	return nil
}

// removeJob deletes a final job with its spec and index entries and stores its
// removed event, which it returns. The reference its spec held to an environment
// goes into e.
func (b *txb) removeJob(rec *rpc.Record, now time.Time, c counts, e *envDeltas) (rpc.Event, error) {
	if err := b.unindex(rec); err != nil {
		return rpc.Event{}, err
	}
	if err := b.release(rec.ID, e); err != nil {
		return rpc.Event{}, err
	}
	if err := b.jobs.Delete(itob(rec.ID)); err != nil {
		return rpc.Event{}, fmt.Errorf("delete job %d: %w", rec.ID, err)
	}
	if err := b.specs.Delete(itob(rec.ID)); err != nil {
		return rpc.Event{}, fmt.Errorf("delete spec of job %d: %w", rec.ID, err)
	}
	c[rec.State]--
	ev := rpc.Event{Type: rpc.EventRemoved, Job: rec.ID, Time: now}
	if err := b.appendEvent(&ev); err != nil {
		return rpc.Event{}, err
	}
	return ev, nil
}

// listed is rec as job.list shows it: without spec, result and output tails.
func listed(rec *rpc.Record) rpc.Job {
	j := rec.Job
	j.Spec = nil
	j.Result = nil
	if len(j.Steps) > 0 {
		steps := make([]rpc.StepStatus, len(j.Steps))
		copy(steps, j.Steps)
		for i := range steps {
			steps[i].OutputTail = nil
		}
		j.Steps = steps
	}
	return j
}
