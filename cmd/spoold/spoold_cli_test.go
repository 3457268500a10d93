package main

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/matryer/is"

	"spool/rpc"
)

// spooldRun runs the real spoold with args and env added, and returns what it
// printed and its exit code. It is for runs that end by themselves.
func spooldRun(t *testing.T, env []string, args ...string) cliResult {
	t.Helper()
	b := buildBins(t)
	cmd := exec.Command(b.spoold, args...)
	cmd.Env = append(cmd.Environ(), env...)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	err := cmd.Run()
	code := 0
	var ee *exec.ExitError
	if errors.As(err, &ee) {
		code = ee.ExitCode()
	} else if err != nil {
		t.Fatalf("spoold %v: %v", args, err)
	}
	return cliResult{stdout: stdout.String(), stderr: stderr.String(), code: code}
}

// TestSpooldVersion (issue 13, item 7): `spoold --version`, `spoold version`,
// `spool version` and daemon.info tell the same version of binaries built from
// the same tree.
func TestSpooldVersion(t *testing.T) {
	is := is.New(t)
	flag := spooldRun(t, nil, "--version")
	is.Equal(flag.code, 0)    // --version is not an error
	is.Equal(flag.stderr, "") // and says nothing else
	cmd := spooldRun(t, nil, "version")
	is.Equal(cmd.code, 0)             // version is a command too
	is.Equal(cmd.stdout, flag.stdout) // printing the same

	rest, ok := strings.CutPrefix(flag.stdout, "spoold ")
	is.True(ok) // "spoold VERSION (protocol N)"
	v, ok := strings.CutSuffix(rest, fmt.Sprintf(" (protocol %d)\n", rpc.ProtocolVersion))
	is.True(ok)                         // with the protocol, as spool version prints it
	is.True(v != "")                    // a version
	is.True(v != "dev")                 // from the build information, not a default
	is.True(!strings.Contains(v, "\n")) // on one line

	p := newDaemon(t)
	r := spoolRun(t, p, nil, "", "version")
	is.Equal(r.code, 0)                              // spool version with a daemon
	is.Equal(r.stdout, "spool "+rest+"spoold "+rest) // both programs print the same version
	info, err := p.client().Info(tctx(t))
	is.NoErr(err)
	is.Equal(info.Version, v) // and daemon.info says it too

	bad := spooldRun(t, nil, "version", "now")
	is.Equal(bad.code, 2)                          // version takes no arguments
	is.Equal(strings.Count(bad.stderr, "\n"), 1)   // one line
	is.True(strings.Contains(bad.stderr, `"now"`)) // naming the extra argument
}

// TestSpooldErrorsOnce (issue 13, item 7): a start-up error is printed once, as
// the last line, and a flag error is one line that quotes the flag as typed.
func TestSpooldErrorsOnce(t *testing.T) {
	p := newDaemon(t)
	dir := shortDir(t)
	second := []string{"--state-dir", p.state, "--socket", filepath.Join(dir, "other.sock")}

	t.Run("state folder in use", func(t *testing.T) {
		is := is.New(t)
		r := spooldRun(t, nil, second...)
		is.Equal(r.code, 1)                                    // the second daemon does not start
		is.Equal(strings.Count(r.stderr, "another spoold"), 1) // and says why once
		lines := strings.Split(strings.TrimSuffix(r.stderr, "\n"), "\n")
		last := lines[len(lines)-1]
		is.True(strings.HasPrefix(last, "spoold: another spoold (pid ")) // as its last line, plainly
		pid, err := os.ReadFile(filepath.Join(p.state, "spoold.pid"))
		is.NoErr(err)
		is.True(strings.Contains(last, "(pid "+strings.TrimSpace(string(pid))+")")) // naming the running one
		is.True(strings.Contains(last, p.state))                                    // and the folder
	})
	t.Run("under journald", func(t *testing.T) {
		is := is.New(t)
		r := spooldRun(t, []string{"JOURNAL_STREAM=8:12345"}, second...)
		is.Equal(r.code, 1)                                              // does not start
		is.Equal(strings.Count(r.stderr, "another spoold"), 1)           // said once
		is.True(strings.Contains(r.stderr, "<3>spoold: another spoold")) // with the journal's error priority
	})
	for _, tc := range []struct {
		args  []string
		quote string
	}{
		{[]string{"--nope"}, "--nope"},
		{[]string{"--nope=3"}, "--nope"},
		{[]string{"-nope"}, "-nope"},
		{[]string{"--max-parallel", "0"}, "--max-parallel"},
		{[]string{"--socket", "x", "extra"}, `"extra"`},
	} {
		t.Run(strings.Join(tc.args, " "), func(t *testing.T) {
			is := is.New(t)
			r := spooldRun(t, nil, tc.args...)
			is.Equal(r.code, 2)                              // a usage error is exit 2
			is.Equal(r.stdout, "")                           // nothing on stdout
			is.Equal(strings.Count(r.stderr, "\n"), 1)       // one line, no usage dump
			is.True(strings.HasPrefix(r.stderr, "spoold: ")) // from spoold
			is.True(strings.Contains(r.stderr, tc.quote))    // quoting what was wrong
			is.True(strings.Contains(r.stderr, "--help"))    // and where the flags are listed
		})
	}
	t.Run("--help", func(t *testing.T) {
		is := is.New(t)
		r := spooldRun(t, nil, "--help")
		is.Equal(r.code, 0)                                   // help is not an error
		is.True(strings.HasPrefix(r.stderr, "usage: spoold")) // the usage
		is.True(strings.Contains(r.stderr, "-version"))       // listing --version
	})
}
