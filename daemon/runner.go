package daemon

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strings"
	"time"

	"spool/rpc"
	"spool/rpc/machine"
)

// Causes for which a step's context ends.
var (
	errCancelRequested = errors.New("cancel requested")
)

type stepTimeout struct{ d time.Duration }

func (e stepTimeout) Error() string { return "timeout after " + e.d.String() }

type jobTimeout struct{ d time.Duration }

func (e jobTimeout) Error() string { return "timeout after " + e.d.String() }

// outcome is how one attempt of a step ended.
type outcome struct {
	ok        bool
	exitCode  *int
	signal    *string
	err       string
	result    json.RawMessage
	truncated bool
	// resultText is what goes to SPOOL_RESULTS_DIR.
	resultText string
	// storeErr says the step's process could not be recorded: nothing of the
	// attempt counts, and its process was killed.
	storeErr error
	// stopped is why the daemon stopped the step (a cancel, a timeout, the
	// daemon's stop), nil when it ended by itself.
	stopped error
	// reaped is closed once no process of the attempt is left; nil when it had
	// none.
	reaped <-chan struct{}
}

// mutation edits a job's record for a transition and returns its events: one of
// the lifecycle's transitions (package machine).
type mutation func(r *rpc.Record, now time.Time) []rpc.Event

// errLeaseLost ends the steps of a daemon whose lease the store says is gone.
var errLeaseLost = errors.New("this daemon's lease is gone")

// runJob drives a job this daemon claimed through its steps until it is final,
// until the store says the job is no longer this daemon's, until the lease it
// was claimed under is lost (its processes are killed and nothing more is
// stored: the store gives the job to another owner), or until the daemon stops
// (then the job stays running in the store, and whoever joins next with the
// store resumes it).
func (d *Daemon) runJob(js *jobState) {
	defer d.runners.Done()
	// The lease's context: it ends when the daemon stops, and when the lease
	// the job was claimed under is lost.
	parent := js.lease.ctx
	defer func() {
		d.mu.Lock()
		d.release(js)
		d.mu.Unlock()
		d.kick()
	}()
	for {
		done, err := d.runStep(parent, js)
		switch {
		case errors.Is(err, errJobOver):
			// The store moved the job on without this runner (a lost race,
			// a lease that is gone): its work here is over.
			d.log.Warn("job taken from its runner", "id", js.rec.ID, "err", err)
			return
		case err != nil:
			if parent.Err() != nil {
				return
			}
			d.log.Error("run job", "id", js.rec.ID, "err", err)
			// A storage failure: nothing of it was applied; try again shortly.
			select {
			case <-time.After(time.Second):
			case <-parent.Done():
				return
			}
		case done:
			return
		}
	}
}

// runStep takes the job's next transition: it ends the job when a cancel or its
// deadline came, starts the attempt of a step that waited for a retry, or runs
// the current step and stores what came of it. It reports whether the job is over
// for this runner.
func (d *Daemon) runStep(parent context.Context, js *jobState) (bool, error) {
	d.mu.Lock()
	rec := cloneRecord(js.rec)
	d.mu.Unlock()
	if rec.State.Final() {
		return true, nil
	}
	if parent.Err() != nil {
		return true, nil // the daemon stops: the job resumes at the next start
	}
	now := d.clock.Now()
	i := rec.CurrentStep
	if reason := rec.Run.CancelReason; reason != nil {
		return true, d.update(parent, js, func(r *rpc.Record, now time.Time) []rpc.Event {
			return cancelJob(r, *reason, now)
		})
	}
	if resumed := d.pausedGate(js); resumed != nil {
		// A paused job waits here, between steps or attempts, until resumed
		// (its deadline moved by the time paused) or cancelled.
		return false, d.waitResumed(parent, js, resumed)
	}
	if dl := rec.Run.Deadline; dl != nil && !now.Before(*dl) {
		reason := jobTimeout{rec.Spec.Timeout.D()}.Error()
		return true, d.update(parent, js, func(r *rpc.Record, now time.Time) []rpc.Event {
			return machine.FailRunning(r, reason, now)
		})
	}
	switch rec.Steps[i].State {
	case rpc.StateRetrying:
		if err := d.waitRetry(parent, js, rec); err != nil {
			return false, err
		}
		d.mu.Lock()
		cancelled := js.rec.Run.CancelReason != nil
		d.mu.Unlock()
		if cancelled || parent.Err() != nil || (rec.Run.Deadline != nil && !d.clock.Now().Before(*rec.Run.Deadline)) {
			return false, nil // the next turn ends the job
		}
		return false, d.startUnlessPaused(parent, js, i)
	case rpc.StatePending:
		return false, d.startUnlessPaused(parent, js, i)
	case rpc.StateRunning:
	default:
		return true, fmt.Errorf("job %d runs, but its current step %d is %s", rec.ID, i, rec.Steps[i].State)
	}

	// The step's context: the daemon's, the job deadline, the step timeout, cancel.
	// Both timeouts stop while the job is paused (pauseTimer).
	ctx, cancel := context.WithCancelCause(parent)
	defer cancel(nil)
	var timers []*pauseTimer
	if dl := rec.Run.Deadline; dl != nil {
		// The deadline is a time of the daemon's clock: wait for it by that clock.
		timers = append(timers, newPauseTimer(dl.Sub(now), func() { cancel(jobTimeout{rec.Spec.Timeout.D()}) }))
	}
	spec := rec.Spec.Steps[i]
	if spec.Timeout > 0 {
		timers = append(timers, newPauseTimer(spec.Timeout.D(), func() { cancel(stepTimeout{spec.Timeout.D()}) }))
	}
	d.mu.Lock()
	js.pause.timers = timers
	d.mu.Unlock()
	defer func() {
		d.mu.Lock()
		js.pause.timers = nil
		d.mu.Unlock()
		for _, t := range timers {
			t.stop()
		}
	}()
	d.mu.Lock()
	js.stopStep = cancel
	d.mu.Unlock()
	defer func() {
		d.mu.Lock()
		js.stopStep = nil
		d.mu.Unlock()
	}()

	// The step's start is stored (by the claim, or by the transition before).
	// The job's lock is held from the check for a cancel until its process runs:
	// a cancel stored first means no process starts; one stored later finds
	// stopStep and stops it. A daemon that dies before the process runs leaves a
	// started step of no process: the next start interrupts it and runs the same
	// attempt again; one that dies after leaves a process that the next start
	// kills before anything resumes (every step cgroup of the tree, every process
	// with the state folder's mark), so no step runs twice at once.
	if err := js.mu.lock(context.WithoutCancel(parent)); err != nil {
		return false, err
	}
	locked := true
	unlock := func() {
		if locked {
			locked = false
			js.mu.unlock()
		}
	}
	defer unlock()
	d.mu.Lock()
	cancelled := js.rec.Run.CancelReason != nil
	paused := js.rec.PausedAt != nil
	lost := js.claimFailed()
	d.mu.Unlock()
	if lost {
		unlock()
		return true, errJobOver
	}
	if cancelled || paused {
		unlock()
		return false, nil // the next turn ends the job, or waits until resumed
	}
	var sp *stepProcs
	var containErr error
	if spec.Exec != nil || spec.Shell != nil {
		sp, containErr = d.newStepProcs(&rec, i)
		if sp != nil {
			sp.again = rec.Run.Resumed
			sp.hurry = js.lease.ctx.Done()
		}
	}
	// start is called once the step's process runs (or before a step that runs
	// none): it keeps what reaches the processes and gives the job's lock back.
	start := func(procs []rpc.Proc) error {
		d.mu.Lock()
		js.rec.Run.Procs = procs
		if sp != nil {
			js.pause.sp = sp // job.pause and job.signal reach them from now
		}
		d.mu.Unlock()
		unlock()
		return nil
	}
	// When this is the job's last try of its last step, its slot goes to the next
	// job as soon as the process is gone: the next claim then overlaps this job's
	// last commit. (A job that may still retry keeps its slot.)
	tries := 1
	if spec.Retry != nil {
		tries = spec.Retry.Attempts
	}
	lastTry := i == len(rec.Spec.Steps)-1 && rec.Steps[i].Attempt >= tries
	exited := func() {
		d.mu.Lock()
		js.pause.sp = nil
		d.mu.Unlock()
		if !lastTry {
			return
		}
		if _, ok := d.store.(ApplyClaimer); ok {
			// The transition that ends the job claims the next; should it be
			// slow to come (a process left holding the output), the
			// scheduler claims after a moment.
			time.AfterFunc(2*time.Millisecond, d.kick)
			return
		}
		d.mu.Lock()
		d.freeSlot(js)
		d.mu.Unlock()
		d.kick()
	}
	var out outcome
	if containErr != nil {
		unlock()
		out = outcome{err: fmt.Sprintf("contain the step's processes: %v", containErr)}
	} else {
		out = d.execute(ctx, js, &rec, i, sp, start, exited)
	}
	unlock()
	d.mu.Lock()
	js.reaped = out.reaped
	js.pause.sp = nil
	d.mu.Unlock()
	if errors.Is(out.stopped, errLeaseLost) || errors.Is(out.stopped, errJobOver) || !d.claimStored(js) {
		return true, errJobOver
	}
	if parent.Err() != nil {
		return true, nil // interrupted: resumes at the next start
	}
	d.mu.Lock()
	reason := js.rec.Run.CancelReason
	d.mu.Unlock()
	if reason != nil {
		return true, d.storeOutcome(parent, func() error {
			return d.finishStep(parent, js, i, out, rpc.StateCancelled, *reason)
		})
	}
	// What stopped the step, if the daemon did, is its outcome whatever the
	// process did after: a cancel (checked again where the outcome is stored,
	// under the job's lock), the job's deadline, the step's timeout.
	var jt jobTimeout
	if errors.As(out.stopped, &jt) {
		out.ok = false
		return true, d.storeOutcome(parent, func() error {
			return d.finishStep(parent, js, i, out, rpc.StateFailed, jt.Error())
		})
	}
	var st stepTimeout
	if errors.As(out.stopped, &st) {
		out.ok = false
		out.err = st.Error()
	}
	if out.ok {
		var done bool
		err := d.storeOutcome(parent, func() (err error) {
			done, err = d.stepSucceeded(parent, js, i, out)
			return err
		})
		return done, err
	}
	d.mu.Lock()
	attempt := js.rec.Steps[i].Attempt
	d.mu.Unlock()
	if attempt < tries {
		wait := backoff(spec.Retry, attempt)
		err := d.storeOutcome(parent, func() error {
			return d.update(parent, js, func(r *rpc.Record, now time.Time) []rpc.Event {
				if reason := r.Run.CancelReason; reason != nil {
					return nil // the cancel is the outcome: the next turn stores it
				}
				return machine.StepRetrying(r, i, out.machine(false), now.Add(wait), now)
			})
		})
		// No attempt starts while a process of the one before still lives.
		if out.reaped != nil {
			select {
			case <-out.reaped:
			case <-parent.Done():
			}
		}
		return false, err
	}
	return true, d.storeOutcome(parent, func() error {
		return d.finishStep(parent, js, i, out, rpc.StateFailed, stepError(spec.Name, out.err))
	})
}

// machine is what the record keeps of the outcome; keep says the step's result
// is kept (its mode is not "none").
func (o outcome) machine(keep bool) machine.Outcome {
	return machine.Outcome{ExitCode: o.exitCode, Signal: o.signal, Err: o.err, Result: o.result, Truncated: o.truncated, KeepResult: keep}
}

// cancelJob ends a running job with a cancel: its current step is cancelled, the
// rest are skipped.
func cancelJob(r *rpc.Record, reason string, now time.Time) []rpc.Event {
	return machine.EndUnstarted(r, reason, rpc.StateCancelled, now)
}

// storeOutcome stores what came of an attempt, trying again while the store fails
// (a full disk, say): the attempt is over and must not run again because its
// outcome could not be written at once. Only a daemon that stops gives up; the
// step then counts as interrupted.
func (d *Daemon) storeOutcome(ctx context.Context, store func() error) error {
	wait := 100 * time.Millisecond
	for {
		err := store()
		if err == nil || errors.Is(err, errJobOver) || ctx.Err() != nil {
			return err
		}
		d.log.Error("store a step's outcome; trying again", "err", err, "in", wait)
		select {
		case <-time.After(wait):
		case <-ctx.Done():
			return ctx.Err()
		}
		wait = min(2*wait, 5*time.Second)
	}
}

func stepError(name, err string) string {
	return fmt.Sprintf("step %s: %s", name, err)
}

// backoff is the wait before the attempt after attempt n (1-based): doubling from
// the policy's backoff up to its maximum, with up to 20% jitter either way.
func backoff(r *rpc.Retry, n int) time.Duration {
	if r == nil {
		return 0
	}
	w := r.Backoff.D()
	for k := 1; k < n && w < r.MaxBackoff.D(); k++ {
		w *= 2
	}
	if w > r.MaxBackoff.D() {
		w = r.MaxBackoff.D()
	}
	jitter := (rand.Float64()*0.4 - 0.2) * float64(w)
	return w + time.Duration(jitter)
}

// waitRetry waits until the step's retry_at, or less when a cancel or the job's
// deadline comes first.
func (d *Daemon) waitRetry(parent context.Context, js *jobState, rec rpc.Record) error {
	i := rec.CurrentStep
	at := rec.Steps[i].RetryAt
	if at == nil {
		return nil
	}
	wait := at.Sub(d.clock.Now())
	if wait <= 0 {
		return nil
	}
	var deadline <-chan time.Time
	if dl := rec.Run.Deadline; dl != nil {
		deadline = time.After(dl.Sub(d.clock.Now()))
	}
	d.mu.Lock()
	cancelled := js.cancelled
	d.mu.Unlock()
	t := time.NewTimer(wait)
	defer t.Stop()
	select {
	case <-t.C:
	case <-cancelled:
	case <-deadline:
	case <-parent.Done():
		return parent.Err()
	}
	return nil
}

// stepSucceeded stores the success of step i: the job's success when it was the
// last step, otherwise together with the next step's start.
func (d *Daemon) stepSucceeded(ctx context.Context, js *jobState, i int, out outcome) (bool, error) {
	d.mu.Lock()
	spec := js.rec.Spec
	id := js.rec.ID
	d.mu.Unlock()
	keep := spec.Steps[i].Result != rpc.ResultNone
	// Only later steps of the job read SPOOL_RESULTS_DIR: the last step's result
	// needs no file.
	last := i+1 == len(spec.Steps)
	if keep && !last {
		if err := d.writeResult(id, spec.Steps[i].Name, out.resultText); err != nil {
			d.log.Error("write step result", "id", id, "err", err)
		}
	}
	if !last {
		return false, d.update(ctx, js, func(r *rpc.Record, now time.Time) []rpc.Event {
			return machine.StepSucceeded(r, i, out.machine(keep), now)
		})
	}
	return true, d.update(ctx, js, func(r *rpc.Record, now time.Time) []rpc.Event {
		if reason := r.Run.CancelReason; reason != nil {
			// A cancel stored before this success is the outcome.
			return machine.EndStep(r, i, out.machine(false), rpc.StateCancelled, *reason, now)
		}
		return machine.StepSucceeded(r, i, out.machine(keep), now)
	})
}

// finishStep stores the end of step i in state (failed or cancelled) and the job's
// final state with errText. A cancel stored meanwhile is the outcome.
func (d *Daemon) finishStep(ctx context.Context, js *jobState, i int, out outcome, state rpc.State, errText string) error {
	return d.update(ctx, js, func(r *rpc.Record, now time.Time) []rpc.Event {
		if reason := r.Run.CancelReason; reason != nil {
			state, errText = rpc.StateCancelled, *reason
		}
		return machine.EndStep(r, i, out.machine(false), state, errText, now)
	})
}

// writeResult stores a finished step's result text for the later steps of its job.
func (d *Daemon) writeResult(id int64, step, text string) error {
	dir := d.jobResultDir(id)
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return fmt.Errorf("create results folder: %w", err)
	}
	return os.WriteFile(filepath.Join(dir, step), []byte(text), 0o600)
}

// restoreResults writes the result files of the steps before step i that
// succeeded with a result and have no file here: a job that another daemon
// began (several daemons on one store) reaches this host without them, and
// its record holds them. A text result is written as its text, a JSON one as
// its value.
func (d *Daemon) restoreResults(rec *rpc.Record, i int) error {
	dir := d.jobResultDir(rec.ID)
	for j := 0; j < i && j < len(rec.Steps); j++ {
		st := &rec.Steps[j]
		if st.State != rpc.StateSucceeded || len(st.Result) == 0 || string(st.Result) == "null" {
			continue
		}
		path := filepath.Join(dir, st.Name)
		if _, err := os.Lstat(path); err == nil {
			continue
		}
		text := string(st.Result)
		if rec.Spec != nil && j < len(rec.Spec.Steps) && rec.Spec.Steps[j].Result != rpc.ResultJSON {
			if err := json.Unmarshal(st.Result, &text); err != nil {
				return fmt.Errorf("restore the result of step %q: %w", st.Name, err)
			}
		}
		if err := d.writeResult(rec.ID, st.Name, text); err != nil {
			return fmt.Errorf("restore the result of step %q: %w", st.Name, err)
		}
	}
	return nil
}

// makeResult turns a step's result text into its result value.
func makeResult(mode string, text string, truncated bool) (json.RawMessage, string, error) {
	switch mode {
	case rpc.ResultNone:
		return nil, "", nil
	case rpc.ResultJSON:
		if truncated {
			return nil, "", fmt.Errorf("result is over %d bytes, too large for a json result", maxResult)
		}
		t := strings.TrimSpace(text)
		if !json.Valid([]byte(t)) {
			var v json.RawMessage
			return nil, "", jsonResultError(t, json.Unmarshal([]byte(t), &v))
		}
		var buf bytes.Buffer
		if err := json.Compact(&buf, []byte(t)); err != nil {
			return nil, "", jsonResultError(t, err)
		}
		return json.RawMessage(buf.String()), t, nil
	default:
		t := strings.TrimSpace(text)
		b, _ := json.Marshal(t)
		return b, t, nil
	}
}

const maxResult = 64 << 10

// jsonResultError says why and where a result text is not valid JSON.
func jsonResultError(text string, err error) error {
	if text == "" {
		return errors.New("result is not valid JSON: the output is empty")
	}
	var se *json.SyntaxError
	if errors.As(err, &se) {
		return fmt.Errorf("result is not valid JSON: %v (at offset %d of the trimmed output)", se, se.Offset)
	}
	return fmt.Errorf("result is not valid JSON: %v", err)
}
