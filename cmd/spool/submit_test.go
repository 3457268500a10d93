package main

import (
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/matryer/is"
	"github.com/spf13/pflag"

	"spool/rpc"
)

// parseSubmit runs submit's flag parsing as the command line does, with a given
// environment and working directory, and returns the params it would send.
func parseSubmit(t *testing.T, environ []string, stdin string, args ...string) (*rpc.SubmitParams, error) {
	t.Helper()
	a := &app{
		stdin:   strings.NewReader(stdin),
		getenv:  func(string) string { return "" },
		environ: func() []string { return environ },
		getwd:   func() (string, error) { return "/home/me/src", nil },
		now:     time.Now,
	}
	fs := pflag.NewFlagSet("submit", pflag.ContinueOnError)
	fs.SetInterspersed(false)
	var o submitOptions
	o.register(fs)
	if err := fs.Parse(args); err != nil {
		return nil, err
	}
	pos := fs.Args()
	return a.submitParams(fs, &o, pos)
}

func TestSubmitFlags(t *testing.T) {
	is := is.New(t)
	environ := []string{"PATH=/usr/bin:/bin", "HOME=/home/me", "SPOOL_SOCKET=/x.sock", "SPOOL_JOB_ID=3",
		"=C:=weird", "NOEQUALS", "X=0", "NUL=a\x00b"}
	p, err := parseSubmit(t, environ, "",
		"--name", "build", "--key", "k1", "--queue", "q", "--priority", "3", "--after", "4", "--after", "5,6",
		"--label", "a=b", "--label", "c=d=e", "--timeout", "90s", "--retry", "3", "--env", "X=1", "--env", "EMPTY=",
		"--", "make", "-j4", "--keep-going")
	is.NoErr(err)          // the flags parse
	is.True(p.Job != nil)  // one job
	is.True(p.Jobs == nil) // not a batch
	s := p.Job
	is.Equal(s.Name, "build")                                               // --name
	is.Equal(s.Key, "k1")                                                   // --key
	is.Equal(s.Queue, "q")                                                  // --queue
	is.Equal(s.Priority, 3)                                                 // --priority
	is.Equal(s.After, []int64{4, 5, 6})                                     // --after, repeated and comma separated
	is.Equal(s.Labels, map[string]string{"a": "b", "c": "d=e"})             // --label k=v, the value may hold =
	is.Equal(s.Timeout.D(), 90*time.Second)                                 // --timeout in Go syntax
	is.Equal(s.Dir, "/home/me/src")                                         // the current directory
	is.Equal(len(s.Steps), 1)                                               // one step
	is.Equal(s.Steps[0].Exec.Argv, []string{"make", "-j4", "--keep-going"}) // the command after --, its flags untouched
	is.Equal(*s.Steps[0].Retry, rpc.Retry{Attempts: 3})                     // --retry N is N attempts
	is.Equal(s.Env["PATH"], "/usr/bin:/bin")                                // the caller's environment is passed
	is.Equal(s.Env["X"], "1")                                               // --env wins over it
	is.Equal(s.Env["EMPTY"], "")                                            // an empty value is kept
	_, has := s.Env["SPOOL_SOCKET"]
	is.True(!has) // SPOOL_ variables are stripped
	_, has = s.Env["SPOOL_JOB_ID"]
	is.True(!has) // all of them
	_, has = s.Env["NUL"]
	is.True(!has)           // values with NUL are dropped
	is.Equal(len(s.Env), 4) // nothing invalid slipped in (PATH, HOME, X, EMPTY)

	b, err := json.Marshal(p)
	is.NoErr(err)                                                                        // the params encode
	is.True(strings.Contains(string(b), `"retry":{"attempts":3,`))                       // retry in the protocol's shape
	is.True(strings.Contains(string(b), `"timeout":"1m30s"`))                            // durations as Go strings
	is.True(strings.Contains(string(b), `"exec":{"argv":["make","-j4","--keep-going"]`)) // one exec step
}

func TestSubmitWithoutDashes(t *testing.T) {
	is := is.New(t)
	p, err := parseSubmit(t, nil, "", "--queue", "q", "echo", "-n", "--queue", "x")
	is.NoErr(err)                                                              // flags end at the command
	is.Equal(p.Job.Queue, "q")                                                 // the flag before it is ours
	is.Equal(p.Job.Steps[0].Exec.Argv, []string{"echo", "-n", "--queue", "x"}) // the rest is the command's
	is.Equal(p.Job.Steps[0].Retry, (*rpc.Retry)(nil))                          // no retry unless asked
	is.Equal(p.Job.After, []int64{})                                           // no dependencies
}

func TestSubmitNoEnv(t *testing.T) {
	is := is.New(t)
	p, err := parseSubmit(t, []string{"PATH=/bin", "SECRET=1"}, "", "--no-env", "--env", "ONLY=1", "--", "true")
	is.NoErr(err)                                       // the flags parse
	is.Equal(p.Job.Env, map[string]string{"ONLY": "1"}) // only the --env variables
}

func TestSubmitBadFlags(t *testing.T) {
	for _, args := range [][]string{
		{},
		{"--env", "SPOOL_X=1", "--", "true"},
		{"--env", "NOVALUE", "--", "true"},
		{"--env", "=1", "--", "true"},
		{"--label", "novalue", "--", "true"},
		{"--after", "x", "--", "true"},
		{"--after", "0", "--", "true"},
		{"--retry", "-1", "--", "true"},
		{"--timeout", "5", "--", "true"},
		{"-f", "x.json", "--", "true"},
		{"-f", "x.json", "--queue", "q"},
	} {
		t.Run(strings.Join(args, " "), func(t *testing.T) {
			is := is.New(t)
			_, err := parseSubmit(t, nil, "", args...)
			is.True(err != nil) // refused before anything is sent
			var ue *usageError
			is.True(errors.As(err, &ue) || !strings.Contains(err.Error(), "daemon")) // as a usage error
		})
	}
}

func TestSubmitFile(t *testing.T) {
	is := is.New(t)
	dir := t.TempDir()
	one := filepath.Join(dir, "one.json")
	is.NoErr(os.WriteFile(one, []byte(`{"name": "a", "steps": [{"sleep": {"duration": "1s"}}]}`), 0o600)) // write a spec
	p, err := parseSubmit(t, nil, "", "-f", one)
	is.NoErr(err)                                            // a spec object
	is.Equal(p.Job.Name, "a")                                // is one job
	is.Equal(p.Job.Steps[0].Sleep.Duration.D(), time.Second) // as written

	p, err = parseSubmit(t, nil, `[{"steps": [{"shell": {"script": "true"}}]}, {"after_index": [0], "steps": [{"exec": {"argv": ["ls"]}}]}]`, "-f", "-")
	is.NoErr(err)                            // an array from standard input
	is.True(p.Job == nil)                    // is a batch
	is.Equal(len(p.Jobs), 2)                 // of two jobs
	is.Equal(p.Jobs[1].AfterIndex, []int{0}) // after_index kept
	b, err := json.Marshal(p)
	is.NoErr(err)                                     // it encodes
	is.True(strings.Contains(string(b), `"jobs":[{`)) // as {"jobs": [...]}

	_, err = parseSubmit(t, nil, `{"stpes": []}`, "-f", "-")
	is.True(err != nil)                                               // a typo fails at once
	is.Equal(err.Error(), "standard input:1:2: stpes: unknown field") // naming the field and where it is

	_, err = parseSubmit(t, nil, "{\n  \"steps\": [{\"exec\": {\"argv\": [\"true\"]},\n    \"retry\": {\"attempts\": \"3\"}}]\n}", "-f", "-")
	is.Equal(err.Error(), "standard input:3:27: steps[0].retry.attempts: expected an integer, got a string") // line, column, path, and what was expected; no Go struct name

	_, err = parseSubmit(t, nil, `{"steps": []} {"steps": []}`, "-f", "-")
	is.True(err != nil) // two documents are refused

	_, err = parseSubmit(t, nil, "", "-f", filepath.Join(dir, "missing.json"))
	is.True(errors.Is(err, os.ErrNotExist)) // a missing file says so
}
