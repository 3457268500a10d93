package store_test

import (
	"context"
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
		for _, name := range []string{"envs", "env_refs", "ready", "timers", "queue_counts", "cancels"} {
			if err := tx.DeleteBucket([]byte(name)); err != nil {
				return err
			}
		}
		if err := tx.Bucket([]byte("meta")).Delete([]byte("epoch")); err != nil {
			return err
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
	is.Equal(schemaVersion(t, path), "3") // upgraded
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
