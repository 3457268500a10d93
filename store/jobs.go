package store

import (
	"bytes"
	"context"
	"fmt"
	"math"
	"strconv"
	"time"

	"go.etcd.io/bbolt"

	"spool/rpc"
)

// Chunk sizes of Prune: each transaction examines at most pruneScan jobs and
// removes at most pruneRemove.
const (
	pruneScan   = 10000
	pruneRemove = 1000
)

// Submit stores new jobs, all or none, in one transaction: ids in order, AfterIndex
// resolved into Job.After, every After id checked, idempotency keys honoured. It
// returns the records in the order given, with their specs, and the submitted
// events of the jobs it created.
func (s *Store) Submit(ctx context.Context, jobs []rpc.NewJob) ([]rpc.Record, []rpc.Event, error) {
	if len(jobs) == 0 {
		return []rpc.Record{}, []rpc.Event{}, nil
	}
	// Encoding the specs here lets concurrent callers do it in parallel, outside
	// the commit.
	specs := make([]storedSpec, len(jobs))
	weight := 0
	for i, nj := range jobs {
		if nj.Record.Spec == nil {
			return nil, nil, rpc.InvalidParams(nj.Field, "the job has no spec")
		}
		ss, err := encodeSpec(nj.Record.Spec)
		if err != nil {
			return nil, nil, rpc.InvalidParams(nj.Field, "the spec cannot be encoded: "+err.Error())
		}
		specs[i] = ss
		weight += len(ss.raw) + 512
	}
	var recs []rpc.Record
	var evs []rpc.Event
	var o *op
	o = &op{weight: weight, apply: func(b *txb) error {
		var err error
		recs, evs, err = submitTx(newWriter(b, s.clock()), jobs, specs)
		o.changed = len(evs) > 0
		return err
	}}
	if err := s.do(ctx, o); err != nil {
		return nil, nil, err
	}
	return recs, evs, nil
}

// submitEntry is what the checks of Submit decided for one new job.
type submitEntry struct {
	id int64
	// stored is the stored job that an equal spec with the same key returns.
	stored *rpc.Record
	// sameAs is the index of an earlier entry of the call with the same key and
	// an equal spec, or -1.
	sameAs int
	after  []int64
}

// submitTx is Submit's work in one transaction: every check, then every write.
// Two specs are equal when their stored encodings are (the env is in it by its
// SHA-256). A new job whose dependency did not succeed fails in it.
func submitTx(w *writer, jobs []rpc.NewJob, specs []storedSpec) ([]rpc.Record, []rpc.Event, error) {
	b := w.b
	base := int64(b.jobs.Sequence())
	next := base
	entries := make([]submitEntry, len(jobs))
	byKey := make(map[string]int)
	for i, nj := range jobs {
		spec := nj.Record.Spec
		if key := spec.Key; key != "" {
			if j, ok := byKey[key]; ok {
				if !bytes.Equal(specs[j].raw, specs[i].raw) {
					return nil, nil, rpc.KeyConflict(key, entries[j].id)
				}
				entries[i] = submitEntry{id: entries[j].id, sameAs: j}
				continue
			}
			byKey[key] = i
			if v := b.keys.Get([]byte(key)); v != nil {
				id := btoi(v)
				stored, err := b.getFull(id, nil)
				if err != nil {
					return nil, nil, err
				}
				if stored == nil {
					return nil, nil, fmt.Errorf("key %q names job %d, which is not stored", key, id)
				}
				// Encoded afresh, as a spec stored by an older version
				// has its env inline.
				storedSpec, err := encodeSpec(stored.Spec)
				if err != nil {
					return nil, nil, fmt.Errorf("encode spec of job %d: %w", id, err)
				}
				if !bytes.Equal(storedSpec.raw, specs[i].raw) {
					return nil, nil, rpc.KeyConflict(key, id)
				}
				entries[i] = submitEntry{id: id, stored: stored, sameAs: -1}
				continue
			}
		}
		next++
		e := submitEntry{id: next, sameAs: -1}
		seen := make(map[int64]bool)
		add := func(id int64) {
			if !seen[id] {
				seen[id] = true
				e.after = append(e.after, id)
			}
		}
		for k, dep := range spec.After {
			if dep <= 0 || b.jobs.Get(itob(dep)) == nil {
				return nil, nil, rpc.InvalidParams(fmt.Sprintf("%s.after[%d]", nj.Field, k), fmt.Sprintf("job %d not found", dep))
			}
			add(dep)
		}
		for k, idx := range spec.AfterIndex {
			if idx < 0 || idx >= i {
				return nil, nil, rpc.InvalidParams(fmt.Sprintf("%s.after_index[%d]", nj.Field, k),
					fmt.Sprintf("%d is not the index of an earlier job of the batch", idx))
			}
			add(entries[idx].id)
		}
		// Dependencies the daemon put in the record itself are kept too.
		for _, dep := range nj.Record.After {
			if seen[dep] {
				continue
			}
			if dep <= 0 || b.jobs.Get(itob(dep)) == nil {
				return nil, nil, rpc.InvalidParams(nj.Field+".after", fmt.Sprintf("job %d not found", dep))
			}
			add(dep)
		}
		if e.after == nil {
			e.after = []int64{}
		}
		entries[i] = e
	}

	// Every check passed: write.
	var envs envDeltas
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
		if err := b.putRecord(&rec); err != nil {
			return nil, nil, err
		}
		if err := b.specs.Put(itob(e.id), specs[i].raw); err != nil {
			return nil, nil, fmt.Errorf("put spec of job %d: %w", e.id, err)
		}
		if specs[i].env != nil {
			envs.add(specs[i].key, specs[i].env, 1)
		}
		ev := nj.Event
		ev.Job = e.id
		if err := w.event(ev, e.id); err != nil {
			return nil, nil, err
		}
		w.now = now
		if !ev.Time.IsZero() {
			w.now = ev.Time
		}
		if err := w.put(nil, &rec); err != nil {
			return nil, nil, err
		}
		rec.Spec = &spec
		recs[i] = rec
		created[e.id] = i
	}
	if next != base {
		if err := b.jobs.SetSequence(uint64(next)); err != nil {
			return nil, nil, fmt.Errorf("set job sequence: %w", err)
		}
	}
	if err := w.finish(); err != nil {
		return nil, nil, err
	}
	if err := envs.write(b); err != nil {
		return nil, nil, err
	}
	// Jobs failed by a dependency are returned as they ended, and so is every
	// entry that names them.
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
	return recs, w.evs, nil
}

// Apply stores transitions in one transaction, each guarded by the state its job
// must still be in. It returns the stored events, with their seq, in order.
func (s *Store) Apply(ctx context.Context, ts []rpc.Transition) ([]rpc.Event, error) {
	if len(ts) == 0 {
		return []rpc.Event{}, nil
	}
	var evs []rpc.Event
	var o *op
	o = &op{weight: 1024 * len(ts), apply: func(b *txb) error {
		var err error
		w := newWriter(b, s.clock())
		evs, err = applyTx(w, ts)
		o.changed = len(evs) > 0 || w.moved
		return err
	}}
	if err := s.do(ctx, o); err != nil {
		return nil, err
	}
	return evs, nil
}

// applyTx is Apply's work in one transaction: every check, then every write,
// then the consequences for the dependents of jobs that became final.
func applyTx(w *writer, ts []rpc.Transition) ([]rpc.Event, error) {
	b := w.b
	// A job may move more than once in one call: later checks see earlier moves.
	moved := make(map[int64]*rpc.Record)
	olds := make([]*rpc.Record, len(ts))
	recs := make([]rpc.Record, len(ts))
	for i := range ts {
		t := &ts[i]
		id := t.Record.ID
		old, ok := moved[id]
		if !ok {
			var err error
			if old, err = b.getIndexed(id); err != nil {
				return nil, err
			}
			if old == nil {
				return nil, rpc.NotFound(id)
			}
		}
		if old.State != t.From {
			return nil, rpc.BadState(id, old.State, "state changed")
		}
		if t.Epoch != 0 && old.Run.Epoch != t.Epoch {
			return nil, rpc.BadState(id, old.State, fmt.Sprintf("not owned by epoch %d", t.Epoch))
		}
		olds[i] = old
		rec := t.Record
		rec.Spec = nil
		if rec.Run.CancelReason == nil && old.Run.CancelReason != nil {
			if t.Epoch != 0 {
				// The owner wrote without knowing of the cancel stored since:
				// the cancel is the outcome, so the owner must learn of it
				// and write again.
				return nil, rpc.BadState(id, old.State, "a cancel is stored")
			}
			rec.Run.CancelReason = old.Run.CancelReason
		}
		recs[i] = rec
		moved[id] = &recs[i]
	}

	for i := range ts {
		if err := w.events(ts[i].Events, recs[i].ID); err != nil {
			return nil, err
		}
		w.now = eventsTime(ts[i].Events, w.now)
		if err := w.put(olds[i], &recs[i]); err != nil {
			return nil, err
		}
	}
	if err := w.finish(); err != nil {
		return nil, err
	}
	return w.evs, nil
}

// eventsTime is the time of the last of evs that has one, or def.
func eventsTime(evs []rpc.Event, def time.Time) time.Time {
	for i := len(evs) - 1; i >= 0; i-- {
		if !evs[i].Time.IsZero() {
			return evs[i].Time
		}
	}
	return def
}

// Get reads one job with its spec; 1001 when unknown. A queued job's Waiting
// says why it is not running, as far as the store knows.
func (s *Store) Get(ctx context.Context, id int64) (*rpc.Record, error) {
	var rec *rpc.Record
	open := func(tx *bbolt.Tx) (*txb, error) {
		b := &txb{tx: tx, jobs: tx.Bucket([]byte(bJobs)), specs: tx.Bucket([]byte(bSpecs)), envs: tx.Bucket([]byte(bEnvs)),
			ready: tx.Bucket([]byte(bReady)), timers: tx.Bucket([]byte(bTimers)), queues: tx.Bucket([]byte(bQueues)), qcounts: tx.Bucket([]byte(bQueueCounts))}
		if b.jobs == nil || b.specs == nil || b.envs == nil || b.ready == nil || b.timers == nil || b.queues == nil || b.qcounts == nil {
			return nil, fmt.Errorf("a bucket of %q is missing", []string{bJobs, bSpecs, bEnvs, bReady, bTimers, bQueues, bQueueCounts})
		}
		return b, nil
	}
	now := s.clock()
	err := s.viewWith(ctx, open, func(b *txb) error {
		var err error
		rec, err = b.getFull(id, nil)
		if err != nil || rec == nil {
			return err
		}
		rec.Waiting, err = b.waiting(rec, now)
		return err
	})
	if err != nil {
		return nil, err
	}
	if rec == nil {
		return nil, rpc.NotFound(id)
	}
	return rec, nil
}

// idSource yields ids, in order, from the keys of a bucket made of a prefix and an
// 8-byte id.
type idSource struct {
	c      *bbolt.Cursor
	prefix []byte
	desc   bool
	k      []byte
}

// newIDSource starts at the first id after cursor in the direction asked (from
// either end when cursor is 0).
func newIDSource(bk *bbolt.Bucket, prefix []byte, desc bool, cursor int64) *idSource {
	s := &idSource{c: bk.Cursor(), prefix: prefix, desc: desc}
	from := func(id int64) []byte { return append(append([]byte{}, prefix...), itob(id)...) }
	if desc {
		bound := int64(math.MaxInt64)
		if cursor > 0 {
			bound = cursor
		}
		if k, _ := s.c.Seek(from(bound)); k == nil {
			s.k, _ = s.c.Last()
		} else {
			s.k, _ = s.c.Prev()
		}
	} else {
		s.k, _ = s.c.Seek(from(cursor + 1))
	}
	return s
}

// head is the current id, if any.
func (s *idSource) head() (int64, bool) {
	if s.k == nil || len(s.k) != len(s.prefix)+8 || !bytes.HasPrefix(s.k, s.prefix) {
		return 0, false
	}
	return btoi(s.k[len(s.prefix):]), true
}

// advance moves to the next id.
func (s *idSource) advance() {
	if s.desc {
		s.k, _ = s.c.Prev()
	} else {
		s.k, _ = s.c.Next()
	}
}

// nextID takes the next id in order from whichever source holds it.
func nextID(srcs []*idSource, desc bool) (int64, bool) {
	best := -1
	var bestID int64
	for i, s := range srcs {
		id, ok := s.head()
		if !ok {
			continue
		}
		if best < 0 || (desc && id > bestID) || (!desc && id < bestID) {
			best, bestID = i, id
		}
	}
	if best < 0 {
		return 0, false
	}
	srcs[best].advance()
	return bestID, true
}

// List reads a page of jobs without their specs and results, filtered as p says.
// It walks the by-state index (or the jobs) in id order from the cursor and stops
// once the page is full and the next match is known.
func (s *Store) List(ctx context.Context, p rpc.ListParams) (*rpc.ListResult, error) {
	limit := p.Limit
	if limit <= 0 {
		limit = 100
	}
	var desc bool
	switch p.Order {
	case "", "desc":
		desc = true
	case "asc":
	default:
		return nil, rpc.InvalidParams("order", `must be "asc" or "desc"`)
	}
	var cursor int64
	if p.Cursor != nil {
		v, err := strconv.ParseInt(*p.Cursor, 10, 64)
		if err != nil || v <= 0 {
			return nil, rpc.InvalidParams("cursor", "not a cursor that job.list returned")
		}
		cursor = v
	}
	res := &rpc.ListResult{Jobs: []rpc.Job{}}
	f := p.Filter()
	filter := f.Narrows()
	now := s.clock()
	err := s.view(ctx, func(b *txb) error {
		var srcs []*idSource
		if len(p.State) == 0 {
			srcs = append(srcs, newIDSource(b.jobs, nil, desc, cursor))
		} else {
			seen := make(map[rpc.State]bool)
			for _, st := range p.State {
				if !seen[st] {
					seen[st] = true
					srcs = append(srcs, newIDSource(b.byState, statePrefix(st), desc, cursor))
				}
			}
		}
		more := false
		for n := 0; ; n++ {
			if n%1024 == 1023 {
				if err := ctx.Err(); err != nil {
					return err
				}
			}
			id, ok := nextID(srcs, desc)
			if !ok {
				break
			}
			if len(res.Jobs) == limit && !filter {
				more = true
				break
			}
			rec, err := b.getRecord(id)
			if err != nil {
				return err
			}
			if rec == nil || !f.Match(&rec.Job, now) {
				continue
			}
			if len(res.Jobs) == limit {
				more = true
				break
			}
			if rec.Waiting, err = b.waiting(rec, now); err != nil {
				return err
			}
			res.Jobs = append(res.Jobs, listed(rec))
		}
		if more {
			next := strconv.FormatInt(res.Jobs[len(res.Jobs)-1].ID, 10)
			res.NextCursor = &next
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	return res, nil
}

// Unfinished reads every queued or running job, with its spec, in id order, from
// the queued and running ranges of the by-state index.
func (s *Store) Unfinished(ctx context.Context) ([]rpc.Record, error) {
	recs := []rpc.Record{}
	err := s.view(ctx, func(b *txb) error {
		cache := envCache{}
		srcs := []*idSource{newIDSource(b.byState, statePrefix(rpc.StateQueued), false, 0), newIDSource(b.byState, statePrefix(rpc.StateRunning), false, 0)}
		for {
			id, ok := nextID(srcs, false)
			if !ok {
				break
			}
			rec, err := b.getFull(id, cache)
			if err != nil {
				return err
			}
			if rec == nil {
				return fmt.Errorf("unfinished job %d is not stored", id)
			}
			recs = append(recs, *rec)
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	return recs, nil
}

// Counts is the number of stored jobs in each job state (every state present),
// from the stored counters.
func (s *Store) Counts(ctx context.Context) (map[rpc.State]int, error) {
	m := make(map[rpc.State]int)
	err := s.view(ctx, func(b *txb) error {
		for _, st := range jobStates() {
			m[st] = 0
			if v := b.meta.Get(countKey(st)); v != nil {
				m[st] = int(btoi(v))
			}
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	return m, nil
}

// Remove removes final jobs, all or none, each with a removed event; unknown ids
// are ignored. A job that is not final, or that an unfinished job depends on,
// answers 1002.
func (s *Store) Remove(ctx context.Context, ids []int64, now time.Time) ([]int64, []rpc.Event, error) {
	var removed []int64
	var evs []rpc.Event
	o := &op{weight: 1024 * len(ids), apply: func(b *txb) error {
		removed, evs = nil, nil
		seen := make(map[int64]bool)
		var recs []*rpc.Record
		for _, id := range ids {
			if seen[id] {
				continue
			}
			seen[id] = true
			rec, err := b.getRecord(id)
			if err != nil {
				return err
			}
			if rec == nil {
				continue
			}
			if !rec.State.Final() {
				return rpc.BadState(id, rec.State, "not final")
			}
			if by := idsWithPrefix(b.dependents, itob(id)); len(by) > 0 {
				return rpc.NeededBy(id, by)
			}
			recs = append(recs, rec)
		}
		c := counts{}
		var envs envDeltas
		removed, evs = []int64{}, []rpc.Event{}
		for _, rec := range recs {
			ev, err := b.removeJob(rec, now, c, &envs)
			if err != nil {
				return err
			}
			removed = append(removed, rec.ID)
			evs = append(evs, ev)
		}
		if err := c.write(b); err != nil {
			return err
		}
		return envs.write(b)
	}}
	if err := s.do(ctx, o); err != nil {
		return nil, nil, err
	}
	return removed, evs, nil
}

// Prune removes final jobs in one of states (any final state when empty) that
// finished before cutoff (any time when zero), keeping those that unfinished jobs
// depend on. It works in chunks, one transaction each, every removal with its
// removed event in the same transaction. When a chunk fails, it returns what the
// chunks before it removed along with the error.
func (s *Store) Prune(ctx context.Context, states []rpc.State, cutoff time.Time, now time.Time) ([]int64, []rpc.Event, error) {
	var sts []rpc.State
	if len(states) == 0 {
		sts = finalStates()
	} else {
		seen := make(map[rpc.State]bool)
		for _, st := range states {
			if st.Final() && !seen[st] {
				seen[st] = true
				sts = append(sts, st)
			}
		}
	}
	removed, evs := []int64{}, []rpc.Event{}
	pos := prunePos{}
	for pos.state < len(sts) {
		var ids []int64
		var chunk []rpc.Event
		var next prunePos
		o := &op{weight: 1024 * pruneRemove, apply: func(b *txb) error {
			var err error
			ids, chunk, next, err = pruneTx(b, sts, pos, cutoff, now)
			return err
		}}
		if err := s.do(ctx, o); err != nil {
			return removed, evs, err
		}
		removed = append(removed, ids...)
		evs = append(evs, chunk...)
		pos = next
	}
	return removed, evs, nil
}

// prunePos is where Prune's scan of the by-state index goes on: the index in its
// states, and the last id looked at in that state.
type prunePos struct {
	state int
	after int64
}

// pruneTx is one chunk of Prune: it looks at up to pruneScan jobs from pos,
// removes up to pruneRemove of them, and says where the next chunk starts.
func pruneTx(b *txb, sts []rpc.State, pos prunePos, cutoff, now time.Time) ([]int64, []rpc.Event, prunePos, error) {
	var victims []*rpc.Record
	scanned := 0
scan:
	for pos.state < len(sts) {
		prefix := statePrefix(sts[pos.state])
		c := b.byState.Cursor()
		for k, _ := c.Seek(append(append([]byte{}, prefix...), itob(pos.after+1)...)); k != nil && bytes.HasPrefix(k, prefix); k, _ = c.Next() {
			if scanned >= pruneScan || len(victims) >= pruneRemove {
				break scan
			}
			if len(k) != len(prefix)+8 {
				continue
			}
			id := btoi(k[len(prefix):])
			pos.after = id
			scanned++
			var fin struct {
				FinishedAt *time.Time `json:"finished_at"`
			}
			raw := b.jobs.Get(itob(id))
			if raw == nil {
				continue
			}
			if err := b.decode(raw, &fin); err != nil {
				return nil, nil, pos, fmt.Errorf("decode job %d: %w", id, err)
			}
			if !cutoff.IsZero() && (fin.FinishedAt == nil || !fin.FinishedAt.Before(cutoff)) {
				continue
			}
			if hasPrefix(b.dependents, itob(id)) {
				continue
			}
			rec, err := b.getRecord(id)
			if err != nil {
				return nil, nil, pos, err
			}
			victims = append(victims, rec)
		}
		pos = prunePos{state: pos.state + 1}
	}
	c := counts{}
	var envs envDeltas
	ids := make([]int64, 0, len(victims))
	evs := make([]rpc.Event, 0, len(victims))
	for _, rec := range victims {
		ev, err := b.removeJob(rec, now, c, &envs)
		if err != nil {
			return nil, nil, pos, err
		}
		ids = append(ids, rec.ID)
		evs = append(evs, ev)
	}
	if err := c.write(b); err != nil {
		return nil, nil, pos, err
	}
	if err := envs.write(b); err != nil {
		return nil, nil, pos, err
	}
	return ids, evs, pos, nil
}
