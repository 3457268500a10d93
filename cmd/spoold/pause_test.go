package main

import (
	"encoding/json"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/matryer/is"

	"spool/rpc"
)

func fileSize(file string) int64 {
	fi, err := os.Stat(file)
	if err != nil {
		return 0
	}
	return fi.Size()
}

// stillFor checks that file does not grow for d.
func stillFor(t *testing.T, file string, d time.Duration) {
	t.Helper()
	time.Sleep(150 * time.Millisecond)
	n := fileSize(file)
	time.Sleep(d)
	if m := fileSize(file); m != n {
		t.Fatalf("%s grew from %d to %d bytes while the job was paused", filepath.Base(file), n, m)
	}
}

func growsSoon(t *testing.T, file string) {
	t.Helper()
	n := fileSize(file)
	deadline := time.Now().Add(30 * time.Second)
	for fileSize(file) <= n {
		if time.Now().After(deadline) {
			t.Fatalf("%s does not grow", filepath.Base(file))
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func showJSON(t *testing.T, p *daemonProc, id string) rpc.Job {
	t.Helper()
	var j rpc.Job
	if err := json.Unmarshal([]byte(runCLI(t, p, 0, "--json", "show", id)), &j); err != nil {
		t.Fatalf("show %s: %v", id, err)
	}
	return j
}

// TestE2EPauseResumeSignal pauses a job through the CLI, kills spoold with -9
// while it is paused, and checks that the restarted daemon keeps it paused (it
// does not run) until spool resume, then that spool signal reaches it and it
// finishes.
func TestE2EPauseResumeSignal(t *testing.T) {
	is := is.New(t)
	p := newDaemon(t)
	dir := filepath.Dir(p.state)
	ticks, got, done := filepath.Join(dir, "ticks"), filepath.Join(dir, "got"), filepath.Join(dir, "done")
	script := `trap 'echo usr1 >> ` + got + `' USR1; while [ ! -e ` + done + ` ]; do date +%s%N >> ` + ticks + `; sleep 0.05; done`
	id := strings.TrimSpace(runCLI(t, p, 0, "submit", "--", "sh", "-c", script))
	n, err := strconv.ParseInt(id, 10, 64)
	is.NoErr(err)
	waitRunning(t, p.client(), n)
	growsSoon(t, ticks)

	is.Equal(strings.TrimSpace(runCLI(t, p, 0, "pause", id)), id+" paused") // spool pause says so
	j := showJSON(t, p, id)
	is.Equal(j.State, rpc.StateRunning) // a paused job stays running
	is.True(j.PausedAt != nil)          // with paused_at
	stillFor(t, ticks, 500*time.Millisecond)
	is.True(strings.Contains(runCLI(t, p, 0, "status", id), "running (paused)")) // status shows it
	runCLI(t, p, 2, "signal", id, "NOSUCH")                                      // an unknown signal is a usage error

	p.kill9()
	p.start()
	j = showJSON(t, p, id)
	is.Equal(j.State, rpc.StateQueued) // the restart queued it again
	is.True(j.PausedAt != nil)         // paused
	is.Equal(*j.Waiting, "job_paused") // which is why it waits
	stillFor(t, ticks, 700*time.Millisecond)
	is.Equal(showJSON(t, p, id).State, rpc.StateQueued) // it was not claimed
	runCLI(t, p, 1, "signal", id, "USR1")               // a queued job has no process to signal

	var resumed rpc.Job
	is.NoErr(json.Unmarshal([]byte(runCLI(t, p, 0, "--json", "resume", id)), &resumed))
	is.Equal(resumed.PausedAt, nil) // --json prints the job, resumed
	growsSoon(t, ticks)             // its step runs again
	waitRunning(t, p.client(), n)
	time.Sleep(200 * time.Millisecond) // the trap is set
	is.Equal(strings.TrimSpace(runCLI(t, p, 0, "signal", id, "usr1")), id+" SIGUSR1 sent")
	deadline := time.Now().Add(30 * time.Second)
	for {
		b, _ := os.ReadFile(got)
		if string(b) == "usr1\n" {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the signal did not reach the step: %q", b)
		}
		time.Sleep(20 * time.Millisecond)
	}
	is.NoErr(os.WriteFile(done, nil, 0o600))
	runCLI(t, p, 0, "wait", id)
	c := p.client()
	ctx := tctx(t)
	w, err := c.Watch(ctx, rpc.WatchParams{Since: rpc.Since(0), Jobs: []int64{n}})
	is.NoErr(err)
	var types []string
	for {
		ev, err := w.Next(ctx)
		is.NoErr(err)
		if ev.Seq == 0 {
			continue
		}
		if ev.Job == n {
			types = append(types, ev.Type)
		}
		if ev.Seq >= w.Result().Seq {
			break
		}
	}
	is.Equal(strings.Join(types, ","), "submitted,started,step_started,paused,interrupted,resumed,started,step_started,signalled,step_finished,succeeded") // each turn of the story is an event, in order
}
