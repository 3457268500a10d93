package postgres

import (
	"context"
	"errors"
	"time"

	"spool/rpc"
)

var errTodo = errors.New("not yet")

func (s *Store) Hold(ctx context.Context, id int64, now time.Time) (*rpc.Record, []rpc.Event, error) {
	return nil, nil, errTodo
}
func (s *Store) Release(ctx context.Context, id int64, now time.Time) (*rpc.Record, []rpc.Event, error) {
	return nil, nil, errTodo
}
func (s *Store) Edit(ctx context.Context, p rpc.EditParams, now time.Time) (*rpc.Record, []rpc.Event, error) {
	return nil, nil, errTodo
}
func (s *Store) Resume(ctx context.Context, id int64, now time.Time) (*rpc.Record, []rpc.Event, error) {
	return nil, nil, errTodo
}
func (s *Store) PutSchedule(ctx context.Context, sc rpc.Schedule) (*rpc.Schedule, error) {
	return nil, errTodo
}
func (s *Store) Schedule(ctx context.Context, name string) (*rpc.Schedule, error) {
	return nil, errTodo
}
func (s *Store) Schedules(ctx context.Context) ([]rpc.Schedule, error) { return nil, errTodo }
func (s *Store) RemoveSchedule(ctx context.Context, name string) error  { return errTodo }
func (s *Store) PauseSchedule(ctx context.Context, name string, paused bool, now time.Time) (*rpc.Schedule, error) {
	return nil, errTodo
}
func (s *Store) FireSchedule(ctx context.Context, name string, slot time.Time, job rpc.NewJob) (rpc.Record, []rpc.Event, error) {
	return rpc.Record{}, nil, errTodo
}
