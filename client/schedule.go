package client

import (
	"context"

	"spool/rpc"
)

// SchedulePut implements rpc.Service (schedule.put).
func (c *Client) SchedulePut(ctx context.Context, p rpc.SchedulePutParams) (*rpc.Schedule, error) {
	return callSchedule(ctx, c, rpc.MethodSchedulePut, p)
}

// ScheduleGet implements rpc.Service (schedule.get).
func (c *Client) ScheduleGet(ctx context.Context, p rpc.ScheduleNameParams) (*rpc.Schedule, error) {
	return callSchedule(ctx, c, rpc.MethodScheduleGet, p)
}

// ScheduleList implements rpc.Service (schedule.list).
func (c *Client) ScheduleList(ctx context.Context) (*rpc.ScheduleListResult, error) {
	var r rpc.ScheduleListResult
	if err := c.call(ctx, rpc.MethodScheduleList, rpc.Empty{}, &r); err != nil {
		return nil, err
	}
	return &r, nil
}

// ScheduleRemove implements rpc.Service (schedule.remove).
func (c *Client) ScheduleRemove(ctx context.Context, p rpc.ScheduleNameParams) error {
	return c.call(ctx, rpc.MethodScheduleRemove, p, nil)
}

// SchedulePause implements rpc.Service (schedule.pause).
func (c *Client) SchedulePause(ctx context.Context, p rpc.ScheduleNameParams) (*rpc.Schedule, error) {
	return callSchedule(ctx, c, rpc.MethodSchedulePause, p)
}

// ScheduleResume implements rpc.Service (schedule.resume).
func (c *Client) ScheduleResume(ctx context.Context, p rpc.ScheduleNameParams) (*rpc.Schedule, error) {
	return callSchedule(ctx, c, rpc.MethodScheduleResume, p)
}

func callSchedule(ctx context.Context, c *Client, method string, params any) (*rpc.Schedule, error) {
	var sc rpc.Schedule
	if err := c.call(ctx, method, params, &sc); err != nil {
		return nil, err
	}
	return &sc, nil
}
