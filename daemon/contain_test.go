package daemon_test

import (
	"bytes"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/matryer/is"

	"spool/daemon"
	"spool/rpc"
)

// escaper is a step that leaves its group three ways: a setsid child that ignores
// SIGTERM, a double-forked sleep, and a background sleep in its own group; then
// it runs what tail says.
func escaper(tail string) string {
	return `(setsid sh -c 'trap "" TERM; sleep 300; sleep 300' &); (sh -c 'sleep 301 &' &); sleep 302 & ` + tail
}

// jobProcs lists the living processes (not zombies) whose environment says they
// belong to job id of the daemon whose state folder is dir.
func jobProcs(dir string, id int64) []int {
	mark := []byte("SPOOL_RESULTS_DIR=" + filepath.Join(dir, "results", strconv.FormatInt(id, 10)) + "\x00")
	ents, _ := os.ReadDir("/proc")
	var out []int
	for _, e := range ents {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		stat, err := os.ReadFile("/proc/" + e.Name() + "/stat")
		if err != nil {
			continue
		}
		if k := bytes.LastIndexByte(stat, ')'); k < 0 || k+2 >= len(stat) || stat[k+2] == 'Z' {
			continue
		}
		env, err := os.ReadFile("/proc/" + e.Name() + "/environ")
		if err != nil {
			continue
		}
		if bytes.Contains(append([]byte{0}, env...), append([]byte{0}, mark...)) {
			out = append(out, pid)
		}
	}
	return out
}

// cgroupHarness starts a daemon whose steps run in cgroups, or skips the test
// where the machine has no writable cgroup v2 subtree (not root, no delegation).
func cgroupHarness(t *testing.T) *harness {
	t.Helper()
	if runtime.GOOS != "linux" {
		t.Skip("cgroups are a Linux feature")
	}
	h := start(t, t.TempDir(), func(c *daemon.Config) {
		c.Containment = daemon.ContainAuto
		c.KillGrace = 500 * time.Millisecond
	})
	<-h.d.Ready()
	info, err := h.d.Info(ctxT(t))
	if err != nil {
		t.Fatalf("info: %v", err)
	}
	if info.Containment != daemon.ContainCgroup {
		t.Skipf("no cgroup containment on this machine: %s", info.ContainmentNote)
	}
	return h
}

// TestCgroupContainsEveryProcess checks that whatever a step started, setsid
// children that ignore SIGTERM and double forks included, is gone once a cancel
// answers, once a timeout made the job final, and (after the kill grace) once a
// step whose main process exited is over; and that no step cgroup is left.
func TestCgroupContainsEveryProcess(t *testing.T) {
	h := cgroupHarness(t)
	t.Run("cancel", func(t *testing.T) {
		is := is.New(t)
		j := submit(t, h.d, rpc.Spec{Steps: []rpc.Step{shell(escaper("wait"))}})
		eventually(t, "the step's processes run", func() bool { return len(jobProcs(h.dir, j.ID)) >= 5 })
		got, err := h.d.Cancel(ctxT(t), rpc.CancelParams{ID: j.ID})
		is.NoErr(err)
		is.Equal(got.State, rpc.StateCancelled)     // the cancel is the outcome
		is.Equal(jobProcs(h.dir, j.ID), []int(nil)) // and every process is gone when it answers
	})
	t.Run("timeout", func(t *testing.T) {
		is := is.New(t)
		step := shell(escaper("wait"))
		step.Timeout = dur(300 * time.Millisecond)
		j := wait(t, h.d, submit(t, h.d, rpc.Spec{Steps: []rpc.Step{step}}).ID)
		is.Equal(j.State, rpc.StateFailed)                // timed out
		is.Equal(j.Steps[0].Error, "timeout after 300ms") // says so
		is.Equal(jobProcs(h.dir, j.ID), []int(nil))       // nothing of it is left
	})
	t.Run("step end", func(t *testing.T) {
		is := is.New(t)
		j := wait(t, h.d, submit(t, h.d, rpc.Spec{Steps: []rpc.Step{shell(escaper("true"))}}).ID)
		is.Equal(j.State, rpc.StateSucceeded) // the main process exited 0
		eventually(t, "what the step left is stopped after the kill grace", func() bool { return len(jobProcs(h.dir, j.ID)) == 0 })
	})
	is := is.New(t)
	eventually(t, "every step cgroup is empty (kept for reuse) or removed", func() bool {
		info, err := h.d.Info(ctxT(t))
		is.NoErr(err)
		tree := strings.TrimPrefix(info.ContainmentNote, "a cgroup per step under ")
		ents, err := os.ReadDir(tree)
		is.NoErr(err)
		for _, e := range ents {
			if !e.IsDir() {
				continue
			}
			procs, err := os.ReadFile(filepath.Join(tree, e.Name(), "cgroup.procs"))
			if err == nil && len(bytes.TrimSpace(procs)) > 0 {
				return false
			}
		}
		return true
	})
	info, err := h.d.Info(ctxT(t))
	is.NoErr(err)
	tree := strings.TrimPrefix(info.ContainmentNote, "a cgroup per step under ")
	h.shutdown()
	_, err = os.Stat(tree)
	is.True(os.IsNotExist(err)) // a daemon that stops takes its tree of cgroups along
}

// TestTimeoutIsTheOutcome checks that a process that exits 0 when told to stop
// does not turn its timeout into a success: for a step's timeout, the job's, and
// in a job of two steps, where the step that timed out fails and the next is
// skipped.
func TestTimeoutIsTheOutcome(t *testing.T) {
	h := start(t, t.TempDir(), func(c *daemon.Config) { c.KillGrace = time.Second })
	trap := `trap 'exit 0' TERM; sleep 30 & wait`
	t.Run("step", func(t *testing.T) {
		is := is.New(t)
		step := shell(trap)
		step.Timeout = dur(300 * time.Millisecond)
		j := wait(t, h.d, submit(t, h.d, rpc.Spec{Steps: []rpc.Step{step}}).ID)
		is.Equal(j.State, rpc.StateFailed)                               // not succeeded
		is.Equal(j.Steps[0].State, rpc.StateFailed)                      // the step failed
		is.Equal(j.Steps[0].Error, "timeout after 300ms")                // by its timeout
		is.Equal(j.Error, "step step-0: timeout after 300ms")            // and the job says so
		is.True(j.Steps[0].ExitCode != nil && *j.Steps[0].ExitCode == 0) // whatever the process said
	})
	t.Run("job", func(t *testing.T) {
		is := is.New(t)
		j := wait(t, h.d, submit(t, h.d, rpc.Spec{Timeout: dur(300 * time.Millisecond), Steps: []rpc.Step{shell(trap)}}).ID)
		is.Equal(j.State, rpc.StateFailed)          // not succeeded
		is.Equal(j.Error, "timeout after 300ms")    // the job's timeout
		is.Equal(j.Steps[0].State, rpc.StateFailed) // the step it stopped failed
	})
	t.Run("two steps", func(t *testing.T) {
		is := is.New(t)
		j := wait(t, h.d, submit(t, h.d, rpc.Spec{Timeout: dur(300 * time.Millisecond), Steps: []rpc.Step{shell(trap), shell("echo never")}}).ID)
		is.Equal(j.State, rpc.StateFailed)                // not succeeded
		is.Equal(j.Steps[0].State, rpc.StateFailed)       // the step that timed out failed
		is.Equal(j.Steps[0].Error, "timeout after 300ms") // with the timeout
		is.Equal(j.Steps[1].State, rpc.StateSkipped)      // the next never ran
		is.Equal(j.Steps[1].Error, "")                    // and carries no error
	})
	t.Run("retried", func(t *testing.T) {
		is := is.New(t)
		step := shell(trap)
		step.Timeout = dur(200 * time.Millisecond)
		step.Retry = &rpc.Retry{Attempts: 2, Backoff: dur(10 * time.Millisecond), MaxBackoff: dur(10 * time.Millisecond)}
		j := wait(t, h.d, submit(t, h.d, rpc.Spec{Steps: []rpc.Step{step}}).ID)
		is.Equal(j.State, rpc.StateFailed) // each attempt timed out
		is.Equal(j.Steps[0].Attempt, 2)    // and was tried again
		is.Equal(j.Steps[0].Error, "timeout after 200ms")
	})
}

// TestMissingDirIsNamed checks that a step whose working folder is missing fails
// with an error that names the folder, not the program.
func TestMissingDirIsNamed(t *testing.T) {
	is := is.New(t)
	h := start(t, t.TempDir(), nil)
	dir := filepath.Join(h.dir, "no", "such")
	j := wait(t, h.d, submit(t, h.d, rpc.Spec{Dir: dir, Steps: []rpc.Step{{Exec: &rpc.ExecStep{Argv: []string{"true"}}}}}).ID)
	is.Equal(j.State, rpc.StateFailed)                                  // it cannot run
	is.Equal(j.Steps[0].Error, "working folder "+dir+" does not exist") // and says where
	file := filepath.Join(h.dir, "file")
	is.NoErr(os.WriteFile(file, nil, 0o600))
	j = wait(t, h.d, submit(t, h.d, rpc.Spec{Steps: []rpc.Step{{Exec: &rpc.ExecStep{Argv: []string{"true"}, Dir: file}}}}).ID)
	is.Equal(j.Steps[0].Error, "working folder "+file+" is not a folder") // a file is no folder
}

// TestCancelledWhileQueuedNeverRuns races cancels from several clients against
// the starts of jobs that each leave a file: a job that a cancel ended before it
// started (no attempt, no start time) never ran its command.
func TestCancelledWhileQueuedNeverRuns(t *testing.T) {
	is := is.New(t)
	h := start(t, t.TempDir(), func(c *daemon.Config) { c.MaxParallel = 4 })
	marks := filepath.Join(h.dir, "ran")
	is.NoErr(os.Mkdir(marks, 0o700))
	const n = 120
	specs := make([]rpc.Spec, n)
	for i := range specs {
		specs[i] = rpc.Spec{Steps: []rpc.Step{shell(`touch "` + marks + `/$SPOOL_JOB_ID"`)}}
	}
	res, err := h.d.Submit(ctxT(t), rpc.SubmitParams{Jobs: specs})
	is.NoErr(err)
	var wg sync.WaitGroup
	for c := range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for k := c; k < n; k += 8 {
				_, _ = h.d.Cancel(ctxT(t), rpc.CancelParams{ID: res.Jobs[k].ID})
			}
		}()
	}
	wg.Wait()
	never := 0
	for _, job := range res.Jobs {
		j := wait(t, h.d, job.ID)
		_, err := os.Stat(filepath.Join(marks, strconv.FormatInt(j.ID, 10)))
		ran := err == nil
		if j.State == rpc.StateCancelled && j.StartedAt == nil {
			never++
			is.Equal(j.Steps[0].Attempt, 0) // no attempt was counted
			if ran {
				t.Errorf("job %d was cancelled before it started, yet its command ran", j.ID)
			}
		}
	}
	t.Logf("%d of %d jobs were cancelled before they started", never, n)
}

// TestResumedAttemptIsMarked checks that a step that starts again because the
// daemon stopped while it ran says so in its log, under what it printed before.
func TestResumedAttemptIsMarked(t *testing.T) {
	is := is.New(t)
	dir := t.TempDir()
	h := start(t, dir, nil)
	j := submit(t, h.d, rpc.Spec{Steps: []rpc.Step{shell(`echo "run $$"; sleep 30`)}})
	eventually(t, "the step printed", func() bool {
		res, err := h.d.Logs(ctxT(t), rpc.LogsParams{ID: j.ID})
		return err == nil && strings.Contains(res.Data, "run ")
	})
	h.shutdown()
	h = start(t, dir, nil)
	eventually(t, "the step runs again", func() bool {
		res, err := h.d.Logs(ctxT(t), rpc.LogsParams{ID: j.ID})
		return err == nil && strings.Count(res.Data, "run ") == 2
	})
	res, err := h.d.Logs(ctxT(t), rpc.LogsParams{ID: j.ID})
	is.NoErr(err)
	lines := strings.Split(strings.TrimSpace(res.Data), "\n")
	is.Equal(len(lines), 3)                                                         // the first run, the marker, the second run
	is.Equal(lines[1], "[spool: attempt 1 again: the daemon stopped while it ran]") // between them
	_, err = h.d.Cancel(ctxT(t), rpc.CancelParams{ID: j.ID})
	is.NoErr(err)
}

// TestDeadDaemonsTreeIsRemoved checks that the cgroup tree of a daemon that died
// without removing it (kill -9), idle step cgroups and all, is removed by the next
// daemon that starts beside it, and that a tree whose owner lives is kept.
func TestDeadDaemonsTreeIsRemoved(t *testing.T) {
	is := is.New(t)
	h := cgroupHarness(t)
	info, err := h.d.Info(ctxT(t))
	is.NoErr(err)
	own := filepath.Dir(strings.TrimPrefix(info.ContainmentNote, "a cgroup per step under "))
	gone := exec.Command("true")
	is.NoErr(gone.Start())
	pid := gone.Process.Pid
	stat, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	is.NoErr(err)
	fields := strings.Fields(string(stat[bytes.LastIndexByte(stat, ')')+2:]))
	began := fields[19] // field 22 of the line: the start time
	is.NoErr(gone.Wait())
	dead := filepath.Join(own, "spool-test-dead-"+strconv.Itoa(pid))
	for _, d := range []string{dead, filepath.Join(dead, "owner-"+strconv.Itoa(pid)+"-"+began), filepath.Join(dead, "step-1")} {
		is.NoErr(os.Mkdir(d, 0o755))
	}
	t.Cleanup(func() {
		for _, d := range []string{"step-1", "owner-" + strconv.Itoa(pid) + "-" + began, ""} {
			_ = os.Remove(filepath.Join(dead, d))
		}
	})
	// The live owner: this test's own process.
	self, err := os.ReadFile("/proc/self/stat")
	is.NoErr(err)
	start2 := strings.Fields(string(self[bytes.LastIndexByte(self, ')')+2:]))[19]
	live := filepath.Join(own, "spool-test-live-"+strconv.Itoa(os.Getpid()))
	liveOwner := filepath.Join(live, "owner-"+strconv.Itoa(os.Getpid())+"-"+start2)
	for _, d := range []string{live, liveOwner, filepath.Join(live, "step-1")} {
		is.NoErr(os.Mkdir(d, 0o755))
	}
	t.Cleanup(func() {
		for _, d := range []string{filepath.Join(live, "step-1"), liveOwner, live} {
			_ = os.Remove(d)
		}
	})
	other := start(t, t.TempDir(), nil) // a second daemon starts beside them
	<-other.d.Ready()
	_, err = os.Stat(dead)
	is.True(os.IsNotExist(err)) // the dead daemon's tree is gone, idle cgroup and all
	_, err = os.Stat(filepath.Join(live, "step-1"))
	is.NoErr(err) // a live daemon's tree stays
}
