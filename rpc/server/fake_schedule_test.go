package server

import (
	"context"

	"spool/rpc"
)

func (f *fakeService) SchedulePut(ctx context.Context, p rpc.SchedulePutParams) (*rpc.Schedule, error) {
	return nil, rpc.NoSchedule(p.Name)
}

func (f *fakeService) ScheduleGet(ctx context.Context, p rpc.ScheduleNameParams) (*rpc.Schedule, error) {
	return nil, rpc.NoSchedule(p.Name)
}

func (f *fakeService) ScheduleList(ctx context.Context) (*rpc.ScheduleListResult, error) {
	return &rpc.ScheduleListResult{Schedules: []rpc.Schedule{}}, nil
}

func (f *fakeService) ScheduleRemove(ctx context.Context, p rpc.ScheduleNameParams) error {
	return rpc.NoSchedule(p.Name)
}

func (f *fakeService) SchedulePause(ctx context.Context, p rpc.ScheduleNameParams) (*rpc.Schedule, error) {
	return nil, rpc.NoSchedule(p.Name)
}

func (f *fakeService) ScheduleResume(ctx context.Context, p rpc.ScheduleNameParams) (*rpc.Schedule, error) {
	return nil, rpc.NoSchedule(p.Name)
}
