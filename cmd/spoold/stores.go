package main

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"spool/daemon"
	"spool/store/postgres"
)

// servedStore is what spoold needs of either store.
type servedStore interface {
	daemon.Store
	Close() error
	// Commits counts the store's commits, for the metrics.
	Commits() uint64
	// Check verifies the store's invariants (spoold check).
	Check(ctx context.Context) error
}

// storeKind names the store --store chose, for daemon.info.
func storeKind(o *options) string {
	if o.store == "" {
		return "bbolt"
	}
	return "postgres"
}

// isPostgresURL reports whether s names a PostgreSQL database.
func isPostgresURL(s string) bool {
	return strings.HasPrefix(s, "postgres://") || strings.HasPrefix(s, "postgresql://")
}

// openAnyStore opens the store --store names: the bbolt file in the state
// folder by default, or a PostgreSQL database that several spoold share. With
// PostgreSQL the state folder still holds this daemon's logs and results, so
// it is locked: two daemons on one host need two state folders.
func openAnyStore(o *options, log *slog.Logger) (servedStore, error) {
	if o.store == "" {
		return openStore(o.stateDir)
	}
	unlock, err := lockStateDir(o.stateDir)
	if err != nil {
		return nil, err
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	st, err := postgres.Open(ctx, o.store, postgres.Options{Log: log, LeaseTTL: o.lease})
	if err != nil {
		unlock()
		return nil, fmt.Errorf("open the store: %w", err)
	}
	return &lockedStore{Store: st, unlock: unlock}, nil
}

// lockedStore is a PostgreSQL store that holds the state folder's lock until
// it closes.
type lockedStore struct {
	*postgres.Store
	unlock func()
}

// Close closes the store, then lets the state folder go.
func (s *lockedStore) Close() error {
	err := s.Store.Close()
	s.unlock()
	return err
}

// lockStateDir takes an exclusive lock on the state folder's lock file, or
// says which daemon holds it.
func lockStateDir(dir string) (func(), error) {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("create state folder: %w", err)
	}
	f, err := os.OpenFile(filepath.Join(dir, "spoold.lock"), os.O_CREATE|os.O_RDWR, 0o600)
	if err != nil {
		return nil, fmt.Errorf("open the state folder's lock: %w", err)
	}
	if err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB); err != nil {
		f.Close()
		pid := "unknown"
		if b, rerr := os.ReadFile(filepath.Join(dir, "spoold.pid")); rerr == nil {
			pid = strings.TrimSpace(string(b))
		}
		return nil, fmt.Errorf("another spoold (pid %s) is using the state folder %s", pid, dir)
	}
	return func() { f.Close() }, nil
}
