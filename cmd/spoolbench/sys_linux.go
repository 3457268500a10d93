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
