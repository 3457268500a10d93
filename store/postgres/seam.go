package postgres

import (
	"context"
	"encoding/json"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"

	"spool/rpc"
	"spool/rpc/machine"
)

// leaseGone is 1002 for a lease that expired or was never given.
func leaseGone(o machine.Owner) error {
	return rpc.Errorf(rpc.CodeBadState, "the lease of node %q, epoch %d, is gone", o.Node, o.Epoch)
}

// Join makes node a member: a new epoch from the counter row and a lease that
// expires LeaseTTL from now on the database's clock.
func (s *Store) Join(ctx context.Context, node string, now time.Time) (machine.Owner, error) {
	var epoch int64
	err := s.tx(ctx, func(tx pgx.Tx) error {
		if err := tx.QueryRow(ctx, "UPDATE spool_counters SET last_epoch = last_epoch + 1 RETURNING last_epoch").Scan(&epoch); err != nil {
			return fmt.Errorf("take an epoch: %w", err)
		}
		if _, err := tx.Exec(ctx, "INSERT INTO spool_leases (epoch, node, expires) VALUES ($1, $2, now() + $3::interval)", epoch, node, s.opts.LeaseTTL); err != nil {
			return fmt.Errorf("store the lease: %w", err)
		}
		// Leases long gone have no jobs left to reap.
		_, err := tx.Exec(ctx, `DELETE FROM spool_leases l WHERE expires < now() - interval '1 hour'
			AND NOT EXISTS (SELECT 1 FROM spool_jobs j WHERE j.state = 'running' AND j.epoch = l.epoch)`)
		return err
	})
	if err != nil {
		return machine.Owner{}, err
	}
	return machine.Owner{Node: node, Epoch: epoch}, nil
}

// Renew extends o's lease by LeaseTTL on the database's clock and returns the
// ids of its running jobs that have a cancel stored, in id order; 1002 when
// the lease expired (its jobs may be another daemon's by now).
func (s *Store) Renew(ctx context.Context, o machine.Owner, now time.Time) ([]int64, error) {
	tag, err := s.pool.Exec(ctx, "UPDATE spool_leases SET expires = now() + $3::interval WHERE epoch = $1 AND node = $2 AND expires > now()", o.Epoch, o.Node, s.opts.LeaseTTL)
	if err != nil {
		return nil, rpc.Storage(fmt.Errorf("renew the lease: %w", err))
	}
	if tag.RowsAffected() == 0 {
		return nil, leaseGone(o)
	}
	rows, err := s.pool.Query(ctx, "SELECT id FROM spool_jobs WHERE state = 'running' AND epoch = $1 AND cancel_pending ORDER BY id", o.Epoch)
	if err != nil {
		return nil, rpc.Storage(fmt.Errorf("read cancels: %w", err))
	}
	ids, err := pgx.CollectRows(rows, pgx.RowTo[int64])
	if err != nil {
		return nil, rpc.Storage(fmt.Errorf("read cancels: %w", err))
	}
	if ids == nil {
		ids = []int64{}
	}
	return ids, nil
}

// Reap takes the running jobs whose owner's lease expired: each gets
// machine.Interrupt, queued again or failed with its queued dependents.
func (s *Store) Reap(ctx context.Context, now time.Time) ([]rpc.Record, []rpc.Event, error) {
	var recs []rpc.Record
	var w *writer
	err := s.tx(ctx, func(tx pgx.Tx) error {
		w = s.newWriter(ctx, tx, now)
		recs = []rpc.Record{}
		// Expired leases are marked gone first, under their rows' locks: a
		// renewal racing this reap either extended the lease before (and
		// its jobs stay) or waits, then finds it gone (1002).
		if _, err := tx.Exec(ctx, "UPDATE spool_leases SET expires = '-infinity' WHERE expires <= now() AND expires > '-infinity'"); err != nil {
			return fmt.Errorf("end expired leases: %w", err)
		}
		rows, err := tx.Query(ctx, `SELECT id FROM spool_jobs j WHERE state = 'running'
				AND NOT EXISTS (SELECT 1 FROM spool_leases l WHERE l.epoch = j.epoch AND l.expires > now())
			ORDER BY id LIMIT 1000 FOR UPDATE SKIP LOCKED`)
		if err != nil {
			return fmt.Errorf("find jobs to reap: %w", err)
		}
		ids, err := pgx.CollectRows(rows, pgx.RowTo[int64])
		if err != nil {
			return fmt.Errorf("find jobs to reap: %w", err)
		}
		if err := w.load(ids); err != nil {
			return err
		}
		for _, id := range ids {
			rec, err := w.get(id)
			if err != nil {
				return err
			}
			if rec == nil || rec.State != rpc.StateRunning {
				continue
			}
			w.events(machine.Interrupt(rec, now), id)
			if err := w.put(rec); err != nil {
				return err
			}
			recs = append(recs, *w.rows[id].rec)
		}
		if err := w.finish(); err != nil {
			return err
		}
		for _, rec := range w.extra {
			recs = append(recs, *rec)
		}
		return nil
	})
	if err != nil {
		return nil, nil, err
	}
	s.done(w)
	return recs, w.evs, nil
}

// Claim moves up to limit claimable jobs to running, owned by o, in one
// transaction: the best first (priority descending, then id) across the
// queues that are not paused, rows other claimers hold skipped; each queue's
// parallel limit is checked at the end, under its row's lock, against the
// running jobs counted then. 1002 when o's lease expired.
//
// The store is neither a daemon.EarlyClaimer nor a daemon.ApplyClaimer: the
// ends of jobs go through Apply, whose group commit stores many runners'
// ends in one transaction, and the claims that follow take many jobs each.
func (s *Store) Claim(ctx context.Context, o machine.Owner, limit int, now time.Time) ([]rpc.Record, []rpc.Event, error) {
	// Most calls find nothing to claim: a read answers them.
	var some, live bool
	err := s.pool.QueryRow(ctx, `SELECT EXISTS (SELECT 1 FROM spool_jobs WHERE claimable AND (not_before IS NULL OR not_before <= $1)),
			EXISTS (SELECT 1 FROM spool_leases WHERE epoch = $2 AND node = $3 AND expires > now())`, now, o.Epoch, o.Node).Scan(&some, &live)
	if err != nil {
		return nil, nil, rpc.Storage(fmt.Errorf("look for claimable jobs: %w", err))
	}
	if !live {
		return nil, nil, leaseGone(o)
	}
	if !some || limit <= 0 {
		return []rpc.Record{}, []rpc.Event{}, nil
	}
	var recs []rpc.Record
	var w *writer
	err = s.tx(ctx, func(tx pgx.Tx) error {
		w = s.newWriter(ctx, tx, now)
		var err error
		if recs, err = w.claim(o, limit, now); err != nil {
			return err
		}
		return w.finish()
	})
	if err != nil {
		return nil, nil, err
	}
	s.done(w)
	return recs, w.evs, nil
}

// claim takes up to limit claimable jobs for o in w's transaction: one round
// trip reads the lease, the queue settings and the running jobs of limited
// queues; one takes the best claimable jobs, locked, with their records; a
// limited queue among them costs one more, for its lock and its count.
func (w *writer) claim(o machine.Owner, limit int, now time.Time) ([]rpc.Record, error) {
	recs := []rpc.Record{}
	var live bool
	settings := map[string]*rpc.Queue{}
	running := map[string]int{}
	b := &pgx.Batch{}
	b.Queue("SELECT EXISTS (SELECT 1 FROM spool_leases WHERE epoch = $1 AND node = $2 AND expires > now())", o.Epoch, o.Node).QueryRow(func(row pgx.Row) error {
		return row.Scan(&live)
	})
	b.Queue("SELECT name, settings FROM spool_queues WHERE settings IS NOT NULL").Query(func(rows pgx.Rows) error {
		for rows.Next() {
			var name string
			var raw []byte
			if err := rows.Scan(&name, &raw); err != nil {
				return err
			}
			q := &rpc.Queue{Name: name}
			if err := json.Unmarshal(raw, q); err != nil {
				return fmt.Errorf("decode queue %q: %w", name, err)
			}
			settings[name] = q
		}
		return rows.Err()
	})
	b.Queue(`SELECT queue, count(*) FROM spool_jobs WHERE state = 'running'
		AND queue IN (SELECT name FROM spool_queues WHERE settings IS NOT NULL) GROUP BY queue`).Query(func(rows pgx.Rows) error {
		for rows.Next() {
			var name string
			var n int
			if err := rows.Scan(&name, &n); err != nil {
				return err
			}
			running[name] = n
		}
		return rows.Err()
	})
	if err := w.tx.SendBatch(w.ctx, b).Close(); err != nil {
		return nil, fmt.Errorf("read the lease and the queues: %w", err)
	}
	if !live {
		return nil, leaseGone(o)
	}
	if limit <= 0 {
		return recs, nil
	}
	// Paused queues are left out, and so are limited ones with no room now;
	// the others' room is counted again at the end, under the queue's lock.
	skip := []string{}
	limited := map[string]int{}
	for name, q := range settings {
		switch {
		case q.Paused:
			skip = append(skip, name)
		case q.Parallel != nil:
			limited[name] = *q.Parallel
			if running[name] >= *q.Parallel {
				skip = append(skip, name)
			}
		}
	}
	// The limits, checked last: the queue's row lock orders the claimers of a
	// limited queue, and the count read after it sees every claim committed
	// before. Jobs of a queue found full then are left, and the next best
	// are looked for in the queues that still have room, a few times.
	type cand struct {
		id    int64
		queue string
	}
	var cands []cand
	seen := []int64{}
	counted := map[string]int{} // running jobs of the limited queues locked
	for round := 0; round < 4 && len(cands) < limit; round++ {
		rows, err := w.tx.Query(w.ctx, `SELECT id, queue, rec, `+specCols+` FROM spool_jobs
			WHERE claimable AND (not_before IS NULL OR not_before <= $1) AND NOT (queue = ANY($2)) AND NOT (id = ANY($3))
			ORDER BY priority DESC, id LIMIT $4 FOR UPDATE SKIP LOCKED`, now, skip, seen, limit-len(cands))
		if err != nil {
			return nil, fmt.Errorf("find claimable jobs: %w", err)
		}
		var found []cand
		for rows.Next() {
			var c cand
			var raw, spec, env []byte
			if err := rows.Scan(&c.id, &c.queue, &raw, &spec, &env); err != nil {
				rows.Close()
				return nil, fmt.Errorf("find claimable jobs: %w", err)
			}
			rec, err := decodeRecord(raw, spec, env)
			if err != nil {
				rows.Close()
				return nil, fmt.Errorf("job %d: %w", c.id, err)
			}
			w.rows[c.id] = &row{rec: rec, spec: spec, claimable: true}
			found = append(found, c)
			seen = append(seen, c.id)
		}
		rows.Close()
		if err := rows.Err(); err != nil {
			return nil, fmt.Errorf("find claimable jobs: %w", err)
		}
		if len(found) == 0 {
			break
		}
		var lock []string
		for _, c := range found {
			if _, ok := limited[c.queue]; ok && !contains(lock, c.queue) {
				if _, done := counted[c.queue]; !done {
					lock = append(lock, c.queue)
				}
			}
		}
		if len(lock) > 0 {
			if _, err := w.tx.Exec(w.ctx, "SELECT 1 FROM spool_queues WHERE name = ANY($1) ORDER BY name FOR UPDATE", lock); err != nil {
				return nil, fmt.Errorf("lock limited queues: %w", err)
			}
			running, err := w.running(lock)
			if err != nil {
				return nil, err
			}
			for _, q := range lock {
				counted[q] = running[q]
			}
		}
		dropped := false
		for _, c := range found {
			if par, ok := limited[c.queue]; ok {
				if counted[c.queue] >= par {
					dropped = true
					if !contains(skip, c.queue) {
						skip = append(skip, c.queue)
					}
					continue
				}
				counted[c.queue]++
			}
			cands = append(cands, c)
		}
		if !dropped {
			break
		}
	}
	for _, c := range cands {
		rec, err := w.get(c.id)
		if err != nil {
			return nil, err
		}
		if rec == nil || rec.State != rpc.StateQueued {
			return nil, fmt.Errorf("claimable job %d is not queued", c.id)
		}
		w.events(machine.Claim(rec, o, now), c.id)
		if err := w.put(rec); err != nil {
			return nil, err
		}
		recs = append(recs, *w.rows[c.id].rec)
	}
	return recs, nil
}

// running counts the running jobs of queues names.
func (w *writer) running(names []string) (map[string]int, error) {
	rows, err := w.tx.Query(w.ctx, "SELECT queue, count(*) FROM spool_jobs WHERE state = 'running' AND queue = ANY($1) GROUP BY queue", names)
	if err != nil {
		return nil, fmt.Errorf("count running jobs: %w", err)
	}
	defer rows.Close()
	m := map[string]int{}
	for rows.Next() {
		var name string
		var n int
		if err := rows.Scan(&name, &n); err != nil {
			return nil, fmt.Errorf("count running jobs: %w", err)
		}
		m[name] = n
	}
	return m, rows.Err()
}

func contains(ss []string, s string) bool {
	for _, x := range ss {
		if x == s {
			return true
		}
	}
	return false
}

// Cancel asks for job id to end as cancelled with reason: a queued job (or a
// running one between two attempts) ends at once, its queued dependents
// failed with it; a running one gets the request stored, which its owner
// learns through Renew (and the notification that wakes it).
func (s *Store) Cancel(ctx context.Context, id int64, reason string, now time.Time) (rpc.State, []rpc.Record, []rpc.Event, error) {
	var state rpc.State
	var recs []rpc.Record
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
		if rec.State.Final() {
			return rpc.BadState(id, rec.State, "already final")
		}
		if _, err := w.cancelOne(rec, reason, now); err != nil {
			return err
		}
		if err := w.finish(); err != nil {
			return err
		}
		r := w.rows[id].rec
		state = r.State
		recs = []rpc.Record{*r}
		for _, x := range w.extra {
			recs = append(recs, *x)
		}
		return nil
	})
	if err != nil {
		return "", nil, nil, err
	}
	s.done(w)
	s.cancelStored() // the owner of a running job learns at once
	return state, recs, w.evs, nil
}

// CancelMany cancels the jobs ids in one transaction, each as Cancel does;
// unknown and final ones are skipped.
func (s *Store) CancelMany(ctx context.Context, ids []int64, reason string, now time.Time) ([]rpc.Record, []rpc.Event, error) {
	var recs []rpc.Record
	var w *writer
	err := s.tx(ctx, func(tx pgx.Tx) error {
		w = s.newWriter(ctx, tx, now)
		recs = []rpc.Record{}
		if err := w.load(ids); err != nil {
			return err
		}
		var changed []int64
		for _, id := range ids {
			rec, err := w.get(id)
			if err != nil {
				return err
			}
			if rec == nil || rec.State.Final() {
				continue
			}
			wrote, err := w.cancelOne(rec, reason, now)
			if err != nil {
				return err
			}
			if wrote {
				changed = append(changed, id)
			}
		}
		if err := w.finish(); err != nil {
			return err
		}
		for _, id := range changed {
			recs = append(recs, *w.rows[id].rec)
		}
		for _, x := range w.extra {
			recs = append(recs, *x)
		}
		return nil
	})
	if err != nil {
		return nil, nil, err
	}
	s.done(w)
	s.cancelStored()
	return recs, w.evs, nil
}

// cancelOne applies a cancel to rec, read in w's transaction: a queued job,
// or a running one between two attempts of a step (no process runs), ends at
// once, keeping a reason stored before; a running one gets the request
// stored, for its owner. It reports whether it wrote.
func (w *writer) cancelOne(rec *rpc.Record, reason string, now time.Time) (bool, error) {
	retrying := rec.State == rpc.StateRunning && rec.Steps[rec.CurrentStep].State == rpc.StateRetrying
	switch {
	case rec.State == rpc.StateQueued || retrying:
		why := reason
		if rec.Run.CancelReason != nil {
			why = *rec.Run.CancelReason
		} else {
			rec.Run.CancelReason = &why
		}
		w.events(machine.EndUnstarted(rec, why, rpc.StateCancelled, now), rec.ID)
	case rec.Run.CancelReason != nil:
		return false, nil
	default:
		why := reason
		rec.Run.CancelReason = &why
	}
	return true, w.put(rec)
}

// NextNotBefore is the earliest not_before of the claimable jobs that wait
// only for it, or the zero time when there is none.
func (s *Store) NextNotBefore(ctx context.Context) (time.Time, error) {
	var at *time.Time
	if err := s.pool.QueryRow(ctx, "SELECT min(not_before) FROM spool_jobs WHERE claimable AND not_before IS NOT NULL").Scan(&at); err != nil {
		return time.Time{}, rpc.Storage(fmt.Errorf("read the next not_before: %w", err))
	}
	if at == nil {
		return time.Time{}, nil
	}
	return *at, nil
}
