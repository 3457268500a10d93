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
