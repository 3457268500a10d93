package daemon

import (
	"context"
	"errors"
	"fmt"
	"runtime/debug"
	"syscall"
	"time"

	"spool/rpc"
)

// recover loads the unfinished jobs, kills what is left of the processes of the
// jobs that were running, stores an interrupted event for each of them and, as its
// steps' on_interrupt say, queues it again or fails it.
func (d *Daemon) recover(ctx context.Context) error {
	_, last, err := d.store.Bounds(ctx)
	if err != nil {
		return fmt.Errorf("read the event log bounds: %w", err)
	}
	d.hub.setLast(last)
	queues, err := d.store.Queues(ctx)
	if err != nil {
		return fmt.Errorf("read queues: %w", err)
	}
	recs, err := d.store.Unfinished(ctx)
	if err != nil {
		return fmt.Errorf("read unfinished jobs: %w", err)
	}
	d.mu.Lock()
	for _, q := range queues {
		qs := d.queue(q.Name)
		qs.parallel, qs.paused = q.Parallel, q.Paused
	}
	d.mu.Unlock()

	// Nothing may resume while a process of an earlier run still lives.
	d.killLeftovers(recs)

	now := d.clock.Now()
	var ts []rpc.Transition
	var failed []rpc.Record
	for i := range recs {
		rec := cloneRecord(recs[i])
		if rec.State != rpc.StateRunning {
			continue
		}
		step := rec.CurrentStep
		evs := []rpc.Event{{Time: now, Job: rec.ID, Type: rpc.EventInterrupted, Step: &step, StepName: rec.Steps[step].Name, State: rpc.StateRunning}}
		st := &rec.Steps[step]
		rec.Run.Procs = nil
		if st.State == rpc.StateRunning && rec.Spec.Steps[step].OnInterrupt == rpc.OnInterruptFail && rec.Run.CancelReason == nil {
			st.State = rpc.StateFailed
			st.Error = "interrupted"
			st.FinishedAt = &now
			evs = append(evs, stepEvent(&rec, step, rpc.EventStepFinished, now))
			for k := step + 1; k < len(rec.Steps); k++ {
				rec.Steps[k].State = rpc.StateSkipped
			}
			evs = append(evs, finalize(&rec, rpc.StateFailed, "interrupted", now))
			failed = append(failed, rec)
		} else {
			if st.State == rpc.StateRunning {
				st.State = rpc.StatePending
				rec.Run.Interrupted = true
			}
			rec.State = rpc.StateQueued
		}
		ts = append(ts, rpc.Transition{Record: rec, From: rpc.StateRunning, Events: evs})
		recs[i] = rec
	}
	for start := 0; start < len(ts); start += 1000 {
		end := min(start+1000, len(ts))
		if _, err := d.apply(ctx, ts[start:end]); err != nil {
			return fmt.Errorf("store interrupted jobs: %w", err)
		}
	}
	for _, rec := range failed {
		d.logFinal(rec)
	}

	// Admit the unfinished jobs; dependencies no longer in memory are read once.
	unfinished := map[int64]bool{}
	for _, rec := range recs {
		if !rec.State.Final() {
			unfinished[rec.ID] = true
		}
	}
	depFinal := map[int64]rpc.State{}
	for _, rec := range recs {
		for _, dep := range rec.After {
			if unfinished[dep] {
				continue
			}
			if _, ok := depFinal[dep]; ok {
				continue
			}
			st, err := d.depState(ctx, dep)
			if err != nil && rpc.CodeOf(err) != rpc.CodeNotFound {
				return fmt.Errorf("read dependency %d: %w", dep, err)
			}
			depFinal[dep] = st
		}
	}
	var late []int64
	d.mu.Lock()
	for _, rec := range recs {
		if rec.State.Final() {
			continue
		}
		if dep := d.admit(rec, depFinal); dep != 0 {
			late = append(late, rec.ID)
		}
	}
	// A job whose dependency failed while this daemon was down, or in the
	// transaction above, fails now; so do its dependents.
	for _, rec := range failed {
		late = append(late, d.resolveDependents(rec.ID, rec.State)...)
	}
	d.mu.Unlock()
	d.failLate(ctx, late)
	if len(recs) >= 1000 {
		// The records were read whole, specs and all; the scheduler keeps much
		// less of them. Give the difference back now rather than over minutes.
		recs = nil
		debug.FreeOSMemory()
	}
	return nil
}

// killLeftover kills the process group of a process from an earlier run, if it
// is still there, and waits until it is gone.
func (d *Daemon) killLeftover(p rpc.Proc) {
	if p.PGID <= 1 {
		return
	}
	if p.Start != 0 && procStartTime(p.PID) != 0 && procStartTime(p.PID) != p.Start {
		// The pid was reused by another process: the group leader is not ours.
		// Members of our old group may remain; they keep the old pgid.
		if !groupAlive(p.PGID) || procStartTime(p.PGID) != 0 {
			return
		}
	}
	if !groupAlive(p.PGID) {
		return
	}
	d.log.Info("killing leftover process group", "pgid", p.PGID)
	_ = syscall.Kill(-p.PGID, syscall.SIGKILL)
	deadline := time.Now().Add(10 * time.Second)
	for groupAlive(p.PGID) && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	if groupAlive(p.PGID) {
		d.log.Error("leftover process group did not die", "pgid", p.PGID, "err", errors.New("still alive after SIGKILL"))
	}
}
