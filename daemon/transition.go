package daemon

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"sort"
	"time"

	"spool/rpc"
)

// errJobOver says a job became final (a cancel won a race) before a transition
// of its runner could be stored: the runner has nothing left to do.
var errJobOver = errors.New("the job is already final")

// apply stores transitions and publishes their events once committed.
func (d *Daemon) apply(ctx context.Context, ts []rpc.Transition) ([]rpc.Event, error) {
	evs, err := d.store.Apply(ctx, ts)
	if err != nil {
		return nil, fmt.Errorf("store transitions: %w", err)
	}
	d.hub.publish(evs)
	return evs, nil
}

// cloneRecord copies the parts of a record that transitions change.
func cloneRecord(r rpc.Record) rpc.Record {
	r.Steps = slices.Clone(r.Steps)
	r.Run.Procs = slices.Clone(r.Run.Procs)
	r.After = slices.Clone(r.After)
	if r.Progress != nil {
		p := *r.Progress
		r.Progress = &p
	}
	return r
}

// current copies the job's record for its next transition, or says errJobOver
// when the job became final meanwhile. The caller holds js.mu.
func (d *Daemon) current(js *jobState) (rpc.Record, error) {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.jobs[js.rec.ID] != js || js.rec.State.Final() {
		return rpc.Record{}, errJobOver
	}
	return cloneRecord(js.rec), nil
}

// update stores a change of a job that stays unfinished. fn edits the record and
// returns the events of the change.
func (d *Daemon) update(ctx context.Context, js *jobState, fn func(rec *rpc.Record, now time.Time) []rpc.Event) error {
	if err := js.mu.lock(ctx); err != nil {
		return err
	}
	defer js.mu.unlock()
	rec, err := d.current(js)
	if err != nil {
		return err
	}
	from := rec.State
	evs := fn(&rec, d.clock.Now())
	if _, err := d.apply(ctx, []rpc.Transition{{Record: rec, From: from, Events: evs}}); err != nil {
		return err
	}
	d.mu.Lock()
	js.rec = rec
	d.mu.Unlock()
	return nil
}

// finish stores a job's final state, made by fn, and fails its queued dependents,
// and theirs, in the same transaction. The caller holds js.mu.
func (d *Daemon) finish(ctx context.Context, js *jobState, fn func(rec *rpc.Record, now time.Time) []rpc.Event) error {
	rec, err := d.current(js)
	if err != nil {
		return err
	}
	from := rec.State
	now := d.clock.Now()
	evs := fn(&rec, now)
	ts := []rpc.Transition{{Record: rec, From: from, Events: evs}}
	var cascade []*jobState
	if rec.State != rpc.StateSucceeded {
		cascade = d.lockDependents(ctx, rec.ID)
		defer func() {
			for _, c := range cascade {
				c.mu.unlock()
			}
		}()
		failedBy := map[int64]int64{}
		for _, c := range cascade {
			d.mu.Lock()
			crec := cloneRecord(c.rec)
			d.mu.Unlock()
			dep := rec.ID
			for _, a := range crec.After {
				if a == rec.ID || failedBy[a] != 0 {
					dep = a
					break
				}
			}
			failedBy[crec.ID] = dep
			cevs := failQueued(&crec, fmt.Sprintf("dependency %d failed", dep), rpc.StateFailed, now)
			ts = append(ts, rpc.Transition{Record: crec, From: rpc.StateQueued, Events: cevs})
		}
	}
	if rec.State.Final() {
		// The job's work is over: its slot goes to the next job now, whose start
		// can then share a commit with this one.
		d.mu.Lock()
		d.freeSlot(js)
		wake := d.schedulable()
		d.mu.Unlock()
		if wake {
			d.reschedule()
		}
	}
	if _, err := d.apply(ctx, ts); err != nil {
		return err
	}
	d.mu.Lock()
	js.rec = rec
	reaped := js.reaped
	d.forget(js)
	for i, c := range cascade {
		c.rec = ts[i+1].Record
		d.forget(c)
	}
	late := d.resolveDependents(rec.ID, rec.State)
	for _, c := range cascade {
		late = append(late, d.resolveDependents(c.rec.ID, c.rec.State)...)
	}
	wake := d.schedulable()
	d.mu.Unlock()
	d.logFinal(rec)
	for _, c := range cascade {
		d.logFinal(c.rec)
	}
	if len(late) > 0 {
		d.bg.Add(1)
		go func() {
			defer d.bg.Done()
			d.failLate(context.WithoutCancel(ctx), late)
		}()
	}
	if wake {
		d.reschedule()
	}
	// An empty results folder goes with the job's end (after it was told: the
	// removal is no part of it), once no process of the job is left to write
	// into it; one that holds what the job left goes when the job is removed.
	dir := d.jobResultDir(rec.ID)
	if reaped != nil {
		d.bg.Add(1)
		go func() {
			defer d.bg.Done()
			<-reaped
			d.folders.release(dir)
		}()
	} else {
		d.folders.release(dir)
	}
	return nil
}

func (d *Daemon) logFinal(rec rpc.Record) {
	// Asked first: the arguments would cost allocations even when not logged.
	if d.log.Enabled(context.Background(), slog.LevelInfo) {
		d.log.Info("job final", "id", rec.ID, "state", rec.State, "error", rec.Error)
	}
}

// lockDependents locks, in id order, the queued jobs that wait for id directly or
// through others.
func (d *Daemon) lockDependents(ctx context.Context, id int64) []*jobState {
	d.mu.Lock()
	seen := map[int64]bool{}
	var ids []int64
	next := []int64{id}
	for len(next) > 0 {
		cur := next[0]
		next = next[1:]
		for _, dep := range d.dependents[cur] {
			if js := d.jobs[dep]; js != nil && !seen[dep] && js.rec.State == rpc.StateQueued {
				seen[dep] = true
				ids = append(ids, dep)
				next = append(next, dep)
			}
		}
	}
	d.mu.Unlock()
	sort.Slice(ids, func(i, j int) bool { return ids[i] < ids[j] })
	var out []*jobState
	for _, cid := range ids {
		d.mu.Lock()
		js := d.jobs[cid]
		d.mu.Unlock()
		if js == nil {
			continue
		}
		if err := js.mu.lock(ctx); err != nil {
			break
		}
		d.mu.Lock()
		ok := d.jobs[cid] == js && js.rec.State == rpc.StateQueued && !js.claimed
		d.mu.Unlock()
		if !ok {
			js.mu.unlock()
			continue
		}
		out = append(out, js)
	}
	return out
}

// resolveDependents tells the jobs waiting for a final job: they become ready when
// it succeeded; otherwise the ones that were not failed with it are returned; d.mu held.
func (d *Daemon) resolveDependents(id int64, state rpc.State) (late []int64) {
	for _, dep := range d.dependents[id] {
		js := d.jobs[dep]
		if js == nil {
			continue
		}
		if state == rpc.StateSucceeded {
			delete(js.pending, id)
			d.makeReady(js)
		} else {
			late = append(late, dep)
		}
	}
	delete(d.dependents, id)
	return late
}

// failLate fails queued jobs whose dependency failed after they were admitted.
func (d *Daemon) failLate(ctx context.Context, ids []int64) {
	for _, id := range ids {
		d.failDependency(ctx, id)
	}
}

// failDependency fails a queued job because one of its dependencies failed.
func (d *Daemon) failDependency(ctx context.Context, id int64) {
	d.mu.Lock()
	js := d.jobs[id]
	d.mu.Unlock()
	if js == nil || js.mu.lock(ctx) != nil {
		return
	}
	defer js.mu.unlock()
	// Which dependencies are over is known under the lock; their states are read
	// from the store after it.
	d.mu.Lock()
	ok := d.jobs[id] == js && js.rec.State == rpc.StateQueued && !js.claimed
	var over []int64
	for _, a := range js.rec.After {
		if _, inMem := d.jobs[a]; !inMem {
			over = append(over, a)
		}
	}
	d.mu.Unlock()
	if !ok {
		return
	}
	var dep int64
	for _, a := range over {
		if st, err := d.depState(ctx, a); err == nil && st != rpc.StateSucceeded {
			dep = a
			break
		}
	}
	if dep == 0 {
		return
	}
	err := d.finish(ctx, js, func(rec *rpc.Record, now time.Time) []rpc.Event {
		return failQueued(rec, fmt.Sprintf("dependency %d failed", dep), rpc.StateFailed, now)
	})
	if err != nil {
		d.log.Error("fail dependent job", "id", id, "err", err)
	}
}

// depState reads the state of a job that is not in memory.
func (d *Daemon) depState(ctx context.Context, id int64) (rpc.State, error) {
	r, err := d.store.Get(ctx, id)
	if err != nil {
		return "", err
	}
	return r.State, nil
}

// failQueued makes a job that is not running final: its current step cancelled
// (for a cancel) or skipped, the rest skipped.
func failQueued(rec *rpc.Record, reason string, state rpc.State, now time.Time) []rpc.Event {
	var evs []rpc.Event
	for i := range rec.Steps {
		st := &rec.Steps[i]
		if st.State.Final() {
			continue
		}
		if i == rec.CurrentStep && state == rpc.StateCancelled {
			st.State = rpc.StateCancelled
			st.Error = reason
			st.RetryAt = nil
			st.FinishedAt = &now
			evs = append(evs, stepEvent(rec, i, rpc.EventStepFinished, now))
			continue
		}
		if st.State == rpc.StateRetrying && i == rec.CurrentStep {
			st.State = rpc.StateFailed
			st.RetryAt = nil
			st.FinishedAt = &now
			evs = append(evs, stepEvent(rec, i, rpc.EventStepFinished, now))
			continue
		}
		st.State = rpc.StateSkipped
	}
	return append(evs, finalize(rec, state, reason, now))
}

// finalize sets a job's final state and returns its final event.
func finalize(rec *rpc.Record, state rpc.State, errText string, now time.Time) rpc.Event {
	rec.State = state
	rec.Error = errText
	rec.FinishedAt = &now
	rec.Waiting = nil
	rec.Run.Procs = nil
	typ := map[rpc.State]string{rpc.StateSucceeded: rpc.EventSucceeded, rpc.StateFailed: rpc.EventFailed, rpc.StateCancelled: rpc.EventCancelled}[state]
	ev := rpc.Event{Time: now, Job: rec.ID, Type: typ, State: state, Error: errText}
	if state == rpc.StateSucceeded {
		rec.Result = jobResult(rec)
		ev.Result = rec.Result
	}
	return ev
}

// jobResult is the result of the last step whose result mode is not "none".
func jobResult(rec *rpc.Record) json.RawMessage {
	for i := len(rec.Steps) - 1; i >= 0; i-- {
		if rec.Spec != nil && rec.Spec.Steps[i].Result == rpc.ResultNone {
			continue
		}
		if rec.Steps[i].Result != nil {
			return rec.Steps[i].Result
		}
	}
	return nil
}
