package server

import (
	"context"

	"spool/rpc"
)

func (f *fakeService) Edit(ctx context.Context, p rpc.EditParams) (*rpc.Job, error) {
	return f.Get(ctx, rpc.GetParams{ID: p.ID})
}

func (f *fakeService) Hold(ctx context.Context, p rpc.HoldParams) (*rpc.Job, error) {
	return f.Get(ctx, rpc.GetParams(p))
}

func (f *fakeService) Release(ctx context.Context, p rpc.HoldParams) (*rpc.Job, error) {
	return f.Get(ctx, rpc.GetParams(p))
}
