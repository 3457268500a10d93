package postgres

import (
	"context"
	"encoding/json"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"

	"spool/rpc"
)

// Apply stores transitions in one transaction, each guarded by the state its
// job must still be in and, when it names an epoch, by that epoch still
// owning the job with a lease that has not expired on the database's clock.
func (s *Store) Apply(ctx context.Context, ts []rpc.Transition) ([]rpc.Event, error) {
	if len(ts) == 0 {
		return []rpc.Event{}, nil
	}
	op := &gop{run: func(w *writer) error {
		w.now = s.opts.Clock()
		if err := w.apply(ts); err != nil {
			return err
		}
		return w.settle()
	}}
	for _, t := range ts {
		op.ids = append(op.ids, t.Record.ID)
		if t.Epoch != 0 {
			op.epochs = append(op.epochs, t.Epoch)
		}
	}
	if err := s.group(ctx, op); err != nil {
		return nil, err
	}
	return op.evs, nil
}

// apply is Apply's work in w's transaction: every check, then every write.
func (w *writer) apply(ts []rpc.Transition) error {
	ids := make([]int64, len(ts))
	var epochs []int64
	for i := range ts {
		ids[i] = ts[i].Record.ID
		if ts[i].Epoch != 0 {
			epochs = append(epochs, ts[i].Epoch)
		}
	}
	// The records, the leases of the epochs named and the jobs' dependents,
	// in one round trip (none when the group read them already).
	var unknown []int64
	for _, e := range epochs {
		if _, ok := w.live[e]; !ok {
			unknown = append(unknown, e)
		}
	}
	if err := w.prefetch(ids, unknown); err != nil {
		return err
	}
	live := w.live
	// A job may move more than once in one call: later checks see earlier moves.
	cur := map[int64]*rpc.Record{}
	recs := make([]rpc.Record, len(ts))
	for i := range ts {
		t := &ts[i]
		id := t.Record.ID
		old, ok := cur[id]
		if !ok {
			r, found := w.rows[id]
			if !found {
				return rpc.NotFound(id)
			}
			old = r.rec
		}
		if old.State != t.From {
			return rpc.BadState(id, old.State, "state changed")
		}
		if t.Epoch != 0 && old.Run.Epoch != t.Epoch {
			return rpc.BadState(id, old.State, fmt.Sprintf("not owned by epoch %d", t.Epoch))
		}
		if t.Epoch != 0 && !live[t.Epoch] {
			return rpc.BadState(id, old.State, fmt.Sprintf("the lease of epoch %d is gone", t.Epoch))
		}
		rec := t.Record
		rec.Spec = nil
		if rec.Run.CancelReason == nil && old.Run.CancelReason != nil {
			if t.Epoch != 0 {
				return rpc.BadState(id, old.State, "a cancel is stored")
			}
			rec.Run.CancelReason = old.Run.CancelReason
		}
		recs[i] = rec
		cur[id] = &recs[i]
	}
	for i := range ts {
		w.events(ts[i].Events, recs[i].ID)
		w.now = eventsTime(ts[i].Events, w.now)
		if err := w.put(&recs[i]); err != nil {
			return err
		}
	}
	return nil
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
	var raw, spec, env []byte
	err := s.pool.QueryRow(ctx, "SELECT rec, "+specCols+" FROM spool_jobs WHERE id = $1", id).Scan(&raw, &spec, &env)
	if err == pgx.ErrNoRows {
		return nil, rpc.NotFound(id)
	}
	if err != nil {
		return nil, rpc.Storage(fmt.Errorf("read job %d: %w", id, err))
	}
	rec, err := decodeRecord(raw, spec, env)
	if err != nil {
		return nil, rpc.Storage(fmt.Errorf("job %d: %w", id, err))
	}
	if rec.Waiting, err = s.waiting(ctx, rec, s.opts.Clock()); err != nil {
		return nil, rpc.Storage(err)
	}
	return rec, nil
}

// waiting is why a queued job is not running, as far as the store knows.
func (s *Store) waiting(ctx context.Context, rec *rpc.Record, now time.Time) (*string, error) {
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
	if len(rec.After) > 0 {
		var n int
		if err := s.pool.QueryRow(ctx, "SELECT count(*) FROM spool_jobs WHERE id = ANY($1) AND state <> 'succeeded'", rec.After).Scan(&n); err != nil {
			return nil, fmt.Errorf("read dependencies of job %d: %w", rec.ID, err)
		}
		if n > 0 {
			return why("after")
		}
	}
	if rec.NotBefore != nil && rec.NotBefore.After(now) {
		return why("not_before")
	}
	q, err := readQueue(ctx, s.pool, rec.Queue)
	if err != nil {
		return nil, err
	}
	if q.Paused {
		return why("paused")
	}
	if q.Parallel != nil {
		var running int
		if err := s.pool.QueryRow(ctx, "SELECT count(*) FROM spool_jobs WHERE queue = $1 AND state = 'running'", rec.Queue).Scan(&running); err != nil {
			return nil, fmt.Errorf("count running jobs of queue %q: %w", rec.Queue, err)
		}
		if running >= *q.Parallel {
			return why("capacity")
		}
	}
	return nil, nil
}

// List reads a page of jobs without their specs and results, filtered as p
// says, in id order from the cursor.
func (s *Store) List(ctx context.Context, p rpc.ListParams) (*rpc.ListResult, error) {
	limit := p.Limit
	if limit <= 0 {
		limit = 100
	}
	desc := true
	switch p.Order {
	case "", "desc":
	case "asc":
		desc = false
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
	var where []string
	var args []any
	arg := func(v any) string {
		args = append(args, v)
		return "$" + strconv.Itoa(len(args))
	}
	if len(p.State) > 0 {
		sts := make([]string, len(p.State))
		for i, st := range p.State {
			sts[i] = string(st)
		}
		where = append(where, "state = ANY("+arg(sts)+")")
	}
	if p.Queue != "" {
		where = append(where, "queue = "+arg(p.Queue))
	}
	order := "id DESC"
	if cursor > 0 {
		if desc {
			where = append(where, "id < "+arg(cursor))
		} else {
			where = append(where, "id > "+arg(cursor))
		}
	}
	if !desc {
		order = "id"
	}
	q := "SELECT rec FROM spool_jobs"
	if len(where) > 0 {
		q += " WHERE " + strings.Join(where, " AND ")
	}
	q += " ORDER BY " + order
	f := p.Filter()
	if !f.Narrows() {
		q += " LIMIT " + arg(limit+1)
	}
	now := s.opts.Clock()
	res := &rpc.ListResult{Jobs: []rpc.Job{}}
	rows, err := s.pool.Query(ctx, q, args...)
	if err != nil {
		return nil, rpc.Storage(fmt.Errorf("list jobs: %w", err))
	}
	defer rows.Close()
	more := false
	var recs []*rpc.Record
	for rows.Next() {
		var raw []byte
		if err := rows.Scan(&raw); err != nil {
			return nil, rpc.Storage(fmt.Errorf("list jobs: %w", err))
		}
		var rec rpc.Record
		if err := json.Unmarshal(raw, &rec); err != nil {
			return nil, rpc.Storage(fmt.Errorf("decode a job: %w", err))
		}
		if !f.Match(&rec.Job, now) {
			continue
		}
		if len(recs) == limit {
			more = true
			break
		}
		recs = append(recs, &rec)
	}
	if err := rows.Err(); err != nil {
		return nil, rpc.Storage(fmt.Errorf("list jobs: %w", err))
	}
	rows.Close()
	for _, rec := range recs {
		if rec.Waiting, err = s.waiting(ctx, rec, now); err != nil {
			return nil, rpc.Storage(err)
		}
		res.Jobs = append(res.Jobs, listed(rec))
	}
	if more {
		next := strconv.FormatInt(res.Jobs[len(res.Jobs)-1].ID, 10)
		res.NextCursor = &next
	}
	return res, nil
}

// listed is rec as job.list shows it: without spec, result and output tails.
func listed(rec *rpc.Record) rpc.Job {
	j := rec.Job
	j.Spec = nil
	j.Result = nil
	for i := range j.Steps {
		j.Steps[i].OutputTail = nil
	}
	return j
}

// Unfinished reads every queued or running job, with its spec, in id order.
func (s *Store) Unfinished(ctx context.Context) ([]rpc.Record, error) {
	return s.records(ctx, "SELECT rec, "+specCols+" FROM spool_jobs WHERE state IN ('queued', 'running') ORDER BY id")
}

// Running reads every running job, with its spec, in id order.
func (s *Store) Running(ctx context.Context) ([]rpc.Record, error) {
	return s.records(ctx, "SELECT rec, "+specCols+" FROM spool_jobs WHERE state = 'running' ORDER BY id")
}

// records reads the records (and specs) a query selects.
func (s *Store) records(ctx context.Context, q string, args ...any) ([]rpc.Record, error) {
	rows, err := s.pool.Query(ctx, q, args...)
	if err != nil {
		return nil, rpc.Storage(fmt.Errorf("read jobs: %w", err))
	}
	defer rows.Close()
	recs := []rpc.Record{}
	for rows.Next() {
		var raw, spec, env []byte
		if err := rows.Scan(&raw, &spec, &env); err != nil {
			return nil, rpc.Storage(fmt.Errorf("read jobs: %w", err))
		}
		rec, err := decodeRecord(raw, spec, env)
		if err != nil {
			return nil, rpc.Storage(err)
		}
		recs = append(recs, *rec)
	}
	if err := rows.Err(); err != nil {
		return nil, rpc.Storage(fmt.Errorf("read jobs: %w", err))
	}
	return recs, nil
}

// jobStates are every job state.
var jobStates = []rpc.State{rpc.StateQueued, rpc.StateRunning, rpc.StateSucceeded, rpc.StateFailed, rpc.StateCancelled}

// Counts is the number of stored jobs in each job state (every state present).
func (s *Store) Counts(ctx context.Context) (map[rpc.State]int, error) {
	m := make(map[rpc.State]int)
	for _, st := range jobStates {
		m[st] = 0
	}
	rows, err := s.pool.Query(ctx, "SELECT state, count(*) FROM spool_jobs GROUP BY state")
	if err != nil {
		return nil, rpc.Storage(fmt.Errorf("count jobs: %w", err))
	}
	defer rows.Close()
	for rows.Next() {
		var st string
		var n int
		if err := rows.Scan(&st, &n); err != nil {
			return nil, rpc.Storage(fmt.Errorf("count jobs: %w", err))
		}
		m[rpc.State(st)] = n
	}
	if err := rows.Err(); err != nil {
		return nil, rpc.Storage(fmt.Errorf("count jobs: %w", err))
	}
	return m, nil
}

// Remove removes final jobs, all or none, each with a removed event; unknown
// ids are ignored. A job that is not final, or that an unfinished job depends
// on, answers 1002.
func (s *Store) Remove(ctx context.Context, ids []int64, now time.Time) ([]int64, []rpc.Event, error) {
	var removed []int64
	var w *writer
	err := s.tx(ctx, func(tx pgx.Tx) error {
		w = s.newWriter(ctx, tx, now)
		removed = []int64{}
		if err := w.load(ids); err != nil {
			return err
		}
		seen := map[int64]bool{}
		for _, id := range ids {
			r, ok := w.rows[id]
			if !ok || seen[id] {
				continue
			}
			seen[id] = true
			if !r.rec.State.Final() {
				return rpc.BadState(id, r.rec.State, "not final")
			}
			by, err := w.dependents(id)
			if err != nil {
				return err
			}
			if len(by) > 0 {
				return rpc.NeededBy(id, by)
			}
			removed = append(removed, id)
		}
		return w.remove(removed)
	})
	if err != nil {
		return nil, nil, err
	}
	s.done(w)
	return removed, w.evs, nil
}

// remove deletes jobs ids, with a removed event each.
func (w *writer) remove(ids []int64) error {
	if len(ids) == 0 {
		return nil
	}
	// The environments lose a reference each, and go with their last.
	if _, err := w.tx.Exec(w.ctx, `WITH gone AS (DELETE FROM spool_jobs WHERE id = ANY($1) RETURNING env_key),
			n AS (SELECT env_key, count(*) AS refs FROM gone WHERE env_key IS NOT NULL GROUP BY env_key)
		UPDATE spool_envs e SET refs = e.refs - n.refs FROM n WHERE e.key = n.env_key`, ids); err != nil {
		return fmt.Errorf("remove jobs: %w", err)
	}
	if _, err := w.tx.Exec(w.ctx, "DELETE FROM spool_envs WHERE refs <= 0"); err != nil {
		return fmt.Errorf("remove unused environments: %w", err)
	}
	if _, err := w.tx.Exec(w.ctx, "DELETE FROM spool_logs WHERE job = ANY($1)", ids); err != nil {
		return fmt.Errorf("remove logs: %w", err)
	}
	for _, id := range ids {
		w.event(rpc.Event{Type: rpc.EventRemoved, Job: id, Time: w.now}, id)
	}
	return w.storeEvents()
}

// pruneChunk bounds the jobs one transaction of Prune removes.
const pruneChunk = 1000

// Prune removes final jobs in one of states (any final state when empty) that
// finished before cutoff (any time when zero), keeping those that unfinished
// jobs depend on; in chunks, one transaction each. When a chunk fails, it
// returns what the chunks before it removed along with the error. With
// several daemons, one prunes at a time (an advisory lock): the others find
// nothing to do.
func (s *Store) Prune(ctx context.Context, states []rpc.State, cutoff time.Time, now time.Time) ([]int64, []rpc.Event, error) {
	var sts []string
	for _, st := range states {
		if st.Final() {
			sts = append(sts, string(st))
		}
	}
	if len(sts) == 0 {
		for _, st := range jobStates {
			if st.Final() {
				sts = append(sts, string(st))
			}
		}
	}
	var cut *time.Time
	if !cutoff.IsZero() {
		cut = &cutoff
	}
	removed, evs := []int64{}, []rpc.Event{}
	var after int64
	for {
		var ids []int64
		var w *writer
		err := s.tx(ctx, func(tx pgx.Tx) error {
			w = s.newWriter(ctx, tx, now)
			rows, err := tx.Query(ctx, `SELECT id FROM spool_jobs j WHERE state = ANY($1) AND id > $2
					AND ($3::timestamptz IS NULL OR finished_at < $3)
					AND NOT EXISTS (SELECT 1 FROM spool_deps d WHERE d.dep = j.id)
				ORDER BY id LIMIT $4 FOR UPDATE SKIP LOCKED`, sts, after, cut, pruneChunk)
			if err != nil {
				return fmt.Errorf("find jobs to prune: %w", err)
			}
			if ids, err = pgx.CollectRows(rows, pgx.RowTo[int64]); err != nil {
				return fmt.Errorf("find jobs to prune: %w", err)
			}
			return w.remove(ids)
		})
		if err != nil {
			return removed, evs, err
		}
		s.done(w)
		removed = append(removed, ids...)
		evs = append(evs, w.evs...)
		if len(ids) < pruneChunk {
			return removed, evs, nil
		}
		after = ids[len(ids)-1]
	}
}

// Events reads up to limit stored events with seq > after, in seq order.
func (s *Store) Events(ctx context.Context, after int64, limit int) ([]rpc.Event, error) {
	var lim *int
	if limit > 0 {
		lim = &limit // none: every event after
	}
	rows, err := s.pool.Query(ctx, "SELECT seq, body FROM spool_events WHERE seq > $1 ORDER BY seq LIMIT $2", after, lim)
	if err != nil {
		return nil, rpc.Storage(fmt.Errorf("read events: %w", err))
	}
	defer rows.Close()
	evs := []rpc.Event{}
	for rows.Next() {
		var seq int64
		var raw []byte
		if err := rows.Scan(&seq, &raw); err != nil {
			return nil, rpc.Storage(fmt.Errorf("read events: %w", err))
		}
		var ev rpc.Event
		if err := json.Unmarshal(raw, &ev); err != nil {
			return nil, rpc.Storage(fmt.Errorf("decode event %d: %w", seq, err))
		}
		ev.Seq = seq
		evs = append(evs, ev)
	}
	if err := rows.Err(); err != nil {
		return nil, rpc.Storage(fmt.Errorf("read events: %w", err))
	}
	return evs, nil
}

// Bounds returns the oldest and last stored seq; with no events stored,
// oldest is last+1.
func (s *Store) Bounds(ctx context.Context) (oldest, last int64, err error) {
	err = s.pool.QueryRow(ctx, "SELECT coalesce((SELECT min(seq) FROM spool_events), last_seq + 1), last_seq FROM spool_meta").Scan(&oldest, &last)
	if err != nil {
		return 0, 0, rpc.Storage(fmt.Errorf("read event bounds: %w", err))
	}
	return oldest, last, nil
}

// TrimEvents removes the events older than before, from the oldest end only.
// With several daemons, one trims at a time (an advisory lock).
func (s *Store) TrimEvents(ctx context.Context, before time.Time) (int, error) {
	var n int64
	err := s.tx(ctx, func(tx pgx.Tx) error {
		var ok bool
		if err := tx.QueryRow(ctx, "SELECT pg_try_advisory_xact_lock(7345002)").Scan(&ok); err != nil || !ok {
			return err
		}
		tag, err := tx.Exec(ctx, `DELETE FROM spool_events WHERE seq < coalesce(
				(SELECT min(seq) FROM spool_events WHERE at >= $1),
				(SELECT last_seq + 1 FROM spool_meta))`, before)
		if err != nil {
			return fmt.Errorf("trim events: %w", err)
		}
		n = tag.RowsAffected()
		return nil
	})
	return int(n), err
}
