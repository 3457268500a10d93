package postgres

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"

	"spool/rpc"
	"spool/rpc/codec"
	"spool/rpc/tmpl"
)

// Submit stores new jobs, all or none, in one transaction: ids in order from
// the counter row, AfterIndex resolved into Job.After, every After id
// checked, idempotency keys honoured (a key inserted meanwhile by another
// daemon makes the transaction run again, and then find it).
func (s *Store) Submit(ctx context.Context, jobs []rpc.NewJob) ([]rpc.Record, []rpc.Event, error) {
	if len(jobs) == 0 {
		return []rpc.Record{}, []rpc.Event{}, nil
	}
	specs := make([]storedSpec, len(jobs))
	for i, nj := range jobs {
		if nj.Record.Spec == nil {
			return nil, nil, rpc.InvalidParams(nj.Field, "the job has no spec")
		}
		ss, err := encodeSpec(nj.Record.Spec)
		if err != nil {
			return nil, nil, rpc.InvalidParams(nj.Field, "the spec cannot be encoded: "+err.Error())
		}
		specs[i] = ss
	}
	var recs []rpc.Record
	op := &gop{run: func(w *writer) error {
		w.now = s.opts.Clock()
		var err error
		recs, err = w.submit(jobs, specs)
		if err != nil {
			return err
		}
		return w.settle()
	}}
	if err := s.group(ctx, op); err != nil {
		return nil, nil, err
	}
	return recs, op.evs, nil
}

// done tells the daemons of a commit that changed something.
func (s *Store) done(w *writer) {
	s.knowQueues(w.queues)
	if len(w.evs) > 0 || w.moved {
		s.committed()
	}
}

// submitEntry is what the checks of Submit decided for one new job.
type submitEntry struct {
	id     int64
	stored *rpc.Record
	sameAs int
	after  []int64
}

// submit is Submit's work in w's transaction: every check, then every write.
// Two specs are equal when their encodings are.
func (w *writer) submit(jobs []rpc.NewJob, specs []storedSpec) ([]rpc.Record, error) {
	entries := make([]submitEntry, len(jobs))
	byKey := make(map[string]int)
	var keys []string
	for _, nj := range jobs {
		if nj.Record.Spec.Key != "" {
			keys = append(keys, nj.Record.Spec.Key)
		}
	}
	storedKeys := map[string]int64{}
	if len(keys) > 0 {
		rows, err := w.tx.Query(w.ctx, "SELECT key, id FROM spool_jobs WHERE key = ANY($1)", keys)
		if err != nil {
			return nil, fmt.Errorf("read keys: %w", err)
		}
		for rows.Next() {
			var k string
			var id int64
			if err := rows.Scan(&k, &id); err != nil {
				rows.Close()
				return nil, fmt.Errorf("read keys: %w", err)
			}
			storedKeys[k] = id
		}
		rows.Close()
		if err := rows.Err(); err != nil {
			return nil, fmt.Errorf("read keys: %w", err)
		}
	}
	// Every dependency named must be stored.
	var named []int64
	for _, nj := range jobs {
		named = append(named, nj.Record.Spec.After...)
		named = append(named, nj.Record.After...)
	}
	// Locked (FOR SHARE) until the commit: a dependency that ends meanwhile
	// waits for this submit, and then finds the new job among its
	// dependents; or this submit waits for it, and sees it ended.
	exists, err := w.lockedStates(named)
	if err != nil {
		return nil, err
	}
	fresh := 0
	for i, nj := range jobs {
		spec := nj.Record.Spec
		if key := spec.Key; key != "" {
			if j, ok := byKey[key]; ok {
				if !bytes.Equal(specs[j].raw, specs[i].raw) {
					return nil, rpc.KeyConflict(key, entries[j].id)
				}
				entries[i] = submitEntry{id: entries[j].id, sameAs: j}
				continue
			}
			byKey[key] = i
			if id, ok := w.keys[key]; ok {
				// Made by an earlier call of the same group.
				storedKeys[key] = id
			}
			if id, ok := storedKeys[key]; ok {
				stored, err := w.get(id)
				if err != nil {
					return nil, err
				}
				if stored == nil {
					return nil, fmt.Errorf("key %q names job %d, which is not stored", key, id)
				}
				if !bytes.Equal(w.rows[id].spec, specs[i].raw) {
					// Encoded afresh: equal specs may be stored in another order.
					again, err := encodeSpec(stored.Spec)
					if err != nil || !bytes.Equal(again.raw, specs[i].raw) {
						return nil, rpc.KeyConflict(key, id)
					}
				}
				entries[i] = submitEntry{id: id, stored: stored, sameAs: -1}
				continue
			}
		}
		fresh++
		e := submitEntry{id: -int64(fresh), sameAs: -1}
		entries[i] = e
	}
	// Ids from the counter row, consecutive within the call.
	var base int64
	if fresh > 0 {
		if err := w.tx.QueryRow(w.ctx, "UPDATE spool_counters SET last_job = last_job + $1 RETURNING last_job", fresh).Scan(&base); err != nil {
			return nil, fmt.Errorf("take job ids: %w", err)
		}
		base -= int64(fresh)
	}
	for i, nj := range jobs {
		e := &entries[i]
		if e.stored != nil || e.sameAs >= 0 {
			continue
		}
		e.id = base - e.id
		spec := nj.Record.Spec
		seen := make(map[int64]bool)
		add := func(id int64) {
			if !seen[id] {
				seen[id] = true
				e.after = append(e.after, id)
			}
		}
		for k, dep := range spec.After {
			if _, ok := exists[dep]; dep <= 0 || !ok {
				return nil, rpc.InvalidParams(fmt.Sprintf("%s.after[%d]", nj.Field, k), fmt.Sprintf("job %d not found", dep))
			}
			add(dep)
		}
		for k, idx := range spec.AfterIndex {
			if idx < 0 || idx >= i {
				return nil, rpc.InvalidParams(fmt.Sprintf("%s.after_index[%d]", nj.Field, k),
					fmt.Sprintf("%d is not the index of an earlier job of the batch", idx))
			}
			add(entries[idx].id)
		}
		for _, dep := range nj.Record.After {
			if seen[dep] {
				continue
			}
			if _, ok := exists[dep]; dep <= 0 || !ok {
				return nil, rpc.InvalidParams(nj.Field+".after", fmt.Sprintf("job %d not found", dep))
			}
			add(dep)
		}
		if e.after == nil {
			e.after = []int64{}
		}
	}

	// Every check passed: write.
	recs := make([]rpc.Record, len(jobs))
	created := make(map[int64]int)
	now := w.now
	for i, nj := range jobs {
		e := entries[i]
		switch {
		case e.stored != nil:
			recs[i] = *e.stored
			continue
		case e.sameAs >= 0:
			recs[i] = recs[e.sameAs]
			continue
		}
		rec := nj.Record
		spec := *nj.Record.Spec
		rec.ID = e.id
		rec.After = e.after
		if rec.Run.OnFinish == nil {
			rec.Run.OnFinish = spec.OnFinish
		}
		if rec.Key == nil && spec.Key != "" {
			key := spec.Key
			rec.Key = &key
		}
		ev := nj.Event
		ev.Job = e.id
		w.event(ev, e.id)
		w.now = now
		if !ev.Time.IsZero() {
			w.now = ev.Time
		}
		rec.Spec = &spec
		if rec.Key != nil {
			if w.keys == nil {
				w.keys = map[string]int64{}
			}
			w.keys[*rec.Key] = rec.ID
		}
		if err := w.insert(&rec, specs[i]); err != nil {
			return nil, err
		}
		recs[i] = rec
		created[e.id] = i
	}
	w.now = now
	if err := w.drain(); err != nil {
		return nil, err
	}
	// Jobs failed by a dependency are returned as they ended.
	for _, rec := range w.extra {
		if i, ok := created[rec.ID]; ok {
			recs[i] = *rec
		}
	}
	for i, e := range entries {
		if e.sameAs >= 0 {
			recs[i] = recs[e.sameAs]
		}
	}
	return recs, nil
}

// Hooks (on_finish): put queues a hook when a job becomes final and its own
// hook (rpc.RunState.OnFinish) or else its queue's matches the final state;
// finish fires the queued hooks after the dependents' consequences, in the
// same transaction: the follow-up job is submitted as Submit does, with an
// on_finish event on the job that ended, or an on_finish_failed event when it
// cannot be made. The final state is stored either way.

// hook is a hook to fire, for finish.
type hook struct {
	job   rpc.Job
	of    *rpc.OnFinish
	depth int
	at    time.Time
}

// hookOf queues the hook of rec, which became final at at, if it has one that
// matches its state.
func (w *writer) hookOf(rec *rpc.Record, at time.Time) error {
	of := rec.Run.OnFinish
	if of == nil {
		q, err := w.queue(rec.Queue)
		if err != nil {
			return err
		}
		of = q.OnFinish
	}
	if !of.Matches(rec.State) {
		return nil
	}
	w.hooks = append(w.hooks, hook{
		job: rpc.Job{ID: rec.ID, State: rec.State, Name: rec.Name, Error: rec.Error, Result: bytes.Clone(rec.Result)},
		of:  of, depth: rec.Run.HookDepth, at: at,
	})
	return nil
}

// fireHooks fires the queued hooks, and those of the jobs their follow-ups
// end, draining the consequences of each.
func (w *writer) fireHooks() error {
	w.firing = true
	defer func() { w.firing = false }()
	for len(w.hooks) > 0 {
		h := w.hooks[0]
		w.hooks = w.hooks[1:]
		if err := w.fire(h); err != nil {
			return err
		}
		if err := w.drain(); err != nil {
			return err
		}
	}
	return nil
}

// fire submits the follow-up of hook h, with its event on the job that ended.
func (w *writer) fire(h hook) error {
	id := h.job.ID
	failed := func(msg string) error {
		w.event(rpc.Event{Time: h.at, Type: rpc.EventOnFinishFailed, Job: id, Error: msg}, id)
		return nil
	}
	if h.depth >= rpc.MaxHookDepth {
		return failed(fmt.Sprintf("job %d is the follow-up of %d hooks in a chain, the most there may be: its hook does not fire", id, h.depth))
	}
	t, err := readTemplate(w.ctx, w.tx, h.of.Template)
	if err != nil {
		var re *rpc.Error
		if errors.As(err, &re) {
			return failed(fmt.Sprintf("template %q not found", h.of.Template))
		}
		return err
	}
	nj, err := tmpl.FollowUp(codec.NewDecoder(), t, h.of, &h.job, h.at, "on_finish")
	if err != nil {
		return failed(err.Error())
	}
	nj.Record.Run.HookDepth = h.depth + 1
	ss, err := encodeSpec(nj.Record.Spec)
	if err != nil {
		return failed("encode the follow-up's spec: " + err.Error())
	}
	// A refusal (a key conflict, say) is found before anything is written:
	// keep what the writer holds, and restore it when the submit refuses.
	mark := w.mark()
	now := w.now
	recs, err := w.submit([]rpc.NewJob{nj}, []storedSpec{ss})
	w.now = now
	if err != nil {
		var re *rpc.Error
		if errors.As(err, &re) {
			w.rewind(mark)
			return failed(err.Error())
		}
		return err
	}
	next := recs[0].ID
	w.event(rpc.Event{Time: h.at, Type: rpc.EventOnFinish, Job: id, FollowUp: &next}, id)
	return nil
}

// mark is where a writer's lists stood, for rewind.
type mark struct{ order, evs, extra, work, hooks, deps int }

func (w *writer) mark() mark {
	return mark{len(w.order), len(w.evs), len(w.extra), len(w.work), len(w.hooks), len(w.newDeps)}
}

// rewind forgets what was added after m; it is used only after a refusal that
// came before any write, so nothing else changed.
func (w *writer) rewind(m mark) {
	for _, id := range w.order[m.order:] {
		delete(w.rows, id)
	}
	w.order, w.evs, w.extra = w.order[:m.order], w.evs[:m.evs], w.extra[:m.extra]
	w.work, w.hooks, w.newDeps = w.work[:m.work], w.hooks[:m.hooks], w.newDeps[:m.deps]
}

// readTemplate reads template name; 1003 when unknown.
func readTemplate(ctx context.Context, q querier, name string) (*rpc.Template, error) {
	var raw []byte
	err := q.QueryRow(ctx, "SELECT body FROM spool_templates WHERE name = $1", name).Scan(&raw)
	if err == pgx.ErrNoRows {
		return nil, rpc.NoTemplate(name)
	}
	if err != nil {
		return nil, fmt.Errorf("read template %q: %w", name, err)
	}
	var t rpc.Template
	if err := json.Unmarshal(raw, &t); err != nil {
		return nil, fmt.Errorf("decode template %q: %w", name, err)
	}
	return &t, nil
}
