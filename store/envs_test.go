package store_test

import (
	"context"
	"encoding/binary"
	"encoding/json"
	"fmt"
	"path/filepath"
	"testing"
	"time"

	"github.com/matryer/is"
	"go.etcd.io/bbolt"

	"spool/rpc"
	"spool/store"
	"spool/store/storetest"
)

// bigEnv is an environment of n variables, told apart by which.
func bigEnv(which string, n int) map[string]string {
	env := map[string]string{"WHICH": which}
	for i := range n {
		env[fmt.Sprintf("VAR_%03d", i)] = fmt.Sprintf("value %d of the shell %s", i, which)
	}
	return env
}

// envJob is a new final job named name with env, finished at at.
func envJob(name string, env map[string]string, at time.Time) rpc.NewJob {
	sp := storetest.Spec(name)
	sp.Env = env
	nj := storetest.NewJob("job", sp, at)
	nj.Record.State = rpc.StateSucceeded
	nj.Record.FinishedAt = &at
	return nj
}

// downgrade rewrites the database at path as schema version 1 wrote it: every
// spec whole, inline (specs gives them by id), no buckets of environments and
// none of scheduling.
func downgrade(t *testing.T, path string, specs map[int64]*rpc.Spec) {
	t.Helper()
	is := is.New(t)
	is.Helper()
	db, err := bbolt.Open(path, 0o600, nil)
	is.NoErr(err) // bbolt opens it
	is.NoErr(db.Update(func(tx *bbolt.Tx) error {
		for id, sp := range specs {
			raw, err := json.Marshal(sp)
			if err != nil {
				return err
			}
			k := make([]byte, 8)
			for i := range 8 {
				k[i] = byte(id >> (56 - 8*i))
			}
			if err := tx.Bucket([]byte("specs")).Put(k, raw); err != nil {
				return err
			}
		}
		for _, name := range []string{"envs", "env_refs", "ready", "timers", "queue_counts", "cancels", "schedules"} {
			if err := tx.DeleteBucket([]byte(name)); err != nil {
				return err
			}
		}
		if err := tx.Bucket([]byte("meta")).Delete([]byte("epoch")); err != nil {
			return err
		}
		// Its jobs are all final: its index of unfinished jobs is empty.
		for _, name := range []string{"queue_index", "unfinished"} {
			if _, err := tx.CreateBucket([]byte(name)); err != nil {
				return err
			}
		}
		return tx.Bucket([]byte("meta")).Put([]byte("version"), []byte("1"))
	})) // rewritten as version 1
	is.NoErr(db.Close()) // closed
}

// schemaVersion reads the schema version stored at path.
func schemaVersion(t *testing.T, path string) string {
	t.Helper()
	is := is.New(t)
	is.Helper()
	db, err := bbolt.Open(path, 0o600, &bbolt.Options{ReadOnly: true, Timeout: 5 * time.Second})
	is.NoErr(err) // bbolt opens it
	defer db.Close()
	var v string
	is.NoErr(db.View(func(tx *bbolt.Tx) error {
		v = string(tx.Bucket([]byte("meta")).Get([]byte("version")))
		return nil
	})) // readable
	return v
}

// TestSchema1Upgrade: a database of schema version 1, whose specs carry their env
// inline, opens, reads its jobs as they were, counts no reference for them, and
// mixes with specs stored the new way; compacting it before the upgrade works too.
func TestSchema1Upgrade(t *testing.T) {
	is := is.New(t)
	ctx := context.Background()
	path := filepath.Join(t.TempDir(), "spool.db")
	now := time.Date(2026, 3, 1, 0, 0, 0, 0, time.UTC)
	one := bigEnv("one", 100)

	s, err := store.Open(path, store.Options{NoSync: true})
	is.NoErr(err) // opens
	recs, _, err := s.Submit(ctx, []rpc.NewJob{envJob("a", one, now), envJob("b", one, now), envJob("c", map[string]string{}, now)})
	is.NoErr(err)       // stored
	is.NoErr(s.Close()) // closed
	old := map[int64]*rpc.Spec{}
	for _, r := range recs {
		old[r.ID] = r.Spec
	}
	downgrade(t, path, old)
	is.NoErr(store.Compact(path, store.Options{NoSync: true})) // a version 1 database compacts
	is.Equal(schemaVersion(t, path), "1")                      // and stays version 1

	s, err = store.Open(path, store.Options{NoSync: true})
	is.NoErr(err)                         // a version 1 database opens
	is.NoErr(s.Close())                   // closed
	is.Equal(schemaVersion(t, path), "4") // upgraded
	s = open(t, path, store.Options{NoSync: true})
	is.NoErr(s.Check(ctx)) // and it is consistent
	for _, r := range recs {
		got, err := s.Get(ctx, r.ID)
		is.NoErr(err)                      // an old job reads
		is.Equal(got.Spec, r.Spec)         // with its spec as it was
		is.Equal(got.Spec.Env, r.Spec.Env) // env and all
	}
	refs, err := s.EnvRefs(ctx)
	is.NoErr(err)          // readable
	is.Equal(len(refs), 0) // old specs hold no reference

	more, _, err := s.Submit(ctx, []rpc.NewJob{envJob("d", one, now)})
	is.NoErr(err) // a new job is stored the new way
	refs, err = s.EnvRefs(ctx)
	is.NoErr(err)              // readable
	is.Equal(refs, []int64{1}) // its environment is stored once, counted once
	is.NoErr(s.Check(ctx))     // both layouts side by side are consistent
	got, err := s.Get(ctx, more[0].ID)
	is.NoErr(err)               // reads
	is.Equal(got.Spec.Env, one) // with its environment

	_, _, err = s.Remove(ctx, []int64{recs[0].ID, recs[2].ID}, now)
	is.NoErr(err) // old jobs are removed
	refs, err = s.EnvRefs(ctx)
	is.NoErr(err)              // readable
	is.Equal(refs, []int64{1}) // without touching the new job's count
	_, _, err = s.Prune(ctx, nil, time.Time{}, now)
	is.NoErr(err) // old and new pruned together
	refs, err = s.EnvRefs(ctx)
	is.NoErr(err)          // readable
	is.Equal(len(refs), 0) // the last reference freed the environment
}

// downgrade2 rewrites the database at path as schema version 2 wrote it: no
// scheduling buckets and no epoch counter, but the unfinished set and the queue
// index, built from the records.
func downgrade2(t *testing.T, path string) {
	t.Helper()
	is := is.New(t)
	is.Helper()
	db, err := bbolt.Open(path, 0o600, nil)
	is.NoErr(err) // bbolt opens it
	is.NoErr(db.Update(func(tx *bbolt.Tx) error {
		for _, name := range []string{"ready", "timers", "queue_counts", "cancels", "schedules"} {
			if err := tx.DeleteBucket([]byte(name)); err != nil {
				return err
			}
		}
		meta := tx.Bucket([]byte("meta"))
		if err := meta.Delete([]byte("epoch")); err != nil {
			return err
		}
		unfinished, err := tx.CreateBucket([]byte("unfinished"))
		if err != nil {
			return err
		}
		queueIndex, err := tx.CreateBucket([]byte("queue_index"))
		if err != nil {
			return err
		}
		jobs := tx.Bucket([]byte("jobs"))
		err = jobs.ForEach(func(k, v []byte) error {
			var rec rpc.Record
			if err := json.Unmarshal(v, &rec); err != nil {
				return err
			}
			if rec.State.Final() {
				return nil
			}
			if err := unfinished.Put(k, []byte(rec.State)); err != nil {
				return err
			}
			qk := binary.BigEndian.AppendUint16(nil, uint16(len(rec.Queue)))
			qk = append(qk, rec.Queue...)
			qk = binary.BigEndian.AppendUint64(qk, ^(uint64(int64(rec.Priority)) ^ (1 << 63)))
			qk = append(qk, k...)
			return queueIndex.Put(qk, []byte(rec.State))
		})
		if err != nil {
			return err
		}
		return meta.Put([]byte("version"), []byte("2"))
	})) // rewritten as version 2
	is.NoErr(db.Close()) // closed
}

// TestSchema2Upgrade: a database of schema version 2 opens as version 4 with its
// scheduling buckets built from its records: claimable, waiting for a time or a
// dependency, paused, running with a cancel stored; queue counts; and its
// running jobs, of no epoch, are reaped and claimed again in order.
func TestSchema2Upgrade(t *testing.T) {
	is := is.New(t)
	ctx := context.Background()
	path := filepath.Join(t.TempDir(), "spool.db")
	now := time.Date(2026, 3, 1, 0, 0, 0, 0, time.UTC)
	later := time.Now().Add(time.Hour).Truncate(time.Second).UTC()

	s, err := store.Open(path, store.Options{NoSync: true})
	is.NoErr(err)                                                 // opens
	is.NoErr(s.PutQueue(ctx, rpc.Queue{Name: "p", Paused: true})) // stored
	mk := func(name, queue string, prio int) rpc.NewJob {
		sp := storetest.Spec(name)
		sp.Queue, sp.Priority = queue, prio
		return storetest.NewJob("job", sp, now)
	}
	nb := mk("nb", "default", 9)
	nb.Record.NotBefore = &later
	w := mk("w", "default", 9)
	w.Record.Spec.AfterIndex = []int{0}
	recs, _, err := s.Submit(ctx, []rpc.NewJob{mk("a", "default", 0), mk("b", "default", 5), nb, w, mk("c", "p", 9), mk("r", "default", 0)})
	is.NoErr(err) // stored
	o, err := s.Join(ctx, "old", now)
	is.NoErr(err) // joined
	// Claim b and a (priority, then id), then give b back: a is left running.
	got, _, err := s.Claim(ctx, o, 2, now)
	is.NoErr(err)
	is.Equal(len(got), 2)
	back := got[0]
	back.State = rpc.StateQueued
	back.Run.Epoch = 0
	_, err = s.Apply(ctx, []rpc.Transition{{Record: back, From: rpc.StateRunning, Epoch: o.Epoch}})
	is.NoErr(err) // b queued again
	is.Equal(got[1].ID, recs[0].ID)
	_, _, _, err = s.Cancel(ctx, got[1].ID, "stop", now)
	is.NoErr(err) // a has a cancel stored
	is.NoErr(s.Close())
	downgrade2(t, path)

	s = open(t, path, store.Options{NoSync: true})
	is.NoErr(s.Close())
	is.Equal(schemaVersion(t, path), "4") // upgraded
	s = open(t, path, store.Options{NoSync: true})
	is.NoErr(s.Check(ctx)) // and consistent: the new buckets match the records
	qs, err := s.Queues(ctx)
	is.NoErr(err)
	is.Equal(qs, []rpc.Queue{{Name: "default", Queued: 4, Running: 1}, {Name: "p", Paused: true, Queued: 1}}) // counted from the records
	next, err := s.NextNotBefore(ctx)
	is.NoErr(err)
	is.True(next.Equal(later)) // the timer is built
	rec, err := s.Get(ctx, recs[3].ID)
	is.NoErr(err)
	is.Equal(*rec.Waiting, "after") // the dependent waits
	o2, err := s.Join(ctx, "new", now)
	is.NoErr(err)
	is.True(o2.Epoch > o.Epoch) // the counter was kept
	reaped, _, err := s.Reap(ctx, now)
	is.NoErr(err)
	is.Equal(len(reaped), 1) // the running job of the last boot
	got, _, err = s.Claim(ctx, o2, 10, now)
	is.NoErr(err)
	var ids []int64
	for _, g := range got {
		ids = append(ids, g.ID)
	}
	is.Equal(ids, []int64{recs[1].ID, recs[0].ID, recs[5].ID}) // b (priority 5), then a (reaped) and r by id; not c (paused), nb (later), w (after a)
	cancels, err := s.Renew(ctx, o2, now)
	is.NoErr(err)
	is.Equal(cancels, []int64{recs[0].ID}) // a's cancel survived the upgrade and the reap
}
