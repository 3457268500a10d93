package store

import (
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"time"

	"go.etcd.io/bbolt"
	berrors "go.etcd.io/bbolt/errors"
)

// compactTxSize bounds the bytes copied in one transaction of a compaction.
const compactTxSize = 64 << 20

// Compact rewrites the database at path without its free pages: it copies every
// bucket, key and bucket sequence into a new file in the same folder, syncs it,
// checks it, and renames it over the old file. It holds the database's lock from
// start to end, so it fails with an error wrapping ErrLocked when a daemon (or
// another Compact) holds the database for opts.Timeout. It refuses a file that is
// not spool's or of a newer schema, and leaves the old file as it was on any
// failure. opts.NoSync skips the syncs (tests only).
func Compact(path string, opts Options) error {
	if opts.Timeout <= 0 {
		opts.Timeout = time.Second
	}
	if _, err := os.Stat(path); err != nil {
		return fmt.Errorf("compact %s: %w", path, err)
	}
	src, err := bbolt.Open(path, 0o600, &bbolt.Options{Timeout: opts.Timeout})
	if errors.Is(err, berrors.ErrTimeout) {
		return fmt.Errorf("compact %s: %w", path, ErrLocked)
	}
	if err != nil {
		return fmt.Errorf("compact %s: open: %w", path, err)
	}
	defer src.Close()
	if err := src.View(func(tx *bbolt.Tx) error { _, err := checkLayout(tx); return err }); err != nil {
		return fmt.Errorf("compact %s: %w", path, err)
	}

	var raw [8]byte
	if _, err := rand.Read(raw[:]); err != nil {
		return fmt.Errorf("compact %s: temp name: %w", path, err)
	}
	tmp := filepath.Join(filepath.Dir(path), "."+filepath.Base(path)+".compact-"+hex.EncodeToString(raw[:]))
	if err := copyCompacted(tmp, src, opts.NoSync); err != nil {
		os.Remove(tmp)
		return fmt.Errorf("compact %s: %w", path, err)
	}
	if err := os.Rename(tmp, path); err != nil {
		os.Remove(tmp)
		return fmt.Errorf("compact %s: replace the old file: %w", path, err)
	}
	if !opts.NoSync {
		if err := syncDir(filepath.Dir(path)); err != nil {
			return fmt.Errorf("compact %s: sync folder: %w", path, err)
		}
	}
	return nil
}

// copyCompacted writes src's content into a new file at tmp, syncs it, closes it,
// and checks the copy.
func copyCompacted(tmp string, src *bbolt.DB, noSync bool) error {
	dst, err := bbolt.Open(tmp, 0o600, &bbolt.Options{Timeout: time.Second, NoSync: true})
	if err != nil {
		return fmt.Errorf("create %s: %w", tmp, err)
	}
	if err := os.Chmod(tmp, 0o600); err != nil {
		dst.Close()
		return fmt.Errorf("chmod %s: %w", tmp, err)
	}
	if err := bbolt.Compact(dst, src, compactTxSize); err != nil {
		dst.Close()
		return fmt.Errorf("copy: %w", err)
	}
	if !noSync {
		if err := dst.Sync(); err != nil {
			dst.Close()
			return fmt.Errorf("sync %s: %w", tmp, err)
		}
	}
	err = dst.View(func(tx *bbolt.Tx) error {
		for err := range tx.Check() {
			return fmt.Errorf("the copy is damaged: %w", err)
		}
		_, err := checkLayout(tx)
		return err
	})
	if cerr := dst.Close(); err == nil && cerr != nil {
		err = fmt.Errorf("close %s: %w", tmp, cerr)
	}
	return err
}

// syncDir flushes a folder's entries (a rename in it) to disk.
func syncDir(dir string) error {
	f, err := os.Open(dir)
	if err != nil {
		return err
	}
	defer f.Close()
	return f.Sync()
}
