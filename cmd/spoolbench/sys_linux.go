package main

import (
	"os"
	"os/exec"
	"syscall"

	"golang.org/x/sys/unix"
)

// setDeathSignal makes the kernel kill the daemon if the harness dies first.
func setDeathSignal(cmd *exec.Cmd) {
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
}

// datasync flushes f's data to the disk (fdatasync).
func datasync(f *os.File) error { return unix.Fdatasync(int(f.Fd())) }

// fileSize is the size of the file at path and the bytes of disk it takes (a
// bbolt file is sparse where it reserved room ahead); zeros when it cannot tell.
func fileSize(path string) (size, onDisk int64) {
	fi, err := os.Stat(path)
	if err != nil {
		return 0, 0
	}
	if st, ok := fi.Sys().(*syscall.Stat_t); ok {
		return fi.Size(), st.Blocks * 512
	}
	return fi.Size(), fi.Size()
}
