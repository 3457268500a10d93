package main

import (
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/matryer/is"

	"spool/rpc"
)

// showJob reads a job through spool --json show.
func showJob(t *testing.T, p *daemonProc, id string) rpc.Job {
	t.Helper()
	var j rpc.Job
	if err := json.Unmarshal([]byte(runCLI(t, p, 0, "--json", "show", id)), &j); err != nil {
		t.Fatalf("spool --json show %s: %v", id, err)
	}
	return j
}

// waiting checks that a job delayed by --delay or --at waits with reason
// not_before while its time has not come, and returns that time. It reads with
// the Go client, which answers in a millisecond: the CLI built with the race
// detector can take a second on a loaded machine.
func waiting(t *testing.T, p *daemonProc, id string) time.Time {
	t.Helper()
	n, err := strconv.ParseInt(id, 10, 64)
	if err != nil {
		t.Fatalf("id %q: %v", id, err)
	}
	j, err := p.client().Get(tctx(t), rpc.GetParams{ID: n})
	if err != nil {
		t.Fatalf("get %d: %v", n, err)
	}
	if j.NotBefore == nil {
		t.Fatalf("job %d has no not_before", n)
	}
	if !time.Now().Before(*j.NotBefore) {
		t.Logf("job %d: its time came before it could be seen waiting", n)
		return *j.NotBefore
	}
	if j.State != rpc.StateQueued || j.Waiting == nil || *j.Waiting != "not_before" {
		t.Fatalf("job %d before its time: state %s, waiting %v", n, j.State, j.Waiting)
	}
	return *j.NotBefore
}

// TestCLIWhenLogsNotify (issue 17, items 6 and 7): submit --delay and --at
// through the real CLI and daemon (the job waits with reason not_before, also
// across a kill -9 restart, and runs after it); logs --lines of a job that
// printed 100 lines; logs --stderr; logs -f -n that starts from the last lines;
// submit --notify running a notify-send from PATH once the job is final.
func TestCLIWhenLogsNotify(t *testing.T) {
	p := newDaemon(t)

	t.Run("delay", func(t *testing.T) {
		is := is.New(t)
		before := time.Now()
		id := strings.TrimSpace(runCLI(t, p, 0, "submit", "--delay", "1s", "--", "sh", "-c", "echo ran"))
		waiting(t, p, id)
		j := showJob(t, p, id)
		is.True(j.NotBefore != nil)                           // the time is stored
		is.True(!j.NotBefore.Before(before.Add(time.Second))) // a second from the submit
		runCLI(t, p, 0, "wait", id)
		j = showJob(t, p, id)
		is.Equal(j.State, rpc.StateSucceeded)          // it ran
		is.True(j.SubmittedAt.Before(*j.NotBefore))    // stored before its time
		is.True(!j.StartedAt.Before(*j.NotBefore))     // and started only once it came
		is.Equal(runCLI(t, p, 0, "logs", id), "ran\n") // and did its work
	})

	t.Run("at", func(t *testing.T) {
		is := is.New(t)
		at := time.Now().Add(2 * time.Second).Truncate(time.Second)
		if at.Day() != time.Now().Day() {
			t.Skip("midnight is too near for a time of day")
		}
		r := spoolRun(t, p, nil, "", "submit", "--at", at.Format("15:04:05"), "--", "true")
		is.Equal(r.code, 0)    // a time of day to come
		is.Equal(r.stderr, "") // needs no note
		id := strings.TrimSpace(r.stdout)
		j := showJob(t, p, id)
		is.True(j.NotBefore.Equal(at)) // that second, today, in the local zone
		runCLI(t, p, 0, "wait", id)
		j = showJob(t, p, id)
		is.True(!j.StartedAt.Before(at)) // run once it came

		past := time.Now().Add(-time.Minute)
		if past.Day() == time.Now().Day() {
			r = spoolRun(t, p, nil, "", "submit", "--at", past.Format("15:04"), "--", "true")
			is.Equal(r.code, 0)                                     // a time of day already past
			is.True(strings.Contains(r.stderr, "has passed today")) // is tomorrow's, and says so
			j = showJob(t, p, strings.TrimSpace(r.stdout))
			is.True(j.NotBefore.After(time.Now().Add(23 * time.Hour))) // tomorrow
			runCLI(t, p, 0, "cancel", strconv.FormatInt(j.ID, 10))
		}
	})

	t.Run("delay across kill -9", func(t *testing.T) {
		is := is.New(t)
		id := strings.TrimSpace(runCLI(t, p, 0, "submit", "--delay", "4s", "--", "true"))
		nb := waiting(t, p, id)
		p.kill9()
		p.start()
		if time.Now().Before(nb) {
			waiting(t, p, id) // still waiting for its time after the restart
		}
		runCLI(t, p, 0, "wait", id)
		j := showJob(t, p, id)
		is.Equal(j.State, rpc.StateSucceeded) // it ran
		is.True(!j.StartedAt.Before(nb))      // not before its time
	})

	t.Run("logs --lines", func(t *testing.T) {
		is := is.New(t)
		id := strings.TrimSpace(runCLI(t, p, 0, "submit", "--", "sh", "-c", `i=1; while [ $i -le 100 ]; do echo line $i; i=$((i+1)); done`))
		runCLI(t, p, 0, "wait", id)
		is.Equal(runCLI(t, p, 0, "logs", "--lines", "3", id), "line 98\nline 99\nline 100\n") // the last 3 lines
		is.Equal(runCLI(t, p, 0, "logs", "-n", "1", id, "0"), "line 100\n")                   // of a step named by index
		is.Equal(strings.Count(runCLI(t, p, 0, "logs", "-n", "500", id), "\n"), 100)          // all of them when fewer
	})

	t.Run("logs --stderr", func(t *testing.T) {
		is := is.New(t)
		id := strings.TrimSpace(runCLI(t, p, 0, "submit", "--", "sh", "-c", "echo out; echo err >&2; echo out2; echo err2 >&2"))
		runCLI(t, p, 0, "wait", id)
		is.Equal(runCLI(t, p, 0, "logs", "--stderr", id), "err\nerr2\n") // stderr alone
		all := runCLI(t, p, 0, "logs", id)
		for _, s := range []string{"out\n", "err\n", "out2\n", "err2\n"} {
			is.True(strings.Contains(all, s)) // the log holds both, merged, as before
		}
		is.Equal(runCLI(t, p, 0, "logs", "--stderr", "-n", "1", id), "err2\n") // the last line of stderr
		var j rpc.Job
		is.NoErr(json.Unmarshal([]byte(runCLI(t, p, 0, "--json", "show", id)), &j))
		is.Equal(*j.Steps[0].OutputTail, all) // output_tail is the merged log
	})

	t.Run("logs -f -n", func(t *testing.T) {
		is := is.New(t)
		gate := filepath.Join(shortDir(t), "gate")
		id := strings.TrimSpace(runCLI(t, p, 0, "submit", "--", "sh", "-c",
			`i=1; while [ $i -le 10 ]; do echo line $i; i=$((i+1)); done; while [ ! -e '`+gate+`' ]; do sleep 0.02; done; echo after`))
		c := p.client()
		n, _ := strconv.ParseInt(id, 10, 64)
		for i := 0; ; i++ { // until the first ten lines are in the log
			r, err := c.Logs(tctx(t), rpc.LogsParams{ID: n, Step: rpc.StepRef{Index: new(int)}})
			is.NoErr(err)
			if strings.Contains(r.Data, "line 10\n") {
				break
			}
			if i > 1500 {
				t.Fatal("the job printed nothing")
			}
			time.Sleep(20 * time.Millisecond)
		}
		cmd := exec.Command(p.bins.spool, "--socket", p.socket, "logs", "-f", "-n", "2", id)
		var out syncBuffer
		cmd.Stdout = &out
		is.NoErr(cmd.Start())
		for i := 0; !strings.Contains(out.String(), "line 10\n"); i++ {
			if i > 1500 {
				_ = cmd.Process.Kill()
				t.Fatalf("logs -f -n 2 printed %q", out.String())
			}
			time.Sleep(20 * time.Millisecond)
		}
		is.NoErr(os.WriteFile(gate, nil, 0o600))
		is.NoErr(cmd.Wait())                               // ends with the job
		is.Equal(out.String(), "line 9\nline 10\nafter\n") // the last 2 lines, then what came
	})

	t.Run("submit --notify", func(t *testing.T) {
		is := is.New(t)
		dir := shortDir(t)
		file := filepath.Join(dir, "notified")
		script := "#!/bin/sh\nfor a in \"$@\"; do printf '%s\\n' \"$a\"; done >> '" + file + "'\n"
		is.NoErr(os.WriteFile(filepath.Join(dir, "notify-send"), []byte(script), 0o700))
		r := spoolRun(t, p, []string{"PATH=" + dir + ":" + os.Getenv("PATH")}, "",
			"submit", "--notify", "--name", "deploy", "--", "sh", "-c", "sleep 0.3; exit 4")
		is.Equal(r.code, 0) // submit returns at once
		id := strings.TrimSpace(r.stdout)
		var got string
		for i := 0; !strings.Contains(got, "spool: job "+id+" failed"); i++ {
			if i > 1500 {
				t.Fatalf("no notification: %q", got)
			}
			time.Sleep(20 * time.Millisecond)
			b, _ := os.ReadFile(file)
			got = string(b)
		}
		is.True(strings.Contains(got, "critical\n"))                           // a failure is critical
		is.True(strings.Contains(got, "deploy\nstep step-0: exit status 4\n")) // with the name and the error
	})
}
