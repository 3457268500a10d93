package postgres

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"

	"spool/rpc"
)

// Check verifies the store's invariants: each row's columns agree with its
// record (state, queue, owner, claimability, cancel flag), dependencies are
// kept exactly for the unfinished jobs, each environment counts the jobs that
// refer to it, and the event log is whole from its oldest seq to the counter. It reads one snapshot and reports every problem
// it finds, up to 20.
func (s *Store) Check(ctx context.Context) error {
	tx, err := s.pool.Begin(ctx)
	if err != nil {
		return fmt.Errorf("check: %w", err)
	}
	defer func() { _ = tx.Rollback(ctx) }()
	if _, err := tx.Exec(ctx, "SET TRANSACTION ISOLATION LEVEL REPEATABLE READ READ ONLY"); err != nil {
		return fmt.Errorf("check: %w", err)
	}
	var probs []string
	report := func(format string, args ...any) {
		if len(probs) < 20 {
			probs = append(probs, fmt.Sprintf(format, args...))
		}
	}
	states := map[int64]rpc.State{}
	type jrow struct {
		rec       rpc.Record
		claimable bool
	}
	var jobs []jrow
	rows, err := tx.Query(ctx, "SELECT id, state, queue, epoch, claimable, cancel_pending, rec FROM spool_jobs ORDER BY id")
	if err != nil {
		return fmt.Errorf("check: read jobs: %w", err)
	}
	for rows.Next() {
		var id, epoch int64
		var state, queue string
		var claimable, cancel bool
		var raw []byte
		if err := rows.Scan(&id, &state, &queue, &epoch, &claimable, &cancel, &raw); err != nil {
			rows.Close()
			return fmt.Errorf("check: read jobs: %w", err)
		}
		var rec rpc.Record
		if err := json.Unmarshal(raw, &rec); err != nil {
			report("job %d: record does not decode: %v", id, err)
			continue
		}
		if rec.ID != id || string(rec.State) != state || rec.Queue != queue || rec.Run.Epoch != epoch {
			report("job %d: columns (%s, %q, epoch %d) differ from the record (%d, %s, %q, epoch %d)", id, state, queue, epoch, rec.ID, rec.State, rec.Queue, rec.Run.Epoch)
		}
		if want := !rec.State.Final() && rec.Run.CancelReason != nil; cancel != want {
			report("job %d: cancel_pending is %v, want %v", id, cancel, want)
		}
		states[id] = rec.State
		jobs = append(jobs, jrow{rec: rec, claimable: claimable})
	}
	rows.Close()
	if err := rows.Err(); err != nil {
		return fmt.Errorf("check: read jobs: %w", err)
	}
	deps := map[int64][]int64{}
	rows, err = tx.Query(ctx, "SELECT dep, job FROM spool_deps ORDER BY job, dep")
	if err != nil {
		return fmt.Errorf("check: read dependencies: %w", err)
	}
	for rows.Next() {
		var dep, job int64
		if err := rows.Scan(&dep, &job); err != nil {
			rows.Close()
			return fmt.Errorf("check: read dependencies: %w", err)
		}
		deps[job] = append(deps[job], dep)
	}
	rows.Close()
	if err := rows.Err(); err != nil {
		return fmt.Errorf("check: read dependencies: %w", err)
	}
	for _, j := range jobs {
		rec := &j.rec
		want := []int64{}
		if !rec.State.Final() {
			for _, d := range rec.After {
				if _, ok := states[d]; ok {
					want = append(want, d)
				}
			}
		}
		slices.Sort(want)
		got := deps[rec.ID]
		if got == nil {
			got = []int64{}
		}
		if !slices.Equal(got, want) {
			report("job %d: dependencies stored %v, want %v", rec.ID, got, want)
		}
		claimable := rec.State == rpc.StateQueued && !rec.Run.Held && rec.PausedAt == nil
		for _, d := range rec.After {
			if st, ok := states[d]; ok && st != rpc.StateSucceeded {
				claimable = false
			}
		}
		if j.claimable != claimable {
			report("job %d (%s): claimable is %v, want %v", rec.ID, rec.State, j.claimable, claimable)
		}
	}
	var oldest, last, n int64
	if err := tx.QueryRow(ctx, "SELECT coalesce(min(seq), 0), count(*) FROM spool_events").Scan(&oldest, &n); err != nil {
		return fmt.Errorf("check: read events: %w", err)
	}
	if err := tx.QueryRow(ctx, "SELECT last_seq FROM spool_meta").Scan(&last); err != nil {
		return fmt.Errorf("check: read the counter: %w", err)
	}
	if n > 0 && last-oldest+1 != n {
		report("events: %d stored from seq %d to %d, a gap of %d", n, oldest, last, last-oldest+1-n)
	}
	rows, err = tx.Query(ctx, `SELECT encode(e.key, 'hex'), e.refs, (SELECT count(*) FROM spool_jobs j WHERE j.env_key = e.key) FROM spool_envs e
		UNION ALL SELECT encode(j.env_key, 'hex'), 0, count(*) FROM spool_jobs j WHERE j.env_key IS NOT NULL
			AND NOT EXISTS (SELECT 1 FROM spool_envs e WHERE e.key = j.env_key) GROUP BY j.env_key`)
	if err != nil {
		return fmt.Errorf("check: read environments: %w", err)
	}
	for rows.Next() {
		var key string
		var refs, used int64
		if err := rows.Scan(&key, &refs, &used); err != nil {
			rows.Close()
			return fmt.Errorf("check: read environments: %w", err)
		}
		if refs != used {
			report("environment %.12s: %d references counted, %d jobs refer to it", key, refs, used)
		}
	}
	rows.Close()
	if err := rows.Err(); err != nil {
		return fmt.Errorf("check: read environments: %w", err)
	}
	if len(probs) > 0 {
		return errors.New("check: " + fmt.Sprint(len(probs)) + " problems: " + joinLines(probs))
	}
	return nil
}

func joinLines(ss []string) string {
	out := ""
	for i, s := range ss {
		if i > 0 {
			out += "; "
		}
		out += s
	}
	return out
}
