package main

import (
	"context"
	"encoding/binary"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"go.etcd.io/bbolt"
)

// floors are what the machine can do at best, measured in the same run: the
// baselines of the figures.
type floors struct {
	fdatasync    time.Duration // one fdatasync of a 4 KiB write, median
	forkExec     time.Duration // fork/exec of /bin/true from Go, median
	xargs        float64       // `xargs -P2` running `true`, jobs/s
	boltCommit   time.Duration // one bbolt Update with a small Put, median
	boltCommit99 time.Duration
	boltBatch    float64 // bbolt records/s with 1,000 Puts of 700 bytes per commit
	boltSmall    float64 // bbolt records/s with 1,000 Puts of 100 bytes per commit
	boltWriters  float64 // bbolt records/s from 64 writers through db.Batch, 64 per batch
}

// The reference figures, measured on another 2-core machine. The ratios
// of the throughput targets to them are what the harness holds spool to here.
const (
	refFdatasync   = 0.3 // ms
	refBoltCommit  = "0.6-0.8 ms"
	refForkExec    = 1.0    // ms
	refBoltSmall   = 270000 // records/s, 1,000 records per commit
	refBoltWriters = 57000  // records/s, 64 writers, batches of 64
	refHello       = 2.3    // ms, one Go hello-world process
	refTspTurn     = 2.2    // ms, 500 `tsp true` from a shell loop in 1.1 s

	targetBulk       = 50000 // jobs/s, against refBoltSmall
	targetConcurrent = 10000 // jobs/s, against refBoltWriters
)

// measureFloors measures every floor.
func measureFloors(ctx context.Context, b *bench) (*floors, []row, error) {
	f := &floors{}
	dir := filepath.Join(b.work, "floors")
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, nil, fmt.Errorf("floors: %w", err)
	}
	n := b.opts.size.floorN

	// fdatasync of one block, on the state folders' filesystem.
	fs, err := timeFdatasync(filepath.Join(dir, "sync"), n)
	if err != nil {
		return nil, nil, err
	}
	f.fdatasync = fs.pct(50)

	// fork/exec of /bin/true.
	var fe durations
	for range n {
		t := time.Now()
		if err := exec.CommandContext(ctx, "/bin/true").Run(); err != nil {
			return nil, nil, fmt.Errorf("floors: run /bin/true: %w", err)
		}
		fe = append(fe, time.Since(t))
	}
	f.forkExec = fe.pct(50)

	// xargs -P2 running `true` 1,000 times: the best of three.
	jobs := b.opts.size.e2eJobs
	script := fmt.Sprintf("seq %d | xargs -P2 -n1 true", jobs)
	var best time.Duration
	for range 3 {
		t := time.Now()
		if out, err := exec.CommandContext(ctx, "sh", "-c", script).CombinedOutput(); err != nil {
			return nil, nil, fmt.Errorf("floors: %s: %w: %s", script, err, out)
		}
		if d := time.Since(t); best == 0 || d < best {
			best = d
		}
	}
	f.xargs = perSec(jobs, best)

	// bbolt: one small commit; 1,000 records per commit, of a job's size and
	// small; 64 writers in batches.
	bc, err := timeBoltCommits(filepath.Join(dir, "bolt.db"), n)
	if err != nil {
		return nil, nil, err
	}
	f.boltCommit, f.boltCommit99 = bc.pct(50), bc.pct(99)
	if f.boltBatch, err = timeBoltBatch(filepath.Join(dir, "batch.db"), 700); err != nil {
		return nil, nil, err
	}
	if f.boltSmall, err = timeBoltBatch(filepath.Join(dir, "small.db"), 100); err != nil {
		return nil, nil, err
	}
	if f.boltWriters, err = timeBoltWriters(filepath.Join(dir, "writers.db"), 64, b.opts.size.writerPuts, 100); err != nil {
		return nil, nil, err
	}

	rows := []row{
		{figure: "floor: fdatasync (4 KiB), p50", value: ms(f.fdatasync),
			note: fmt.Sprintf("p99 %s over %d; the issue's reference machine: %.1f ms", ms(fs.pct(99)), n, refFdatasync)},
		{figure: "floor: fork/exec /bin/true, p50", value: ms(f.forkExec),
			note: fmt.Sprintf("p99 %s over %d; the issue's reference machine: %.1f ms", ms(fe.pct(99)), n, refForkExec)},
		{figure: fmt.Sprintf("floor: xargs -P2, %d true", jobs), value: rate(f.xargs, "jobs/s"), note: fmt.Sprintf("best of 3: %s", ms(best))},
		{figure: "floor: bbolt commit (1 small put), p50", value: ms(f.boltCommit),
			note: fmt.Sprintf("p99 %s; the issue's reference machine: %s", ms(f.boltCommit99), refBoltCommit)},
		{figure: "floor: bbolt 1,000 puts per commit", value: rate(f.boltBatch, "records/s"), note: "700-byte values, sequential keys, as a job record plus its spec"},
		{figure: "floor: bbolt 1,000 small puts per commit", value: rate(f.boltSmall, "records/s"),
			note: fmt.Sprintf("100-byte values, sequential keys; the issue's reference machine: %s records/s", thousands(refBoltSmall))},
		{figure: "floor: bbolt 64 writers, batches of 64", value: rate(f.boltWriters, "records/s"),
			note: fmt.Sprintf("db.Batch with MaxBatchSize 64, 100-byte values; the issue's reference machine: %s records/s", thousands(refBoltWriters))},
	}
	return f, rows, nil
}

// openFloorDB opens a fresh bbolt file at path with one bucket, floorBucket;
// done closes and removes the file.
func openFloorDB(path string) (db *bbolt.DB, done func(), err error) {
	db, err = bbolt.Open(path, 0o600, &bbolt.Options{Timeout: time.Second})
	if err != nil {
		return nil, nil, fmt.Errorf("floors: open bbolt: %w", err)
	}
	done = func() {
		db.Close()
		os.Remove(path)
	}
	if err := db.Update(func(tx *bbolt.Tx) error {
		_, err := tx.CreateBucket([]byte(floorBucket))
		return err
	}); err != nil {
		done()
		return nil, nil, fmt.Errorf("floors: bbolt: %w", err)
	}
	return db, done, nil
}

// floorBucket is the bucket of the floors' bbolt files.
const floorBucket = "b"

// timeBoltCommits times n commits of one small put each.
func timeBoltCommits(path string, n int) (durations, error) {
	db, done, err := openFloorDB(path)
	if err != nil {
		return nil, err
	}
	defer done()
	small := []byte(`{"state":"queued"}`)
	var d durations
	for i := range n {
		t := time.Now()
		err := db.Update(func(tx *bbolt.Tx) error {
			return tx.Bucket([]byte(floorBucket)).Put(boltKey(uint64(i)), small)
		})
		if err != nil {
			return nil, fmt.Errorf("floors: bbolt commit: %w", err)
		}
		d = append(d, time.Since(t))
	}
	return d, nil
}

// timeBoltBatch measures records/s with 1,000 puts of size-byte values per commit,
// over 20 commits.
func timeBoltBatch(path string, size int) (float64, error) {
	db, done, err := openFloorDB(path)
	if err != nil {
		return 0, err
	}
	defer done()
	value := []byte(strings.Repeat("v", size))
	const perCommit, commits = 1000, 20
	var next uint64
	t := time.Now()
	for range commits {
		err := db.Update(func(tx *bbolt.Tx) error {
			bk := tx.Bucket([]byte(floorBucket))
			for range perCommit {
				next++
				if err := bk.Put(boltKey(next), value); err != nil {
					return err
				}
			}
			return nil
		})
		if err != nil {
			return 0, fmt.Errorf("floors: bbolt batch: %w", err)
		}
	}
	return perSec(perCommit*commits, time.Since(t)), nil
}

// timeBoltWriters measures records/s when writers goroutines each put puts
// size-byte values through db.Batch, at most 64 to a commit.
func timeBoltWriters(path string, writers, puts, size int) (float64, error) {
	db, done, err := openFloorDB(path)
	if err != nil {
		return 0, err
	}
	defer done()
	db.MaxBatchSize = 64
	value := []byte(strings.Repeat("v", size))
	var wg sync.WaitGroup
	errs := make([]error, writers)
	t := time.Now()
	for w := range writers {
		wg.Go(func() {
			for i := range puts {
				k := boltKey(uint64(w*puts + i))
				if err := db.Batch(func(tx *bbolt.Tx) error { return tx.Bucket([]byte(floorBucket)).Put(k, value) }); err != nil {
					errs[w] = err
					return
				}
			}
		})
	}
	wg.Wait()
	el := time.Since(t)
	for _, err := range errs {
		if err != nil {
			return 0, fmt.Errorf("floors: bbolt writers: %w", err)
		}
	}
	return perSec(writers*puts, el), nil
}

// boltKey is i as an 8-byte big-endian key.
func boltKey(i uint64) []byte {
	var k [8]byte
	binary.BigEndian.PutUint64(k[:], i)
	return k[:]
}

// timeFdatasync times n rounds of a 4 KiB write at offset 0 and fdatasync.
func timeFdatasync(path string, n int) (durations, error) {
	f, err := os.OpenFile(path, os.O_CREATE|os.O_RDWR|os.O_TRUNC, 0o600)
	if err != nil {
		return nil, fmt.Errorf("floors: %w", err)
	}
	defer os.Remove(path)
	defer f.Close()
	buf := []byte(strings.Repeat("x", 4096))
	if _, err := f.WriteAt(buf, 0); err != nil {
		return nil, fmt.Errorf("floors: %w", err)
	}
	if err := f.Sync(); err != nil {
		return nil, fmt.Errorf("floors: %w", err)
	}
	var d durations
	for i := range n {
		buf[0] = byte(i)
		t := time.Now()
		if _, err := f.WriteAt(buf, 0); err != nil {
			return nil, fmt.Errorf("floors: %w", err)
		}
		if err := datasync(f); err != nil {
			return nil, fmt.Errorf("floors: fdatasync: %w", err)
		}
		d = append(d, time.Since(t))
	}
	return d, nil
}
