package main

import (
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"

	"github.com/matryer/is"

	"spool/rpc"
)

// TestCompletionJobIDs loads spool's completion scripts into the real bash and
// fish and asks them to complete `spool show `: they offer the ids of the jobs in
// a real daemon, along with commands and flags.
func TestCompletionJobIDs(t *testing.T) {
	t.Setenv("GORACE", "atexit_sleep_ms=0")
	p := newDaemon(t)
	c := p.client()
	ctx := tctx(t)
	var ids []string
	for range 3 {
		spec := rpc.Spec{Steps: []rpc.Step{sh("true")}}
		res, err := c.Submit(ctx, rpc.SubmitParams{Job: &spec})
		if err != nil {
			t.Fatal(err)
		}
		ids = append(ids, strconv.FormatInt(res.Job.ID, 10))
	}
	// The scripts run `spool`: from PATH, with the socket from SPOOL_SOCKET.
	env := append(os.Environ(), "PATH="+filepath.Dir(p.bins.spool)+":"+os.Getenv("PATH"), "SPOOL_SOCKET="+p.socket)
	script := func(t *testing.T, shell string) string {
		t.Helper()
		cmd := exec.Command(p.bins.spool, "completion", shell)
		cmd.Env = env
		out, err := cmd.Output()
		if err != nil {
			t.Fatalf("spool completion %s: %v", shell, err)
		}
		file := filepath.Join(t.TempDir(), "spool."+shell)
		if err := os.WriteFile(file, out, 0o600); err != nil {
			t.Fatal(err)
		}
		return file
	}
	complete := func(t *testing.T, name string, args ...string) []string {
		t.Helper()
		cmd := exec.Command(name, args...)
		cmd.Env = env
		out, err := cmd.CombinedOutput()
		if err != nil {
			t.Fatalf("%s: %v\n%s", name, err, out)
		}
		var words []string
		for _, line := range strings.Split(strings.TrimSpace(string(out)), "\n") {
			if f := strings.Fields(line); len(f) > 0 { // fish adds a description after a tab
				words = append(words, f[0])
			}
		}
		return words
	}

	t.Run("bash", func(t *testing.T) {
		bash, err := exec.LookPath("bash")
		if err != nil {
			t.Skip("bash is not installed")
		}
		is := is.New(t)
		file := script(t, "bash")
		run := func(words string, cword int) []string {
			return complete(t, bash, "--norc", "--noprofile", "-c",
				`source "$1"; COMP_WORDS=(`+words+`); COMP_CWORD=`+strconv.Itoa(cword)+`; _spool; printf '%s\n' "${COMPREPLY[@]}"`, "bash", file)
		}
		got := run(`spool show ""`, 2)
		for _, id := range ids {
			is.True(slices.Contains(got, id)) // every job id is offered
		}
		is.True(slices.Contains(run(`spool sta`, 1), "status"))              // commands
		is.True(slices.Contains(run(`spool submit --pri`, 2), "--priority")) // flags
		is.Equal(run(`spool status --state suc`, 3), []string{"succeeded"})  // states
	})
	t.Run("fish", func(t *testing.T) {
		fish, err := exec.LookPath("fish")
		if err != nil {
			t.Skip("fish is not installed")
		}
		is := is.New(t)
		file := script(t, "fish")
		run := func(line string) []string {
			return complete(t, fish, "--no-config", "-c", `source $argv[1]; complete -C "`+line+`"`, file)
		}
		got := run("spool show ")
		for _, id := range ids {
			is.True(slices.Contains(got, id)) // every job id is offered
		}
		is.True(slices.Contains(run("spool sta"), "status"))              // commands
		is.True(slices.Contains(run("spool submit --pri"), "--priority")) // flags
	})
}
