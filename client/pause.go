package client

import (
	"context"

	"spool/rpc"
)

// Pause implements rpc.Service (job.pause).
func (c *Client) Pause(ctx context.Context, p rpc.PauseParams) (*rpc.Job, error) {
	return callJob(ctx, c, rpc.MethodPause, p)
}

// Resume implements rpc.Service (job.resume).
func (c *Client) Resume(ctx context.Context, p rpc.PauseParams) (*rpc.Job, error) {
	return callJob(ctx, c, rpc.MethodResume, p)
}

// Signal implements rpc.Service (job.signal).
func (c *Client) Signal(ctx context.Context, p rpc.SignalParams) (*rpc.Job, error) {
	return callJob(ctx, c, rpc.MethodSignal, p)
}
