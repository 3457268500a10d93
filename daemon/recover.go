package daemon

import (
	"context"
	"errors"
	"fmt"
	"syscall"
	"time"

	"spool/rpc"
)

// recover joins the store, which gives this daemon its epoch; kills what is left
// of the processes of the jobs this host ran before, then has the store reap the
// jobs whose owner is gone: each gets an interrupted event and, as its step's
// on_interrupt says, goes back to the queue at its first unfinished step or
// fails. With bbolt the owner of every running job is the daemon that ran
// before this one. It returns the lease the daemon joined with.
func (d *Daemon) recover(ctx context.Context) (*lease, error) {
	_, last, err := d.store.Bounds(ctx)
	if err != nil {
		return nil, fmt.Errorf("read the event log bounds: %w", err)
	}
	d.hub.setLast(last)
	l, err := d.join(ctx)
	if err != nil {
		return nil, err
	}
	running, err := d.store.Running(ctx)
	if err != nil {
		return nil, fmt.Errorf("read running jobs: %w", err)
	}
	// Nothing may resume while a process of an earlier run on this host still
	// lives.
	var ours []rpc.Record
	for _, rec := range running {
		if rec.Run.Node == "" || rec.Run.Node == d.cfg.Node {
			ours = append(ours, rec)
		}
	}
	d.killLeftovers(ours)
	return l, d.reap(ctx)
}

// reap has the store take the running jobs whose owner is gone, and tells.
func (d *Daemon) reap(ctx context.Context) error {
	recs, evs, err := d.store.Reap(ctx, d.clock.Now())
	if err != nil {
		return fmt.Errorf("reap the jobs of owners that are gone: %w", err)
	}
	d.hub.publish(evs)
	for _, rec := range recs {
		if rec.State.Final() {
			d.logFinal(rec)
		}
	}
	if len(recs) > 0 {
		d.log.Info("took back jobs whose daemon is gone", "count", len(recs))
		d.kick()
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
