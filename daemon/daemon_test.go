package daemon_test

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/matryer/is"

	"spool/daemon"
	"spool/rpc"
	"spool/store"
)

// harness runs a daemon over a real bbolt store in a temp folder.
type harness struct {
	t     *testing.T
	dir   string
	d     *daemon.Daemon
	st    *store.Store
	stop  context.CancelFunc
	done  chan error
	close sync.Once
}

func start(t *testing.T, dir string, mod func(*daemon.Config)) *harness {
	t.Helper()
	st, err := store.Open(filepath.Join(dir, "spool.db"), store.Options{})
	if err != nil {
		t.Fatalf("open store: %v", err)
	}
	cfg := daemon.Config{Store: st, StateDir: dir, MaxParallel: 4, KillGrace: 2 * time.Second, Home: dir}
	if mod != nil {
		mod(&cfg)
	}
	d, err := daemon.New(cfg)
	if err != nil {
		t.Fatalf("new daemon: %v", err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	h := &harness{t: t, dir: dir, d: d, st: st, stop: cancel, done: make(chan error, 1)}
	go func() { h.done <- d.Run(ctx) }()
	t.Cleanup(h.shutdown)
	return h
}

// shutdown stops the daemon as SIGTERM would and closes the store.
func (h *harness) shutdown() {
	h.close.Do(func() {
		h.stop()
		select {
		case err := <-h.done:
			if err != nil {
				h.t.Errorf("run: %v", err)
			}
		case <-time.After(30 * time.Second):
			h.t.Errorf("daemon did not stop")
		}
		h.st.Close()
	})
}

func ctxT(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	t.Cleanup(cancel)
	return ctx
}

func shell(script string) rpc.Step { return rpc.Step{Shell: &rpc.ShellStep{Script: script}} }

func submit(t *testing.T, d *daemon.Daemon, spec rpc.Spec) *rpc.Job {
	t.Helper()
	res, err := d.Submit(ctxT(t), rpc.SubmitParams{Job: &spec})
	if err != nil {
		t.Fatalf("submit: %v", err)
	}
	return res.Job
}

func wait(t *testing.T, d *daemon.Daemon, id int64) *rpc.Job {
	t.Helper()
	j, err := d.Wait(ctxT(t), rpc.WaitParams{ID: id})
	if err != nil {
		t.Fatalf("wait %d: %v", id, err)
	}
	return j
}

func TestExecStepSucceedsWithResult(t *testing.T) {
	is := is.New(t)
	h := start(t, t.TempDir(), nil)
	j := submit(t, h.d, rpc.Spec{Steps: []rpc.Step{{Exec: &rpc.ExecStep{Argv: []string{"echo", "hello"}}}}})
	is.Equal(j.State, rpc.StateQueued) // a submit answers with the queued job
	j = wait(t, h.d, j.ID)
	is.Equal(j.State, rpc.StateSucceeded)                      // echo exits 0
	is.Equal(string(j.Result), `"hello"`)                      // the result is stdout, trimmed
	is.Equal(*j.Steps[0].ExitCode, 0)                          // the exit code is kept
	is.True(strings.Contains(*j.Steps[0].OutputTail, "hello")) // the log has the output
}

func TestStepsShareResultsAndFailureSkipsTheRest(t *testing.T) {
	is := is.New(t)
	h := start(t, t.TempDir(), nil)
	j := submit(t, h.d, rpc.Spec{Steps: []rpc.Step{
		{Name: "first", Shell: &rpc.ShellStep{Script: "echo 41"}},
		{Name: "second", Shell: &rpc.ShellStep{Script: `echo $(( $(cat "$SPOOL_RESULTS_DIR/first") + 1 ))`}, Result: "json"},
	}})
	j = wait(t, h.d, j.ID)
	is.Equal(j.State, rpc.StateSucceeded) // both steps ran
	is.Equal(string(j.Result), "42")      // the second step read the first one's result

	j = submit(t, h.d, rpc.Spec{Steps: []rpc.Step{shell("echo oops >&2; exit 3"), shell("echo never")}})
	j = wait(t, h.d, j.ID)
	is.Equal(j.State, rpc.StateFailed)                        // exit 3 fails the job
	is.Equal(*j.Steps[0].ExitCode, 3)                         // with its exit code
	is.Equal(j.Steps[1].State, rpc.StateSkipped)              // the rest is skipped
	is.True(strings.Contains(j.Error, "exit status 3"))       // the error says why
	is.True(strings.Contains(*j.Steps[0].OutputTail, "oops")) // stderr goes to the log
}

func TestCancelRunningAndQueued(t *testing.T) {
	is := is.New(t)
	h := start(t, t.TempDir(), func(c *daemon.Config) { c.MaxParallel = 1 })
	running := submit(t, h.d, rpc.Spec{Steps: []rpc.Step{shell("echo started; sleep 30")}})
	queued := submit(t, h.d, rpc.Spec{Steps: []rpc.Step{shell("true")}})
	// Wait until the first one runs.
	for {
		j, err := h.d.Get(ctxT(t), rpc.GetParams{ID: running.ID})
		is.NoErr(err) // the job exists
		if j.Steps[0].State == rpc.StateRunning && strings.Contains(*j.Steps[0].OutputTail, "started") {
			break
		}
		time.Sleep(20 * time.Millisecond)
	}
	q, err := h.d.Get(ctxT(t), rpc.GetParams{ID: queued.ID})
	is.NoErr(err)
	is.Equal(*q.Waiting, "capacity") // the second waits for the only slot

	j, err := h.d.Cancel(ctxT(t), rpc.CancelParams{ID: queued.ID, Reason: "not needed"})
	is.NoErr(err)                                  // a queued job cancels at once
	is.Equal(j.State, rpc.StateCancelled)          // and is final
	is.Equal(j.Error, "not needed")                // with the reason
	is.Equal(j.Steps[0].State, rpc.StateCancelled) // its active step is cancelled

	j, err = h.d.Cancel(ctxT(t), rpc.CancelParams{ID: running.ID})
	is.NoErr(err)                           // cancel answers once the job is final
	is.Equal(j.State, rpc.StateCancelled)   // the running job is cancelled
	is.Equal(*j.Steps[0].Signal, "SIGTERM") // it was stopped with SIGTERM

	_, err = h.d.Cancel(ctxT(t), rpc.CancelParams{ID: running.ID})
	is.Equal(rpc.CodeOf(err), rpc.CodeBadState) // a final job cannot be cancelled again
}

func TestWatchReplaysInOrderAndSaysDone(t *testing.T) {
	is := is.New(t)
	h := start(t, t.TempDir(), nil)
	j := submit(t, h.d, rpc.Spec{Steps: []rpc.Step{shell("echo a"), shell("echo b")}})
	wait(t, h.d, j.ID)
	w, err := h.d.Watch(ctxT(t), rpc.WatchParams{Jobs: []int64{j.ID}, Since: rpc.Since(0)})
	is.NoErr(err)
	var types []string
	var last int64
	for {
		ev, err := w.Next(ctxT(t))
		if errors.Is(err, io.EOF) {
			break
		}
		is.NoErr(err)
		if ev.Seq != 0 {
			is.True(ev.Seq > last) // seq order
			last = ev.Seq
		}
		types = append(types, ev.Type)
	}
	is.Equal(strings.Join(types, ","), "submitted,started,step_started,step_finished,step_started,step_finished,succeeded,done") // every transition, then done
}

func TestPriorityThenIDOrder(t *testing.T) {
	is := is.New(t)
	h := start(t, t.TempDir(), func(c *daemon.Config) { c.MaxParallel = 1 })
	out := filepath.Join(h.dir, "order")
	blocker := submit(t, h.d, rpc.Spec{Steps: []rpc.Step{shell("sleep 0.3")}})
	var ids []int64
	for _, prio := range []int{0, 5, 0, 5} {
		j := submit(t, h.d, rpc.Spec{Priority: prio, Steps: []rpc.Step{shell(`echo $SPOOL_JOB_ID >> ` + out)}})
		ids = append(ids, j.ID)
	}
	for _, id := range ids {
		wait(t, h.d, id)
	}
	wait(t, h.d, blocker.ID)
	b, err := os.ReadFile(out)
	is.NoErr(err)
	want := strings.Join([]string{itoa(ids[1]), itoa(ids[3]), itoa(ids[0]), itoa(ids[2])}, "\n") + "\n"
	is.Equal(string(b), want) // higher priority first, then lower id
}

func itoa(v int64) string { b, _ := json.Marshal(v); return string(b) }

func TestDependencyChainFails(t *testing.T) {
	is := is.New(t)
	h := start(t, t.TempDir(), nil)
	res, err := h.d.Submit(ctxT(t), rpc.SubmitParams{Jobs: []rpc.Spec{
		{Steps: []rpc.Step{shell("sleep 0.2; exit 1")}},
		{AfterIndex: []int{0}, Steps: []rpc.Step{shell("echo second")}},
		{AfterIndex: []int{1}, Steps: []rpc.Step{shell("echo third")}},
	}})
	is.NoErr(err)
	ids := []int64{res.Jobs[0].ID, res.Jobs[1].ID, res.Jobs[2].ID}
	is.Equal(res.Jobs[1].After, []int64{ids[0]}) // after_index resolved to ids
	j2 := wait(t, h.d, ids[1])
	j3 := wait(t, h.d, ids[2])
	is.Equal(j2.State, rpc.StateFailed)                      // the dependent fails
	is.Equal(j2.Error, "dependency "+itoa(ids[0])+" failed") // naming its dependency
	is.Equal(j3.Error, "dependency "+itoa(ids[1])+" failed") // down the chain
	is.Equal(j3.Steps[0].State, rpc.StateSkipped)            // without running
	is.True(j3.Steps[0].StartedAt == nil)                    // never started
}

func TestRetryWithBackoff(t *testing.T) {
	is := is.New(t)
	h := start(t, t.TempDir(), nil)
	counter := filepath.Join(h.dir, "count")
	script := `n=$(cat ` + counter + ` 2>/dev/null || echo 0); n=$((n+1)); echo $n > ` + counter + `; [ $n -ge 3 ]`
	j := submit(t, h.d, rpc.Spec{Steps: []rpc.Step{{Shell: &rpc.ShellStep{Script: script},
		Retry: &rpc.Retry{Attempts: 5, Backoff: rpc.Duration(50 * time.Millisecond), MaxBackoff: rpc.Duration(100 * time.Millisecond)}}}})
	j = wait(t, h.d, j.ID)
	is.Equal(j.State, rpc.StateSucceeded) // the third attempt succeeds
	is.Equal(j.Steps[0].Attempt, 3)       // after two failures
}

func TestRestartResumesInterruptedStep(t *testing.T) {
	is := is.New(t)
	dir := t.TempDir()
	h := start(t, dir, nil)
	marker := filepath.Join(dir, "runs")
	j := submit(t, h.d, rpc.Spec{Steps: []rpc.Step{
		shell("echo one"),
		shell("echo run >> " + marker + "; sleep 0.5"),
	}})
	for {
		g, err := h.d.Get(ctxT(t), rpc.GetParams{ID: j.ID})
		is.NoErr(err)
		if g.CurrentStep == 1 && g.Steps[1].State == rpc.StateRunning {
			if _, err := os.Stat(marker); err == nil {
				break
			}
		}
		time.Sleep(10 * time.Millisecond)
	}
	h.shutdown()

	h2 := start(t, dir, nil)
	j2 := wait(t, h2.d, j.ID)
	is.Equal(j2.State, rpc.StateSucceeded)          // it finished after the restart
	is.Equal(j2.Steps[0].State, rpc.StateSucceeded) // the first step was not run again
	is.Equal(j2.Steps[1].Attempt, 1)                // the interruption used no attempt
	b, _ := os.ReadFile(marker)
	is.Equal(strings.Count(string(b), "run"), 2) // the interrupted step ran again

	w, err := h2.d.Watch(ctxT(t), rpc.WatchParams{Jobs: []int64{j.ID}, Since: rpc.Since(0)})
	is.NoErr(err)
	var types []string
	for {
		ev, err := w.Next(ctxT(t))
		if errors.Is(err, io.EOF) {
			break
		}
		is.NoErr(err)
		types = append(types, ev.Type)
	}
	is.True(strings.Contains(strings.Join(types, ","), "interrupted,started,step_started")) // interrupted, then resumed
}

func TestSubmitRejectsBadSpecs(t *testing.T) {
	is := is.New(t)
	h := start(t, t.TempDir(), nil)
	cases := []struct {
		spec  rpc.Spec
		field string
	}{
		{rpc.Spec{}, "job.steps"},
		{rpc.Spec{Steps: []rpc.Step{{Exec: &rpc.ExecStep{}}}}, "job.steps[0].exec.argv"},
		{rpc.Spec{Queue: "Bad Queue", Steps: []rpc.Step{shell("true")}}, "job.queue"},
		{rpc.Spec{After: []int64{999}, Steps: []rpc.Step{shell("true")}}, "job.after[0]"},
		{rpc.Spec{Env: map[string]string{"SPOOL_X": "1"}, Steps: []rpc.Step{shell("true")}}, "job.env.SPOOL_X"},
		{rpc.Spec{Steps: []rpc.Step{shell("true"), {Name: "step-0", Sleep: &rpc.SleepStep{Duration: rpc.Duration(time.Second)}}}}, "job.steps[1].name"},
	}
	for _, c := range cases {
		_, err := h.d.Submit(ctxT(t), rpc.SubmitParams{Job: &c.spec})
		var e *rpc.Error
		is.True(errors.As(err, &e))             // a protocol error
		is.Equal(e.Code, rpc.CodeInvalidParams) // -32602
		is.Equal(e.Data.Field, c.field)         // naming the field
	}
	info, err := h.d.Info(ctxT(t))
	is.NoErr(err)
	is.Equal(info.LastSeq, int64(0)) // nothing was stored
}
