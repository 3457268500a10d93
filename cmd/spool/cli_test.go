package main

import (
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/matryer/is"

	"spool/rpc"
)

func TestNotRunning(t *testing.T) {
	dir, err := os.MkdirTemp("", "sp")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	socket := filepath.Join(dir, "none.sock")
	// With --socket, the hint passes it on; the tests run outside a checkout's root.
	want := "spool: the daemon is not running (no socket at " + socket + "); start it with: spoold --socket " + socket + "\n"
	wantEnv := "spool: the daemon is not running (no socket at " + socket + "); start it with: spoold  (or: systemctl --user start spoold)\n"

	for _, args := range [][]string{
		{"status"}, {"show", "1"}, {"wait", "1"}, {"watch"}, {"logs", "-f", "1"}, {"cancel", "1"},
		{"submit", "--", "true"}, {"info"}, {"rpc"}, {"queue"}, {"template", "list"}, {"run", "t"},
		{"retry", "1"}, {"rm", "1"}, {"prune"}, {"--json", "status"},
	} {
		t.Run(strings.Join(args, " "), func(t *testing.T) {
			is := is.New(t)
			r := spool(t, map[string]string{}, "", append([]string{"--socket", socket}, args...)...)
			is.Equal(r.code, 2)      // not running is exit code 2
			is.Equal(r.stderr, want) // one line that says so and how to start it
			is.Equal(r.stdout, "")   // and nothing else
		})
	}

	t.Run("SPOOL_SOCKET", func(t *testing.T) {
		is := is.New(t)
		r := spool(t, map[string]string{"SPOOL_SOCKET": socket}, "", "status")
		is.Equal(r.code, 2)         // the socket from the environment is used
		is.Equal(r.stderr, wantEnv) // and named
	})
	t.Run("version", func(t *testing.T) {
		is := is.New(t)
		r := spool(t, nil, "", "--socket", socket, "version")
		is.Equal(r.code, 0)                                // version works without the daemon
		is.True(strings.HasPrefix(r.stdout, "spool "))     // and names the client
		is.True(strings.Contains(r.stdout, "not running")) // and says the daemon is not running
	})
}

func TestUsage(t *testing.T) {
	cases := []struct {
		args []string
		code int
	}{
		{nil, 2},
		{[]string{"help"}, 0},
		{[]string{"-h"}, 0},
		{[]string{"status", "-h"}, 0},
		{[]string{"help", "submit"}, 0},
		{[]string{"frobnicate"}, 2},
		{[]string{"status", "--bogus"}, 2},
		{[]string{"status", "x"}, 2},
		{[]string{"show"}, 2},
		{[]string{"submit"}, 2},
		{[]string{"wait", "--timeout", "soon", "1"}, 2},
		{[]string{"completion", "tcsh"}, 2},
		{[]string{"queue", "q", "--pause", "--resume"}, 2},
		{[]string{"prune", "--state", "running"}, 2},
	}
	for _, c := range cases {
		t.Run(strings.Join(c.args, " "), func(t *testing.T) {
			is := is.New(t)
			r := spool(t, map[string]string{"SPOOL_SOCKET": "/nonexistent/s.sock"}, "", c.args...)
			is.Equal(r.code, c.code) // the exit code of a usage error is 2, help is 0
			if c.code == 0 {
				is.True(strings.Contains(r.stdout, "Exit codes")) // help documents the exit codes
			} else {
				is.True(strings.HasPrefix(r.stderr, "spool: ") || strings.HasPrefix(r.stderr, "spool: the command line")) // says what is wrong
			}
		})
	}
}

func TestSubmitAndErrors(t *testing.T) {
	is := is.New(t)
	f := startFake(t, func(c *fakeConn, r request) {
		switch r.Method {
		case rpc.MethodSubmit:
			c.reply(r, jobJSON(7, "queued", nil))
		case rpc.MethodGet:
			c.fail(r, rpc.NotFound(9))
		case rpc.MethodRetry:
			c.fail(r, rpc.InvalidParams("id", "must be positive"))
		}
	})
	env := map[string]string{"SPOOL_SOCKET": f.socket}

	r := spool(t, env, "", "submit", "--name", "greet", "--", "echo", "hi")
	is.Equal(r.code, 0)       // submit succeeds
	is.Equal(r.stdout, "7\n") // and prints the id alone
	reqs := f.requests(rpc.MethodSubmit)
	is.Equal(len(reqs), 1) // one job.submit was sent
	var p struct {
		Job map[string]json.RawMessage `json:"job"`
	}
	is.NoErr(json.Unmarshal(reqs[0].Params, &p))                       // its params are {"job": spec}
	is.Equal(string(p.Job["name"]), `"greet"`)                         // with the name
	is.True(strings.Contains(string(p.Job["steps"]), `["echo","hi"]`)) // and the command as argv

	r = spool(t, env, "", "--json", "submit", "--", "true")
	is.Equal(r.code, 0) // submit --json succeeds
	var j rpc.Job
	is.NoErr(json.Unmarshal([]byte(r.stdout), &j)) // and prints the job as JSON
	is.Equal(j.ID, int64(7))                       // the submitted job

	r = spool(t, env, "", "show", "9")
	is.Equal(r.code, 1)                            // a protocol error is exit 1
	is.Equal(r.stderr, "spool: job 9 not found\n") // with the daemon's message

	r = spool(t, env, "", "retry", "3")
	is.Equal(r.code, 1)                                                 // -32602 is exit 1
	is.Equal(r.stderr, "spool: invalid params: id: must be positive\n") // naming the field
}

func TestStatusTable(t *testing.T) {
	is := is.New(t)
	long := strings.Repeat("word ", 30)
	f := startFake(t, func(c *fakeConn, r request) {
		switch r.Method {
		case rpc.MethodList:
			c.reply(r, map[string]any{"jobs": []any{
				jobJSON(2, "running", map[string]any{"started_at": "2026-11-30T10:00:01Z"}),
				jobJSON(1, "succeeded", map[string]any{"name": "nightly " + long,
					"started_at": "2026-11-30T10:00:00Z", "finished_at": "2026-11-30T10:02:10Z"}),
			}, "next_cursor": nil, "unknown": 1})
		case rpc.MethodGet: // the unnamed job's command
			c.reply(r, jobJSON(2, "running", map[string]any{"spec": map[string]any{
				"steps": []any{map[string]any{"exec": map[string]any{"argv": []string{"make", "all", "it's"}}}}}}))
		}
	})
	r := spool(t, map[string]string{"SPOOL_SOCKET": f.socket, "COLUMNS": "70"}, "", "status", "--state", "running,succeeded")
	is.Equal(r.code, 0) // status succeeds
	lines := strings.Split(strings.TrimRight(r.stdout, "\n"), "\n")
	is.Equal(len(lines), 3) // a header and two jobs
	for _, l := range lines {
		is.True(len([]rune(l)) <= 70) // every line fits the width
	}
	is.True(strings.HasPrefix(lines[0], "ID"))                // the header
	is.True(strings.Contains(lines[0], "NAME/COMMAND"))       // names the columns
	is.True(strings.HasPrefix(lines[1], "1 "))                // the oldest first
	is.True(strings.Contains(lines[1], "…"))                  // a long name is cut
	is.True(strings.Contains(lines[1], "2m10s"))              // with its duration
	is.True(strings.Contains(lines[2], `make all 'it'\''s'`)) // an unnamed job shows its command
	is.True(!strings.Contains(r.stdout, "\x1b["))             // no colour when not a terminal

	var p rpc.ListParams
	is.NoErr(json.Unmarshal(f.requests(rpc.MethodList)[0].Params, &p))   // list params decode
	is.Equal(p.State, []rpc.State{rpc.StateRunning, rpc.StateSucceeded}) // --state is passed on
}

func TestWaitExitCodes(t *testing.T) {
	is := is.New(t)
	f := startFake(t, func(c *fakeConn, r request) {
		var p rpc.WaitParams
		json.Unmarshal(r.Params, &p)
		state := map[int64]string{1: "succeeded", 2: "failed"}[p.ID]
		c.reply(r, jobJSON(p.ID, state, map[string]any{"error": map[bool]string{true: "exit status 3"}[state == "failed"]}))
	})
	env := map[string]string{"SPOOL_SOCKET": f.socket}
	r := spool(t, env, "", "wait", "1")
	is.Equal(r.code, 0)                 // a job that succeeded: exit 0
	is.Equal(r.stdout, "1 succeeded\n") // and says so
	r = spool(t, env, "", "wait", "1", "2")
	is.Equal(r.code, 1)                                          // one failed: exit 1
	is.Equal(r.stdout, "1 succeeded\n2 failed: exit status 3\n") // each job's outcome
	r = spool(t, env, "", "wait", "--json", "1", "2")
	var out struct{ Jobs []rpc.Job }
	is.NoErr(json.Unmarshal([]byte(r.stdout), &out)) // --json prints {"jobs": [...]}
	is.Equal(len(out.Jobs), 2)                       // with both jobs
}

func TestWatchUntilDone(t *testing.T) {
	is := is.New(t)
	f := startFake(t, func(c *fakeConn, r request) {
		switch r.Method {
		case rpc.MethodWatch:
			var p rpc.WatchParams
			json.Unmarshal(r.Params, &p)
			c.reply(r, map[string]any{"token": p.Token, "seq": 10, "store_id": "s"})
			step := 0
			c.event(p.Token, map[string]any{"seq": 11, "time": "2026-11-30T10:00:00Z", "job": 5, "type": "step_started", "step": step, "step_name": "build", "attempt": 1})
			c.event(p.Token, map[string]any{"time": "2026-11-30T10:00:01Z", "job": 5, "type": "progress", "progress": map[string]any{"percent": 50}})
			c.event(p.Token, map[string]any{"seq": 12, "time": "2026-11-30T10:00:02Z", "job": 5, "type": "step_finished", "step": step, "step_name": "build", "state": "failed", "exit_code": 2, "error": "exit status 2"})
			c.event(p.Token, map[string]any{"seq": 13, "time": "2026-11-30T10:00:02Z", "job": 5, "type": "brand_new_type"})
			c.event(p.Token, map[string]any{"seq": 14, "time": "2026-11-30T10:00:02Z", "job": 5, "type": "failed", "error": "step build failed"})
			c.event(p.Token, map[string]any{"time": "2026-11-30T10:00:02Z", "type": "done"})
		case rpc.MethodUnwatch:
			c.reply(r, map[string]any{})
		case rpc.MethodGet:
			c.reply(r, jobJSON(5, "queued", nil))
		}
	})
	r := spool(t, map[string]string{"SPOOL_SOCKET": f.socket}, "", "watch", "5")
	is.Equal(r.code, 1) // the job failed: exit 1
	lines := strings.Split(strings.TrimRight(r.stdout, "\n"), "\n")
	is.Equal(len(lines), 5)                                  // where the job is, then one line per stored event, no progress off a terminal
	is.True(strings.Contains(lines[0], "status"))            // first where the job is
	is.True(strings.Contains(lines[0], "queued"))            // its state
	is.True(strings.Contains(lines[1], "step_started"))      // the type
	is.True(strings.Contains(lines[1], "build"))             // the step
	is.True(strings.Contains(lines[2], "exit 2"))            // the exit code
	is.True(strings.Contains(lines[4], "step build failed")) // the error

	r = spool(t, map[string]string{"SPOOL_SOCKET": f.socket}, "", "watch", "--json", "5")
	is.Equal(r.code, 1) // the same with --json
	lines = strings.Split(strings.TrimRight(r.stdout, "\n"), "\n")
	is.Equal(len(lines), 6) // one JSON event per line, all of them
	for _, l := range lines {
		var ev rpc.Event
		is.NoErr(json.Unmarshal([]byte(l), &ev)) // each line is an event
	}
}

func TestLogsFollowFillsGaps(t *testing.T) {
	is := is.New(t)
	var token string
	sent := false
	f := startFake(t, func(c *fakeConn, r request) {
		switch r.Method {
		case rpc.MethodWatch:
			var p rpc.WatchParams
			json.Unmarshal(r.Params, &p)
			token = p.Token
			c.reply(r, map[string]any{"token": p.Token, "seq": 1, "store_id": "s"})
		case rpc.MethodGet:
			c.reply(r, jobJSON(4, "running", nil))
		case rpc.MethodLogs:
			var p rpc.LogsParams
			json.Unmarshal(r.Params, &p)
			switch {
			case p.Offset == 0:
				c.reply(r, map[string]any{"data": "hello ", "offset": 6, "eof": false, "step": 0})
			case p.Offset == 6 && p.Limit == 4: // the gap before a live chunk
				c.reply(r, map[string]any{"data": "big ", "offset": 10, "eof": false, "step": 0})
			case p.Offset == 6:
				c.reply(r, map[string]any{"data": "", "offset": 6, "eof": false, "step": 0})
				if !sent {
					sent = true
					c.event(token, map[string]any{"job": 4, "type": "output", "step": 0, "offset": 10, "data": "world\n"})
					c.event(token, map[string]any{"job": 4, "type": "output", "step": 0, "offset": 13, "data": "ld\n"}) // seen already
					c.event(token, map[string]any{"seq": 2, "job": 4, "type": "step_finished", "step": 0, "state": "succeeded"})
				}
			default:
				c.reply(r, map[string]any{"data": "", "offset": p.Offset, "eof": true, "step": 0})
			}
		case rpc.MethodUnwatch:
			c.reply(r, map[string]any{})
		}
	})
	r := spool(t, map[string]string{"SPOOL_SOCKET": f.socket}, "", "logs", "-f", "4")
	is.Equal(r.stderr, "")                  // no error
	is.Equal(r.code, 0)                     // logs -f ends with the step
	is.Equal(r.stdout, "hello big world\n") // the log in order, nothing missing, nothing twice
	w := f.requests(rpc.MethodWatch)
	is.Equal(len(w), 1) // one watch
	var wp rpc.WatchParams
	is.NoErr(json.Unmarshal(w[0].Params, &wp)) // its params
	is.True(wp.Output)                         // asks for output
	is.Equal(wp.Jobs, []int64{4})              // of the job
}

func TestLogsPrintsUntilEOF(t *testing.T) {
	is := is.New(t)
	f := startFake(t, func(c *fakeConn, r request) {
		var p rpc.LogsParams
		json.Unmarshal(r.Params, &p)
		switch p.Offset {
		case 0:
			c.reply(r, map[string]any{"data": "one\n", "offset": 4, "eof": false, "step": 1})
		default:
			c.reply(r, map[string]any{"data": "two\n", "offset": 8, "eof": true, "step": 1})
		}
	})
	r := spool(t, map[string]string{"SPOOL_SOCKET": f.socket}, "", "logs", "3", "build")
	is.Equal(r.code, 0)              // logs succeeds
	is.Equal(r.stdout, "one\ntwo\n") // all chunks until eof
	reqs := f.requests(rpc.MethodLogs)
	var first, second rpc.LogsParams
	is.NoErr(json.Unmarshal(reqs[0].Params, &first))  // params decode
	is.NoErr(json.Unmarshal(reqs[1].Params, &second)) // params decode
	is.Equal(first.Step.Name, "build")                // the step named
	is.Equal(*second.Step.Index, 1)                   // then pinned to the step the daemon answered for
	is.Equal(second.Offset, int64(4))                 // from where the first chunk ended
}

func TestRPCRelay(t *testing.T) {
	is := is.New(t)
	f := startFake(t, func(c *fakeConn, r request) {
		c.conn.Write([]byte(`{"jsonrpc":"2.0","id":` + string(mustJSON(*r.ID)) + `,"result":{"x":"é\u00e9"}}` + "\n"))
	})
	in := `{"jsonrpc":"2.0","id":1,"method":"daemon.info","params":{}}` + "\n" +
		`{"jsonrpc":"2.0","id":2,"method":"queue.list","params":{}}` + "\n"
	r := spool(t, map[string]string{"SPOOL_SOCKET": f.socket}, in, "rpc")
	is.Equal(r.code, 0) // the relay ends when the daemon closes
	is.Equal(r.stdout, `{"jsonrpc":"2.0","id":1,"result":{"x":"é\u00e9"}}`+"\n"+
		`{"jsonrpc":"2.0","id":2,"result":{"x":"é\u00e9"}}`+"\n") // byte for byte
	is.Equal(len(f.requests("daemon.info")), 1) // the input reached the daemon
}

func mustJSON(v any) []byte {
	b, _ := json.Marshal(v)
	return b
}
