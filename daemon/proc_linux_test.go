package daemon

import (
	"errors"
	"os"
	"os/exec"
	"syscall"
	"testing"

	"github.com/matryer/is"
)

func TestParseStat(t *testing.T) {
	is := is.New(t)
	line := []byte("4242 (a) b (c)) S 17 4242 4242 0 -1 4194304 100 0 0 0 1 2 0 0 20 0 1 0 987654 12345 67 18446744073709551615\n")
	st, ppid, pgid, start, ok := parseStat(line)
	is.True(ok)                     // a line whose command name holds spaces and parentheses
	is.Equal(st, byte('S'))         // the state follows the last ')'
	is.Equal(ppid, 17)              // then the parent
	is.Equal(pgid, 4242)            // and the group
	is.Equal(start, uint64(987654)) // field 22 is the start time
	_, _, _, _, ok = parseStat([]byte("4242 (short) S 1 2"))
	is.True(!ok) // a cut line is refused
}

// TestProcOfAChild checks what the daemon reads of a child from /proc, and that
// the list of its children names it.
func TestProcOfAChild(t *testing.T) {
	is := is.New(t)
	cmd := exec.Command("sleep", "30")
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	is.NoErr(cmd.Start())
	defer func() { _ = cmd.Process.Kill(); _ = cmd.Wait() }()
	pid := cmd.Process.Pid
	st, ppid, pgid, start, ok := procStat(pid)
	is.True(ok)                         // the child is there
	is.True(st != 'Z')                  // alive
	is.Equal(ppid, os.Getpid())         // ours
	is.Equal(pgid, pid)                 // the leader of its group
	is.True(start > 0)                  // with its start time
	is.Equal(procStartTime(pid), start) // as the daemon stores it
	found := false
	listed := eachChild(func(c int) { found = found || c == pid })
	if !listed {
		t.Skip("this kernel does not list children")
	}
	is.True(found) // the child is listed
}

// TestSpawnerWaits checks that a process started by the spawner is waited for,
// with its exit status, whether the kernel has pidfds or not.
func TestSpawnerWaits(t *testing.T) {
	for _, pidfd := range []bool{true, false} {
		is := is.New(t)
		sp, err := newSpawner()
		is.NoErr(err)
		sp.pidfd = sp.pidfd && pidfd
		cmd := exec.Command("/bin/sh", "-c", "sleep 0.1; exit 3")
		proc, wait, err := sp.start(cmd, -1)
		is.NoErr(err)
		is.Equal(proc.PID, cmd.Process.Pid) // its identity
		err = wait()
		var ee *exec.ExitError
		is.True(errors.As(err, &ee))             // it failed
		is.Equal(cmd.ProcessState.ExitCode(), 3) // with its status
		cmd = exec.Command("/bin/sh", "-c", "kill -9 $$")
		_, wait, err = sp.start(cmd, -1)
		is.NoErr(err)
		_ = wait()
		ws := cmd.ProcessState.Sys().(syscall.WaitStatus)
		is.True(ws.Signaled())                 // killed
		is.Equal(ws.Signal(), syscall.SIGKILL) // by that signal
		sp.close()
	}
}

// TestPathCache checks that a command found is looked for again once its file is
// gone, in every folder of PATH.
func TestPathCache(t *testing.T) {
	is := is.New(t)
	a, b := t.TempDir(), t.TempDir()
	env := []string{"PATH=" + a + ":" + b}
	write := func(dir string) {
		is.NoErr(os.WriteFile(dir+"/cmd", []byte("#!/bin/sh\n"), 0o700))
	}
	var c pathCache
	write(b)
	f, err := c.lookPath("cmd", env, "/")
	is.NoErr(err)
	is.Equal(f, b+"/cmd") // found in the second folder
	f, err = c.lookPath("cmd", env, "/")
	is.NoErr(err)
	is.Equal(f, b+"/cmd") // again, from the cache
	is.NoErr(os.Remove(b + "/cmd"))
	write(a)
	f, err = c.lookPath("cmd", env, "/")
	is.NoErr(err)
	is.Equal(f, a+"/cmd") // its file gone, it is looked for again
	is.NoErr(os.Remove(a + "/cmd"))
	_, err = c.lookPath("cmd", env, "/")
	is.True(err != nil) // and not found when there is none
	f, err = c.lookPath("./x", env, "/w")
	is.NoErr(err)
	is.Equal(f, "/w/x") // a path is taken as it is, from the step's folder
}
