package main

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/matryer/is"

	"spool/rpc"
)

// TestE2EInterruptEndsAWait: the real spool binary, waiting on a job, ends its
// wait at SIGINT and exits with code 1, saying only that the job goes on, rather
// than being killed by the signal; the job goes on.
func TestE2EInterruptEndsAWait(t *testing.T) {
	if runtime.GOOS != "linux" {
		t.Skip("finds the CLI's connection through /proc")
	}
	is := is.New(t)
	p := newDaemon(t)
	c := p.client()
	ctx := tctx(t)
	long := rpc.Spec{Steps: []rpc.Step{sh("sleep 60")}}
	res, err := c.Submit(ctx, rpc.SubmitParams{Job: &long})
	is.NoErr(err)
	id := res.Job.ID

	cmd := exec.Command(p.bins.spool, "--socket", p.socket, "wait", fmt.Sprint(id))
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	is.NoErr(cmd.Start())
	// Signals are caught before the command dials: once it holds a socket, it
	// is waiting.
	for i := 0; !holdsSocket(cmd.Process.Pid); i++ {
		if i > 3000 {
			t.Fatal("spool wait never connected")
		}
		time.Sleep(10 * time.Millisecond)
	}
	is.NoErr(cmd.Process.Signal(syscall.SIGINT))
	err = cmd.Wait()
	var ee *exec.ExitError
	is.True(errors.As(err, &ee))                                                                                         // it exits non-zero
	is.Equal(ee.ExitCode(), 1)                                                                                           // with 1, not killed by the signal
	is.Equal(stderr.String(), fmt.Sprintf("spool: interrupted; job %d goes on (spool watch %d to follow it)\n", id, id)) // saying only that the job goes on
	is.Equal(stdout.String(), "")                                                                                        // and printing no job
	j, err := c.Get(ctx, rpc.GetParams{ID: id})
	is.NoErr(err)
	is.True(j.State == rpc.StateRunning || j.State == rpc.StateQueued) // the job goes on
}

// holdsSocket reports whether process pid has a socket open.
func holdsSocket(pid int) bool {
	dir := filepath.Join("/proc", fmt.Sprint(pid), "fd")
	fds, err := os.ReadDir(dir)
	if err != nil {
		return false
	}
	for _, fd := range fds {
		if l, err := os.Readlink(filepath.Join(dir, fd.Name())); err == nil && strings.HasPrefix(l, "socket:") {
			return true
		}
	}
	return false
}
