package server

import (
	"context"

	"spool/rpc"
)

// The fake service does not pause jobs.

func (f *fakeService) Pause(ctx context.Context, p rpc.PauseParams) (*rpc.Job, error) {
	return nil, rpc.NotFound(p.ID)
}

func (f *fakeService) Resume(ctx context.Context, p rpc.PauseParams) (*rpc.Job, error) {
	return nil, rpc.NotFound(p.ID)
}

func (f *fakeService) Signal(ctx context.Context, p rpc.SignalParams) (*rpc.Job, error) {
	return nil, rpc.NotFound(p.ID)
}
