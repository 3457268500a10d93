package postgres

import (
	"context"
	"encoding/json"
	"fmt"
	"slices"
	"time"

	"github.com/jackc/pgx/v5"

	"spool/rpc"
	"spool/rpc/machine"
)

// writer is one call's work in one transaction: the records it locked and
// changed, the events it made, and the consequences to work off (dependents
// failed or released, hooks fired), all written by flush at the end, the
// events last, numbered by the counter row.
type writer struct {
	s   *Store
	ctx context.Context
	tx  pgx.Tx
	now time.Time

	rows  map[int64]*row
	order []int64 // ids of rows to write, in the order first changed
	evs   []rpc.Event
	// extra are the records the store changed on its own (dependents failed),
	// in the order changed, with their specs.
	extra []*rpc.Record
	work  []task
	// moved is set when a write changed what Claim would give.
	moved bool

	hooks   []hook
	firing  bool
	qset    map[string]*rpc.Queue
	newDeps [][2]int64
	// queues are the queue names the new jobs go to.
	queues map[string]bool
	// live holds the epochs whose leases were read, and whether each is
	// live; known holds the jobs whose dependents were read (prefetch).
	live  map[int64]bool
	known map[int64][]int64
	// keys are the idempotency keys of the jobs the writer made.
	keys map[string]int64
	// envs are the environments of the jobs the writer made, by key.
	envs map[string]*envUse
}

// row is a job locked (or made) by the transaction.
type row struct {
	rec  *rpc.Record // with its spec
	spec []byte      // the stored spec, as read or to insert
	// noSpec is set when rec was read without its spec (get reads it then).
	noSpec bool
	// envKey names the environment of a new job's spec in spool_envs.
	envKey []byte
	isNew  bool
	dirty  bool
	// claimable and final say where the row was filed when read.
	wasFinal bool
	// placed is set once the row's claimability is decided for this write.
	claimable bool
}

// task is a consequence of a write, for drain.
type task struct {
	fail  bool
	id    int64
	dep   int64
	state rpc.State
	at    time.Time
}

func (s *Store) newWriter(ctx context.Context, tx pgx.Tx, now time.Time) *writer {
	w := &writer{s: s, ctx: ctx, tx: tx, now: now, rows: map[int64]*row{}, evs: []rpc.Event{}}
	if t, ok := tx.(*trackedTx); ok {
		t.w = w // for the check of a commit whose answer was lost
	}
	return w
}

// load locks and reads the jobs ids that the writer has not read yet.
func (w *writer) load(ids []int64) error {
	b := &pgx.Batch{}
	w.queueLoad(b, ids, true)
	if b.Len() == 0 {
		return nil
	}
	if err := w.tx.SendBatch(w.ctx, b).Close(); err != nil {
		return fmt.Errorf("read jobs: %w", err)
	}
	return nil
}

// queueLoad adds to b the statement that locks and reads the jobs ids the
// writer has not read yet, if any; their specs too when withSpec is set (a
// transition does not need them, and a spec with its environment is most
// of a job's bytes: get reads it later if asked).
func (w *writer) queueLoad(b *pgx.Batch, ids []int64, withSpec bool) {
	var need []int64
	for _, id := range ids {
		if _, ok := w.rows[id]; !ok && !slices.Contains(need, id) {
			need = append(need, id)
		}
	}
	if len(need) == 0 {
		return
	}
	slices.Sort(need) // one order for every transaction, against deadlocks
	q := "SELECT id, rec, " + specCols + ", claimable FROM spool_jobs WHERE id = ANY($1) ORDER BY id FOR UPDATE"
	if !withSpec {
		q = "SELECT id, rec, NULL::bytea, NULL::bytea, claimable FROM spool_jobs WHERE id = ANY($1) ORDER BY id FOR UPDATE"
	}
	b.Queue(q, need).Query(func(rows pgx.Rows) error {
		for rows.Next() {
			var id int64
			var raw, spec, env []byte
			var claimable bool
			if err := rows.Scan(&id, &raw, &spec, &env, &claimable); err != nil {
				return err
			}
			rec, err := decodeRecord(raw, spec, env)
			if err != nil {
				return fmt.Errorf("job %d: %w", id, err)
			}
			w.rows[id] = &row{rec: rec, spec: spec, noSpec: !withSpec, wasFinal: rec.State.Final(), claimable: claimable}
		}
		return rows.Err()
	})
}

// prefetch reads, in one round trip, what the calls of a group will need:
// the jobs ids, locked, the leases of epochs, and the jobs' dependents.
func (w *writer) prefetch(ids, epochs []int64) error {
	b := &pgx.Batch{}
	w.queueLoad(b, ids, false)
	if len(epochs) > 0 {
		if w.live == nil {
			w.live = map[int64]bool{}
		}
		for _, e := range epochs {
			w.live[e] = false
		}
		b.Queue("SELECT epoch FROM spool_leases WHERE epoch = ANY($1) AND expires > now()", epochs).Query(func(rows pgx.Rows) error {
			for rows.Next() {
				var e int64
				if err := rows.Scan(&e); err != nil {
					return err
				}
				w.live[e] = true
			}
			return rows.Err()
		})
	}
	w.queueDeps(b, ids)
	if b.Len() == 0 {
		return nil
	}
	if err := w.tx.SendBatch(w.ctx, b).Close(); err != nil {
		return fmt.Errorf("read jobs, leases and dependents: %w", err)
	}
	return nil
}

// get is job id as the transaction sees it, locked, with its spec; nil when
// there is no such job. The caller may change a copy and put it.
func (w *writer) get(id int64) (*rpc.Record, error) {
	if err := w.load([]int64{id}); err != nil {
		return nil, err
	}
	r, ok := w.rows[id]
	if !ok {
		return nil, nil
	}
	if r.noSpec {
		var spec, env []byte
		if err := w.tx.QueryRow(w.ctx, "SELECT "+specCols+" FROM spool_jobs WHERE id = $1", id).Scan(&spec, &env); err != nil {
			return nil, fmt.Errorf("read the spec of job %d: %w", id, err)
		}
		sp, err := decodeSpec(spec, env)
		if err != nil {
			return nil, fmt.Errorf("job %d: %w", id, err)
		}
		r.rec.Spec, r.spec, r.noSpec = sp, spec, false
	}
	rec := *r.rec
	return &rec, nil
}

// decodeRecord decodes a stored record and its spec (nil: none read), with
// the spec's environment when it refers to one.
func decodeRecord(raw, spec, env []byte) (*rpc.Record, error) {
	var rec rpc.Record
	if err := json.Unmarshal(raw, &rec); err != nil {
		return nil, fmt.Errorf("decode record: %w", err)
	}
	if spec != nil {
		sp, err := decodeSpec(spec, env)
		if err != nil {
			return nil, err
		}
		rec.Spec = sp
	}
	return &rec, nil
}

// event keeps ev for job id (when it names none), to be stored by flush.
func (w *writer) event(ev rpc.Event, id int64) {
	if ev.Job == 0 {
		ev.Job = id
	}
	w.evs = append(w.evs, ev)
}

// events keeps evs for job id.
func (w *writer) events(evs []rpc.Event, id int64) {
	for _, ev := range evs {
		w.event(ev, id)
	}
}

// put records that job rec (read by get, changed) is now as rec says, and
// queues what its dependents must undergo.
func (w *writer) put(rec *rpc.Record) error {
	r, ok := w.rows[rec.ID]
	if !ok {
		return fmt.Errorf("job %d written without being read", rec.ID)
	}
	old := r.rec
	if rec.Spec == nil {
		rec.Spec = old.Spec
	}
	keep := old.State == rpc.StateQueued && rec.State == rpc.StateQueued &&
		old.Queue == rec.Queue && old.Priority == rec.Priority && sameTime(old.NotBefore, rec.NotBefore) &&
		slices.Equal(old.After, rec.After) && old.Run.Held == rec.Run.Held && sameTime(old.PausedAt, rec.PausedAt)
	if old.State != rec.State || old.Queue != rec.Queue || (rec.State == rpc.StateQueued && !keep) {
		w.moved = true
	}
	cp := *rec
	r.rec = &cp
	if !r.dirty {
		r.dirty = true
		w.order = append(w.order, rec.ID)
	}
	if rec.State != rpc.StateQueued {
		r.claimable = false
	} else if !keep {
		r.claimable = false
		if err := w.place(r, w.now); err != nil {
			return err
		}
	}
	if rec.State.Final() && !old.State.Final() {
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

// insert adds a new job (its id given by the counter row) with its spec.
func (w *writer) insert(rec *rpc.Record, ss storedSpec) error {
	cp := *rec
	r := &row{rec: &cp, spec: ss.raw, envKey: ss.key, isNew: true, dirty: true}
	if ss.key != nil {
		if w.envs == nil {
			w.envs = map[string]*envUse{}
		}
		u := w.envs[string(ss.key)]
		if u == nil {
			u = &envUse{env: ss.env}
			w.envs[string(ss.key)] = u
		}
		u.refs++
	}
	w.rows[rec.ID] = r
	w.order = append(w.order, rec.ID)
	w.moved = true
	for _, dep := range rec.After {
		w.newDeps = append(w.newDeps, [2]int64{dep, rec.ID})
	}
	if w.queues == nil {
		w.queues = map[string]bool{}
	}
	w.queues[rec.Queue] = true
	if rec.State == rpc.StateQueued {
		return w.place(r, w.now)
	}
	if rec.State.Final() {
		w.work = append(w.work, task{id: rec.ID, state: rec.State, at: w.now})
		return w.hookOf(rec, w.now)
	}
	return nil
}

// place files a queued job by its dependencies: claimable, waiting for a
// dependency or held (not claimable), or to fail at at because a dependency
// did not succeed.
func (w *writer) place(r *row, at time.Time) error {
	failed, waiting, err := w.deps(r.rec.After)
	if err != nil {
		return fmt.Errorf("job %d: %w", r.rec.ID, err)
	}
	switch {
	case failed != 0:
		w.work = append(w.work, task{fail: true, id: r.rec.ID, dep: failed, at: at})
	case waiting || r.rec.Run.Held || r.rec.PausedAt != nil:
	default:
		r.claimable = true
	}
	return nil
}

// deps looks at the jobs in after: failed is the first that is final and did
// not succeed (0 when none), waiting says that one is unfinished. A
// dependency that is not stored was removed, which only a final one can be:
// it no longer matters.
func (w *writer) deps(after []int64) (failed int64, waiting bool, err error) {
	states, err := w.states(after)
	if err != nil {
		return 0, false, err
	}
	for _, dep := range after {
		st := states[dep]
		switch {
		case st == "" || st == rpc.StateSucceeded:
		case st.Final():
			return dep, false, nil
		default:
			waiting = true
		}
	}
	return 0, waiting, nil
}

// lockedStates reads the states of jobs ids, as states does, and keeps the
// rows it did not hold already FOR SHARE until the commit: none of them can
// end meanwhile.
func (w *writer) lockedStates(ids []int64) (map[int64]rpc.State, error) {
	return w.readStates(ids, " ORDER BY id FOR SHARE")
}

// states reads the states of jobs ids, as the transaction sees them.
func (w *writer) states(ids []int64) (map[int64]rpc.State, error) {
	return w.readStates(ids, "")
}

// readStates reads the states of jobs ids: those the writer holds from its
// rows, the others with one query, ending with suffix (a lock clause).
func (w *writer) readStates(ids []int64, suffix string) (map[int64]rpc.State, error) {
	m := make(map[int64]rpc.State, len(ids))
	var ask []int64
	for _, id := range ids {
		if r, ok := w.rows[id]; ok {
			m[id] = r.rec.State
		} else if !slices.Contains(ask, id) {
			ask = append(ask, id)
		}
	}
	if len(ask) == 0 {
		return m, nil
	}
	slices.Sort(ask) // one order for every transaction, against deadlocks
	rows, err := w.tx.Query(w.ctx, "SELECT id, state FROM spool_jobs WHERE id = ANY($1)"+suffix, ask)
	if err != nil {
		return nil, fmt.Errorf("read states: %w", err)
	}
	defer rows.Close()
	for rows.Next() {
		var id int64
		var st string
		if err := rows.Scan(&id, &st); err != nil {
			return nil, fmt.Errorf("read states: %w", err)
		}
		m[id] = rpc.State(st)
	}
	return m, rows.Err()
}

// drain works off the consequences of the writes: a job that became final
// releases its queued dependents (succeeded) or fails them (otherwise),
// transitively.
func (w *writer) drain() error {
	for len(w.work) > 0 {
		if w.work[0].fail {
			t := w.work[0]
			w.work = w.work[1:]
			if err := w.failDependent(t); err != nil {
				return err
			}
			continue
		}
		// The jobs that ended, up to the next failure to work off: their
		// dependents in one round trip, and those in one more.
		n := 1
		for n < len(w.work) && !w.work[n].fail {
			n++
		}
		ended := w.work[:n:n]
		w.work = w.work[n:]
		ids := make([]int64, len(ended))
		for i, t := range ended {
			ids[i] = t.id
		}
		deps, err := w.dependentsOf(ids)
		if err != nil {
			return err
		}
		var all []int64
		for _, d := range deps {
			all = append(all, d...)
		}
		if err := w.load(all); err != nil {
			return err
		}
		for _, t := range ended {
			for _, id := range deps[t.id] {
				if err := w.settleDependent(t, id); err != nil {
					return err
				}
			}
		}
	}
	return nil
}

// settleDependent works off what the end of job t.id means for its
// dependent id, loaded: a failure to fail it with, or its release.
func (w *writer) settleDependent(t task, id int64) error {
	r, ok := w.rows[id]
	if !ok || r.rec.State != rpc.StateQueued {
		return nil
	}
	if t.state != rpc.StateSucceeded {
		w.work = append(w.work, task{fail: true, id: id, dep: t.id, at: t.at})
		return nil
	}
	if r.rec.Run.Held || r.rec.PausedAt != nil {
		return nil
	}
	was := r.claimable
	if err := w.place(r, t.at); err != nil {
		return err
	}
	if r.claimable && !was {
		w.moved = true
		if !r.dirty {
			r.dirty = true
			w.order = append(w.order, id)
		}
	}
	return nil
}

// queueDeps adds to b the statement that reads the dependents of the jobs
// ids the writer has not read them for, into w.known. Within a transaction
// they change only at its flush, and the new jobs' are in w.newDeps.
func (w *writer) queueDeps(b *pgx.Batch, ids []int64) {
	var ask []int64
	for _, id := range ids {
		if _, ok := w.known[id]; !ok && !slices.Contains(ask, id) {
			ask = append(ask, id)
		}
	}
	if len(ask) == 0 {
		return
	}
	if w.known == nil {
		w.known = map[int64][]int64{}
	}
	for _, id := range ask {
		w.known[id] = nil
	}
	b.Queue("SELECT dep, job FROM spool_deps WHERE dep = ANY($1) ORDER BY job", ask).Query(func(rows pgx.Rows) error {
		for rows.Next() {
			var dep, job int64
			if err := rows.Scan(&dep, &job); err != nil {
				return err
			}
			w.known[dep] = append(w.known[dep], job)
		}
		return rows.Err()
	})
}

// dependentsOf reads the unfinished jobs that depend on each of ids, each
// list in id order, in one round trip at most.
func (w *writer) dependentsOf(ids []int64) (map[int64][]int64, error) {
	b := &pgx.Batch{}
	w.queueDeps(b, ids)
	if b.Len() > 0 {
		if err := w.tx.SendBatch(w.ctx, b).Close(); err != nil {
			return nil, fmt.Errorf("read dependents: %w", err)
		}
	}
	m := map[int64][]int64{}
	add := func(dep, job int64) {
		if !slices.Contains(m[dep], job) {
			m[dep] = append(m[dep], job)
		}
	}
	for _, d := range w.newDeps {
		if slices.Contains(ids, d[0]) {
			add(d[0], d[1])
		}
	}
	for _, id := range ids {
		for _, j := range w.known[id] {
			add(id, j)
		}
	}
	for _, l := range m {
		slices.Sort(l)
	}
	return m, nil
}

// dependents are the unfinished jobs that depend on job id, in id order.
func (w *writer) dependents(id int64) ([]int64, error) {
	m, err := w.dependentsOf([]int64{id})
	if err != nil {
		return nil, err
	}
	return m[id], nil
}

// failDependent fails the queued job t.id because t.dep did not succeed.
func (w *writer) failDependent(t task) error {
	rec, err := w.get(t.id)
	if err != nil {
		return err
	}
	if rec == nil || rec.State != rpc.StateQueued {
		return nil
	}
	w.events(machine.EndUnstarted(rec, machine.DependencyFailed(t.dep), rpc.StateFailed, t.at), rec.ID)
	if err := w.put(rec); err != nil {
		return err
	}
	w.extra = append(w.extra, w.rows[rec.ID].rec)
	return nil
}

// finish drains the consequences, fires the hooks and writes everything.
// Within a hook's submit it only drains: the outer finish goes on.
func (w *writer) finish() error {
	if err := w.settle(); err != nil {
		return err
	}
	if w.firing {
		return nil
	}
	return w.flush()
}

// settle works off the consequences of the writes so far: the dependents,
// then the hooks (unless a hook's own submit is settling).
func (w *writer) settle() error {
	if err := w.drain(); err != nil {
		return err
	}
	if w.firing {
		return nil
	}
	return w.fireHooks()
}

// flush writes the rows changed, the dependencies of new jobs, the queues
// they go to, and the events, numbered last.
func (w *writer) flush() error {
	var ins, upd struct {
		id                  []int64
		state, queue        []string
		priority            []int32
		key                 []*string
		finished, notBefore []*time.Time
		epoch               []int64
		claimable, cancel   []bool
		rec, spec, envKey   [][]byte
	}
	var ended []int64
	for _, id := range w.order {
		r := w.rows[id]
		rec := *r.rec
		rec.Spec = nil
		raw, err := rec.AppendJSON(nil)
		if err != nil {
			return fmt.Errorf("encode job %d: %w", id, err)
		}
		var nb *time.Time
		if r.claimable {
			nb = rec.NotBefore
		}
		x := &upd
		if r.isNew {
			x = &ins
			x.key = append(x.key, rec.Key)
			x.spec = append(x.spec, r.spec)
			x.envKey = append(x.envKey, r.envKey)
		}
		x.id = append(x.id, id)
		x.state = append(x.state, string(rec.State))
		x.queue = append(x.queue, rec.Queue)
		x.priority = append(x.priority, int32(rec.Priority))
		x.finished = append(x.finished, rec.FinishedAt)
		x.notBefore = append(x.notBefore, nb)
		x.epoch = append(x.epoch, rec.Run.Epoch)
		x.claimable = append(x.claimable, r.claimable)
		x.cancel = append(x.cancel, !rec.State.Final() && rec.Run.CancelReason != nil)
		x.rec = append(x.rec, raw)
		if rec.State.Final() && !r.wasFinal && !r.isNew {
			ended = append(ended, id)
		}
	}
	b := &pgx.Batch{}
	if len(ins.id) > 0 {
		w.queueEnvs(b)
		b.Queue(`INSERT INTO spool_jobs (id, state, queue, priority, key, finished_at, not_before, epoch, claimable, cancel_pending, rec, spec, env_key)
			SELECT * FROM unnest($1::bigint[], $2::text[], $3::text[], $4::int[], $5::text[], $6::timestamptz[], $7::timestamptz[], $8::bigint[], $9::boolean[], $10::boolean[], $11::bytea[], $12::bytea[], $13::bytea[])`,
			ins.id, ins.state, ins.queue, ins.priority, ins.key, ins.finished, ins.notBefore, ins.epoch, ins.claimable, ins.cancel, ins.rec, ins.spec, ins.envKey)
	}
	if len(upd.id) > 0 {
		b.Queue(`UPDATE spool_jobs j SET state = u.state, queue = u.queue, priority = u.priority, finished_at = u.finished,
				not_before = u.not_before, epoch = u.epoch, claimable = u.claimable, cancel_pending = u.cancel, rec = u.rec
			FROM unnest($1::bigint[], $2::text[], $3::text[], $4::int[], $5::timestamptz[], $6::timestamptz[], $7::bigint[], $8::boolean[], $9::boolean[], $10::bytea[])
				AS u(id, state, queue, priority, finished, not_before, epoch, claimable, cancel, rec)
			WHERE j.id = u.id`,
			upd.id, upd.state, upd.queue, upd.priority, upd.finished, upd.notBefore, upd.epoch, upd.claimable, upd.cancel, upd.rec)
	}
	if len(w.newDeps) > 0 {
		deps, jobs := make([]int64, 0, len(w.newDeps)), make([]int64, 0, len(w.newDeps))
		for _, d := range w.newDeps {
			if r, ok := w.rows[d[1]]; ok && r.rec.State.Final() {
				continue // only unfinished jobs keep their dependencies
			}
			deps, jobs = append(deps, d[0]), append(jobs, d[1])
		}
		b.Queue("INSERT INTO spool_deps (dep, job) SELECT * FROM unnest($1::bigint[], $2::bigint[]) ON CONFLICT DO NOTHING", deps, jobs)
	}
	if len(ended) > 0 {
		b.Queue("DELETE FROM spool_deps WHERE job = ANY($1)", ended)
	}
	if names := w.s.unknownQueues(w.queues); len(names) > 0 {
		b.Queue("INSERT INTO spool_queues (name) SELECT unnest($1::text[]) ON CONFLICT DO NOTHING", names)
	}
	w.queueEvents(b)
	if b.Len() == 0 {
		return nil
	}
	return w.sendBatch(b)
}

// storeEvents numbers the writer's events from the counter row and inserts
// them, in one statement: the row's lock, held until commit, makes seq order
// commit order and leaves no hole. It is the last statement of the
// transaction, so that the lock is held for the commit and no more.
func (w *writer) storeEvents() error {
	b := &pgx.Batch{}
	w.queueEvents(b)
	if b.Len() == 0 {
		return nil
	}
	return w.sendBatch(b)
}

// queueEvents adds the statement that stores the writer's events to b; the
// event bodies leave out the seq, which the column holds.
func (w *writer) queueEvents(b *pgx.Batch) {
	n := len(w.evs)
	if n == 0 {
		return
	}
	ats := make([]time.Time, n)
	bodies := make([][]byte, n)
	for i := range w.evs {
		ev := &w.evs[i]
		if ev.Time.IsZero() {
			ev.Time = w.now
		}
		e := *ev
		e.Seq = 0
		raw, err := json.Marshal(&e)
		if err != nil {
			// An event is made of the store's own values: it always encodes.
			panic(fmt.Sprintf("encode event: %v", err))
		}
		ats[i], bodies[i] = ev.Time, raw
	}
	b.Queue(`WITH c AS (UPDATE spool_meta SET last_seq = last_seq + $1 RETURNING last_seq),
			i AS (INSERT INTO spool_events (seq, at, body)
				SELECT c.last_seq - $1 + u.ord, u.at, u.body FROM c, unnest($2::timestamptz[], $3::bytea[]) WITH ORDINALITY AS u(at, body, ord))
		SELECT last_seq FROM c`, n, ats, bodies).QueryRow(func(row pgx.Row) error {
		var last int64
		if err := row.Scan(&last); err != nil {
			return fmt.Errorf("store events: %w", err)
		}
		first := last - int64(n) + 1
		for i := range w.evs {
			w.evs[i].Seq = first + int64(i)
		}
		return nil
	})
}

// sendBatch sends b's statements in one round trip and reads their results.
func (w *writer) sendBatch(b *pgx.Batch) error {
	if err := w.tx.SendBatch(w.ctx, b).Close(); err != nil {
		return fmt.Errorf("write: %w", err)
	}
	return nil
}

// unknownQueues are the names in names this handle has not yet seen stored.
func (s *Store) unknownQueues(names map[string]bool) []string {
	if len(names) == 0 {
		return nil
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	var out []string
	for n := range names {
		if !s.queues[n] {
			out = append(out, n)
		}
	}
	return out
}

// knowQueues remembers queue names as stored, after a commit.
func (s *Store) knowQueues(names map[string]bool) {
	if len(names) == 0 {
		return
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	for n := range names {
		s.queues[n] = true
	}
}

// queue reads queue name's settings, once per writer.
func (w *writer) queue(name string) (*rpc.Queue, error) {
	if q, ok := w.qset[name]; ok {
		return q, nil
	}
	q, err := readQueue(w.ctx, w.tx, name)
	if err != nil {
		return nil, err
	}
	if w.qset == nil {
		w.qset = map[string]*rpc.Queue{}
	}
	w.qset[name] = q
	return q, nil
}

// querier is what reads need: a pool, a connection or a transaction.
type querier interface {
	Query(ctx context.Context, sql string, args ...any) (pgx.Rows, error)
	QueryRow(ctx context.Context, sql string, args ...any) pgx.Row
}

// readQueue reads queue name's settings (the defaults when it has none).
func readQueue(ctx context.Context, q querier, name string) (*rpc.Queue, error) {
	var raw []byte
	err := q.QueryRow(ctx, "SELECT settings FROM spool_queues WHERE name = $1", name).Scan(&raw)
	if err != nil && err != pgx.ErrNoRows {
		return nil, fmt.Errorf("read queue %q: %w", name, err)
	}
	out := &rpc.Queue{Name: name}
	if raw != nil {
		if err := json.Unmarshal(raw, out); err != nil {
			return nil, fmt.Errorf("decode queue %q: %w", name, err)
		}
	}
	return out, nil
}

// sameTime reports whether two optional times are the same instant.
func sameTime(a, b *time.Time) bool {
	return (a == nil) == (b == nil) && (a == nil || a.Equal(*b))
}
