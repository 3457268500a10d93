package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/matryer/is"
	"golang.org/x/sys/unix"

	"spool/client"
	"spool/rpc"
)

// The second red-team round: the edges of containment that the first suite
// (redteam_test.go) does not reach. Each test here failed on the daemon it was
// written against.

// TestRedTeamManyOrphans runs a step that leaves more orphans than fit in the
// 4 KiB the daemon read of its list of children (about 680 pids): each is a
// setsid child, so it leaves the step's group and is adopted by spoold when
// the step's shell exits. Once the job is final, none of them may live.
func TestRedTeamManyOrphans(t *testing.T) {
	containmentModes(t, allModes, func(t *testing.T, mode string, flags []string) {
		is := is.New(t)
		p, mark := redteamDaemon(t, mode, flags)
		c := p.client()
		ctx := tctx(t)
		const n = 800
		script := fmt.Sprintf(`i=0; while [ $i -lt %d ]; do setsid sleep 300 & i=$((i+1)); done`, n)
		s := rpc.Spec{Steps: []rpc.Step{sh(script)}}
		res, err := c.Submit(ctx, rpc.SubmitParams{Job: &s})
		is.NoErr(err) // the job is stored
		j, err := c.Wait(ctx, rpc.WaitParams{ID: res.Job.ID, Timeout: rpc.Duration(60 * time.Second)})
		is.NoErr(err)
		is.Equal(j.State, rpc.StateSucceeded) // the step's shell exited 0
		left := pollProcs(goneWithin, func() []proc { return jobProcs(mark, res.Job.ID) })
		if len(left) > 0 {
			t.Errorf("after the end of the step, %d of its %d orphans live (e.g. %s)", len(left), n, procNames(left[:min(5, len(left))]))
		}
		checkNoZombies(t, p)
	})
}

// cgroupTreeOf is the folder of the daemon's step cgroups, from daemon.info.
func cgroupTreeOf(t *testing.T, p *daemonProc) string {
	t.Helper()
	m := p.raw().call(1, "daemon.info", `{}`)
	if m.Error != nil {
		t.Fatalf("daemon.info: %v", m.Error)
	}
	var info rpc.Info
	if err := json.Unmarshal(m.Result, &info); err != nil {
		t.Fatalf("daemon.info: %v", err)
	}
	dir, ok := strings.CutPrefix(info.ContainmentNote, "a cgroup per step under ")
	if !ok {
		t.Fatalf("daemon.info names no cgroup tree: %q", info.ContainmentNote)
	}
	return dir
}

// TestRedTeamNestedCgroup runs a step that makes a cgroup inside its own and
// moves itself there, as a container runtime or a spoold run by a job does.
// After a cancel the step's cgroup must go, and a daemon restarted on the same
// state folder must run its next jobs (it makes its step cgroups under the
// same names again).
func TestRedTeamNestedCgroup(t *testing.T) {
	containmentModes(t, []string{"cgroup"}, func(t *testing.T, mode string, flags []string) {
		is := is.New(t)
		p, mark := redteamDaemon(t, mode, flags)
		c := p.client()
		ctx := tctx(t)
		tree := cgroupTreeOf(t, p)
		// The v2 hierarchy's mount point is the tree's path less the daemon's
		// cgroup: the step finds its own cgroup folder from /proc/self/cgroup.
		script := `cg="$TREE/$(basename "$(sed -n 's/^0:://p' /proc/self/cgroup)")"; mkdir "$cg/inner" && echo $$ > "$cg/inner/cgroup.procs" && exec sleep 300`
		s := rpc.Spec{Env: map[string]string{"TREE": tree}, Steps: []rpc.Step{sh(script)}}
		res, err := c.Submit(ctx, rpc.SubmitParams{Job: &s})
		is.NoErr(err) // the job is stored
		waitNested := pollProcs(60*time.Second, func() []proc {
			for _, q := range jobProcs(mark, res.Job.ID) {
				if b, _ := os.ReadFile(fmt.Sprintf("/proc/%d/cgroup", q.pid)); strings.Contains(string(b), "/inner\n") && q.comm == "sleep" {
					return nil
				}
			}
			return []proc{{}}
		})
		is.Equal(len(waitNested), 0) // the step moved itself into a nested cgroup
		j, err := c.Cancel(ctx, rpc.CancelParams{ID: res.Job.ID, Reason: "red team"})
		is.NoErr(err)
		is.Equal(j.State, rpc.StateCancelled) // the cancel is the outcome
		// The nested process got the SIGTERM of a cancel, not only the SIGKILL
		// after the kill grace: a container runtime gets its chance to stop.
		if sig := j.Steps[0].Signal; sig == nil || *sig != "SIGTERM" {
			t.Errorf("the step's process in a nested cgroup ended by %s, want SIGTERM", stepStates(j))
		}
		if l := pollProcs(goneWithin, func() []proc { return jobProcs(mark, res.Job.ID) }); len(l) > 0 {
			t.Errorf("after a cancel, processes of job %d live: %s", res.Job.ID, procNames(l))
		}
		var steps []string
		deadline := time.Now().Add(goneWithin)
		for {
			steps, _ = filepath.Glob(filepath.Join(tree, "step-*", "inner"))
			if len(steps) == 0 || time.Now().After(deadline) {
				break
			}
			time.Sleep(20 * time.Millisecond)
		}
		if len(steps) > 0 {
			t.Errorf("the killed step's cgroup is left with its nested cgroup: %v", steps)
		}
		// A restart makes its step cgroups under the same names again.
		p.stop()
		p.start()
		c = p.client()
		for k := 0; k < 3; k++ {
			s := rpc.Spec{Steps: []rpc.Step{sh("true")}}
			res, err := c.Submit(ctx, rpc.SubmitParams{Job: &s})
			is.NoErr(err)
			j, err := c.Wait(ctx, rpc.WaitParams{ID: res.Job.ID, Timeout: rpc.Duration(60 * time.Second)})
			is.NoErr(err)
			is.Equal(j.Error, "")                 // nothing of the nested cgroup is in the way
			is.Equal(j.State, rpc.StateSucceeded) // a job after the restart runs
		}
	})
}

// copyTree copies the regular files and folders under src to dst.
func copyTree(t *testing.T, src, dst string) {
	t.Helper()
	err := filepath.Walk(src, func(path string, fi os.FileInfo, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(src, path)
		to := filepath.Join(dst, rel)
		switch {
		case fi.IsDir():
			return os.MkdirAll(to, 0o700)
		case fi.Mode().IsRegular():
			in, err := os.Open(path)
			if err != nil {
				return err
			}
			defer in.Close()
			out, err := os.OpenFile(to, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o600)
			if err != nil {
				return err
			}
			if _, err := io.Copy(out, in); err != nil {
				out.Close()
				return err
			}
			return out.Close()
		}
		return nil
	})
	if err != nil {
		t.Fatalf("copy %s: %v", src, err)
	}
}

// TestRedTeamCopiedStateFolder starts a second daemon on a copy of a running
// daemon's state folder (a backup restored beside the original, a copy made to
// look at): the copy's store holds the first daemon's running job, its pid,
// group and cgroup. The second daemon must not touch the first one's processes
// or cgroups: they belong to another state folder.
func TestRedTeamCopiedStateFolder(t *testing.T) {
	containmentModes(t, allModes, func(t *testing.T, mode string, flags []string) {
		is := is.New(t)
		a, mark := redteamDaemon(t, mode, flags)
		c := a.client()
		ctx := tctx(t)
		s := rpc.Spec{Steps: []rpc.Step{sh("sleep 300 & wait")}}
		res, err := c.Submit(ctx, rpc.SubmitParams{Job: &s})
		is.NoErr(err) // the job is stored
		var running []proc
		if l := pollProcs(60*time.Second, func() []proc {
			running = jobProcs(mark, res.Job.ID)
			if len(running) < 2 {
				return []proc{{}}
			}
			return nil
		}); len(l) > 0 {
			t.Fatalf("job %d did not start its two processes: %s", res.Job.ID, procNames(running))
		}
		waitRunning(t, c, res.Job.ID)
		// The store is idle while the job runs: a copy of its file is whole.
		dir := shortDir(t)
		copyTree(t, a.state, filepath.Join(dir, "state"))
		_ = os.Remove(filepath.Join(dir, "state", "spoold.pid"))
		b := &daemonProc{t: t, bins: buildBins(t), state: filepath.Join(dir, "state"), socket: filepath.Join(dir, "run", "s.sock"),
			args: append([]string{"--kill-grace", "1s"}, flags...)}
		b.start()
		t.Cleanup(b.kill)
		// Whatever the copy does with its own copy of the job, the first
		// daemon's processes live on and its job runs.
		time.Sleep(500 * time.Millisecond)
		for _, q := range running {
			if st, ok := readStat(q.pid); !ok || st.start != q.start || st.state == 'Z' {
				t.Errorf("process %s of the first daemon's job was killed by the daemon on the copy", q)
			}
		}
		j, err := c.Get(ctx, rpc.GetParams{ID: res.Job.ID})
		is.NoErr(err)
		is.Equal(j.State, rpc.StateRunning) // the first daemon's job still runs
		if t.Failed() {
			t.Logf("log of the daemon on the copy:\n%s", b.logs.String())
		}
		b.stop()
		_ = a.cmd.Process.Signal(syscall.SIGTERM)
	})
}

// removeCgroupTree removes a cgroup folder whose cgroups are all empty, the
// deepest first, and reports what would not go.
func removeCgroupTree(dir string) error {
	var dirs []string
	err := filepath.Walk(dir, func(path string, fi os.FileInfo, err error) error {
		if err == nil && fi.IsDir() {
			dirs = append(dirs, path)
		}
		return nil
	})
	if err != nil {
		return err
	}
	for i := len(dirs) - 1; i >= 0; i-- {
		if err := os.Remove(dirs[i]); err != nil {
			return err
		}
	}
	return nil
}

// TestRedTeamTreeRemoved removes the daemon's cgroup tree while no step runs
// (by hand, or by a tool that cleans up empty cgroups): the daemon must make it
// again for its next steps, not fail them on the cgroups it kept for reuse.
func TestRedTeamTreeRemoved(t *testing.T) {
	containmentModes(t, []string{"cgroup"}, func(t *testing.T, mode string, flags []string) {
		is := is.New(t)
		p, _ := redteamDaemon(t, mode, flags)
		c := p.client()
		ctx := tctx(t)
		tree := cgroupTreeOf(t, p)
		run := func() *rpc.Job {
			s := rpc.Spec{Steps: []rpc.Step{sh("true")}}
			res, err := c.Submit(ctx, rpc.SubmitParams{Job: &s})
			is.NoErr(err) // the job is stored
			j, err := c.Wait(ctx, rpc.WaitParams{ID: res.Job.ID, Timeout: rpc.Duration(60 * time.Second)})
			is.NoErr(err)
			return j
		}
		for k := 0; k < 3; k++ {
			is.Equal(run().State, rpc.StateSucceeded) // the idle cgroups fill up
		}
		is.NoErr(removeCgroupTree(tree)) // no step runs: every cgroup of the tree is empty
		for k := 0; k < 3; k++ {
			j := run()
			is.Equal(j.Error, "")                 // no step fails on a cgroup that is gone
			is.Equal(j.State, rpc.StateSucceeded) // the daemon made its tree again
		}
	})
}

// TestRedTeamRestartThroughSymlink kills spoold with SIGKILL while a step runs
// and starts it again on the same state folder reached through a symbolic link
// (a service whose state path is a link, a move): the processes of the crashed
// run must be found and stopped all the same.
func TestRedTeamRestartThroughSymlink(t *testing.T) {
	containmentModes(t, []string{"cgroup", "group"}, func(t *testing.T, mode string, flags []string) {
		is := is.New(t)
		p, mark := redteamDaemon(t, mode, flags)
		c := p.client()
		ctx := tctx(t)
		st := sh("sleep 300 & wait")
		st.OnInterrupt = rpc.OnInterruptFail // no rerun: after the restart nothing of the job may live
		s := rpc.Spec{Steps: []rpc.Step{st}}
		res, err := c.Submit(ctx, rpc.SubmitParams{Job: &s})
		is.NoErr(err) // the job is stored
		waitRunning(t, c, res.Job.ID)
		if l := pollProcs(60*time.Second, func() []proc {
			if len(jobProcs(mark, res.Job.ID)) < 2 {
				return []proc{{}}
			}
			return nil
		}); len(l) > 0 {
			t.Fatalf("job %d did not start its processes", res.Job.ID)
		}
		p.kill9()
		link := filepath.Join(shortDir(t), "state")
		is.NoErr(os.Symlink(p.state, link)) // the same folder under another path
		p.state = link
		p.start()
		c = p.client()
		j, err := c.Wait(ctx, rpc.WaitParams{ID: res.Job.ID, Timeout: rpc.Duration(60 * time.Second)})
		is.NoErr(err)
		is.Equal(j.State, rpc.StateFailed) // interrupted, and on_interrupt says fail
		if l := pollProcs(goneWithin, func() []proc { return jobProcs(mark, res.Job.ID) }); len(l) > 0 {
			t.Errorf("after a SIGKILL of spoold and a restart through a link, processes of job %d live: %s", res.Job.ID, procNames(l))
		}
	})
}

// TestRedTeamInfoContainmentAtStart asks daemon.info as soon as the socket
// answers, again and again while spoold starts: it must always say the
// containment in force. The socket serves while the engine still starts, and
// a daemon.info answered before the containment was picked said "".
func TestRedTeamInfoContainmentAtStart(t *testing.T) {
	b := buildBins(t)
	starts := 5 * rounds(t, 1)
	empty := 0
	for k := 0; k < starts; k++ {
		dir := shortDir(t)
		socket := filepath.Join(dir, "run", "s.sock")
		cmd := exec.Command(b.spoold, "--socket", socket, "--state-dir", filepath.Join(dir, "state"), "--containment", "group")
		cmd.Env = append(os.Environ(), "HOME="+dir)
		if err := cmd.Start(); err != nil {
			t.Fatalf("start spoold: %v", err)
		}
		answered := false
		deadline := time.Now().Add(30 * time.Second)
		for !answered && time.Now().Before(deadline) {
			c, err := client.Dial(context.Background(), socket)
			if err != nil {
				time.Sleep(time.Millisecond)
				continue
			}
			for i := 0; i < 200; i++ {
				info, err := c.Info(context.Background())
				if err != nil {
					break
				}
				answered = true
				if info.Containment == "" {
					empty++
					break
				}
			}
			c.Close()
		}
		_ = cmd.Process.Signal(syscall.SIGTERM)
		_ = cmd.Wait()
		if !answered {
			t.Fatalf("start %d: daemon.info never answered", k)
		}
	}
	if empty > 0 {
		t.Errorf("daemon.info said containment \"\" during start-up in %d of %d starts", empty, starts)
	}
}

// TestRedTeamEnvClearedEscapee runs a step whose child clears its environment
// (env -i) and leaves its group and session (setsid): no mark tells it from any
// other process. With a cgroup per step it is contained all the same: a cancel
// leaves nothing of it. (Process groups cannot find it: that is the documented
// limit of --containment group, which this test does not run.)
func TestRedTeamEnvClearedEscapee(t *testing.T) {
	containmentModes(t, []string{"cgroup"}, func(t *testing.T, mode string, flags []string) {
		is := is.New(t)
		p, _ := redteamDaemon(t, mode, flags)
		c := p.client()
		ctx := tctx(t)
		pidFile := filepath.Join(shortDir(t), "pid")
		s := rpc.Spec{Env: map[string]string{"PIDFILE": pidFile}, Steps: []rpc.Step{
			sh(`(env -i setsid sleep 300 & echo $! > "$PIDFILE.tmp"; mv "$PIDFILE.tmp" "$PIDFILE"); sleep 300`)}}
		res, err := c.Submit(ctx, rpc.SubmitParams{Job: &s})
		is.NoErr(err) // the job is stored
		var escapee proc
		deadline := time.Now().Add(60 * time.Second)
		for {
			b, err := os.ReadFile(pidFile)
			if err == nil {
				pid, _ := strconv.Atoi(strings.TrimSpace(string(b)))
				var ok bool
				if escapee, ok = readStat(pid); ok && escapee.comm == "sleep" {
					break
				}
			}
			if time.Now().After(deadline) {
				t.Fatalf("the step's escapee did not start")
			}
			time.Sleep(10 * time.Millisecond)
		}
		// Whatever the outcome, the escapee does not outlive the test.
		t.Cleanup(func() {
			if fd, err := unix.PidfdOpen(escapee.pid, 0); err == nil {
				if q, ok := readStat(escapee.pid); ok && q.start == escapee.start {
					_ = unix.PidfdSendSignal(fd, unix.SIGKILL, nil, 0)
				}
				unix.Close(fd)
			}
		})
		j, err := c.Cancel(ctx, rpc.CancelParams{ID: res.Job.ID, Reason: "red team"})
		is.NoErr(err)
		is.Equal(j.State, rpc.StateCancelled) // the cancel is the outcome
		alive := func() []proc {
			if q, ok := readStat(escapee.pid); ok && q.start == escapee.start && q.state != 'Z' {
				return []proc{q}
			}
			return nil
		}
		if l := pollProcs(goneWithin, alive); len(l) > 0 {
			t.Errorf("the step's child without environment, in a session of its own, outlived the cancel: %s", procNames(l))
		}
		checkNoZombies(t, p)
	})
}
