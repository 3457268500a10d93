package main

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/matryer/is"

	"spool/rpc"
)

// TestCLIWatchAllTitleOfEarlierJob (issue 13, item 1, found walking through the
// README): `spool watch` with no ids names a job without a name that was
// already running when it began by its command on its live line, as it does the
// jobs submitted later, not by its first step's name and kind ("step-0 (exec)").
func TestCLIWatchAllTitleOfEarlierJob(t *testing.T) {
	is := is.New(t)
	p := newDaemon(t)
	c := p.client()
	ctx := tctx(t)
	dir := shortDir(t)
	gate := filepath.Join(dir, "gate")
	t.Cleanup(func() { _ = os.WriteFile(gate, nil, 0o600) })

	script := `while [ ! -e ` + gate + ` ]; do echo "3/10 compiling" >&$SPOOL_PROGRESS_FD; sleep 0.2; done`
	res, err := c.Submit(ctx, rpc.SubmitParams{Job: &rpc.Spec{Steps: []rpc.Step{{Exec: &rpc.ExecStep{Argv: []string{"sh", "-c", script}}}}}})
	is.NoErr(err)
	waitRunning(t, c, res.Job.ID)

	scr := newScreen(t, dir, p.bins.spool+" --socket "+p.socket+" watch; sleep 600")
	rows := scr.waitFor("the earlier job's live line", func(rows []string) bool { return countRows(rows, "30% compiling") == 1 })
	for _, r := range rows {
		if strings.Contains(r, "30% compiling") {
			is.True(strings.Contains(r, "sh -c"))          // the live line names the job by its command
			is.True(!strings.Contains(r, "step-0 (exec)")) // not by its step's name and kind
		}
	}
}
