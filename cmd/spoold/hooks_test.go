package main

import (
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/matryer/is"

	"spool/rpc"
)

// TestE2EOnFinishKill9 stores a template notify through the CLI that appends
// "$job_id $job_state" to a file, submits failing jobs with --on-finish
// notify, and kills the daemon with SIGKILL right after each job's end (and,
// once, just before it), then checks that each job's line is in the file
// exactly once and that each job has exactly one follow-up: the follow-up is
// stored in the transaction of the final state, never lost, never doubled.
func TestE2EOnFinishKill9(t *testing.T) {
	is := is.New(t)
	p := newDaemon(t)
	dir := filepath.Join(p.state, "..")
	out := filepath.Join(dir, "notified.txt")
	tf := filepath.Join(dir, "notify.json")
	// The follow-up sleeps first, so that a kill right after the job's end
	// lands before its append, which then runs once, in the next daemon.
	is.NoErr(os.WriteFile(tf, []byte(fmt.Sprintf(`{"spec": {"name": "notify {{job_id}}", "labels": {"hook_of": "{{job_id}}"},
		"steps": [{"shell": {"script": "sleep 0.5; echo \"$SPOOL_PARAM_JOB_ID $SPOOL_PARAM_JOB_STATE\" >> %s"}}]},
		"params": {"job_id": {"required": true}, "job_state": {"required": true}}}`, out)), 0o600))
	runCLI(t, p, 0, "template", "put", "notify", tf)

	// An unknown template is refused at submit, and nothing is stored.
	runCLI(t, p, 1, "submit", "--on-finish", "nope", "--", "true")

	var ids []int64
	for i, early := range []bool{false, false, true, false} {
		id, err := strconv.ParseInt(strings.TrimSpace(runCLI(t, p, 0, "submit", "--on-finish", "notify", "--", "sh", "-c", "sleep 0.4; exit 1")), 10, 64)
		is.NoErr(err) // submit prints the id
		ids = append(ids, id)
		if early {
			time.Sleep(300 * time.Millisecond)
		} else {
			_, err := p.client().Wait(tctx(t), rpc.WaitParams{ID: id})
			is.NoErr(err) // the job ends
		}
		p.kill9()
		p.start()
		t.Logf("round %d: job %d, killed %s", i, id, map[bool]string{true: "before its end", false: "right after its end"}[early])
	}
	is.Equal(ids[0], int64(1)) // the refused submit stored nothing
	c := p.client()
	for _, id := range ids {
		j, err := c.Wait(tctx(t), rpc.WaitParams{ID: id})
		is.NoErr(err)
		is.Equal(j.State, rpc.StateFailed) // the job failed
		res, err := c.List(tctx(t), rpc.ListParams{Labels: map[string]string{"hook_of": fmt.Sprint(id)}, Limit: 10})
		is.NoErr(err)
		is.Equal(len(res.Jobs), 1) // exactly one follow-up
		f, err := c.Wait(tctx(t), rpc.WaitParams{ID: res.Jobs[0].ID})
		is.NoErr(err)
		is.Equal(f.State, rpc.StateSucceeded) // which ran
	}
	raw, err := os.ReadFile(out)
	is.NoErr(err)
	lines := strings.Split(strings.TrimSpace(string(raw)), "\n")
	is.Equal(len(lines), len(ids)) // one line per job
	for _, id := range ids {
		n := 0
		for _, l := range lines {
			if l == fmt.Sprintf("%d failed", id) {
				n++
			}
		}
		is.Equal(n, 1) // each job's line exactly once
	}

	// The queue's hook, set and shown through the CLI.
	q := runCLI(t, p, 0, "--json", "queue", "hooked", "--on-finish", "notify", "--on-finish-state", "failed")
	is.True(strings.Contains(q, `"on_finish"`)) // --json shows the hook
	q = runCLI(t, p, 0, "--json", "queue", "hooked", "--on-finish", "")
	is.True(!strings.Contains(q, `"on_finish"`)) // an empty template removes it
}
