package main

import (
	"context"
	"encoding/binary"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
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
	boltBatch    float64 // bbolt records/s with 1,000 Puts per commit
}

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

	// bbolt: one small commit, and 1,000 records per commit.
	bc, bb, err := timeBolt(filepath.Join(dir, "bolt.db"), n)
	if err != nil {
		return nil, nil, err
	}
	f.boltCommit, f.boltCommit99, f.boltBatch = bc.pct(50), bc.pct(99), bb

	rows := []row{
		{figure: "floor: fdatasync (4 KiB), p50", value: ms(f.fdatasync), note: fmt.Sprintf("p99 %s over %d", ms(fs.pct(99)), n)},
		{figure: "floor: fork/exec /bin/true, p50", value: ms(f.forkExec), note: fmt.Sprintf("p99 %s over %d", ms(fe.pct(99)), n)},
		{figure: fmt.Sprintf("floor: xargs -P2, %d true", jobs), value: rate(f.xargs, "jobs/s"), note: fmt.Sprintf("best of 3: %s", ms(best))},
		{figure: "floor: bbolt commit (1 small put), p50", value: ms(f.boltCommit), note: fmt.Sprintf("p99 %s", ms(f.boltCommit99))},
		{figure: "floor: bbolt 1,000 puts per commit", value: rate(f.boltBatch, "records/s"), note: "700-byte values, sequential keys, as a job record plus its spec"},
	}
	return f, rows, nil
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

// timeBolt times n small commits, and records/s with 1,000 puts per commit.
func timeBolt(path string, n int) (durations, float64, error) {
	db, err := bbolt.Open(path, 0o600, &bbolt.Options{Timeout: time.Second})
	if err != nil {
		return nil, 0, fmt.Errorf("floors: open bbolt: %w", err)
	}
	defer os.Remove(path)
	defer db.Close()
	bucket := []byte("b")
	if err := db.Update(func(tx *bbolt.Tx) error {
		_, err := tx.CreateBucketIfNotExists(bucket)
		return err
	}); err != nil {
		return nil, 0, fmt.Errorf("floors: bbolt: %w", err)
	}
	key := func(i uint64) []byte {
		var k [8]byte
		binary.BigEndian.PutUint64(k[:], i)
		return k[:]
	}
	small := []byte(`{"state":"queued"}`)
	var d durations
	for i := range n {
		t := time.Now()
		err := db.Update(func(tx *bbolt.Tx) error {
			return tx.Bucket(bucket).Put(key(uint64(i)), small)
		})
		if err != nil {
			return nil, 0, fmt.Errorf("floors: bbolt commit: %w", err)
		}
		d = append(d, time.Since(t))
	}
	value := []byte(strings.Repeat("v", 700))
	const perCommit, commits = 1000, 20
	next := uint64(1 << 32)
	t := time.Now()
	for range commits {
		err := db.Update(func(tx *bbolt.Tx) error {
			bk := tx.Bucket(bucket)
			for range perCommit {
				next++
				if err := bk.Put(key(next), value); err != nil {
					return err
				}
			}
			return nil
		})
		if err != nil {
			return nil, 0, fmt.Errorf("floors: bbolt batch: %w", err)
		}
	}
	return d, perSec(perCommit*commits, time.Since(t)), nil
}
