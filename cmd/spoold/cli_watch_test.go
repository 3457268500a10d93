package main

import (
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/matryer/is"

	"spool/rpc"
)

// TestCLIWatchAll (issue 13, item 1): `spool watch` with no ids, on a terminal,
// follows every job, including those submitted after it began, with the job's
// name on its live line; Ctrl-C ends it with exit 0 and says the jobs go on.
func TestCLIWatchAll(t *testing.T) {
	is := is.New(t)
	p := newDaemon(t)
	c := p.client()
	ctx := tctx(t)
	dir := shortDir(t)
	gate := filepath.Join(dir, "gate")

	// One job runs before the watch begins: its status line comes first.
	before, err := c.Submit(ctx, rpc.SubmitParams{Job: &rpc.Spec{Name: "early-bird", Steps: []rpc.Step{sh(`while [ ! -e ` + gate + ` ]; do sleep 0.05; done`)}}})
	is.NoErr(err)
	waitRunning(t, c, before.Job.ID)

	command := p.bins.spool + " --socket " + p.socket + ` watch; echo "EXIT=$?"; sleep 600`
	scr := newScreen(t, dir, command)
	scr.waitFor("the running job's status", func(rows []string) bool { return countRows(rows, "status") == 1 })

	script := `echo "3/10 compiling" >&$SPOOL_PROGRESS_FD; while [ ! -e ` + gate + ` ]; do sleep 0.05; done`
	res, err := c.Submit(ctx, rpc.SubmitParams{Job: &rpc.Spec{Name: "nightly-build", Steps: []rpc.Step{sh(script)}}})
	is.NoErr(err)
	id := strconv.FormatInt(res.Job.ID, 10)

	rows := scr.waitFor("the new job's live line with its name", func(rows []string) bool {
		return countRows(rows, "nightly-build") == 1 && countRows(rows, "30% compiling") == 1
	})
	is.Equal(countRows(rows, "submitted"), 1) // the job submitted after the watch began is followed
	for _, r := range rows {
		if strings.Contains(r, "30% compiling") {
			is.True(strings.HasPrefix(r, id+" "))         // the live line is the new job's
			is.True(strings.Contains(r, "nightly-build")) // and names it
		}
	}

	is.NoErr(os.WriteFile(gate, nil, 0o600))
	rows = scr.waitFor("both jobs' outcome", func(rows []string) bool { return countRows(rows, "succeeded") >= 4 })
	is.Equal(countRows(rows, "EXIT="), 0) // the watch of every job goes on after they end

	is.NoErr(exec.Command(scr.tmux, "-S", scr.sock, "send-keys", "C-c").Run())
	rows = scr.waitFor("the exit status", func(rows []string) bool { return countRows(rows, "EXIT=") == 1 })
	is.Equal(countRows(rows, "EXIT=0"), 1)         // Ctrl-C is the normal end of watching every job
	is.Equal(countRows(rows, "the jobs go on"), 1) // and it says the jobs are not touched
}

// TestCLIInterruptSaysJobGoesOn (issue 13, item 5): Ctrl-C on wait, watch ID and
// logs -f says the job goes on and how to follow it again, and the job does go on.
func TestCLIInterruptSaysJobGoesOn(t *testing.T) {
	if runtime.GOOS != "linux" {
		t.Skip("finds the CLI's connection through /proc")
	}
	p := newDaemon(t)
	c := p.client()
	ctx := tctx(t)
	res, err := c.Submit(ctx, rpc.SubmitParams{Job: &rpc.Spec{Steps: []rpc.Step{sh("echo started; sleep 120")}}})
	if err != nil {
		t.Fatal(err)
	}
	id := res.Job.ID
	waitRunning(t, c, id)
	for _, tc := range []struct {
		args []string
		code int
		hint string
	}{
		{[]string{"wait", fmt.Sprint(id)}, 1, fmt.Sprintf("spool watch %d", id)},
		{[]string{"watch", fmt.Sprint(id)}, 1, fmt.Sprintf("spool watch %d", id)},
		{[]string{"logs", "-f", fmt.Sprint(id)}, 0, fmt.Sprintf("spool logs -f %d", id)},
	} {
		t.Run(strings.Join(tc.args, " "), func(t *testing.T) {
			is := is.New(t)
			cmd := exec.Command(p.bins.spool, append([]string{"--socket", p.socket}, tc.args...)...)
			stdout, stderr := &syncBuffer{}, &syncBuffer{}
			cmd.Stdout, cmd.Stderr = stdout, stderr
			is.NoErr(cmd.Start())
			for i := 0; !holdsSocket(cmd.Process.Pid); i++ {
				if i > 3000 {
					t.Fatal("spool never connected")
				}
				time.Sleep(10 * time.Millisecond)
			}
			// logs -f: once it printed what the log holds, it follows.
			for i := 0; tc.args[0] == "logs" && !strings.Contains(stdout.String(), "started"); i++ {
				if i > 3000 {
					t.Fatal("spool logs -f never printed the log")
				}
				time.Sleep(10 * time.Millisecond)
			}
			is.NoErr(cmd.Process.Signal(syscall.SIGINT))
			err := cmd.Wait()
			code := 0
			var ee *exec.ExitError
			if errors.As(err, &ee) {
				code = ee.ExitCode()
			}
			is.Equal(code, tc.code)                                                       // the exit code of an interrupted wait
			is.True(strings.Contains(stderr.String(), fmt.Sprintf("job %d goes on", id))) // says the job goes on
			is.True(strings.Contains(stderr.String(), tc.hint))                           // and how to follow it
			j, err := c.Get(ctx, rpc.GetParams{ID: id})
			is.NoErr(err)
			is.Equal(j.State, rpc.StateRunning) // and it does go on
		})
	}
}
