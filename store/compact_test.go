package store_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/matryer/is"
	"go.etcd.io/bbolt"

	"spool/rpc"
	"spool/store"
)

// dump lists every bucket, key, value and bucket sequence of the database at path.
func dump(t *testing.T, path string) string {
	t.Helper()
	db, err := bbolt.Open(path, 0o600, &bbolt.Options{ReadOnly: true, Timeout: time.Second})
	if err != nil {
		t.Fatalf("open %s: %v", path, err)
	}
	defer db.Close()
	var out strings.Builder
	var walk func(prefix string, b *bbolt.Bucket) error
	walk = func(prefix string, b *bbolt.Bucket) error {
		fmt.Fprintf(&out, "%s seq=%d\n", prefix, b.Sequence())
		return b.ForEach(func(k, v []byte) error {
			if v == nil {
				return walk(prefix+"/"+string(k), b.Bucket(k))
			}
			fmt.Fprintf(&out, "%s %q=%q\n", prefix, k, v)
			return nil
		})
	}
	err = db.View(func(tx *bbolt.Tx) error {
		return tx.ForEach(func(name []byte, b *bbolt.Bucket) error { return walk(string(name), b) })
	})
	if err != nil {
		t.Fatalf("dump %s: %v", path, err)
	}
	return out.String()
}

func fileSize(t *testing.T, path string) int64 {
	t.Helper()
	fi, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	return fi.Size()
}

func TestCompact(t *testing.T) {
	is := is.New(t)
	ctx := context.Background()
	dir := t.TempDir()
	path := filepath.Join(dir, "spool.db")
	now := time.Date(2026, 3, 1, 0, 0, 0, 0, time.UTC)

	s, err := store.Open(path, store.Options{NoSync: true})
	is.NoErr(err) // opens
	id := s.StoreID()
	// Many big jobs, most of them removed again: the file keeps their pages free.
	var keep []int64
	for round := 0; round < 10; round++ {
		var news []rpc.NewJob
		for i := 0; i < 100; i++ {
			nj := finalJob(fmt.Sprintf("r%d-%d-%s", round, i, strings.Repeat("x", 150)), now)
			nj.Record.Spec.Env = map[string]string{"BIG": strings.Repeat("y", 2000)}
			news = append(news, nj)
		}
		recs, _, err := s.Submit(ctx, news)
		is.NoErr(err) // stored
		keep = append(keep, recs[0].ID)
	}
	queued, _, err := s.Submit(ctx, []rpc.NewJob{job("still-queued", now)})
	is.NoErr(err) // an unfinished job too
	var drop []int64
	list, err := s.List(ctx, rpc.ListParams{Limit: 1000, State: []rpc.State{rpc.StateSucceeded}})
	is.NoErr(err)
	for len(list.Jobs) > 0 {
		for _, j := range list.Jobs {
			if !slicesContains(keep, j.ID) {
				drop = append(drop, j.ID)
			}
		}
		if list.NextCursor == nil {
			break
		}
		list, err = s.List(ctx, rpc.ListParams{Limit: 1000, State: []rpc.State{rpc.StateSucceeded}, Cursor: list.NextCursor})
		is.NoErr(err)
	}
	removed, _, err := s.Remove(ctx, drop, now)
	is.NoErr(err)                     // removed
	is.Equal(len(removed), len(drop)) // all of them
	_, lastSeq, err := s.Bounds(ctx)
	is.NoErr(err)
	is.NoErr(s.Close())

	before := dump(t, path)
	sizeBefore := fileSize(t, path)
	is.NoErr(store.Compact(path, store.Options{})) // compacts
	is.Equal(dump(t, path), before)                // every bucket, key, value and sequence is kept
	is.True(fileSize(t, path) < sizeBefore/2)      // and the free pages are gone
	fi, err := os.Stat(path)
	is.NoErr(err)
	is.Equal(fi.Mode().Perm(), os.FileMode(0o600)) // the new file is 0600
	entries, err := os.ReadDir(dir)
	is.NoErr(err)
	is.Equal(len(entries), 1) // no temp file is left behind
	t.Logf("compacted %d bytes to %d", sizeBefore, fileSize(t, path))

	// The compacted database works: same store id, counts, and the next seq and id follow.
	s = open(t, path, store.Options{NoSync: true})
	is.Equal(s.StoreID(), id) // same store id
	is.NoErr(s.Check(ctx))    // consistent
	rec, err := s.Get(ctx, queued[0].ID)
	is.NoErr(err)
	is.Equal(rec.State, rpc.StateQueued) // the unfinished job is there
	recs, evs, err := s.Submit(ctx, []rpc.NewJob{job("after", now)})
	is.NoErr(err)
	is.True(recs[0].ID > queued[0].ID) // ids are never reused
	is.Equal(evs[0].Seq, lastSeq+1)    // seq goes on from the last
	o, err := s.Join(ctx, "after compaction", now)
	is.NoErr(err)
	got, _, err := s.Claim(ctx, o, 5, now)
	is.NoErr(err)
	is.Equal(len(got), 2)             // both queued jobs are claimable: the ready bucket of their queue was copied
	is.Equal(got[0].ID, queued[0].ID) // the older job first
	is.Equal(got[1].ID, recs[0].ID)   // then the new one
}

func slicesContains(s []int64, v int64) bool {
	for _, x := range s {
		if x == v {
			return true
		}
	}
	return false
}

// TestCompactRefusesLocked: a database held by a daemon is not compacted.
func TestCompactRefusesLocked(t *testing.T) {
	is := is.New(t)
	path := filepath.Join(t.TempDir(), "spool.db")
	s := open(t, path, store.Options{NoSync: true})
	_ = s
	before, err := os.ReadFile(path)
	is.NoErr(err)
	err = store.Compact(path, store.Options{Timeout: 100 * time.Millisecond})
	is.True(errors.Is(err, store.ErrLocked)) // refused while held
	after, err := os.ReadFile(path)
	is.NoErr(err)
	is.True(bytes.Equal(before, after)) // and the file is untouched
}

// TestCompactRefusesForeign: files that are not spool's, of a newer schema, or
// not a database at all are left as they are.
func TestCompactRefusesForeign(t *testing.T) {
	is := is.New(t)
	dir := t.TempDir()

	newer := filepath.Join(dir, "newer.db")
	s, err := store.Open(newer, store.Options{NoSync: true})
	is.NoErr(err)
	is.NoErr(s.Close())
	db, err := bbolt.Open(newer, 0o600, nil)
	is.NoErr(err)
	is.NoErr(db.Update(func(tx *bbolt.Tx) error { return tx.Bucket([]byte("meta")).Put([]byte("version"), []byte("99")) }))
	is.NoErr(db.Close())

	other := filepath.Join(dir, "other.db")
	db, err = bbolt.Open(other, 0o600, nil)
	is.NoErr(err)
	is.NoErr(db.Update(func(tx *bbolt.Tx) error { _, err := tx.CreateBucket([]byte("theirs")); return err }))
	is.NoErr(db.Close())

	garbage := filepath.Join(dir, "garbage.db")
	is.NoErr(os.WriteFile(garbage, bytes.Repeat([]byte("not a database "), 2000), 0o600))

	for _, c := range []struct{ path, want string }{
		{newer, "newer"}, {other, "not a spool database"}, {garbage, "invalid"},
	} {
		before, err := os.ReadFile(c.path)
		is.NoErr(err)
		err = store.Compact(c.path, store.Options{})
		is.True(err != nil)                            // refused
		is.True(strings.Contains(err.Error(), c.want)) // saying why
		after, err := os.ReadFile(c.path)
		is.NoErr(err)
		is.True(bytes.Equal(before, after)) // the file is untouched
	}
	entries, err := os.ReadDir(dir)
	is.NoErr(err)
	is.Equal(len(entries), 3)                                                        // no temp file is left behind
	is.True(store.Compact(filepath.Join(dir, "missing.db"), store.Options{}) != nil) // a missing file is an error, not a new database
}
