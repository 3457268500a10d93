package store

import (
	"context"
	"encoding/json"
	"fmt"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/matryer/is"
	"go.etcd.io/bbolt"

	"spool/rpc"
	"spool/store/storetest"
)

// finalEnvJob is a new final job named name with env, finished at at.
func finalEnvJob(name string, env map[string]string, at time.Time) rpc.NewJob {
	sp := storetest.Spec(name)
	sp.Env = env
	nj := storetest.NewJob("job", sp, at)
	nj.Record.State = rpc.StateSucceeded
	nj.Record.FinishedAt = &at
	return nj
}

// TestEnvStoredOnce: many jobs from one shell store its environment once, so
// the database grows by far less than the environment per job.
func TestEnvStoredOnce(t *testing.T) {
	is := is.New(t)
	ctx := context.Background()
	now := time.Date(2026, 3, 1, 0, 0, 0, 0, time.UTC)
	env := map[string]string{}
	for i := range 100 {
		env[fmt.Sprintf("VAR_%03d", i)] = fmt.Sprintf("value %d of the shell", i)
	}
	envBytes, err := json.Marshal(env)
	is.NoErr(err) // encodes

	s, err := Open(filepath.Join(t.TempDir(), "spool.db"), Options{NoSync: true})
	is.NoErr(err) // opens
	defer s.Close()
	const n = 2000
	batch := make([]rpc.NewJob, n)
	for i := range batch {
		batch[i] = finalEnvJob(fmt.Sprintf("j%d", i), env, now)
	}
	_, _, err = s.Submit(ctx, batch)
	is.NoErr(err) // stored
	refs, err := s.EnvRefs(ctx)
	is.NoErr(err)              // readable
	is.Equal(refs, []int64{n}) // one environment, n references

	var specBytes int
	is.NoErr(s.db.View(func(tx *bbolt.Tx) error {
		return tx.Bucket([]byte("specs")).ForEach(func(_, v []byte) error {
			specBytes += len(v)
			return nil
		})
	})) // the specs are readable
	t.Logf("environment %d bytes; specs %d bytes for %d jobs", len(envBytes), specBytes, n)
	is.True(specBytes < n*len(envBytes)/4) // the specs hold a reference, not the environment
	is.True(!slices.Contains(refs, 0))     // and no count is zero
}

// TestEnvCheckFindsBadCounts: Check reports a count that does not match the
// specs, and an environment that no spec refers to.
func TestEnvCheckFindsBadCounts(t *testing.T) {
	is := is.New(t)
	ctx := context.Background()
	now := time.Date(2026, 3, 1, 0, 0, 0, 0, time.UTC)
	s, err := Open(filepath.Join(t.TempDir(), "spool.db"), Options{NoSync: true})
	is.NoErr(err) // opens
	defer s.Close()
	_, _, err = s.Submit(ctx, []rpc.NewJob{finalEnvJob("a", map[string]string{"A": "1"}, now)})
	is.NoErr(err)          // stored
	is.NoErr(s.Check(ctx)) // consistent
	is.NoErr(s.db.Update(func(tx *bbolt.Tx) error {
		refs := tx.Bucket([]byte(bEnvRefs))
		k, _ := refs.Cursor().First()
		if err := refs.Put(k, itob(7)); err != nil {
			return err
		}
		orphan := []byte(`{"B":"2"}`)
		if err := tx.Bucket([]byte(bEnvs)).Put([]byte("0123456789abcdef0123456789abcdef"), orphan); err != nil {
			return err
		}
		return nil
	})) // damaged on purpose
	err = s.Check(ctx)
	is.True(err != nil) // the damage is found
	t.Log(err)
	is.True(strings.Contains(err.Error(), "7 references counted, 1 specs refer to it")) // the wrong count
	is.True(strings.Contains(err.Error(), "no spec refers to it"))                      // the orphan
	is.True(strings.Contains(err.Error(), "SHA-256"))                                   // whose key is not its hash
}
