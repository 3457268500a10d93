package client

import (
	"context"

	"spool/rpc"
)

// JobsWait implements rpc.Service (jobs.wait).
func (c *Client) JobsWait(ctx context.Context, p rpc.JobsWaitParams) (*rpc.JobsResult, error) {
	var r rpc.JobsResult
	if err := c.call(ctx, rpc.MethodJobsWait, p, &r); err != nil {
		return nil, err
	}
	return &r, nil
}

// JobsRetry implements rpc.Service (jobs.retry).
func (c *Client) JobsRetry(ctx context.Context, p rpc.JobsRetryParams) (*rpc.JobsRetryResult, error) {
	var r rpc.JobsRetryResult
	if err := c.call(ctx, rpc.MethodJobsRetry, p, &r); err != nil {
		return nil, err
	}
	return &r, nil
}

// JobsCancel implements rpc.Service (jobs.cancel).
func (c *Client) JobsCancel(ctx context.Context, p rpc.JobsCancelParams) (*rpc.JobsResult, error) {
	var r rpc.JobsResult
	if err := c.call(ctx, rpc.MethodJobsCancel, p, &r); err != nil {
		return nil, err
	}
	return &r, nil
}
