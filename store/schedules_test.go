package store_test

import (
	"context"
	"path/filepath"
	"testing"
	"time"

	"github.com/matryer/is"
	"go.etcd.io/bbolt"

	"spool/rpc"
	"spool/store"
	"spool/store/storetest"
)

// TestSchema3Upgrade: a database of schema version 3 (no schedules) opens as
// version 4 with an empty schedules bucket, its jobs as they were.
func TestSchema3Upgrade(t *testing.T) {
	is := is.New(t)
	ctx := context.Background()
	path := filepath.Join(t.TempDir(), "spool.db")
	now := time.Date(2026, 3, 1, 0, 0, 0, 0, time.UTC)
	s, err := store.Open(path, store.Options{NoSync: true})
	is.NoErr(err) // opens
	recs, _, err := s.Submit(ctx, []rpc.NewJob{storetest.NewJob("job", storetest.Spec("a"), now)})
	is.NoErr(err) // stored
	is.NoErr(s.Close())
	db, err := bbolt.Open(path, 0o600, nil)
	is.NoErr(err) // bbolt opens it
	is.NoErr(db.Update(func(tx *bbolt.Tx) error {
		if err := tx.DeleteBucket([]byte("schedules")); err != nil {
			return err
		}
		return tx.Bucket([]byte("meta")).Put([]byte("version"), []byte("3"))
	})) // rewritten as version 3
	is.NoErr(db.Close())

	s = open(t, path, store.Options{NoSync: true})
	is.NoErr(s.Close())
	is.Equal(schemaVersion(t, path), "4") // upgraded
	s = open(t, path, store.Options{NoSync: true})
	is.NoErr(s.Check(ctx)) // consistent
	got, err := s.Get(ctx, recs[0].ID)
	is.NoErr(err)                        // the job is there
	is.Equal(got.State, rpc.StateQueued) // as it was
	scs, err := s.Schedules(ctx)
	is.NoErr(err)         // the bucket exists
	is.Equal(len(scs), 0) // empty
	_, err = s.PutSchedule(ctx, rpc.Schedule{Name: "n", Cron: "@daily", Template: "t", UpdatedAt: now})
	is.NoErr(err) // and takes schedules
}
