//go:build linux

package store

import (
	"bufio"
	"context"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/matryer/is"
	"go.etcd.io/bbolt"

	"spool/rpc"
	"spool/store/storetest"
)

// fileRSS reads RssFile of this process, in bytes.
func fileRSS(t *testing.T) int64 {
	t.Helper()
	f, err := os.Open("/proc/self/status")
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if v, ok := strings.CutPrefix(sc.Text(), "RssFile:"); ok {
			kb, err := strconv.ParseInt(strings.TrimSuffix(strings.TrimSpace(v), " kB"), 10, 64)
			if err != nil {
				t.Fatal(err)
			}
			return kb << 10
		}
	}
	t.Fatal("no RssFile in /proc/self/status")
	return 0
}

// fillFinal stores n succeeded jobs named job-<i>, each with a spec padded with
// pad bytes, in batches.
func fillFinal(t testing.TB, s *Store, n, pad int) {
	t.Helper()
	at := time.Date(2026, 3, 1, 0, 0, 0, 0, time.UTC)
	padding := strings.Repeat("p", pad)
	for start := 0; start < n; start += 1000 {
		var batch []rpc.NewJob
		for i := start; i < min(start+1000, n); i++ {
			sp := storetest.Spec(fmt.Sprintf("job-%d", i))
			sp.Env = map[string]string{"PAD": padding}
			nj := storetest.NewJob("job", sp, at)
			nj.Record.State = rpc.StateSucceeded
			nj.Record.FinishedAt = &at
			batch = append(batch, nj)
		}
		if _, _, err := s.Submit(context.Background(), batch); err != nil {
			t.Fatal(err)
		}
	}
}

// readMapped reads every job 1..n through bbolt's map (as List does), checking
// each one's name.
func readMapped(t *testing.T, s *Store, n int) {
	t.Helper()
	err := s.view(context.Background(), func(b *txb) error {
		for id := int64(1); id <= int64(n); id++ {
			rec, err := b.getFull(id)
			if err != nil {
				return err
			}
			if rec == nil || rec.Spec == nil || rec.Name != fmt.Sprintf("job-%d", id-1) {
				return fmt.Errorf("job %d read back as %+v", id, rec)
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
}

// readPaged reads every step-th job of 1..n with Get (from the file's pages),
// checking each one's name.
func readPaged(t *testing.T, s *Store, n, step int) {
	t.Helper()
	for id := int64(1); id <= int64(n); id += int64(step) {
		rec, err := s.Get(context.Background(), id)
		if err != nil {
			t.Fatal(err)
		}
		if rec.Spec == nil || rec.Name != fmt.Sprintf("job-%d", id-1) || rec.Spec.Name != rec.Name {
			t.Fatalf("job %d read back as %+v", id, rec)
		}
	}
}

// touchAll reads every key and value of every bucket through bbolt's map, as a
// scan does, without decoding them.
func touchAll(t *testing.T, s *Store) {
	t.Helper()
	err := s.db.View(func(tx *bbolt.Tx) error {
		return tx.ForEach(func(_ []byte, bk *bbolt.Bucket) error {
			sum := 0
			c := bk.Cursor()
			for k, v := c.First(); k != nil; k, v = c.Next() {
				if len(v) > 0 {
					sum += int(v[0]) + int(v[len(v)-1])
				}
			}
			_ = sum
			return nil
		})
	})
	if err != nil {
		t.Fatal(err)
	}
}

func TestDropMappedPages(t *testing.T) {
	is := is.New(t)
	// A negative budget: no releaser; the test drops the pages itself.
	s, err := Open(filepath.Join(t.TempDir(), "spool.db"), Options{NoSync: true, MapBudget: -1})
	is.NoErr(err) // opens
	defer s.Close()
	is.True(s.rel == nil) // no releaser with a negative budget
	const n = 5000        // some 20 MiB of records and specs
	fillFinal(t, s, n, 3000)

	base := fileRSS(t)
	touchAll(t, s)
	grown := fileRSS(t)
	t.Logf("RssFile: %d KiB before reading, %d KiB after", base>>10, grown>>10)
	is.True(grown-base > 8<<20) // reading every page mapped the file

	is.NoErr(dropMapped(s.db, nil)) // dropped
	dropped := fileRSS(t)
	t.Logf("RssFile after the drop: %d KiB", dropped>>10)
	is.True(grown-dropped > (grown-base)/2) // most of what the reads mapped is given back

	// The data is where it was: every job reads back, through the map and
	// from the file's pages.
	readMapped(t, s, n)
	readPaged(t, s, n, 1)

	// Get reads the file's pages: it maps nothing.
	is.NoErr(dropMapped(s.db, nil))
	before := fileRSS(t)
	readPaged(t, s, n, 5)
	after := fileRSS(t)
	t.Logf("RssFile around %d Gets: %d KiB, then %d KiB", n/5, before>>10, after>>10)
	is.True(after-before < (grown-base)/4)  // Get does not map the file's pages
	is.NoErr(s.Check(context.Background())) // the database is intact
}

func TestReleaseDuringTraffic(t *testing.T) {
	is := is.New(t)
	ctx := context.Background()
	// A tiny budget: the releaser drops the pages at nearly every poll.
	s, err := Open(filepath.Join(t.TempDir(), "spool.db"), Options{NoSync: true, MapBudget: 1})
	is.NoErr(err) // opens
	defer s.Close()
	is.True(s.rel != nil) // Linux has a releaser
	const n = 1500
	fillFinal(t, s, n, 3000)

	stop := make(chan struct{})
	var wg sync.WaitGroup
	var failed atomic.Pointer[error]
	fail := func(err error) {
		failed.CompareAndSwap(nil, &err)
	}
	// Writers: new jobs, each moved to running and back to queued.
	var written atomic.Int64
	for w := range 2 {
		wg.Go(func() {
			for i := 0; ; i++ {
				select {
				case <-stop:
					return
				default:
				}
				recs, _, err := s.Submit(ctx, []rpc.NewJob{storetest.NewJob("job", storetest.Spec(fmt.Sprintf("w%d-%d", w, i)), time.Now())})
				if err != nil {
					fail(err)
					return
				}
				run := recs[0]
				run.State = rpc.StateRunning
				if _, err := s.Apply(ctx, []rpc.Transition{{Record: run, From: rpc.StateQueued}}); err != nil {
					fail(err)
					return
				}
				written.Add(1)
			}
		})
	}
	// Readers: through the map (List of every state, oldest first) and from
	// the file's pages (Get).
	for r := range 2 {
		wg.Go(func() {
			for i := 0; ; i++ {
				select {
				case <-stop:
					return
				default:
				}
				if r == 0 {
					p := rpc.ListParams{Order: "asc", Limit: 500}
					if from := i * 500 % n; from > 0 {
						p.Cursor = ptr(strconv.Itoa(from))
					}
					res, err := s.List(ctx, p)
					if err != nil {
						fail(err)
						return
					}
					for _, j := range res.Jobs {
						if j.ID <= n && j.Name != fmt.Sprintf("job-%d", j.ID-1) {
							fail(fmt.Errorf("job %d listed as %q", j.ID, j.Name))
							return
						}
					}
					continue
				}
				id := int64(i*7919%n + 1)
				rec, err := s.Get(ctx, id)
				if err != nil {
					fail(err)
					return
				}
				if rec.Name != fmt.Sprintf("job-%d", id-1) {
					fail(fmt.Errorf("job %d read as %q", id, rec.Name))
					return
				}
			}
		})
	}
	// The test drops the pages too, as often as it can.
	for range 50 {
		if err := dropMapped(s.db, nil); err != nil {
			fail(err)
			break
		}
	}
	waitFor(t, "the releaser to drop pages during the traffic", func() bool { return s.rel.drops.Load() >= 3 || failed.Load() != nil })
	waitFor(t, "some writes", func() bool { return written.Load() >= 20 || failed.Load() != nil })
	close(stop)
	wg.Wait()
	if p := failed.Load(); p != nil {
		t.Fatal(*p)
	}
	is.True(s.rel.err.Load() == nil) // the releaser never failed

	readMapped(t, s, n)
	readPaged(t, s, n, 1)
	c, err := s.Counts(ctx)
	is.NoErr(err)                                      // readable
	is.Equal(c[rpc.StateRunning], int(written.Load())) // every write is there
	is.NoErr(s.Check(ctx))                             // the database is intact
}

func ptr[T any](v T) *T { return &v }

// A drop on a closed database fails instead of touching a map that is gone.
func TestDropAfterClose(t *testing.T) {
	is := is.New(t)
	path := filepath.Join(t.TempDir(), "spool.db")
	db, err := bbolt.Open(path, 0o600, &bbolt.Options{NoSync: true})
	is.NoErr(err) // opens
	is.NoErr(db.Close())
	is.True(dropMapped(db, nil) != nil) // refused on a closed database
}

// BenchmarkGetRandom reads random jobs of a database several times bigger than
// the map's budget, from the file's pages (Get) and through bbolt's map (as Get
// did before), with the releaser keeping the mapped pages within its default
// budget. faults/op are the process's page faults per read.
func BenchmarkGetRandom(b *testing.B) {
	const n = 150000 // some 200 MiB
	s, err := Open(filepath.Join(b.TempDir(), "spool.db"), Options{NoSync: true})
	if err != nil {
		b.Fatal(err)
	}
	defer s.Close()
	fillFinal(b, s, n, 0)
	ctx := context.Background()
	run := func(b *testing.B, get func(id int64) (*rpc.Record, error)) {
		if err := dropMapped(s.db, nil); err != nil {
			b.Fatal(err)
		}
		var ru0, ru1 syscall.Rusage
		syscall.Getrusage(syscall.RUSAGE_SELF, &ru0)
		rng := rand.New(rand.NewPCG(1, 2))
		for b.Loop() {
			id := rng.Int64N(n) + 1
			rec, err := get(id)
			if err != nil || rec == nil {
				b.Fatalf("job %d: %v", id, err)
			}
		}
		syscall.Getrusage(syscall.RUSAGE_SELF, &ru1)
		b.ReportMetric(float64(ru1.Minflt-ru0.Minflt+ru1.Majflt-ru0.Majflt)/float64(b.N), "faults/op")
	}
	b.Run("pages", func(b *testing.B) {
		run(b, func(id int64) (*rpc.Record, error) { return s.Get(ctx, id) })
	})
	b.Run("map", func(b *testing.B) {
		run(b, func(id int64) (*rpc.Record, error) {
			var rec *rpc.Record
			err := s.view(ctx, func(b *txb) error {
				var err error
				rec, err = b.getFull(id)
				return err
			})
			return rec, err
		})
	})
}
