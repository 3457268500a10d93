//go:build !linux

package daemon

import (
	"errors"
	"time"
)

// freezeCgroup has no cgroups to freeze off Linux.
func freezeCgroup(path string, freeze bool, wait time.Duration) error {
	return errors.New("no cgroup freezer on this system")
}
