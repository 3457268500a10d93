package daemon_test

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/matryer/is"

	"spool/daemon"
	"spool/rpc"
)

// TestStderrKeptApart: a step's stdout and stderr go, merged, to its log as
// before, and its stderr alone to a second log that job.logs reads with
// stream "stderr"; output_tail stays the merged one; each attempt's marker
// heads what it wrote on stderr; a step that writes nothing on stderr makes no
// second file.
func TestStderrKeptApart(t *testing.T) {
	is := is.New(t)
	h := start(t, t.TempDir(), nil)
	script := `echo out1; echo err1 >&2; echo out2; echo err2 >&2; [ "$(cat "$SPOOL_RESULTS_DIR/../tries" 2>/dev/null)" = 1 ] || { echo 1 > "$SPOOL_RESULTS_DIR/../tries"; exit 3; }`
	dir := t.TempDir()
	script = strings.ReplaceAll(script, `$SPOOL_RESULTS_DIR/..`, dir)
	j := wait(t, h.d, submit(t, h.d, rpc.Spec{Steps: []rpc.Step{
		{Shell: &rpc.ShellStep{Script: script}, Retry: &rpc.Retry{Attempts: 2, Backoff: dur(1)}},
		{Shell: &rpc.ShellStep{Script: "echo quiet"}},
	}}).ID)
	is.Equal(j.State, rpc.StateSucceeded) // the job ran, its first step twice

	all, err := h.d.Logs(ctxT(t), rpc.LogsParams{ID: j.ID, Step: rpc.StepRef{Name: "step-0"}})
	is.NoErr(err)
	for _, s := range []string{"out1", "err1", "out2", "err2", "[spool: attempt 2]"} {
		is.Equal(strings.Count(all.Data, s), strings.Count("out1 err1 out2 err2 [spool: attempt 2] out1 err1 out2 err2", s)) // the merged log holds both, as before
	}
	errs, err := h.d.Logs(ctxT(t), rpc.LogsParams{ID: j.ID, Step: rpc.StepRef{Name: "step-0"}, Stream: rpc.StreamStderr})
	is.NoErr(err)
	is.Equal(errs.Data, "err1\nerr2\n[spool: attempt 2]\nerr1\nerr2\n") // stderr alone, attempts told apart
	is.True(errs.EOF)                                                   // read to its end
	is.Equal(*j.Steps[0].OutputTail, all.Data)                          // output_tail is the merged log's

	quiet, err := h.d.Logs(ctxT(t), rpc.LogsParams{ID: j.ID, Step: rpc.StepRef{Name: "step-1"}, Stream: rpc.StreamStderr})
	is.NoErr(err)
	is.Equal(quiet.Data, "") // nothing on stderr reads empty
	is.True(quiet.EOF)
	_, err = os.Stat(filepath.Join(h.dir, "logs", itoa(j.ID), "1.stderr.log"))
	is.True(os.IsNotExist(err)) // and made no file
}

// TestStderrLogOff: with NoStderrLog (spoold --stderr-log=false) no stderr log
// is made, and job.logs with stream "stderr" says why it has nothing.
func TestStderrLogOff(t *testing.T) {
	is := is.New(t)
	h := start(t, t.TempDir(), func(c *daemon.Config) { c.NoStderrLog = true })
	j := wait(t, h.d, submit(t, h.d, rpc.Spec{Steps: []rpc.Step{{Shell: &rpc.ShellStep{Script: "echo out; echo err >&2"}}}}).ID)
	is.Equal(j.State, rpc.StateSucceeded)
	all, err := h.d.Logs(ctxT(t), rpc.LogsParams{ID: j.ID})
	is.NoErr(err)
	is.True(strings.Contains(all.Data, "err")) // the merged log as ever
	_, err = h.d.Logs(ctxT(t), rpc.LogsParams{ID: j.ID, Stream: rpc.StreamStderr})
	is.Equal(errData(err).Field, "stream") // refused, naming the field
	entries, err := os.ReadDir(filepath.Join(h.dir, "logs", itoa(j.ID)))
	is.NoErr(err)
	is.Equal(len(entries), 1) // one log file
}

// TestLogsLines: job.logs with lines reads from the start of the last lines of
// a log of many MiB, of either stream, and says where to read next.
func TestLogsLines(t *testing.T) {
	is := is.New(t)
	h := start(t, t.TempDir(), nil)
	// 200,000 lines of 60 bytes: about 12 MiB.
	// Stderr first, then stdout: the merged log ends with stdout's lines.
	script := `echo warn 1 >&2; echo warn 2 >&2; sleep 0.2; awk 'BEGIN { for (i = 1; i <= 200000; i++) printf "line %06d %s\n", i, "0123456789012345678901234567890123456789012345" }'`
	j := wait(t, h.d, submit(t, h.d, rpc.Spec{Steps: []rpc.Step{{Shell: &rpc.ShellStep{Script: script}}}}).ID)
	is.Equal(j.State, rpc.StateSucceeded)
	fi, err := os.Stat(filepath.Join(h.dir, "logs", itoa(j.ID), "0.log"))
	is.NoErr(err)
	is.True(fi.Size() > 10<<20) // a log of many MiB

	res, err := h.d.Logs(ctxT(t), rpc.LogsParams{ID: j.ID, Lines: 3})
	is.NoErr(err)
	want := ""
	for i := 199998; i <= 200000; i++ {
		want += fmt.Sprintf("line %06d %s\n", i, "0123456789012345678901234567890123456789012345")
	}
	is.Equal(res.Data, want)        // the last 3 lines
	is.Equal(res.Offset, fi.Size()) // and where to read next: the end
	is.True(res.EOF)

	errs, err := h.d.Logs(ctxT(t), rpc.LogsParams{ID: j.ID, Lines: 1, Stream: rpc.StreamStderr})
	is.NoErr(err)
	is.Equal(errs.Data, "warn 2\n") // the last line of stderr

	big, err := h.d.Logs(ctxT(t), rpc.LogsParams{ID: j.ID, Lines: 100000, Limit: 1000})
	is.NoErr(err)
	is.Equal(len(big.Data), 1000)                        // the limit holds
	is.True(strings.HasPrefix(big.Data, "line 100001 ")) // from the start of the last 100,000 lines
	is.True(!big.EOF)                                    // more to read from offset
}
