package main

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/matryer/is"

	"spool/rpc"
)

// TestCLISpecFileErrors (issue 13, items 2 and 4): a mistake in a spec file is
// reported with file:line:column, the field's path and what was expected, never
// a Go struct name; a missing working folder fails at submit, naming the folder;
// and nothing is submitted either way.
func TestCLISpecFileErrors(t *testing.T) {
	p := newDaemon(t)
	c := p.client()
	ctx := tctx(t)
	dir := t.TempDir()
	write := func(name, body string) string {
		path := filepath.Join(dir, name)
		if err := os.WriteFile(path, []byte(body), 0o600); err != nil {
			t.Fatal(err)
		}
		return path
	}
	missing := filepath.Join(dir, "no", "such", "folder")
	for _, tc := range []struct {
		name, body, want string
	}{
		{"attempts.json", `{
  "name": "release",
  "steps": [
    {"name": "test", "exec": {"argv": ["true"]}},
    {"name": "ping", "exec": {"argv": ["true"]},
     "retry": {"attempts": "5", "backoff": "1s"}}
  ]
}`, `attempts.json:6:28: steps[1].retry.attempts: expected an integer, got a string`},
		{"typo.json", "{\n  \"stpes\": []\n}", `typo.json:2:3: stpes: unknown field`},
		{"duration.json", `{"timeout": "2", "steps": [{"exec": {"argv": ["true"]}}]}`, `duration.json:1:13: timeout: invalid duration "2": write a number with a unit, e.g. "90s", "2m", "1h30m"`},
		{"broken.json", "{\n  \"steps\": [\n}", `broken.json:3:1: invalid JSON`},
		{"dir.json", `{"name": "release", "dir": "` + missing + `", "steps": [{"exec": {"argv": ["go", "version"]}}]}`,
			`dir.json:1:28: dir: the folder ` + missing + ` does not exist`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			is := is.New(t)
			path := write(tc.name, tc.body)
			r := spoolRun(t, p, nil, "", "submit", "-f", path)
			is.Equal(r.code, 1)                                                                    // refused
			is.Equal(r.stdout, "")                                                                 // nothing submitted, no id
			is.True(strings.HasPrefix(r.stderr, "spool: "+dir+string(filepath.Separator)+tc.want)) // file:line:col: path: what is wrong
			is.True(!strings.Contains(r.stderr, "Go struct"))                                      // in the spec's words, not Go's
			is.Equal(strings.Count(r.stderr, "\n"), 1)                                             // one line
		})
	}
	is := is.New(t)
	l, err := c.List(ctx, rpc.ListParams{})
	is.NoErr(err)
	is.Equal(len(l.Jobs), 0) // no file submitted anything
}
