package daemon_test

import (
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/matryer/is"

	"spool/daemon"
	"spool/rpc"
)

// TestSilentStepLeavesNoFiles checks that a step that prints nothing makes no
// log, and a job of one step no results folder, and that both read as empty.
func TestSilentStepLeavesNoFiles(t *testing.T) {
	is := is.New(t)
	h := start(t, t.TempDir(), nil)
	j := wait(t, h.d, submit(t, h.d, rpc.Spec{Steps: []rpc.Step{{Exec: &rpc.ExecStep{Argv: []string{"true"}}}}}).ID)
	is.Equal(j.State, rpc.StateSucceeded) // the job ran
	_, err := os.Stat(filepath.Join(h.dir, "logs", itoa(j.ID)))
	is.True(os.IsNotExist(err)) // no output, no log folder
	eventually(t, "an empty results folder goes with the job's end", func() bool {
		_, err := os.Stat(filepath.Join(h.dir, "results", itoa(j.ID)))
		return os.IsNotExist(err)
	})
	is.Equal(*j.Steps[0].OutputTail, "") // the tail of no log is empty
	res, err := h.d.Logs(ctxT(t), rpc.LogsParams{ID: j.ID})
	is.NoErr(err)
	is.Equal(res.Data, "") // nothing to read
	is.True(res.EOF)       // and the step is over

	// A step that prints makes its log at the first line.
	j = wait(t, h.d, submit(t, h.d, rpc.Spec{Steps: []rpc.Step{shell("echo out; echo err >&2")}}).ID)
	res, err = h.d.Logs(ctxT(t), rpc.LogsParams{ID: j.ID})
	is.NoErr(err)
	is.True(strings.Contains(res.Data, "out\n")) // stdout
	is.True(strings.Contains(res.Data, "err\n")) // and stderr, merged
	is.True(res.EOF)                             // all of it
	fi, err := os.Stat(filepath.Join(h.dir, "logs", itoa(j.ID), "0.log"))
	is.NoErr(err)
	is.Equal(fi.Mode().Perm(), os.FileMode(0o600)) // the log is private
}

// TestResultsFolderOfALaterStep checks that every step of a job of several steps
// finds its results folder, the first one too, empty.
func TestResultsFolderOfALaterStep(t *testing.T) {
	is := is.New(t)
	h := start(t, t.TempDir(), nil)
	j := wait(t, h.d, submit(t, h.d, rpc.Spec{Steps: []rpc.Step{
		{Name: "first", Shell: &rpc.ShellStep{Script: `test -d "$SPOOL_RESULTS_DIR" && ls "$SPOOL_RESULTS_DIR" | wc -l`}},
		{Name: "second", Shell: &rpc.ShellStep{Script: `ls "$SPOOL_RESULTS_DIR"`}},
	}}).ID)
	is.Equal(j.State, rpc.StateSucceeded) // the first step found its folder
	is.Equal(string(j.Steps[0].Result), `"0"`)
	is.Equal(string(j.Result), `"first"`) // and the second the first's result
}

// TestResultsFolderOfOneStep checks that a job of one step finds an empty results
// folder of its own: what a job writes there no other job sees.
func TestResultsFolderOfOneStep(t *testing.T) {
	is := is.New(t)
	h := start(t, t.TempDir(), nil)
	script := `test -d "$SPOOL_RESULTS_DIR" && ls -A "$SPOOL_RESULTS_DIR" | wc -l; echo "$SPOOL_JOB_ID" > "$SPOOL_RESULTS_DIR/left"`
	first := wait(t, h.d, submit(t, h.d, rpc.Spec{Steps: []rpc.Step{{Shell: &rpc.ShellStep{Script: script}}}}).ID)
	is.Equal(first.State, rpc.StateSucceeded) // the folder is there, and writable
	is.Equal(string(first.Result), `"0"`)     // and empty
	second := wait(t, h.d, submit(t, h.d, rpc.Spec{Steps: []rpc.Step{{Shell: &rpc.ShellStep{Script: script}}}}).ID)
	is.Equal(second.State, rpc.StateSucceeded) // the next job has one too
	is.Equal(string(second.Result), `"0"`)     // without the file the first job left
	b, err := os.ReadFile(filepath.Join(h.dir, "results", itoa(first.ID), "left"))
	is.NoErr(err)
	is.Equal(strings.TrimSpace(string(b)), itoa(first.ID)) // what a job left stays with it
	fi, err := os.Stat(filepath.Join(h.dir, "results", itoa(second.ID)))
	is.NoErr(err)
	is.Equal(fi.Mode().Perm(), os.FileMode(0o700)) // private
}

// TestStepEnvironment checks how a process's environment is made: the daemon's,
// without systemd's variables and each name once, then the job's and the step's
// env and spool's variables, a later one replacing an earlier one in place.
func TestStepEnvironment(t *testing.T) {
	is := is.New(t)
	dir := t.TempDir()
	base := []string{"PATH=" + os.Getenv("PATH"), "A=1", "LISTEN_PID=7", "B=2", "A=3", "C=base", "SPOOL_JOB_ID=999"}
	h := start(t, dir, func(c *daemon.Config) { c.Env = base })
	j := wait(t, h.d, submit(t, h.d, rpc.Spec{
		Env:   map[string]string{"C": "job", "D": "job"},
		Steps: []rpc.Step{{Exec: &rpc.ExecStep{Argv: []string{"env"}, Env: map[string]string{"D": "step"}}}},
	}).ID)
	is.Equal(j.State, rpc.StateSucceeded) // env ran
	var text string
	is.NoErr(json.Unmarshal(j.Result, &text))
	lines := strings.Split(text, "\n")
	seen := map[string]int{}
	value := map[string]string{}
	var order []string
	for _, l := range lines {
		k, v, _ := strings.Cut(l, "=")
		seen[k]++
		value[k] = v
		order = append(order, k)
	}
	for _, n := range seen {
		is.Equal(n, 1) // each name once
	}
	is.Equal(seen["LISTEN_PID"], 0)                                                 // systemd's variables stay with the daemon
	is.Equal(value["A"], "3")                                                       // the daemon's last value
	is.Equal(value["C"], "job")                                                     // the job replaces the daemon
	is.Equal(value["D"], "step")                                                    // the step replaces the job
	is.Equal(value["SPOOL_JOB_ID"], itoa(j.ID))                                     // spool's own replace anything
	is.Equal(value["SPOOL_STEP"], "step-0")                                         // the step's name
	is.Equal(value["SPOOL_PROGRESS_FD"], "3")                                       // where progress goes
	is.Equal(value["SPOOL_RESULTS_DIR"], filepath.Join(dir, "results", itoa(j.ID))) // the job's own folder
	is.Equal(order[:4], []string{"PATH", "A", "B", "C"})                            // the daemon's names keep their places
	is.Equal(order[4], "SPOOL_JOB_ID")                                              // a replaced one too
}

// TestWatchersPastTheRing checks that watchers get every stored event in seq
// order, once, when more events were published than the hub keeps in memory:
// one opened before the events, one after them from the start of the log.
func TestWatchersPastTheRing(t *testing.T) {
	is := is.New(t)
	h := start(t, t.TempDir(), nil)
	setQueue(t, h.d, rpc.QueueSetParams{Name: "held", Paused: ptr(true)})
	live, err := h.d.Watch(ctxT(t), rpc.WatchParams{})
	is.NoErr(err)
	defer live.Close()
	const n = 10_000 // more than the hub's ring
	specs := make([]rpc.Spec, n/4)
	for i := range specs {
		specs[i] = rpc.Spec{Queue: "held", Steps: []rpc.Step{shell("true")}}
	}
	for range 4 {
		_, err := h.d.Submit(ctxT(t), rpc.SubmitParams{Jobs: specs})
		is.NoErr(err)
	}
	since := int64(0)
	old, err := h.d.Watch(ctxT(t), rpc.WatchParams{Since: &since})
	is.NoErr(err)
	defer old.Close()
	for _, w := range []rpc.Watcher{old, live} {
		for seq := int64(1); seq <= n; seq++ {
			ev, err := w.Next(ctxT(t))
			is.NoErr(err)
			is.Equal(ev.Seq, seq)                 // every event, in order
			is.Equal(ev.Type, rpc.EventSubmitted) // as stored
		}
	}
}
