//go:build !linux

package store

import "go.etcd.io/bbolt"

// newReleaser returns nil: only on Linux does the store drop its mapped pages.
func newReleaser(db *bbolt.DB, budget int64) *releaser { return nil }
