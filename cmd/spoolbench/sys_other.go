//go:build !linux

package main

import (
	"os"
	"os/exec"
)

// setDeathSignal does nothing where there is no parent-death signal.
func setDeathSignal(cmd *exec.Cmd) {}

// datasync flushes f to the disk (fsync, where there is no fdatasync).
func datasync(f *os.File) error { return f.Sync() }

// fileSize is the size of the file at path, twice: the disk it takes is not
// known here; zeros when it cannot tell.
func fileSize(path string) (size, onDisk int64) {
	fi, err := os.Stat(path)
	if err != nil {
		return 0, 0
	}
	return fi.Size(), fi.Size()
}
