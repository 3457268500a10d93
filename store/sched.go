package store

import (
	"bytes"
	"encoding/json"
	"fmt"
	"slices"
	"time"

	"spool/rpc"
	"spool/rpc/machine"
)

// The store decides who runs what. Its bookkeeping lives in buckets, not in
// memory, so that a million queued jobs cost the daemon no memory and a claim
// costs the same whatever the number of jobs waiting:
//
//   - bReady: the queued jobs Claim may take, in claim order within each queue;
//   - bTimers: the queued jobs that wait only for their not_before;
//   - bQueueCounts: each queue's queued and running jobs, for Queues and the
//     parallel limit;
//   - bCancels: the unfinished jobs with a cancel stored, for Renew.
//
// Every write of a record goes through writer.put, which moves these entries
// from what the record was to what it is, and queues the consequences for the
// dependents (failure or release) that writer.drain then works off, in the same
// transaction.

// writer writes records and their bookkeeping within one call's transaction.
type writer struct {
	b *txb
	c counts
	// evs are the events the call stored, in seq order.
	evs []rpc.Event
	// extra are the records the store changed on its own (dependents failed),
	// in the order changed, with their specs.
	extra []*rpc.Record
	work  []task
	now   time.Time
	// moved is set when a write changed a job's state or queue, or where it
	// is filed: what Claim would give may have changed.
	moved bool
	// hooks are the on_finish hooks to fire (hooks.go); firing is set while
	// they fire; qhooks caches the queues' hooks.
	hooks  []hook
	firing bool
	qhooks map[string]*rpc.OnFinish
}

// task is a consequence of a write, for drain.
type task struct {
	// fail is set to fail job id because dep did not succeed; otherwise the
	// dependents of job id, which became final in state, are settled.
	fail  bool
	id    int64
	dep   int64
	state rpc.State
	at    time.Time
}

func newWriter(b *txb, now time.Time) *writer {
	return &writer{b: b, c: counts{}, evs: []rpc.Event{}, now: now}
}

// event stores ev for job id (when ev names none) and keeps it.
func (w *writer) event(ev rpc.Event, id int64) error {
	if ev.Job == 0 {
		ev.Job = id
	}
	if err := w.b.appendEvent(&ev); err != nil {
		return err
	}
	w.evs = append(w.evs, ev)
	return nil
}

// events stores evs for job id.
func (w *writer) events(evs []rpc.Event, id int64) error {
	for _, ev := range evs {
		if err := w.event(ev, id); err != nil {
			return err
		}
	}
	return nil
}

// put writes rec, which was old (nil for a new job), with its index entries,
// its place among the claimable jobs, its queue's counts and its cancel entry,
// and queues what its dependents must undergo. old needs only the fields that
// getIndexed reads.
func (w *writer) put(old, rec *rpc.Record) error {
	b := w.b
	if old == nil {
		if err := b.index(rec); err != nil {
			return err
		}
	} else if !sameIndex(old, rec) {
		if err := b.unindex(old); err != nil {
			return err
		}
		if err := b.index(rec); err != nil {
			return err
		}
	}
	if err := b.putRecord(rec); err != nil {
		return err
	}
	if old != nil {
		w.c[old.State]--
	}
	w.c[rec.State]++

	keep := old != nil && old.State == rpc.StateQueued && rec.State == rpc.StateQueued &&
		old.Queue == rec.Queue && old.Priority == rec.Priority && sameTime(old.NotBefore, rec.NotBefore) &&
		slices.Equal(old.After, rec.After) && old.Run.Held == rec.Run.Held &&
		sameTime(old.PausedAt, rec.PausedAt)
	if old == nil || old.State != rec.State || old.Queue != rec.Queue || (rec.State == rpc.StateQueued && !keep) {
		w.moved = true
	}
	if old != nil && old.State == rpc.StateQueued && !keep {
		if err := b.unplace(old); err != nil {
			return err
		}
	}
	if rec.State == rpc.StateQueued && !keep {
		if err := w.place(rec, w.now); err != nil {
			return err
		}
	}

	if old == nil || old.Queue != rec.Queue || old.State != rec.State {
		if old != nil {
			if err := b.qadd(old.Queue, old.State, -1); err != nil {
				return err
			}
		}
		if err := b.qadd(rec.Queue, rec.State, 1); err != nil {
			return err
		}
	}

	had := old != nil && !old.State.Final() && old.Run.CancelReason != nil
	want := !rec.State.Final() && rec.Run.CancelReason != nil
	switch {
	case want && !had:
		if err := b.cancels.Put(itob(rec.ID), nil); err != nil {
			return fmt.Errorf("mark cancel of job %d: %w", rec.ID, err)
		}
	case had && !want:
		if err := b.cancels.Delete(itob(rec.ID)); err != nil {
			return fmt.Errorf("unmark cancel of job %d: %w", rec.ID, err)
		}
	}

	if rec.State.Final() && (old == nil || !old.State.Final()) {
		at := w.now
		if rec.FinishedAt != nil {
			at = *rec.FinishedAt
		}
		w.work = append(w.work, task{id: rec.ID, state: rec.State, at: at})
		if err := w.hookOf(rec, at); err != nil {
			return err
		}
	}
	return nil
}

// place files a queued job by its dependencies: claimable (bReady, or bTimers
// when it has a not_before), waiting for a dependency or held (nowhere), or to
// fail at at because a dependency did not succeed (held or not).
func (w *writer) place(rec *rpc.Record, at time.Time) error {
	failed, waiting, err := w.b.deps(rec.After)
	if err != nil {
		return fmt.Errorf("job %d: %w", rec.ID, err)
	}
	switch {
	case failed != 0:
		w.work = append(w.work, task{fail: true, id: rec.ID, dep: failed, at: at})
		return nil
	case waiting || rec.Run.Held || rec.PausedAt != nil:
		// A paused job (reaped while paused) is claimable only once resumed.
		return nil
	}
	return w.b.ready1(rec)
}

// ready1 files a queued job whose dependencies all succeeded: in bTimers when it
// has a not_before, in bReady otherwise.
func (b *txb) ready1(rec *rpc.Record) error {
	if rec.NotBefore != nil {
		if err := b.timers.Put(timeKey(*rec.NotBefore, rec.ID), nil); err != nil {
			return fmt.Errorf("file job %d by its not_before: %w", rec.ID, err)
		}
		return nil
	}
	return b.readyPut(rec.Queue, rec.Priority, rec.ID)
}

// readyPut files job id of queue as claimable.
func (b *txb) readyPut(queue string, priority int, id int64) error {
	name, err := queuePrefix(queue)
	if err != nil {
		return fmt.Errorf("file job %d: %w", id, err)
	}
	qb, err := b.ready.CreateBucketIfNotExists(name)
	if err != nil {
		return fmt.Errorf("file job %d as ready: %w", id, err)
	}
	if err := qb.Put(prioKey(priority, id), nil); err != nil {
		return fmt.Errorf("file job %d as ready: %w", id, err)
	}
	return nil
}

// readyDelete unfiles job id of queue from the claimable jobs, if it is there;
// a queue's bucket goes with its last job.
func (b *txb) readyDelete(queue string, priority int, id int64) error {
	name, err := queuePrefix(queue)
	if err != nil {
		return fmt.Errorf("unfile job %d: %w", id, err)
	}
	qb := b.ready.Bucket(name)
	if qb == nil {
		return nil
	}
	if err := qb.Delete(prioKey(priority, id)); err != nil {
		return fmt.Errorf("unfile job %d: %w", id, err)
	}
	if k, _ := qb.Cursor().First(); k == nil {
		if err := b.ready.DeleteBucket(name); err != nil {
			return fmt.Errorf("unfile job %d: %w", id, err)
		}
	}
	return nil
}

// readyHas reports whether job id of queue is filed as claimable.
func (b *txb) readyHas(queue string, priority int, id int64) bool {
	name, err := queuePrefix(queue)
	if err != nil {
		return false
	}
	qb := b.ready.Bucket(name)
	return qb != nil && qb.Get(prioKey(priority, id)) != nil
}

// unplace removes a queued job from bReady and bTimers, wherever it is.
func (b *txb) unplace(old *rpc.Record) error {
	if err := b.readyDelete(old.Queue, old.Priority, old.ID); err != nil {
		return err
	}
	if old.NotBefore != nil {
		if err := b.timers.Delete(timeKey(*old.NotBefore, old.ID)); err != nil {
			return fmt.Errorf("unfile job %d: %w", old.ID, err)
		}
	}
	return nil
}

// deps looks at the jobs in after: failed is the first that is final and did
// not succeed (0 when none), waiting says that one is unfinished.
func (b *txb) deps(after []int64) (failed int64, waiting bool, err error) {
	for _, dep := range after {
		st, err := b.stateOf(dep)
		if err != nil {
			return 0, false, err
		}
		switch {
		case st == "":
			// A dependency removed was final; Remove keeps the ones that
			// unfinished jobs need, so this one did not matter any more.
		case st == rpc.StateSucceeded:
		case st.Final():
			return dep, false, nil
		default:
			waiting = true
		}
	}
	return 0, waiting, nil
}

// stateOf is the state of job id, or "" when it is not stored.
func (b *txb) stateOf(id int64) (rpc.State, error) {
	raw := b.jobs.Get(itob(id))
	if raw == nil {
		return "", nil
	}
	var f struct {
		State rpc.State `json:"state"`
	}
	if err := b.decode(raw, &f); err != nil {
		return "", fmt.Errorf("decode job %d: %w", id, err)
	}
	return f.State, nil
}

// drain works off the consequences of the writes: a job that became final
// releases its queued dependents (succeeded) or fails them (otherwise),
// transitively.
func (w *writer) drain() error {
	for len(w.work) > 0 {
		t := w.work[0]
		w.work = w.work[1:]
		if t.fail {
			if err := w.failDependent(t); err != nil {
				return err
			}
			continue
		}
		for _, id := range idsWithPrefix(w.b.dependents, itob(t.id)) {
			d, err := w.b.getIndexed(id)
			if err != nil {
				return err
			}
			if d == nil || d.State != rpc.StateQueued {
				continue
			}
			if t.state != rpc.StateSucceeded {
				w.work = append(w.work, task{fail: true, id: id, dep: t.id, at: t.at})
				continue
			}
			if err := w.place(d, t.at); err != nil {
				return err
			}
		}
	}
	return nil
}

// failDependent fails the queued job t.id because t.dep did not succeed.
func (w *writer) failDependent(t task) error {
	rec, err := w.b.getFull(t.id, nil)
	if err != nil {
		return err
	}
	if rec == nil || rec.State != rpc.StateQueued {
		return nil
	}
	old := *rec
	evs := machine.EndUnstarted(rec, machine.DependencyFailed(t.dep), rpc.StateFailed, t.at)
	if err := w.events(evs, rec.ID); err != nil {
		return err
	}
	if err := w.put(&old, rec); err != nil {
		return err
	}
	w.extra = append(w.extra, rec)
	return nil
}

// finish drains the consequences, fires the hooks and writes the per-state
// counts. Within a hook's submit it only drains: the outer finish goes on.
func (w *writer) finish() error {
	if err := w.drain(); err != nil {
		return err
	}
	if w.firing {
		return nil
	}
	if err := w.fireHooks(); err != nil {
		return err
	}
	return w.c.write(w.b)
}

// sameTime reports whether two optional times are the same instant.
func sameTime(a, b *time.Time) bool {
	return (a == nil) == (b == nil) && (a == nil || a.Equal(*b))
}

// qcount is the stored number of queued and running jobs of queue name.
func (b *txb) qcount(name string) (queued, running int64) {
	v := b.qcounts.Get([]byte(name))
	if len(v) != 16 {
		return 0, 0
	}
	return btoi(v[:8]), btoi(v[8:])
}

// qadd counts n more jobs (fewer when negative) of queue name in state st; only
// queued and running jobs are counted. A queue left with none keeps its entry,
// so that queue.list shows every queue jobs went to.
func (b *txb) qadd(name string, st rpc.State, n int64) error {
	if st != rpc.StateQueued && st != rpc.StateRunning {
		return nil
	}
	q, r := b.qcount(name)
	if st == rpc.StateQueued {
		q += n
	} else {
		r += n
	}
	v := make([]byte, 0, 16)
	v = append(append(v, itob(q)...), itob(r)...)
	if err := b.qcounts.Put([]byte(name), v); err != nil {
		return fmt.Errorf("count jobs of queue %q: %w", name, err)
	}
	return nil
}

// queueSettings reads the stored settings of queue name (the defaults when it
// has none).
func (b *txb) queueSettings(name string) (rpc.Queue, error) {
	q := rpc.Queue{Name: name}
	raw := b.queues.Get([]byte(name))
	if raw == nil {
		return q, nil
	}
	if err := json.Unmarshal(raw, &q); err != nil {
		return q, fmt.Errorf("decode queue %q: %w", name, err)
	}
	return q, nil
}

// head is a queue's next claimable job in Claim.
type head struct {
	// bucket is the name of the queue's bucket in bReady.
	bucket []byte
	// key is the queue's first prioKey.
	key []byte
	// room is how many more jobs the queue may start, or -1 without a limit.
	room int64
}

// moveDue moves the jobs of bTimers whose not_before is not after now to
// bReady, at most maxDue of them.
func (b *txb) moveDue(now time.Time) (int, error) {
	var keys [][]byte
	c := b.timers.Cursor()
	for k, _ := c.First(); k != nil && len(keys) < maxDue; k, _ = c.Next() {
		if len(k) != 16 || keyTime(k).After(now) {
			break
		}
		keys = append(keys, bytes.Clone(k))
	}
	for _, k := range keys {
		id := btoi(k[8:])
		rec, err := b.getIndexed(id)
		if err != nil {
			return 0, err
		}
		if rec == nil || rec.State != rpc.StateQueued {
			return 0, fmt.Errorf("timer of job %d, which is not queued", id)
		}
		if err := b.readyPut(rec.Queue, rec.Priority, id); err != nil {
			return 0, err
		}
		if err := b.timers.Delete(k); err != nil {
			return 0, fmt.Errorf("unfile timer of job %d: %w", id, err)
		}
	}
	return len(keys), nil
}

// maxDue bounds the timers one Claim moves to bReady: a larger backlog of due
// timers moves over the next claims.
const maxDue = 4096

// heads finds, for every queue with claimable jobs that is not paused and has
// room under its parallel limit, its first claimable job: one look per queue,
// whatever the number of jobs in it.
func (b *txb) heads() ([]head, error) {
	var hs []head
	c := b.ready.Cursor()
	for k, v := c.First(); k != nil; k, v = c.Next() {
		name, ok := queueOfName(k)
		if !ok || v != nil {
			return nil, fmt.Errorf("ready: %x is not a queue's bucket", k)
		}
		q, err := b.queueSettings(name)
		if err != nil {
			return nil, err
		}
		room := int64(-1)
		if q.Parallel != nil {
			_, running := b.qcount(name)
			room = max(int64(*q.Parallel)-running, 0)
		}
		if q.Paused || room == 0 {
			continue
		}
		first, _ := b.ready.Bucket(k).Cursor().First()
		if first == nil {
			continue
		}
		hs = append(hs, head{bucket: bytes.Clone(k), key: bytes.Clone(first), room: room})
	}
	return hs, nil
}

// claimTx is Claim's work: due timers to bReady, then up to max jobs, best
// first across the queues, each moved to running by machine.Claim.
func claimTx(w *writer, o machine.Owner, limit int, now time.Time) ([]rpc.Record, error) {
	b := w.b
	moved, err := b.moveDue(now)
	if err != nil {
		return nil, err
	}
	recs := []rpc.Record{}
	if limit <= 0 {
		if moved == 0 {
			return recs, errNoWrite
		}
		return recs, nil
	}
	hs, err := b.heads()
	if err != nil {
		return nil, err
	}
	cache := envCache{}
	for len(recs) < limit && len(hs) > 0 {
		best := 0
		for i := 1; i < len(hs); i++ {
			if bytes.Compare(hs[i].key, hs[best].key) < 0 {
				best = i
			}
		}
		h := &hs[best]
		id := btoi(h.key[8:])
		rec, err := b.getFull(id, cache)
		if err != nil {
			return nil, err
		}
		if rec == nil || rec.State != rpc.StateQueued {
			return nil, fmt.Errorf("ready job %d is not queued", id)
		}
		old := *rec
		if err := w.events(machine.Claim(rec, o, now), id); err != nil {
			return nil, err
		}
		if err := w.put(&old, rec); err != nil {
			return nil, err
		}
		recs = append(recs, *rec)
		if h.room > 0 {
			h.room--
		}
		var next []byte
		if qb := b.ready.Bucket(h.bucket); qb != nil && h.room != 0 {
			next, _ = qb.Cursor().First()
		}
		if next == nil {
			hs = slices.Delete(hs, best, best+1)
			continue
		}
		h.key = bytes.Clone(next)
	}
	if len(recs) == 0 && moved == 0 {
		return recs, errNoWrite
	}
	return recs, nil
}

// errNoWrite tells the commit that a call wrote nothing, so that a commit of
// only such calls is rolled back rather than synced.
var errNoWrite = fmt.Errorf("nothing written")

// waiting is why a queued job is not running, as far as the store knows
// (daemon.Store's Get): nil for a job that is not queued or that Claim would
// take now.
func (b *txb) waiting(rec *rpc.Record, now time.Time) (*string, error) {
	if rec.State != rpc.StateQueued {
		return nil, nil
	}
	why := func(s string) (*string, error) { return &s, nil }
	if rec.Run.Held {
		return why(rpc.WaitingHeld)
	}
	if rec.PausedAt != nil {
		return why("job_paused")
	}
	inTimers := rec.NotBefore != nil && b.timers.Get(timeKey(*rec.NotBefore, rec.ID)) != nil
	if !inTimers {
		if !b.readyHas(rec.Queue, rec.Priority, rec.ID) {
			return why("after")
		}
	} else if rec.NotBefore.After(now) {
		return why("not_before")
	}
	q, err := b.queueSettings(rec.Queue)
	if err != nil {
		return nil, err
	}
	if q.Paused {
		return why("paused")
	}
	if q.Parallel != nil {
		if _, running := b.qcount(rec.Queue); running >= int64(*q.Parallel) {
			return why("capacity")
		}
	}
	return nil, nil
}

// buildSched fills the scheduling buckets of a database upgraded from schema 2
// from its unfinished jobs: queue counts, cancels, claimable jobs. A queued job
// whose dependency did not succeed (which the older daemon failed at its start)
// fails now, with its events.
func buildSched(b *txb, now time.Time) error {
	var epoch int64
	if v := b.meta.Get([]byte(metaEpoch)); len(v) == 8 {
		epoch = btoi(v)
	}
	w := newWriter(b, now)
	var ids []int64
	for _, st := range []rpc.State{rpc.StateQueued, rpc.StateRunning} {
		ids = append(ids, idsWithPrefix(b.byState, statePrefix(st))...)
	}
	for _, id := range ids {
		rec, err := b.getIndexed(id)
		if err != nil {
			return err
		}
		if rec == nil {
			return fmt.Errorf("unfinished job %d is not stored", id)
		}
		epoch = max(epoch, rec.Run.Epoch)
		if err := b.qadd(rec.Queue, rec.State, 1); err != nil {
			return err
		}
		if rec.Run.CancelReason != nil {
			if err := b.cancels.Put(itob(id), nil); err != nil {
				return fmt.Errorf("mark cancel of job %d: %w", id, err)
			}
		}
		if rec.State != rpc.StateQueued {
			continue
		}
		failed, waiting, err := b.deps(rec.After)
		if err != nil {
			return fmt.Errorf("job %d: %w", id, err)
		}
		switch {
		case failed != 0:
			w.work = append(w.work, task{fail: true, id: id, dep: failed, at: now})
		case !waiting && !rec.Run.Held && rec.PausedAt == nil:
			if err := b.ready1(rec); err != nil {
				return err
			}
		}
	}
	// The counter is above every epoch stored, whoever wrote it.
	if err := b.meta.Put([]byte(metaEpoch), itob(epoch)); err != nil {
		return fmt.Errorf("set epoch: %w", err)
	}
	return w.finish()
}
