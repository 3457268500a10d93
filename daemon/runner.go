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

// mutation edits a job's record for a transition and returns its events.
type mutation func(r *rpc.Record, now time.Time) []rpc.Event

// pending is a transition the runner holds back to store with the next one: the
// start of a job or of a step goes into the same commit as the process it started
// (or as the next step's start), which saves a commit per step.
type pending struct {
	fn mutation
	// claim marks the job's start: until it is stored the job is still queued in
	// the store, and a daemon that stops now leaves it queued.
	claim bool
}

// runJob drives a job the scheduler picked through its steps until it is final,
// or until the daemon stops (then a started job stays running in the store and
// resumes at the next start).
func (d *Daemon) runJob(js *jobState) {
	defer d.runners.Done()
	d.mu.Lock()
	parent := d.runCtx
	js.cancelled = make(chan struct{})
	if js.rec.Run.CancelReason != nil {
		close(js.cancelled)
	}
	d.mu.Unlock()
	for {
		err := d.loadSpec(parent, js)
		if err == nil || errors.Is(err, errJobOver) || parent.Err() != nil {
			if err != nil {
				return
			}
			break
		}
		d.log.Error("read the spec of a job to start", "id", js.rec.ID, "err", err)
		select {
		case <-time.After(time.Second):
		case <-parent.Done():
			return
		}
	}
	pre := &pending{fn: d.startMutation, claim: true}
	for {
		done, next, err := d.runStep(parent, js, pre)
		if errors.Is(err, errJobOver) {
			return
		}
		if err != nil {
			if parent.Err() == nil {
				d.log.Error("run job", "id", js.rec.ID, "err", err)
				// A storage failure: nothing of it was applied; try again shortly.
				select {
				case <-time.After(time.Second):
					continue
				case <-parent.Done():
				}
			}
			return
		}
		if done {
			return
		}
		pre = next
	}
}

// loadSpec reads the spec of a job the scheduler picked, which a queued job's
// record in memory leaves out. It holds the job's lock, so that no transition
// replaces the record meanwhile.
func (d *Daemon) loadSpec(ctx context.Context, js *jobState) error {
	if err := js.mu.lock(ctx); err != nil {
		return err
	}
	defer js.mu.unlock()
	d.mu.Lock()
	d.specTaken(js)
	id, has, gone := js.rec.ID, js.rec.Spec != nil, d.jobs[js.rec.ID] != js || js.rec.State.Final()
	d.mu.Unlock()
	if gone {
		return errJobOver
	}
	if has {
		return nil
	}
	stored, err := d.store.Get(ctx, id)
	if err != nil {
		return fmt.Errorf("read job %d: %w", id, err)
	}
	d.mu.Lock()
	js.rec.Spec = stored.Spec
	d.mu.Unlock()
	return nil
}

// startMutation moves a picked job from queued to running and, unless its current
// step waits for a retry, starts that step.
func (d *Daemon) startMutation(rec *rpc.Record, now time.Time) []rpc.Event {
	rec.State = rpc.StateRunning
	rec.Waiting = nil
	if rec.StartedAt == nil {
		rec.StartedAt = &now
	}
	if rec.Spec.Timeout > 0 && rec.Run.Deadline == nil {
		dl := rec.StartedAt.Add(rec.Spec.Timeout.D())
		rec.Run.Deadline = &dl
	}
	evs := []rpc.Event{{Time: now, Job: rec.ID, Type: rpc.EventStarted, State: rpc.StateRunning}}
	if rec.Steps[rec.CurrentStep].State == rpc.StatePending {
		evs = append(evs, startStep(rec, rec.CurrentStep, now))
	}
	return evs
}

// withPending runs what the runner held back, if anything that was started, then fn.
func withPending(pre *pending, fn mutation) mutation {
	return func(r *rpc.Record, now time.Time) []rpc.Event {
		var evs []rpc.Event
		if pre != nil && !pre.claim {
			evs = pre.fn(r, now)
		}
		return append(evs, fn(r, now)...)
	}
}

// runStep runs (or waits to retry) the job's current step, pre applied, and stores
// what came of it. It reports whether the job is final, and what to store with
// the next step's start.
func (d *Daemon) runStep(parent context.Context, js *jobState, pre *pending) (bool, *pending, error) {
	d.mu.Lock()
	rec := cloneRecord(js.rec)
	d.mu.Unlock()
	now := d.clock.Now()
	if parent.Err() != nil {
		// The daemon stops: store a finished step held back; a job not started
		// stays queued.
		if pre != nil && !pre.claim {
			return true, nil, d.update(context.WithoutCancel(parent), js, pre.fn)
		}
		return true, nil, nil
	}
	if reason := rec.Run.CancelReason; reason != nil {
		return true, nil, d.finishWith(parent, js, withPending(pre, func(r *rpc.Record, now time.Time) []rpc.Event {
			return failQueued(r, *reason, rpc.StateCancelled, now)
		}))
	}
	if dl := rec.Run.Deadline; dl != nil && !now.Before(*dl) {
		return true, nil, d.finishWith(parent, js, withPending(pre, d.failJobMutation(jobTimeout{rec.Spec.Timeout.D()}.Error())))
	}
	if pre == nil {
		pre = &pending{fn: func(r *rpc.Record, now time.Time) []rpc.Event { return nil }}
	}
	preview := cloneRecord(rec)
	pre.fn(&preview, now)
	i := preview.CurrentStep
	switch preview.Steps[i].State {
	case rpc.StateRetrying:
		if err := d.update(parent, js, pre.fn); err != nil {
			return false, pre, err
		}
		next, err := d.waitRetry(parent, js, preview)
		return false, next, err
	case rpc.StatePending:
		inner := pre.fn
		pre = &pending{fn: func(r *rpc.Record, now time.Time) []rpc.Event {
			evs := inner(r, now)
			return append(evs, startStep(r, r.CurrentStep, now))
		}, claim: pre.claim}
		preview = cloneRecord(rec)
		pre.fn(&preview, now)
	}

	// The step's context: the daemon's, the job deadline, the step timeout, cancel.
	ctx, cancel := context.WithCancelCause(parent)
	defer cancel(nil)
	if dl := preview.Run.Deadline; dl != nil {
		// The deadline is a time of the daemon's clock: wait for it by that clock.
		var c2 context.CancelFunc
		ctx, c2 = context.WithTimeoutCause(ctx, dl.Sub(now), jobTimeout{rec.Spec.Timeout.D()})
		defer c2()
	}
	spec := rec.Spec.Steps[i]
	if spec.Timeout > 0 {
		var c3 context.CancelFunc
		ctx, c3 = context.WithTimeoutCause(ctx, spec.Timeout.D(), stepTimeout{spec.Timeout.D()})
		defer c3()
	}
	// A cancel stored from now on stops the step through stopStep; one stored
	// already stops it at once.
	d.mu.Lock()
	js.stopStep = cancel
	if js.rec.Run.CancelReason != nil {
		cancel(errCancelRequested)
	}
	d.mu.Unlock()
	defer func() {
		d.mu.Lock()
		js.stopStep = nil
		d.mu.Unlock()
	}()

	// The claim: the job's lock is held from the check for a stored cancel until
	// the step's start (with what was held back, and what reaches every process
	// of the step) is stored. A cancel stored first means no process ever starts;
	// one stored later finds the start stored and stops the step. The commit runs
	// beside the process it records: a daemon that dies before it lands leaves a
	// process of no stored step, which the next start kills before anything
	// resumes (every step cgroup of the tree, every process with the state
	// folder's mark), so no step runs twice.
	if err := js.mu.lock(context.WithoutCancel(parent)); err != nil {
		return false, pre, err
	}
	locked := true
	unlock := func() {
		if locked {
			locked = false
			js.mu.unlock()
		}
	}
	defer unlock()
	cur, err := d.current(js)
	if err != nil {
		return true, nil, err
	}
	if reason := cur.Run.CancelReason; reason != nil {
		unlock()
		return true, nil, d.finishWith(parent, js, withPending(pre, func(r *rpc.Record, now time.Time) []rpc.Event {
			return failQueued(r, *reason, rpc.StateCancelled, now)
		}))
	}
	var sp *stepProcs
	var containErr error
	if spec.Exec != nil || spec.Shell != nil {
		sp, containErr = d.newStepProcs(&preview, i)
		if sp != nil {
			sp.again = rec.Run.Interrupted && rec.Steps[i].State == rpc.StatePending
		}
	}
	// start stores the claim, with the processes it started, once; it gives the
	// job's lock back whatever happens.
	started := false
	start := func(procs []rpc.Proc) error {
		defer unlock()
		rec, err := d.current(js)
		if err != nil {
			return err
		}
		from := rec.State
		now := d.clock.Now()
		evs := pre.fn(&rec, now)
		rec.Run.Procs = procs
		if _, err := d.apply(context.WithoutCancel(parent), []rpc.Transition{{Record: rec, From: from, Events: evs}}); err != nil {
			return err
		}
		d.mu.Lock()
		js.rec = rec
		d.mu.Unlock()
		started = true
		return nil
	}
	// When this is the job's last try of its last step, its slot goes to the next
	// job as soon as the process is gone: the next start then overlaps this job's
	// last commits. (A job that may still retry keeps its slot.)
	tries := 1
	if spec.Retry != nil {
		tries = spec.Retry.Attempts
	}
	lastTry := i == len(rec.Spec.Steps)-1 && preview.Steps[i].Attempt >= tries
	exited := func() {
		if lastTry {
			d.mu.Lock()
			d.freeSlot(js)
			wake := d.schedulable()
			d.mu.Unlock()
			if wake {
				d.reschedule()
			}
		}
	}
	var out outcome
	if containErr != nil {
		out = outcome{err: fmt.Sprintf("contain the step's processes: %v", containErr)}
	} else {
		out = d.execute(ctx, js, &preview, i, sp, start, exited)
	}
	d.mu.Lock()
	js.reaped = out.reaped
	d.mu.Unlock()
	if out.storeErr != nil {
		d.mu.Lock()
		d.takeSlotBack(js)
		d.mu.Unlock()
		return false, pre, out.storeErr
	}
	if !started {
		// No process ran (the step could not start, or is not a process): its
		// start is stored with how it ended.
		if err := start(nil); err != nil {
			if errors.Is(err, errJobOver) {
				return true, nil, err
			}
			return false, pre, err
		}
	}

	if parent.Err() != nil {
		return true, nil, nil // interrupted: resumes at the next start
	}
	d.mu.Lock()
	reason := js.rec.Run.CancelReason
	attempt := js.rec.Steps[i].Attempt
	d.mu.Unlock()
	if reason != nil {
		return true, nil, d.storeOutcome(parent, func() error {
			return d.finishStep(parent, js, i, out, rpc.StateCancelled, *reason)
		})
	}
	// What stopped the step, if the daemon did, is its outcome whatever the
	// process did after: a cancel (checked again where the outcome is stored,
	// under the job's lock), the job's deadline, the step's timeout.
	var jt jobTimeout
	if errors.As(out.stopped, &jt) {
		out.ok = false
		return true, nil, d.storeOutcome(parent, func() error {
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
		var next *pending
		err := d.storeOutcome(parent, func() (err error) {
			done, next, err = d.stepSucceeded(parent, js, i, out)
			return err
		})
		return done, next, err
	}
	attempts := 1
	if spec.Retry != nil {
		attempts = spec.Retry.Attempts
	}
	if attempt < attempts {
		wait := backoff(spec.Retry, attempt)
		err := d.storeOutcome(parent, func() error {
			return d.update(parent, js, func(r *rpc.Record, now time.Time) []rpc.Event {
				s := &r.Steps[i]
				at := now.Add(wait)
				s.State = rpc.StateRetrying
				s.RetryAt = &at
				s.ExitCode, s.Signal, s.Error = out.exitCode, out.signal, out.err
				r.Run.Procs = nil
				return []rpc.Event{stepEvent(r, i, rpc.EventStepRetrying, now)}
			})
		})
		// No attempt starts while a process of the one before still lives.
		if out.reaped != nil {
			select {
			case <-out.reaped:
			case <-parent.Done():
			}
		}
		return false, nil, err
	}
	return true, nil, d.storeOutcome(parent, func() error {
		return d.finishStep(parent, js, i, out, rpc.StateFailed, stepError(spec.Name, out.err))
	})
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

// waitRetry waits until the step's retry_at and returns the start of its next
// attempt, to be stored with the process it starts. It returns nil early when a
// cancel or the job's deadline came first.
func (d *Daemon) waitRetry(parent context.Context, js *jobState, rec rpc.Record) (*pending, error) {
	i := rec.CurrentStep
	if at := rec.Steps[i].RetryAt; at != nil {
		wait := at.Sub(d.clock.Now())
		var deadline <-chan time.Time
		if dl := rec.Run.Deadline; dl != nil {
			deadline = time.After(dl.Sub(d.clock.Now()))
		}
		if wait > 0 {
			t := time.NewTimer(wait)
			defer t.Stop()
			select {
			case <-t.C:
			case <-js.cancelled:
				return nil, nil
			case <-deadline:
				return nil, nil
			case <-parent.Done():
				return nil, parent.Err()
			}
		}
	}
	return &pending{fn: func(r *rpc.Record, now time.Time) []rpc.Event {
		return []rpc.Event{startStep(r, i, now)}
	}}, nil
}

// stepSucceeded stores a job's success, or returns the step's success to be
// stored with the next step's start.
func (d *Daemon) stepSucceeded(ctx context.Context, js *jobState, i int, out outcome) (bool, *pending, error) {
	d.mu.Lock()
	spec := js.rec.Spec
	id := js.rec.ID
	d.mu.Unlock()
	// Only later steps of the job read SPOOL_RESULTS_DIR: the last step's result
	// needs no file.
	if spec.Steps[i].Result != rpc.ResultNone && i+1 < len(spec.Steps) {
		if err := d.writeResult(id, spec.Steps[i].Name, out.resultText); err != nil {
			d.log.Error("write step result", "id", id, "err", err)
		}
	}
	mark := func(r *rpc.Record, now time.Time) []rpc.Event {
		s := &r.Steps[i]
		s.State = rpc.StateSucceeded
		s.FinishedAt = &now
		s.ExitCode, s.Signal, s.Error = out.exitCode, out.signal, ""
		s.RetryAt = nil
		if spec.Steps[i].Result != rpc.ResultNone {
			s.Result = out.result
			r.ResultTruncated = out.truncated
		}
		r.Run.Procs = nil
		return []rpc.Event{stepEvent(r, i, rpc.EventStepFinished, now)}
	}
	if i+1 < len(spec.Steps) {
		return false, &pending{fn: func(r *rpc.Record, now time.Time) []rpc.Event {
			evs := mark(r, now)
			return append(evs, startStep(r, i+1, now))
		}}, nil
	}
	return true, nil, d.finishWith(ctx, js, func(r *rpc.Record, now time.Time) []rpc.Event {
		if reason := r.Run.CancelReason; reason != nil {
			// A cancel stored before this success is the outcome.
			return endStep(r, i, out, rpc.StateCancelled, *reason, now)
		}
		evs := mark(r, now)
		return append(evs, finalize(r, rpc.StateSucceeded, "", now))
	})
}

// finishWith makes the job final with fn, holding its lock.
func (d *Daemon) finishWith(ctx context.Context, js *jobState, fn mutation) error {
	if err := js.mu.lock(ctx); err != nil {
		return err
	}
	defer js.mu.unlock()
	return d.finish(ctx, js, fn)
}

// finishStep stores the end of step i in state (failed or cancelled) and the job's
// final state with errText. A cancel stored meanwhile is the outcome.
func (d *Daemon) finishStep(ctx context.Context, js *jobState, i int, out outcome, state rpc.State, errText string) error {
	if err := js.mu.lock(ctx); err != nil {
		return err
	}
	defer js.mu.unlock()
	return d.finish(ctx, js, func(r *rpc.Record, now time.Time) []rpc.Event {
		if reason := r.Run.CancelReason; reason != nil {
			state, errText = rpc.StateCancelled, *reason
		}
		return endStep(r, i, out, state, errText, now)
	})
}

// endStep ends step i in state (failed or cancelled), skips the rest and makes the
// job final with errText.
func endStep(r *rpc.Record, i int, out outcome, state rpc.State, errText string, now time.Time) []rpc.Event {
	s := &r.Steps[i]
	s.State = state
	s.FinishedAt = &now
	s.ExitCode, s.Signal = out.exitCode, out.signal
	s.Error = out.err
	if state == rpc.StateCancelled {
		s.Error = errText
	} else if s.Error == "" {
		s.Error = errText
	}
	s.RetryAt = nil
	evs := []rpc.Event{stepEvent(r, i, rpc.EventStepFinished, now)}
	for k := i + 1; k < len(r.Steps); k++ {
		r.Steps[k].State = rpc.StateSkipped
	}
	return append(evs, finalize(r, state, errText, now))
}

// failJobMutation fails a running job with reason: its current step failed, the
// rest skipped.
func (d *Daemon) failJobMutation(reason string) mutation {
	return func(r *rpc.Record, now time.Time) []rpc.Event {
		i := r.CurrentStep
		var evs []rpc.Event
		if s := &r.Steps[i]; !s.State.Final() {
			s.State = rpc.StateFailed
			s.Error = reason
			s.RetryAt = nil
			s.FinishedAt = &now
			evs = append(evs, stepEvent(r, i, rpc.EventStepFinished, now))
		}
		for k := i + 1; k < len(r.Steps); k++ {
			r.Steps[k].State = rpc.StateSkipped
		}
		return append(evs, finalize(r, rpc.StateFailed, reason, now))
	}
}

// writeResult stores a finished step's result text for the later steps of its job.
func (d *Daemon) writeResult(id int64, step, text string) error {
	dir := d.jobResultDir(id)
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return fmt.Errorf("create results folder: %w", err)
	}
	return os.WriteFile(filepath.Join(dir, step), []byte(text), 0o600)
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
