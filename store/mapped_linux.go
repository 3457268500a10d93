//go:build linux

package store

import (
	"bytes"
	"fmt"
	"os"
	"strconv"

	"go.etcd.io/bbolt"
	"golang.org/x/sys/unix"
)

// newReleaser makes the releaser of db's mapped pages, or nil when the process
// cannot see its resident memory.
func newReleaser(db *bbolt.DB, budget int64) *releaser {
	statm, err := os.Open("/proc/self/statm")
	if err != nil {
		return nil
	}
	page := int64(os.Getpagesize())
	buf := make([]byte, 256)
	return &releaser{
		budget: budget,
		resident: func() (int64, error) {
			n, err := statm.ReadAt(buf, 0)
			if n == 0 && err != nil {
				return 0, fmt.Errorf("read resident memory: %w", err)
			}
			return fileResident(buf[:n], page)
		},
		drop: func(stop <-chan struct{}) error { return dropMapped(db, stop) },
		done: func() { statm.Close() },
		wake: make(chan struct{}, 1),
	}
}

// fileResident reads the bytes of file-backed (and shared) resident memory from
// the text of /proc/self/statm, whose third field counts them in pages.
func fileResident(statm []byte, page int64) (int64, error) {
	f := bytes.Fields(statm)
	if len(f) < 3 {
		return 0, fmt.Errorf("read resident memory: unexpected statm %q", statm)
	}
	n, err := strconv.ParseInt(string(f[2]), 10, 64)
	if err != nil {
		return 0, fmt.Errorf("read resident memory: %w", err)
	}
	return n * page, nil
}

// dropMapped drops the pages of db's map from the process's page tables with
// madvise(MADV_DONTNEED), a chunk of releaseChunk bytes per read transaction. The
// map is read-only and shared, so its data stays in the page cache and a later
// read faults the page back in. It stops early when stop is closed.
//
// A read transaction holds bbolt's map lock, so the map cannot move or be
// unmapped while a chunk is dropped: bbolt remaps only under that lock, taken for
// writing. Info().Data is the map's start, and the transaction's Size() is the
// used part of the file, which the map always covers. The address goes to the
// system call as it is: no Go pointer is made of it.
func dropMapped(db *bbolt.DB, stop <-chan struct{}) error {
	for off := int64(0); ; off += releaseChunk {
		select {
		case <-stop:
			return nil
		default:
		}
		more := false
		err := db.View(func(tx *bbolt.Tx) error {
			size := tx.Size()
			if off >= size {
				return nil
			}
			more = true
			n := min(size-off, releaseChunk)
			addr := db.Info().Data + uintptr(off)
			if _, _, e := unix.Syscall(unix.SYS_MADVISE, addr, uintptr(n), unix.MADV_DONTNEED); e != 0 {
				return e
			}
			return nil
		})
		if err != nil {
			return fmt.Errorf("drop mapped pages: %w", err)
		}
		if !more {
			return nil
		}
	}
}
