package main

import (
	"fmt"
	"strings"
	"testing"

	"github.com/matryer/is"

	"spool/rpc"
)

// TestCLISmallThings (issue 13, item 7): the smaller rough edges, each through the
// real binary against a real daemon.
func TestCLISmallThings(t *testing.T) {
	p := newDaemon(t)
	c := p.client()
	ctx := tctx(t)

	t.Run("info on a fresh daemon", func(t *testing.T) {
		is := is.New(t)
		r := spoolRun(t, p, nil, "", "info")
		is.Equal(r.code, 0)                                // info works
		is.True(!strings.Contains(r.stdout, "seq 1 to 0")) // no empty range
		is.True(strings.Contains(r.stdout, "none yet"))    // it says there are no events yet
	})

	spec := rpc.Spec{Steps: []rpc.Step{
		{Name: "first", Shell: &rpc.ShellStep{Script: "echo one"}},
		{Name: "second", Shell: &rpc.ShellStep{Script: "echo two"}},
	}}
	res, err := c.Submit(ctx, rpc.SubmitParams{Jobs: []rpc.Spec{spec, spec}})
	if err != nil {
		t.Fatal(err)
	}
	a, b := res.Jobs[0].ID, res.Jobs[1].ID
	for _, id := range []int64{a, b} {
		if _, err := c.Wait(ctx, rpc.WaitParams{ID: id}); err != nil {
			t.Fatal(err)
		}
	}

	t.Run("status with missing ids", func(t *testing.T) {
		is := is.New(t)
		r := spoolRun(t, p, nil, "", "status", fmt.Sprint(a), fmt.Sprint(b), "998", "999")
		is.Equal(r.code, 1)                                                // a missing id is exit 1
		is.Equal(len(strings.Split(strings.TrimSpace(r.stdout), "\n")), 3) // the header and the two found
		is.Equal(r.stderr, "spool: jobs 998, 999 not found\n")             // and the missing ones named
	})
	t.Run("logs -f across steps", func(t *testing.T) {
		is := is.New(t)
		r := spoolRun(t, p, nil, "", "logs", "-f", fmt.Sprint(a))
		is.Equal(r.code, 0)                                                    // the job is over: logs -f ends
		is.True(strings.Contains(r.stdout, "==> step 1/2: first <==\none\n"))  // each step under a header
		is.True(strings.Contains(r.stdout, "==> step 2/2: second <==\ntwo\n")) // the second too
	})
	t.Run("cancel wording", func(t *testing.T) {
		is := is.New(t)
		r := spoolRun(t, p, nil, "", "cancel", fmt.Sprint(a))
		is.Equal(r.code, 1)                                                     // a final job cannot be cancelled
		is.True(strings.Contains(r.stderr, fmt.Sprintf("job %d succeeded", a))) // in plain words
		is.True(!strings.Contains(r.stderr, " is succeeded"))                   // not "is succeeded"

		long, err := c.Submit(ctx, rpc.SubmitParams{Job: &rpc.Spec{Steps: []rpc.Step{sh("sleep 60")}}})
		is.NoErr(err)
		r = spoolRun(t, p, nil, "", "cancel", fmt.Sprint(long.Job.ID))
		is.Equal(r.code, 0)                                            // cancelled
		is.Equal(r.stdout, fmt.Sprintf("%d cancelled\n", long.Job.ID)) // said once, not "cancelled: cancelled"
	})
	t.Run("rm of a removed job", func(t *testing.T) {
		is := is.New(t)
		r := spoolRun(t, p, nil, "", "rm", fmt.Sprint(b))
		is.Equal(r.code, 0)               // removed
		is.Equal(r.stdout, "removed 1\n") // and said
		r = spoolRun(t, p, nil, "", "rm", fmt.Sprint(b))
		is.Equal(r.code, 1)                                              // again: exit 1
		is.True(strings.Contains(r.stderr, fmt.Sprintf("no job %d", b))) // saying so
	})
	t.Run("status --limit 1", func(t *testing.T) {
		is := is.New(t)
		r := spoolRun(t, p, nil, "", "status", "--limit", "1")
		is.Equal(r.code, 0)                                   // works
		is.True(!strings.Contains(r.stderr, "newest 1 jobs")) // no "the newest 1 jobs"
	})
	t.Run("stale socket", func(t *testing.T) {
		is := is.New(t)
		p.kill9() // the socket file stays behind
		r := spoolRun(t, p, nil, "", "status")
		is.Equal(r.code, 2)                                       // not running is exit 2
		is.True(strings.Contains(r.stderr, "not running"))        // said
		is.True(strings.Contains(r.stderr, "stale"))              // with the socket left behind
		is.True(strings.Contains(r.stderr, "--socket "+p.socket)) // and a start hint with the socket given
		is.Equal(strings.Count(r.stderr, "\n"), 1)                // in one line
	})
}
