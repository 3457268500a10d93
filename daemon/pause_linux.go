//go:build linux

package daemon

import (
	"bytes"
	"fmt"
	"os"
	"path/filepath"
	"time"
)

// freezeCgroup freezes (or thaws) every process of a cgroup and of the cgroups
// below it with the cgroup v2 freezer, and waits up to wait until its
// cgroup.events says so: a process is frozen only once it reached the kernel's
// freezer, which "frozen 1" reports.
func freezeCgroup(path string, freeze bool, wait time.Duration) error {
	v := "0"
	if freeze {
		v = "1"
	}
	if err := os.WriteFile(filepath.Join(path, "cgroup.freeze"), []byte(v), 0); err != nil {
		return fmt.Errorf("write cgroup.freeze: %w", err)
	}
	want := []byte("frozen " + v)
	deadline := time.Now().Add(wait)
	for {
		var buf [256]byte
		b, ok := readSmall(filepath.Join(path, "cgroup.events"), buf[:], false)
		if !ok {
			return fmt.Errorf("read cgroup.events of %s", path)
		}
		for line := range bytes.SplitSeq(b, []byte{'\n'}) {
			if bytes.Equal(bytes.TrimSpace(line), want) {
				return nil
			}
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("cgroup %s did not report %q within %v", path, want, wait)
		}
		time.Sleep(2 * time.Millisecond)
	}
}
