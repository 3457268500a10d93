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

// TestCompletionJobIDs loads spool's completion scripts (cobra's, which ask
// `spool __complete`) into the real bash, zsh and fish and asks them to complete
// `spool show `: they offer the ids of the jobs in a real daemon, in numeric order
// (9 before 10), along with commands, flags and states.
func TestCompletionJobIDs(t *testing.T) {
	t.Setenv("GORACE", "atexit_sleep_ms=0")
	p := newDaemon(t)
	c := p.client()
	ctx := tctx(t)
	var ids []string
	for range 11 { // ids 1 to 11: numeric order differs from text order
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
		var stderr strings.Builder
		cmd.Stderr = &stderr
		out, err := cmd.Output()
		if err != nil {
			t.Fatalf("%s: %v\n%s%s", name, err, out, stderr.String())
		}
		var words []string
		for _, line := range strings.Split(strings.TrimSpace(string(out)), "\n") {
			if f := strings.Fields(line); len(f) > 0 { // a description may follow
				words = append(words, strings.TrimSuffix(f[0], ":"))
			}
		}
		return words
	}
	numeric := func(t *testing.T, got []string) {
		t.Helper()
		is := is.New(t)
		var nums []string
		for _, w := range got {
			if _, err := strconv.Atoi(w); err == nil {
				nums = append(nums, w)
			}
		}
		is.Equal(nums, ids) // every job id is offered, in numeric order
	}

	t.Run("bash", func(t *testing.T) {
		bash, err := exec.LookPath("bash")
		if err != nil {
			t.Skip("bash is not installed")
		}
		is := is.New(t)
		file := script(t, "bash")
		// Without the bash-completion package, a minimal _get_comp_words_by_ref;
		// compopt complains outside a real completion, which changes nothing here.
		run := func(words string, cword int) []string {
			return complete(t, bash, "--norc", "--noprofile", "-c",
				`type _get_comp_words_by_ref >/dev/null 2>&1 || _get_comp_words_by_ref() { cur=${COMP_WORDS[COMP_CWORD]}; prev=${COMP_WORDS[COMP_CWORD-1]}; words=("${COMP_WORDS[@]}"); cword=$COMP_CWORD; }
source "$1"; COMP_WORDS=(`+words+`); COMP_CWORD=`+strconv.Itoa(cword)+`; COMP_LINE="${COMP_WORDS[*]}"; COMP_POINT=${#COMP_LINE}; __start_spool 2>/dev/null; printf '%s\n' "${COMPREPLY[@]}"`, "bash", file)
		}
		numeric(t, run(`spool show ""`, 2))
		is.True(slices.Contains(run(`spool sta`, 1), "status"))                      // commands
		is.True(slices.Contains(run(`spool submit --pri`, 2), "--priority"))         // flags
		is.Equal(run(`spool status --state suc`, 3), []string{"succeeded"})          // states
		is.True(slices.Contains(run(`spool --socket `+p.socket+` show ""`, 4), "1")) // with --socket on the line
	})
	t.Run("zsh", func(t *testing.T) {
		zsh, err := exec.LookPath("zsh")
		if err != nil {
			t.Skip("zsh is not installed")
		}
		is := is.New(t)
		file := script(t, "zsh")
		out, err := exec.Command(zsh, "-n", file).CombinedOutput()
		is.True(err == nil) // the script parses
		if err != nil {
			t.Log(string(out))
		}
		// The script's helper asks spool __complete and reads its answer: run the
		// same request the script makes.
		cmd := exec.Command(p.bins.spool, "__complete", "show", "")
		cmd.Env = env
		raw, err := cmd.Output()
		is.NoErr(err) // __complete answers
		var got []string
		for _, line := range strings.Split(strings.TrimSpace(string(raw)), "\n") {
			got = append(got, strings.Split(line, "\t")[0])
		}
		numeric(t, got)
		is.Equal(got[len(got)-1], ":36") // no files, keep the order (cobra's directive bits)
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
		numeric(t, run("spool show "))
		is.True(slices.Contains(run("spool sta"), "status"))              // commands
		is.True(slices.Contains(run("spool submit --pri"), "--priority")) // flags
	})
}
