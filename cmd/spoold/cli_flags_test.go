package main

import (
	"bytes"
	"errors"
	"os/exec"
	"strconv"
	"strings"
	"testing"

	"github.com/matryer/is"

	"spool/rpc"
)

// cliResult is what one run of the real spool printed and its exit code.
type cliResult struct {
	stdout, stderr string
	code           int
}

// spoolRun runs the real spool against p's socket (or none) with env added.
func spoolRun(t *testing.T, p *daemonProc, env []string, stdin string, args ...string) cliResult {
	t.Helper()
	if p != nil {
		args = append([]string{"--socket", p.socket}, args...)
	}
	b := buildBins(t)
	cmd := exec.Command(b.spool, args...)
	cmd.Env = append(cmd.Environ(), env...)
	cmd.Stdin = strings.NewReader(stdin)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	err := cmd.Run()
	code := 0
	var ee *exec.ExitError
	if errors.As(err, &ee) {
		code = ee.ExitCode()
	} else if err != nil {
		t.Fatalf("spool %v: %v", args, err)
	}
	return cliResult{stdout: stdout.String(), stderr: stderr.String(), code: code}
}

// TestCLIFlags (issue 13, item 3): GNU-style flags, errors that quote the flag as
// typed with the nearest one, durations that say their syntax, "did you mean" for
// commands, help on every command, and exit code 2 for usage errors.
func TestCLIFlags(t *testing.T) {
	p := newDaemon(t)
	c := p.client()
	ctx := tctx(t)

	t.Run("spellings", func(t *testing.T) {
		for _, args := range [][]string{{"--retry", "3"}, {"-r", "3"}, {"--retry=3"}, {"-r3"}} {
			is := is.New(t)
			r := spoolRun(t, p, nil, "", append(append([]string{"submit"}, args...), "--", "true")...)
			is.Equal(r.code, 0) // each spelling of --retry is accepted
			id, err := strconv.ParseInt(strings.TrimSpace(r.stdout), 10, 64)
			is.NoErr(err) // submit prints the id
			j, err := c.Get(ctx, rpc.GetParams{ID: id})
			is.NoErr(err)
			is.Equal(j.Spec.Steps[0].Retry.Attempts, 3) // and means 3 tries
		}
	})
	for _, tc := range []struct {
		args []string
		want []string
	}{
		{[]string{"submit", "--retries", "3", "--", "true"}, []string{"--retries", "did you mean --retry?"}},
		{[]string{"submit", "-retry", "3", "--", "true"}, []string{"-retry", "two dashes", "--retry"}},
		{[]string{"submit", "--timeout", "2", "--", "true"}, []string{"--timeout", `"2"`, "90s", "2m", "1h30m"}},
		{[]string{"wait", "--timeout", "soon", "1"}, []string{"--timeout", `"soon"`, "90s"}},
		{[]string{"sumbit", "--", "true"}, []string{`"sumbit"`, "did you mean submit?"}},
		{[]string{"help", "nosuch"}, []string{`"nosuch"`}},
		{[]string{"status", "--lmit", "3"}, []string{"--lmit", "--limit"}},
	} {
		t.Run(strings.Join(tc.args, " "), func(t *testing.T) {
			is := is.New(t)
			r := spoolRun(t, p, nil, "", tc.args...)
			is.Equal(r.code, 2)                        // a usage error is exit 2
			is.Equal(r.stdout, "")                     // with nothing on stdout
			is.Equal(strings.Count(r.stderr, "\n"), 1) // and one line on stderr
			for _, w := range tc.want {
				is.True(strings.Contains(r.stderr, w)) // naming the flag as typed, and what to do
			}
		})
	}
	t.Run("help", func(t *testing.T) {
		for _, c := range []string{"submit", "status", "show", "watch", "wait", "cancel", "logs", "retry", "rm",
			"prune", "queue", "template", "run", "info", "rpc", "completion", "version"} {
			is := is.New(t)
			r := spoolRun(t, nil, nil, "", c, "--help")
			is.Equal(r.code, 0)                               // --help on every command
			is.True(strings.Contains(r.stdout, "spool "+c))   // shows its usage
			is.True(strings.Contains(r.stdout, "Exit codes")) // and the exit codes
			r2 := spoolRun(t, nil, nil, "", "help", c)
			is.Equal(r2.stdout, r.stdout) // spool help CMD is the same page
		}
		is := is.New(t)
		r := spoolRun(t, nil, nil, "", "submit", "--help")
		is.True(strings.Contains(r.stdout, "Examples:"))     // with examples
		is.True(strings.Contains(r.stdout, "-r, --retry N")) // and the short flags
	})
}
