package store_test

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/matryer/is"
	"go.etcd.io/bbolt"
	"go.uber.org/goleak"

	"spool/daemon"
	"spool/rpc"
	"spool/store"
	"spool/store/storetest"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

// open opens a store at path, and checks and closes it when the test ends.
func open(t *testing.T, path string, opts store.Options) *store.Store {
	t.Helper()
	is := is.New(t)
	is.Helper()
	s, err := store.Open(path, opts)
	is.NoErr(err) // the store opens
	t.Cleanup(func() {
		if err := s.Check(context.Background()); err != nil && rpc.CodeOf(err) != rpc.CodeShuttingDown {
			t.Errorf("check store: %v", err)
		}
		if err := s.Close(); err != nil {
			t.Errorf("close store: %v", err)
		}
	})
	return s
}

func TestConformance(t *testing.T) {
	var mu sync.Mutex
	paths := map[daemon.Store]string{}
	storetest.RunWith(t, storetest.Harness{
		Open: func(t *testing.T) daemon.Store {
			path := filepath.Join(t.TempDir(), "spool.db")
			s := open(t, path, store.Options{})
			mu.Lock()
			paths[s] = path
			mu.Unlock()
			return s
		},
		// A new boot: the file closed and opened again, the leases of the
		// last one gone with it.
		Reopen: func(t *testing.T, old daemon.Store) daemon.Store {
			mu.Lock()
			path := paths[old]
			mu.Unlock()
			if err := old.(*store.Store).Close(); err != nil {
				t.Fatalf("close store: %v", err)
			}
			s := open(t, path, store.Options{})
			mu.Lock()
			paths[s] = path
			mu.Unlock()
			return s
		},
	})
}

// job is a new job for spec name, submitted at t.
func job(name string, at time.Time) rpc.NewJob {
	return storetest.NewJob("job", storetest.Spec(name), at)
}

// finalJob is a new job already succeeded at at, for filling a store quickly.
func finalJob(name string, at time.Time) rpc.NewJob {
	nj := job(name, at)
	nj.Record.State = rpc.StateSucceeded
	nj.Record.FinishedAt = &at
	return nj
}

func TestReopenPersists(t *testing.T) {
	is := is.New(t)
	ctx := context.Background()
	path := filepath.Join(t.TempDir(), "spool.db")
	now := time.Date(2026, 3, 1, 0, 0, 0, 0, time.UTC)

	s, err := store.Open(path, store.Options{})
	is.NoErr(err) // opens
	id := s.StoreID()
	recs, _, err := s.Submit(ctx, []rpc.NewJob{job("a", now), job("b", now)})
	is.NoErr(err) // stored
	run := recs[0]
	run.Spec = nil
	run.State = rpc.StateRunning
	_, err = s.Apply(ctx, []rpc.Transition{{Record: run, From: rpc.StateQueued, Events: []rpc.Event{{Type: rpc.EventStarted, Time: now}}}})
	is.NoErr(err)                                                                         // stored
	is.NoErr(s.PutTemplate(ctx, rpc.Template{Name: "t", CreatedAt: now, UpdatedAt: now})) // stored
	is.NoErr(s.PutQueue(ctx, rpc.Queue{Name: "q", Paused: true}))                         // stored
	_, err = s.TrimEvents(ctx, now)
	is.NoErr(err)       // nothing is older than now: nothing trimmed
	is.NoErr(s.Close()) // closes
	is.NoErr(s.Close()) // a second close is harmless
	_, err = s.Get(ctx, recs[0].ID)
	is.Equal(rpc.CodeOf(err), rpc.CodeShuttingDown) // a closed store says so

	s = open(t, path, store.Options{})
	is.Equal(s.StoreID(), id) // the store id is kept
	got, err := s.Get(ctx, recs[0].ID)
	is.NoErr(err)                         // the job is kept
	is.Equal(got.State, rpc.StateRunning) // in its last state
	is.Equal(got.Spec.Name, "a")          // with its spec
	oldest, last, err := s.Bounds(ctx)
	is.NoErr(err)              // readable
	is.Equal(oldest, int64(1)) // the events are kept
	is.Equal(last, int64(3))   // all three
	c, err := s.Counts(ctx)
	is.NoErr(err)                    // readable
	is.Equal(c[rpc.StateRunning], 1) // the counts are kept
	is.Equal(c[rpc.StateQueued], 1)  // the counts are kept
	_, err = s.Template(ctx, "t")
	is.NoErr(err) // templates are kept
	qs, err := s.Queues(ctx)
	is.NoErr(err)                   // readable
	is.Equal(len(qs), 2)            // queues are kept, and the one that has jobs is listed
	is.Equal(qs[0].Name, "default") // in name order
	is.Equal(qs[0].Queued, 1)       // with its counts kept
	is.Equal(qs[0].Running, 1)      // with its counts kept
	is.Equal(qs[1].Name, "q")       // in name order
	is.True(qs[1].Paused)           // with their settings
	un, err := s.Unfinished(ctx)
	is.NoErr(err)        // readable
	is.Equal(len(un), 2) // the unfinished index is kept
	more, evs, err := s.Submit(ctx, []rpc.NewJob{job("c", now)})
	is.NoErr(err)                      // stored
	is.Equal(more[0].ID, recs[1].ID+1) // ids go on
	is.Equal(evs[0].Seq, int64(4))     // seqs go on
}

// TestOpenReservesRoom: a database file is given 16 MiB at open, as a hole, so a
// young database does not remap and grow its file at each doubling; a smaller
// file (made by an older version, or compacted) is grown at its next open with
// its data intact.
func TestOpenReservesRoom(t *testing.T) {
	is := is.New(t)
	ctx := context.Background()
	path := filepath.Join(t.TempDir(), "spool.db")
	now := time.Date(2026, 3, 1, 0, 0, 0, 0, time.UTC)
	const reserved = 16 << 20

	s, err := store.Open(path, store.Options{})
	is.NoErr(err) // a new database opens
	fi, err := os.Stat(path)
	is.NoErr(err)
	is.Equal(fi.Size(), int64(reserved)) // with room reserved
	if st, ok := fi.Sys().(*syscall.Stat_t); ok {
		is.True(st.Blocks*512 < reserved/4) // as a hole, not written space
	}
	recs, _, err := s.Submit(ctx, []rpc.NewJob{job("a", now)})
	is.NoErr(err) // stored in the reserved room
	is.NoErr(s.Close())

	is.NoErr(store.Compact(path, store.Options{NoSync: true})) // compaction makes a small file
	fi, err = os.Stat(path)
	is.NoErr(err)
	is.True(fi.Size() < reserved) // without the reserve

	s = open(t, path, store.Options{})
	fi, err = os.Stat(path)
	is.NoErr(err)
	is.Equal(fi.Size(), int64(reserved)) // grown at open
	got, err := s.Get(ctx, recs[0].ID)
	is.NoErr(err)                // the job is kept
	is.Equal(got.Spec.Name, "a") // whole
	is.NoErr(s.Check(ctx))       // and the database is consistent
	more, _, err := s.Submit(ctx, []rpc.NewJob{job("b", now)})
	is.NoErr(err)                      // writes go on
	is.Equal(more[0].ID, recs[0].ID+1) // after the kept job
}

func TestSecondOpenIsLocked(t *testing.T) {
	is := is.New(t)
	path := filepath.Join(t.TempDir(), "spool.db")
	open(t, path, store.Options{})
	_, err := store.Open(path, store.Options{Timeout: 50 * time.Millisecond})
	is.True(errors.Is(err, store.ErrLocked))         // a held database fails with ErrLocked
	is.True(strings.Contains(err.Error(), path))     // naming the file
	is.True(strings.Contains(err.Error(), "locked")) // and saying why
}

func TestFileModes(t *testing.T) {
	for _, umask := range []int{0, 0o022, 0o077} {
		t.Run(fmt.Sprintf("umask %03o", umask), func(t *testing.T) {
			is := is.New(t)
			old := syscall.Umask(umask)
			defer syscall.Umask(old)
			dir := filepath.Join(t.TempDir(), "state", "spool")
			path := filepath.Join(dir, "spool.db")
			open(t, path, store.Options{})
			fi, err := os.Stat(path)
			is.NoErr(err)                                  // the file exists
			is.Equal(fi.Mode().Perm(), os.FileMode(0o600)) // the file is 0600
			di, err := os.Stat(dir)
			is.NoErr(err)                                  // the folder exists
			is.Equal(di.Mode().Perm(), os.FileMode(0o700)) // the folder is 0700
		})
	}
}

func TestGroupCommit(t *testing.T) {
	is := is.New(t)
	ctx := context.Background()
	s := open(t, filepath.Join(t.TempDir(), "spool.db"), store.Options{})
	const workers, each = 32, 10
	now := time.Now()
	before := s.Commits()
	var mu sync.Mutex
	var ids, seqs []int64
	var errs []error
	var wg sync.WaitGroup
	for w := range workers {
		wg.Go(func() {
			for i := range each {
				recs, evs, err := s.Submit(ctx, []rpc.NewJob{job(fmt.Sprintf("%d/%d", w, i), now)})
				mu.Lock()
				if err != nil {
					errs = append(errs, err)
				} else {
					ids = append(ids, recs[0].ID)
					seqs = append(seqs, evs[0].Seq)
				}
				mu.Unlock()
			}
		})
	}
	wg.Wait()
	is.Equal(len(errs), 0) // every submit is stored
	seen := make(map[int64]bool)
	for _, id := range ids {
		is.True(!seen[id]) // ids are distinct
		seen[id] = true
	}
	seenSeq := make(map[int64]bool)
	for _, seq := range seqs {
		seenSeq[seq] = true
	}
	for seq := int64(1); seq <= workers*each; seq++ {
		is.True(seenSeq[seq]) // seqs are 1..n without a gap
	}
	commits := s.Commits() - before
	t.Logf("%d submits in %d commits", workers*each, commits)
	is.True(commits < workers*each) // concurrent submits share commits
	is.True(commits > 0)            // and commits happened
}

func TestNewerSchemaRefused(t *testing.T) {
	is := is.New(t)
	path := filepath.Join(t.TempDir(), "spool.db")
	s, err := store.Open(path, store.Options{})
	is.NoErr(err)       // opens
	is.NoErr(s.Close()) // closes
	db, err := bbolt.Open(path, 0o600, nil)
	is.NoErr(err) // bbolt opens it
	is.NoErr(db.Update(func(tx *bbolt.Tx) error {
		return tx.Bucket([]byte("meta")).Put([]byte("version"), []byte("5"))
	})) // a later version wrote it
	is.NoErr(db.Close()) // closed
	before, err := os.ReadFile(path)
	is.NoErr(err) // readable

	_, err = store.Open(path, store.Options{})
	is.True(err != nil)                                 // a newer schema is refused
	is.True(strings.Contains(err.Error(), "version 5")) // saying which version
	is.True(strings.Contains(err.Error(), "newer"))     // and why
	after, err := os.ReadFile(path)
	is.NoErr(err)                           // readable
	is.Equal(string(after), string(before)) // the file was not modified
}

func TestForeignDatabaseRefused(t *testing.T) {
	is := is.New(t)
	path := filepath.Join(t.TempDir(), "other.db")
	db, err := bbolt.Open(path, 0o600, nil)
	is.NoErr(err) // bbolt opens it
	is.NoErr(db.Update(func(tx *bbolt.Tx) error {
		_, err := tx.CreateBucket([]byte("widgets"))
		return err
	})) // someone else's data
	is.NoErr(db.Close()) // closed
	_, err = store.Open(path, store.Options{})
	is.True(err != nil)                                            // a database without meta but with buckets is refused
	is.True(strings.Contains(err.Error(), "not a spool database")) // saying why
}

func TestPruneMany(t *testing.T) {
	is := is.New(t)
	ctx := context.Background()
	s := open(t, filepath.Join(t.TempDir(), "spool.db"), store.Options{NoSync: true})
	now := time.Date(2026, 3, 1, 0, 0, 0, 0, time.UTC)
	const n = 2500 // more than one chunk
	var batch []rpc.NewJob
	for i := range n {
		batch = append(batch, finalJob(fmt.Sprint(i), now.Add(-time.Hour)))
	}
	recs, _, err := s.Submit(ctx, batch)
	is.NoErr(err) // stored
	// One old job is needed by an unfinished one.
	needy := storetest.Spec("needy")
	needy.After = []int64{recs[1234].ID}
	_, _, err = s.Submit(ctx, []rpc.NewJob{storetest.NewJob("job", needy, now)})
	is.NoErr(err) // stored
	_, last, err := s.Bounds(ctx)
	is.NoErr(err) // readable

	ids, evs, err := s.Prune(ctx, nil, now, now)
	is.NoErr(err)           // pruned
	is.Equal(len(ids), n-1) // every old job but the needed one
	is.Equal(len(evs), n-1) // each with its event
	for i, ev := range evs {
		is.Equal(ev.Seq, last+1+int64(i)) // without a gap
		is.Equal(ev.Job, ids[i])          // for the job removed
	}
	c, err := s.Counts(ctx)
	is.NoErr(err)                      // readable
	is.Equal(c[rpc.StateSucceeded], 1) // the needed one is left
	is.NoErr(s.Check(ctx))             // the indexes follow
}

func TestTrimMany(t *testing.T) {
	is := is.New(t)
	ctx := context.Background()
	s := open(t, filepath.Join(t.TempDir(), "spool.db"), store.Options{NoSync: true})
	now := time.Date(2026, 3, 1, 0, 0, 0, 0, time.UTC)
	recs, _, err := s.Submit(ctx, []rpc.NewJob{job("a", now)})
	is.NoErr(err) // stored
	// One transition with many events fills the log quickly.
	const n = 12000 // more than one chunk of trimming
	tr := rpc.Transition{Record: recs[0], From: rpc.StateQueued}
	for i := range n {
		tr.Events = append(tr.Events, rpc.Event{Type: rpc.EventStepRetrying, Time: now.Add(time.Duration(i+1) * time.Second)})
	}
	_, err = s.Apply(ctx, []rpc.Transition{tr})
	is.NoErr(err) // stored
	trimmed, err := s.TrimEvents(ctx, now.Add(11000*time.Second))
	is.NoErr(err)            // trimmed
	is.Equal(trimmed, 11000) // the submitted event and every event before the cut
	oldest, last, err := s.Bounds(ctx)
	is.NoErr(err)                  // readable
	is.Equal(oldest, int64(11001)) // the first kept
	is.Equal(last, int64(n+1))     // the last
	is.NoErr(s.Check(ctx))         // the log has no gap
}

func TestCancelledContext(t *testing.T) {
	is := is.New(t)
	s := open(t, filepath.Join(t.TempDir(), "spool.db"), store.Options{})
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	_, _, err := s.Submit(ctx, []rpc.NewJob{job("a", time.Now())})
	is.True(errors.Is(err, context.Canceled)) // a cancelled call is not applied
	c, err := s.Counts(context.Background())
	is.NoErr(err)                   // readable
	is.Equal(c[rpc.StateQueued], 0) // nothing stored
	_, err = s.Get(ctx, 1)
	is.True(errors.Is(err, context.Canceled)) // reads honour the context too
}
