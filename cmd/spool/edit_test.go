package main

import (
	"encoding/json"
	"strings"
	"testing"

	"github.com/matryer/is"

	"spool/rpc"
)

func TestEditHoldRelease(t *testing.T) {
	is := is.New(t)
	f := startFake(t, func(c *fakeConn, r request) {
		switch r.Method {
		case rpc.MethodEdit:
			var p map[string]json.RawMessage
			json.Unmarshal(r.Params, &p)
			if string(p["after"]) == "[99]" {
				c.fail(r, rpc.InvalidParams("after[0]", "job 99 not found"))
				return
			}
			c.reply(r, jobJSON(7, "queued", map[string]any{"priority": 5}))
		case rpc.MethodHold:
			c.reply(r, jobJSON(7, "queued", map[string]any{"waiting": "held"}))
		case rpc.MethodRelease:
			var p rpc.HoldParams
			json.Unmarshal(r.Params, &p)
			if p.ID == 8 {
				c.fail(r, rpc.BadState(8, rpc.StateRunning, "only a queued job can be released"))
				return
			}
			c.reply(r, jobJSON(p.ID, "queued", nil))
		}
	})
	env := map[string]string{"SPOOL_SOCKET": f.socket}

	r := spool(t, env, "", "edit", "7", "--priority", "5", "--label", "team=web", "--label", "old-", "--not-before", "none", "--after", "none")
	is.Equal(r.code, 0)                               // edit succeeds
	is.True(strings.HasPrefix(r.stdout, "7 queued"))  // and says where the job is
	is.True(strings.Contains(r.stdout, "priority 5")) // with its priority
	reqs := f.requests(rpc.MethodEdit)
	is.Equal(len(reqs), 1)
	is.Equal(string(reqs[0].Params), `{"id":7,"priority":5,"labels":{"old":null,"team":"web"},"not_before":null,"after":[]}`) // null clears, k- removes

	r = spool(t, env, "", "edit", "7", "--delay", "10m")
	is.Equal(r.code, 0) // --delay is a not_before
	var p rpc.EditParams
	is.NoErr(json.Unmarshal(f.requests(rpc.MethodEdit)[1].Params, &p))
	is.True(p.NotBefore.Time != nil) // set from now

	for _, c := range []struct {
		args []string
		want string
	}{
		{[]string{"edit", "7"}, "nothing to change"},
		{[]string{"edit", "7", "--priority", "high"}, "--priority"},
		{[]string{"edit", "7", "--label", "nolabel"}, "--label"},
		{[]string{"edit", "7", "--not-before", "soon"}, "--not-before"},
		{[]string{"edit", "7", "--after", "x"}, "--after"},
		{[]string{"edit", "7", "--queue", "Bad Q"}, "--queue"},
		{[]string{"edit", "7", "--delay", "1m", "--not-before", "14:30"}, "--delay"},
		{[]string{"edit", "7", "8", "--priority", "1"}, "one job id"},
		{[]string{"hold"}, "at least one job id"},
	} {
		r := spool(t, env, "", c.args...)
		is.Equal(r.code, 2)                         // a wrong command line is exit 2
		is.True(strings.Contains(r.stderr, c.want)) // naming the flag
	}
	r = spool(t, env, "", "edit", "7", "--after", "99")
	is.Equal(r.code, 1)                                     // the daemon's refusal is exit 1
	is.True(strings.Contains(r.stderr, "--after"))          // naming the flag
	is.True(strings.Contains(r.stderr, "job 99 not found")) // and why

	r = spool(t, env, "", "hold", "7")
	is.Equal(r.code, 0)
	is.Equal(r.stdout, "7 queued (held)  queue default  priority 0\n") // held

	r = spool(t, env, "", "--json", "release", "7", "8")
	is.Equal(r.code, 1)                                                                // one of two failed
	is.Equal(r.stderr, "spool: job 8 is running: only a queued job can be released\n") // named
	var out struct{ Jobs []rpc.Job }
	is.NoErr(json.Unmarshal([]byte(r.stdout), &out)) // the other printed as JSON
	is.Equal(len(out.Jobs), 1)
}

func TestEditCompletions(t *testing.T) {
	is := is.New(t)
	env := map[string]string{"SPOOL_SOCKET": "/nonexistent/spool.sock"}
	r := spool(t, env, "", "__complete", "")
	for _, c := range []string{"edit\t", "hold\t", "release\t"} {
		is.True(strings.Contains(r.stdout, c)) // the commands are completed
	}
	r = spool(t, env, "", "__complete", "edit", "7", "--")
	for _, f := range []string{"--priority", "--queue", "--label", "--not-before", "--delay", "--after"} {
		is.True(strings.Contains(r.stdout, f+"\t")) // and edit's flags
	}
	r = spool(t, env, "", "edit", "--help")
	is.Equal(r.code, 0)                                               // help
	is.True(strings.Contains(r.stdout, "spool edit 7 --priority 10")) // with examples
}
