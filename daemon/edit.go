package daemon

import (
	"context"

	"spool/rpc"
)

// Edit changes a queued job (job.edit) and answers with the job as stored.
func (d *Daemon) Edit(ctx context.Context, p rpc.EditParams) (*rpc.Job, error) {
	if err := p.Validate(); err != nil {
		return nil, err
	}
	return d.changeQueued(ctx, p.ID, func(ctx context.Context) ([]rpc.Event, error) {
		_, evs, err := d.store.Edit(ctx, p, d.clock.Now())
		return evs, err
	})
}

// Hold holds a queued job (job.hold): it is not started until released.
func (d *Daemon) Hold(ctx context.Context, p rpc.HoldParams) (*rpc.Job, error) {
	if err := p.Validate(); err != nil {
		return nil, err
	}
	return d.changeQueued(ctx, p.ID, func(ctx context.Context) ([]rpc.Event, error) {
		_, evs, err := d.store.Hold(ctx, p.ID, d.clock.Now())
		return evs, err
	})
}

// Release ends a queued job's hold (job.release).
func (d *Daemon) Release(ctx context.Context, p rpc.HoldParams) (*rpc.Job, error) {
	if err := p.Validate(); err != nil {
		return nil, err
	}
	return d.changeQueued(ctx, p.ID, func(ctx context.Context) ([]rpc.Event, error) {
		_, evs, err := d.store.Release(ctx, p.ID, d.clock.Now())
		return evs, err
	})
}

// changeQueued runs a store's change of a queued job, publishes its events,
// wakes the scheduler (a job released or edited may be claimable now, or its
// not_before earlier) and answers with the job as a job.get would.
func (d *Daemon) changeQueued(ctx context.Context, id int64, change func(context.Context) ([]rpc.Event, error)) (*rpc.Job, error) {
	if err := d.waitReady(ctx); err != nil {
		return nil, err
	}
	evs, err := change(ctx)
	if err != nil {
		return nil, err
	}
	d.hub.publish(evs)
	if len(evs) > 0 {
		d.kick()
	}
	return d.Get(ctx, rpc.GetParams{ID: id})
}
