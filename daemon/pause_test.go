package daemon_test

import (
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/matryer/is"

	"spool/daemon"
	"spool/rpc"
)

// ticker is a step that appends the time to file every 50 ms, for ever.
func ticker(file string) rpc.Step {
	return shell(`while :; do date +%s%N >> '` + file + `'; sleep 0.05; done`)
}

func size(file string) int64 {
	fi, err := os.Stat(file)
	if err != nil {
		return 0
	}
	return fi.Size()
}

// stands checks that file does not grow for a while.
func stands(t *testing.T, file string) {
	t.Helper()
	time.Sleep(150 * time.Millisecond) // a write under way when the pause came lands
	n := size(file)
	time.Sleep(500 * time.Millisecond)
	if m := size(file); m != n {
		t.Fatalf("%s grew from %d to %d bytes while paused", filepath.Base(file), n, m)
	}
}

func grows(t *testing.T, file string) {
	t.Helper()
	n := size(file)
	eventually(t, filepath.Base(file)+" grows", func() bool { return size(file) > n })
}

// TestPauseResume pauses a running job in each containment: its processes stop
// (the file it writes stops growing), the job stays running with paused_at set
// and a paused event, then resume lets it go on.
func TestPauseResume(t *testing.T) {
	for _, mode := range []string{daemon.ContainGroup, daemon.ContainAuto} {
		t.Run(mode, func(t *testing.T) {
			is := is.New(t)
			h := start(t, t.TempDir(), func(c *daemon.Config) { c.Containment = mode; c.KillGrace = 500 * time.Millisecond })
			f := filepath.Join(h.dir, "ticks")
			j := submit(t, h.d, rpc.Spec{Steps: []rpc.Step{ticker(f)}})
			eventually(t, "the step writes", func() bool { return size(f) > 0 })

			got, err := h.d.Pause(ctxT(t), rpc.PauseParams{ID: j.ID})
			is.NoErr(err)
			is.Equal(got.State, rpc.StateRunning) // a paused job stays running
			is.True(got.PausedAt != nil)          // with paused_at set
			stands(t, f)
			again, err := h.d.Pause(ctxT(t), rpc.PauseParams{ID: j.ID})
			is.NoErr(err)                                          // a second pause is no error
			is.True(again.PausedAt.Equal(*got.PausedAt))           // and changes nothing
			is.Equal(len(ofType(stored(t, h, j.ID), "paused")), 1) // one paused event

			got, err = h.d.Resume(ctxT(t), rpc.PauseParams{ID: j.ID})
			is.NoErr(err)
			is.Equal(got.PausedAt, nil) // resumed
			grows(t, f)
			evs := ofType(stored(t, h, j.ID), rpc.EventResumed)
			is.Equal(len(evs), 1)                        // one resumed event
			is.True(evs[0].Elapsed.D() >= time.Second/2) // that says how long it was paused

			got, err = h.d.Cancel(ctxT(t), rpc.CancelParams{ID: j.ID})
			is.NoErr(err)
			is.Equal(got.State, rpc.StateCancelled) // and it can be cancelled
		})
	}
}

// TestPauseCancelPaused cancels a paused job: its processes get their SIGTERM
// (thawed first) and the job ends cancelled, not paused.
func TestPauseCancelPaused(t *testing.T) {
	is := is.New(t)
	h := start(t, t.TempDir(), func(c *daemon.Config) { c.KillGrace = 10 * time.Second })
	f := filepath.Join(h.dir, "ticks")
	j := submit(t, h.d, rpc.Spec{Steps: []rpc.Step{ticker(f)}})
	eventually(t, "the step writes", func() bool { return size(f) > 0 })
	_, err := h.d.Pause(ctxT(t), rpc.PauseParams{ID: j.ID})
	is.NoErr(err)
	begin := time.Now()
	got, err := h.d.Cancel(ctxT(t), rpc.CancelParams{ID: j.ID})
	is.NoErr(err)
	is.Equal(got.State, rpc.StateCancelled)     // cancelled
	is.Equal(got.PausedAt, nil)                 // a final job is not paused
	is.True(time.Since(begin) < 5*time.Second)  // by its SIGTERM, not after the kill grace
	is.Equal(jobProcs(h.dir, j.ID), []int(nil)) // nothing of it is left
}

// TestPauseFreezesEscapedChild pauses, in cgroup mode, a step whose child left
// its group (setsid) and ignores SIGTERM: the freezer stops it too.
func TestPauseFreezesEscapedChild(t *testing.T) {
	h := cgroupHarness(t)
	is := is.New(t)
	f, g := filepath.Join(h.dir, "main"), filepath.Join(h.dir, "child")
	script := `setsid sh -c 'trap "" TERM; while :; do date +%s%N >> ` + g + `; sleep 0.05; done' & ` +
		`while :; do date +%s%N >> ` + f + `; sleep 0.05; done`
	j := submit(t, h.d, rpc.Spec{Steps: []rpc.Step{shell(script)}})
	eventually(t, "both write", func() bool { return size(f) > 0 && size(g) > 0 })
	_, err := h.d.Pause(ctxT(t), rpc.PauseParams{ID: j.ID})
	is.NoErr(err)
	stands(t, g)
	stands(t, f)
	_, err = h.d.Resume(ctxT(t), rpc.PauseParams{ID: j.ID})
	is.NoErr(err)
	grows(t, g)
	grows(t, f)
	_, err = h.d.Cancel(ctxT(t), rpc.CancelParams{ID: j.ID})
	is.NoErr(err)
	is.Equal(jobProcs(h.dir, j.ID), []int(nil)) // the escaped child is gone with the cancel
}

// TestPauseStopsTimeouts pauses a job for longer than its step's timeout: the
// timeout does not fire while paused, fires after the resume for what was left,
// and the job's deadline moved by the time paused.
func TestPauseStopsTimeouts(t *testing.T) {
	is := is.New(t)
	h := start(t, t.TempDir(), func(c *daemon.Config) { c.KillGrace = 200 * time.Millisecond })
	step := shell("sleep 60")
	step.Timeout = dur(800 * time.Millisecond)
	j := submit(t, h.d, rpc.Spec{Timeout: dur(time.Hour), Steps: []rpc.Step{step}})
	eventually(t, "the step runs", func() bool { return len(jobProcs(h.dir, j.ID)) > 0 })
	before, err := h.st.Get(ctxT(t), j.ID)
	is.NoErr(err)
	_, err = h.d.Pause(ctxT(t), rpc.PauseParams{ID: j.ID})
	is.NoErr(err)
	time.Sleep(1500 * time.Millisecond)
	is.Equal(get(t, h.d, j.ID).State, rpc.StateRunning) // the step timeout did not fire while paused
	resumedAt := time.Now()
	_, err = h.d.Resume(ctxT(t), rpc.PauseParams{ID: j.ID})
	is.NoErr(err)
	after, err := h.st.Get(ctxT(t), j.ID)
	is.NoErr(err)
	moved := after.Run.Deadline.Sub(*before.Run.Deadline)
	is.True(moved >= 1400*time.Millisecond) // the job's deadline moved by the time paused
	got := wait(t, h.d, j.ID)
	is.Equal(got.State, rpc.StateFailed)                // the step timeout fired after all
	is.Equal(got.Steps[0].Error, "timeout after 800ms") // as a timeout
	is.True(time.Since(resumedAt) < 2*time.Second)      // for what was left of it
}

// TestSignal sends named signals to a running step.
func TestSignal(t *testing.T) {
	is := is.New(t)
	h := start(t, t.TempDir(), nil)
	f := filepath.Join(h.dir, "got")
	j := submit(t, h.d, rpc.Spec{Steps: []rpc.Step{shell(`trap 'echo usr1 >> ` + f + `' USR1; trap 'echo hup >> ` + f + `; exit 3' HUP; while :; do sleep 0.05; done`)}})
	eventually(t, "the step runs", func() bool { return len(jobProcs(h.dir, j.ID)) > 0 })
	time.Sleep(100 * time.Millisecond) // the traps are set

	_, err := h.d.Signal(ctxT(t), rpc.SignalParams{ID: j.ID, Signal: "usr1"})
	is.NoErr(err)
	eventually(t, "the trap ran", func() bool { b, _ := os.ReadFile(f); return string(b) == "usr1\n" })
	_, err = h.d.Signal(ctxT(t), rpc.SignalParams{ID: j.ID, Signal: "SIGHUP"})
	is.NoErr(err)
	got := wait(t, h.d, j.ID)
	is.Equal(*got.Steps[0].ExitCode, 3) // the HUP trap ended it
	evs := ofType(stored(t, h, j.ID), rpc.EventSignalled)
	is.Equal(len(evs), 2)               // each signal stored its event
	is.Equal(*evs[0].Signal, "SIGUSR1") // by its name
	is.Equal(*evs[1].Signal, "SIGHUP")

	_, err = h.d.Signal(ctxT(t), rpc.SignalParams{ID: j.ID, Signal: "HUP"})
	is.Equal(rpc.CodeOf(err), rpc.CodeBadState) // a final job answers 1002
	_, err = h.d.Pause(ctxT(t), rpc.PauseParams{ID: j.ID})
	is.Equal(rpc.CodeOf(err), rpc.CodeBadState) // and cannot be paused
	_, err = h.d.Signal(ctxT(t), rpc.SignalParams{ID: j.ID, Signal: "NOPE"})
	is.Equal(rpc.CodeOf(err), rpc.CodeInvalidParams) // an unknown signal is bad params
	is.Equal(errData(err).Field, "signal")           // naming signal
}

// TestPauseBetweenAttempts pauses a sleep step and a step that waits for a
// retry: no process stops, but nothing starts until the resume.
func TestPauseSleepAndRetry(t *testing.T) {
	t.Run("sleep", func(t *testing.T) {
		is := is.New(t)
		h := start(t, t.TempDir(), nil)
		j := submit(t, h.d, rpc.Spec{Steps: []rpc.Step{{Sleep: &rpc.SleepStep{Duration: dur(500 * time.Millisecond)}}}})
		eventually(t, "it sleeps", func() bool { return get(t, h.d, j.ID).State == rpc.StateRunning })
		_, err := h.d.Pause(ctxT(t), rpc.PauseParams{ID: j.ID})
		is.NoErr(err)
		time.Sleep(1500 * time.Millisecond)
		is.Equal(get(t, h.d, j.ID).State, rpc.StateRunning) // a paused sleep does not end
		_, err = h.d.Resume(ctxT(t), rpc.PauseParams{ID: j.ID})
		is.NoErr(err)
		is.Equal(wait(t, h.d, j.ID).State, rpc.StateSucceeded) // it ends after the resume
	})
	t.Run("retry", func(t *testing.T) {
		is := is.New(t)
		h := start(t, t.TempDir(), nil)
		f := filepath.Join(h.dir, "runs")
		step := shell(`echo run >> ` + f + `; [ $(wc -l < ` + f + `) -ge 2 ]`)
		step.Retry = &rpc.Retry{Attempts: 2, Backoff: dur(400 * time.Millisecond), MaxBackoff: dur(400 * time.Millisecond)}
		j := submit(t, h.d, rpc.Spec{Steps: []rpc.Step{step}})
		eventually(t, "it waits for a retry", func() bool { return get(t, h.d, j.ID).Steps[0].State == rpc.StateRetrying })
		_, err := h.d.Pause(ctxT(t), rpc.PauseParams{ID: j.ID})
		is.NoErr(err)
		time.Sleep(time.Second)
		b, _ := os.ReadFile(f)
		is.Equal(string(b), "run\n") // no attempt started while paused
		_, err = h.d.Resume(ctxT(t), rpc.PauseParams{ID: j.ID})
		is.NoErr(err)
		is.Equal(wait(t, h.d, j.ID).State, rpc.StateSucceeded) // the retry ran after the resume
	})
}

// TestPauseAcrossRestart stops the daemon while a job is paused: the next start
// queues it again paused, never claims it, and runs it once resumed.
func TestPauseAcrossRestart(t *testing.T) {
	is := is.New(t)
	dir := t.TempDir()
	h := start(t, dir, func(c *daemon.Config) { c.KillGrace = 200 * time.Millisecond })
	f := filepath.Join(dir, "ticks")
	done := filepath.Join(dir, "done")
	step := shell(`date >> '` + f + `'; [ -e '` + done + `' ] || sleep 60`)
	j := submit(t, h.d, rpc.Spec{Steps: []rpc.Step{step}})
	eventually(t, "the step runs", func() bool { return size(f) > 0 })
	_, err := h.d.Pause(ctxT(t), rpc.PauseParams{ID: j.ID})
	is.NoErr(err)
	h.shutdown()

	h = start(t, dir, nil)
	<-h.d.Ready()
	n := size(f)
	time.Sleep(500 * time.Millisecond)
	got := get(t, h.d, j.ID)
	is.Equal(got.State, rpc.StateQueued) // queued again by the restart
	is.True(got.PausedAt != nil)         // still paused
	is.Equal(*got.Waiting, "job_paused") // which is why it waits
	is.Equal(size(f), n)                 // and it did not run
	_, err = h.d.Pause(ctxT(t), rpc.PauseParams{ID: j.ID})
	is.Equal(rpc.CodeOf(err), rpc.CodeBadState) // a queued job is not paused again

	is.NoErr(os.WriteFile(done, nil, 0o600))
	got, err = h.d.Resume(ctxT(t), rpc.PauseParams{ID: j.ID})
	is.NoErr(err)
	is.Equal(got.PausedAt, nil) // resumed
	got = wait(t, h.d, j.ID)
	is.Equal(got.State, rpc.StateSucceeded) // it ran again and finished
	is.True(size(f) > n)                    // its step ran again after the resume
}
