package server

import (
	"context"

	"spool/rpc"
)

// The fake's methods that act on many jobs: nothing matches.

func (f *fakeService) JobsWait(ctx context.Context, p rpc.JobsWaitParams) (*rpc.JobsResult, error) {
	return &rpc.JobsResult{Counts: map[rpc.State]int{}, NotSucceeded: []int64{}, Done: true}, nil
}

func (f *fakeService) JobsRetry(ctx context.Context, p rpc.JobsRetryParams) (*rpc.JobsRetryResult, error) {
	return &rpc.JobsRetryResult{IDs: []int64{}, RetryOf: []int64{}, Skipped: []int64{}}, nil
}

func (f *fakeService) JobsCancel(ctx context.Context, p rpc.JobsCancelParams) (*rpc.JobsResult, error) {
	return &rpc.JobsResult{Counts: map[rpc.State]int{}, NotSucceeded: []int64{}, Done: true}, nil
}
