package main

import (
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/matryer/is"

	"spool/rpc"
)

// TestSubmitDelayAndAt: --delay and --at reach the daemon as the spec's
// not_before; together, malformed, or with -f they are refused before anything
// is sent, naming the flag. run sends not_before in template.run's params.
func TestSubmitDelayAndAt(t *testing.T) {
	f := startFake(t, func(c *fakeConn, r request) {
		switch r.Method {
		case rpc.MethodSubmit:
			c.reply(r, jobJSON(7, "queued", nil))
		case rpc.MethodTemplateRun:
			c.reply(r, jobJSON(8, "queued", nil))
		}
	})
	env := map[string]string{"SPOOL_SOCKET": f.socket}
	notBefore := func(t *testing.T, method string, i int) time.Time {
		t.Helper()
		reqs := f.requests(method)
		if len(reqs) <= i {
			t.Fatalf("%d %s requests, want %d", len(reqs), method, i+1)
		}
		var p struct {
			Job       *rpc.Spec  `json:"job"`
			NotBefore *time.Time `json:"not_before"`
		}
		if err := json.Unmarshal(reqs[i].Params, &p); err != nil {
			t.Fatal(err)
		}
		if p.Job != nil {
			p.NotBefore = p.Job.NotBefore
		}
		if p.NotBefore == nil {
			t.Fatalf("%s without not_before: %s", method, reqs[i].Params)
		}
		return *p.NotBefore
	}

	t.Run("delay", func(t *testing.T) {
		is := is.New(t)
		before := time.Now()
		r := spool(t, env, "", "submit", "--delay", "10m", "--", "true")
		after := time.Now()
		is.Equal(r.code, 0)       // submitted
		is.Equal(r.stdout, "7\n") // the id
		nb := notBefore(t, rpc.MethodSubmit, 0)
		is.True(!nb.Before(before.Add(10*time.Minute)) && !nb.After(after.Add(10*time.Minute))) // ten minutes from now
	})
	t.Run("at", func(t *testing.T) {
		is := is.New(t)
		r := spool(t, env, "", "submit", "--at", "2099-12-24T18:00:00+01:00", "--", "true")
		is.Equal(r.code, 0)                                                                              // submitted
		is.Equal(r.stderr, "")                                                                           // nothing to say
		is.True(notBefore(t, rpc.MethodSubmit, 1).Equal(time.Date(2099, 12, 24, 17, 0, 0, 0, time.UTC))) // that instant
	})
	t.Run("run --at", func(t *testing.T) {
		is := is.New(t)
		r := spool(t, env, "", "run", "backup", "dir=/home", "--at", "2099-01-02 03:04 UTC")
		is.Equal(r.code, 0)                                                                                // run
		is.Equal(r.stdout, "8\n")                                                                          // the id
		is.True(notBefore(t, rpc.MethodTemplateRun, 0).Equal(time.Date(2099, 1, 2, 3, 4, 0, 0, time.UTC))) // template.run's not_before
	})
	t.Run("run without", func(t *testing.T) {
		is := is.New(t)
		r := spool(t, env, "", "run", "backup")
		is.Equal(r.code, 0)
		reqs := f.requests(rpc.MethodTemplateRun)
		is.True(!strings.Contains(string(reqs[len(reqs)-1].Params), "not_before")) // left out when not given: older daemons refuse unknown fields
	})
	sent := len(f.requests(rpc.MethodSubmit))
	for _, c := range []struct {
		args []string
		says string
	}{
		{[]string{"submit", "--delay", "1m", "--at", "14:00", "--", "true"}, "--delay and --at"},
		{[]string{"submit", "--delay", "soon", "--", "true"}, `--delay "soon" is not a duration`},
		{[]string{"submit", "--delay", "-1m", "--", "true"}, `--delay "-1m"`},
		{[]string{"submit", "--at", "noon", "--", "true"}, `--at "noon" is not a time`},
		{[]string{"submit", "--at", "2001-01-01", "--", "true"}, "is in the past"},
		{[]string{"submit", "--delay", "1m", "-f", "spec.json"}, "do not also give --delay"},
		{[]string{"run", "backup", "--at", "noon"}, `--at "noon"`},
	} {
		t.Run(strings.Join(c.args, " "), func(t *testing.T) {
			is := is.New(t)
			r := spool(t, env, "", c.args...)
			is.Equal(r.code, 2)                         // a usage error
			is.True(strings.Contains(r.stderr, c.says)) // saying what is wrong
			is.Equal(strings.Count(r.stderr, "\n"), 1)  // in one line
		})
	}
	if n := len(f.requests(rpc.MethodSubmit)); n != sent {
		t.Errorf("%d submits sent after refusals", n-sent)
	}
}

// TestLogsLinesAndStderr: --lines asks job.logs for the last lines (offset 0),
// then reads on from where they ended; --stderr asks for the stderr stream.
func TestLogsLinesAndStderr(t *testing.T) {
	is := is.New(t)
	f := startFake(t, func(c *fakeConn, r request) {
		var p rpc.LogsParams
		json.Unmarshal(r.Params, &p)
		switch {
		case p.Lines == 3:
			c.reply(r, map[string]any{"data": "98\n99\n", "offset": 1000, "eof": false, "step": 0})
		case p.Offset == 1000:
			c.reply(r, map[string]any{"data": "100\n", "offset": 1004, "eof": true, "step": 0})
		case p.Stream == rpc.StreamStderr:
			c.reply(r, map[string]any{"data": "oops\n", "offset": 5, "eof": true, "step": 0})
		default:
			c.reply(r, map[string]any{"data": "", "offset": p.Offset, "eof": true, "step": 0})
		}
	})
	env := map[string]string{"SPOOL_SOCKET": f.socket}
	r := spool(t, env, "", "logs", "--lines", "3", "4")
	is.Equal(r.code, 0)                 // logs succeeds
	is.Equal(r.stdout, "98\n99\n100\n") // the last lines, then the rest
	reqs := f.requests(rpc.MethodLogs)
	is.Equal(len(reqs), 2)
	is.True(strings.Contains(string(reqs[0].Params), `"lines":3`))     // asks for the last 3 lines
	is.True(strings.Contains(string(reqs[0].Params), `"offset":0`))    // from offset 0
	is.True(!strings.Contains(string(reqs[0].Params), `"stream"`))     // of the merged log, said by leaving stream out
	is.True(!strings.Contains(string(reqs[1].Params), `"lines"`))      // then reads on
	is.True(strings.Contains(string(reqs[1].Params), `"offset":1000`)) // from where they ended

	r = spool(t, env, "", "logs", "-n3", "4")
	is.Equal(r.stdout, "98\n99\n100\n") // -n is --lines

	r = spool(t, env, "", "logs", "--stderr", "4", "build")
	is.Equal(r.code, 0)
	is.Equal(r.stdout, "oops\n") // stderr alone
	reqs = f.requests(rpc.MethodLogs)
	var p rpc.LogsParams
	is.NoErr(json.Unmarshal(reqs[len(reqs)-1].Params, &p))
	is.Equal(p.Stream, rpc.StreamStderr) // asks for the stderr stream
	is.Equal(p.Step.Name, "build")       // of the step named

	for _, bad := range []string{"0", "-2"} {
		r = spool(t, env, "", "logs", "--lines", bad, "4")
		is.Equal(r.code, 2)                             // a usage error
		is.True(strings.Contains(r.stderr, "--lines ")) // naming the flag
	}
}

// fakeNotifySend puts a notify-send on a PATH of its own that writes its
// arguments, a line each, to a file; it returns the PATH and the file.
func fakeNotifySend(t *testing.T) (path, out string) {
	t.Helper()
	dir := t.TempDir()
	out = filepath.Join(dir, "notified")
	script := "#!/bin/sh\nfor a in \"$@\"; do printf '%s\\n' \"$a\"; done >> '" + out + "'\n"
	if err := os.WriteFile(filepath.Join(dir, "notify-send"), []byte(script), 0o700); err != nil {
		t.Fatal(err)
	}
	return dir, out
}

// TestWaitNotify: wait --notify runs notify-send with each job's id, state,
// name and error once it is final; without notify-send it says what to install
// and waits for nothing.
func TestWaitNotify(t *testing.T) {
	is := is.New(t)
	f := startFake(t, func(c *fakeConn, r request) {
		var p rpc.WaitParams
		json.Unmarshal(r.Params, &p)
		switch p.ID {
		case 5:
			c.reply(r, jobJSON(5, "succeeded", map[string]any{"name": "nightly build"}))
		case 6:
			c.reply(r, jobJSON(6, "failed", map[string]any{"name": "deploy", "error": "step step-0: exit status 2"}))
		}
	})
	dir, out := fakeNotifySend(t)
	env := map[string]string{"SPOOL_SOCKET": f.socket, "PATH": dir}
	r := spool(t, env, "", "wait", "--notify", "5", "6")
	is.Equal(r.code, 1) // a job failed
	b, err := os.ReadFile(out)
	is.NoErr(err) // notify-send ran
	got := string(b)
	is.True(strings.Contains(got, "-u\nnormal\n-i\ndialog-information\n--\nspool: job 5 succeeded\nnightly build\n"))               // the success, with the job's name
	is.True(strings.Contains(got, "-u\ncritical\n-i\ndialog-error\n--\nspool: job 6 failed\ndeploy\nstep step-0: exit status 2\n")) // the failure, critical, with its error
	is.Equal(strings.Count(got, "spool: job"), 2)                                                                                   // once each

	waits := len(f.requests(rpc.MethodWait))
	r = spool(t, map[string]string{"SPOOL_SOCKET": f.socket, "PATH": t.TempDir()}, "", "wait", "--notify", "5")
	is.Equal(r.code, 1)                                      // refused
	is.True(strings.Contains(r.stderr, "needs notify-send")) // saying what is missing
	is.True(strings.Contains(r.stderr, "libnotify"))         // and what to install
	is.Equal(len(f.requests(rpc.MethodWait)), waits)         // before waiting for anything

	r = spool(t, map[string]string{"SPOOL_SOCKET": f.socket, "PATH": t.TempDir()}, "", "submit", "--notify", "--", "true")
	is.Equal(r.code, 1)                                      // submit --notify without notify-send is refused
	is.True(strings.Contains(r.stderr, "needs notify-send")) // saying why
	is.Equal(len(f.requests(rpc.MethodSubmit)), 0)           // before submitting anything
}

// TestCompletionKnowsTheNewFlags: the completion scripts ask spool __complete,
// which offers --delay, --at and --notify for submit, --lines and --stderr for
// logs, --notify for wait, and no files for their values.
func TestCompletionKnowsTheNewFlags(t *testing.T) {
	for _, c := range []struct {
		args []string
		want []string
	}{
		{[]string{"__complete", "submit", "--"}, []string{"--delay", "--at", "--notify"}},
		{[]string{"__complete", "run", "--"}, []string{"--delay", "--at", "--notify"}},
		{[]string{"__complete", "logs", "--"}, []string{"--lines", "--stderr", "--follow"}},
		{[]string{"__complete", "wait", "--"}, []string{"--notify", "--timeout"}},
	} {
		t.Run(strings.Join(c.args, " "), func(t *testing.T) {
			is := is.New(t)
			r := spool(t, map[string]string{"SPOOL_SOCKET": "/nonexistent/s.sock"}, "", c.args...)
			is.Equal(r.code, 0)
			for _, w := range c.want {
				is.True(strings.Contains(r.stdout, w+"\t") || strings.Contains(r.stdout, w+"\n")) // the flag is offered
			}
		})
	}
	for _, flag := range [][]string{{"submit", "--delay", ""}, {"submit", "--at", ""}, {"logs", "--lines", ""}} {
		is := is.New(t)
		r := spool(t, map[string]string{"SPOOL_SOCKET": "/nonexistent/s.sock"}, "", append([]string{"__complete"}, flag...)...)
		is.Equal(r.code, 0)
		is.True(strings.HasSuffix(strings.TrimSpace(r.stdout), ":4")) // no file completion for the value
	}
}
