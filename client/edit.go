package client

import (
	"context"

	"spool/rpc"
)

// Edit implements rpc.Service (job.edit).
func (c *Client) Edit(ctx context.Context, p rpc.EditParams) (*rpc.Job, error) {
	return callJob(ctx, c, rpc.MethodEdit, p)
}

// Hold implements rpc.Service (job.hold).
func (c *Client) Hold(ctx context.Context, p rpc.HoldParams) (*rpc.Job, error) {
	return callJob(ctx, c, rpc.MethodHold, p)
}

// Release implements rpc.Service (job.release).
func (c *Client) Release(ctx context.Context, p rpc.HoldParams) (*rpc.Job, error) {
	return callJob(ctx, c, rpc.MethodRelease, p)
}
