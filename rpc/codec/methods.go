package codec

import (
	"context"
	"encoding/json"

	"spool/rpc"
)

// Call runs one method of a Service on its raw params.
type Call func(ctx context.Context, params json.RawMessage) (any, error)

// Calls is the dispatch table both servers (the socket's and HTTP's) share: each
// method of the protocol but job.watch and job.unwatch, which are the
// connection's or the stream's own business. A call decodes its params strictly
// and, when they are a rpc.Validator, checks them before the Service sees them.
func Calls(svc rpc.Service, dec *Decoder) map[string]Call {
	return map[string]Call{
		rpc.MethodSubmit:         withParams(dec, svc.Submit),
		rpc.MethodGet:            withParams(dec, svc.Get),
		rpc.MethodList:           withParams(dec, svc.List),
		rpc.MethodCancel:         withParams(dec, svc.Cancel),
		rpc.MethodWait:           withParams(dec, svc.Wait),
		rpc.MethodLogs:           withParams(dec, svc.Logs),
		rpc.MethodRetry:          withParams(dec, svc.Retry),
		rpc.MethodRemove:         withParams(dec, svc.Remove),
		rpc.MethodPrune:          withParams(dec, svc.Prune),
		rpc.MethodQueueList:      noParams(dec, svc.QueueList),
		rpc.MethodQueueSet:       withParams(dec, svc.QueueSet),
		rpc.MethodTemplatePut:    withParams(dec, svc.TemplatePut),
		rpc.MethodTemplateGet:    withParams(dec, svc.TemplateGet),
		rpc.MethodTemplateList:   noParams(dec, svc.TemplateList),
		rpc.MethodTemplateRemove: withParams(dec, noResult(svc.TemplateRemove)),
		rpc.MethodTemplateRun:    withParams(dec, svc.TemplateRun),
		rpc.MethodInfo:           noParams(dec, svc.Info),
		rpc.MethodShutdown:       withParams(dec, noResult(svc.Shutdown)),
		rpc.MethodEdit:           withParams(dec, svc.Edit),
		rpc.MethodHold:           withParams(dec, svc.Hold),
		rpc.MethodRelease:        withParams(dec, svc.Release),
		rpc.MethodJobsWait:       withParams(dec, svc.JobsWait),
		rpc.MethodJobsRetry:      withParams(dec, svc.JobsRetry),
		rpc.MethodJobsCancel:     withParams(dec, svc.JobsCancel),
		rpc.MethodSchedulePut:    withParams(dec, svc.SchedulePut),
		rpc.MethodScheduleGet:    withParams(dec, svc.ScheduleGet),
		rpc.MethodScheduleList:   noParams(dec, svc.ScheduleList),
		rpc.MethodScheduleRemove: withParams(dec, noResult(svc.ScheduleRemove)),
		rpc.MethodSchedulePause:  withParams(dec, svc.SchedulePause),
		rpc.MethodScheduleResume: withParams(dec, svc.ScheduleResume),
		rpc.MethodPause:          withParams(dec, svc.Pause),
		rpc.MethodResume:         withParams(dec, svc.Resume),
		rpc.MethodSignal:         withParams(dec, svc.Signal),
	}
}

// withParams adapts a Service method that takes params.
func withParams[P, R any](dec *Decoder, f func(context.Context, P) (R, error)) Call {
	return func(ctx context.Context, raw json.RawMessage) (any, error) {
		var p P
		if err := dec.Params(raw, &p); err != nil {
			return nil, err
		}
		if v, ok := any(p).(rpc.Validator); ok {
			if err := v.Validate(); err != nil {
				return nil, err
			}
		}
		return f(ctx, p)
	}
}

// noParams adapts a Service method that takes no params ({} or none).
func noParams[R any](dec *Decoder, f func(context.Context) (R, error)) Call {
	return func(ctx context.Context, raw json.RawMessage) (any, error) {
		var p rpc.Empty
		if err := dec.Params(raw, &p); err != nil {
			return nil, err
		}
		return f(ctx)
	}
}

// noResult adapts a Service method whose result is {}.
func noResult[P any](f func(context.Context, P) error) func(context.Context, P) (rpc.Empty, error) {
	return func(ctx context.Context, p P) (rpc.Empty, error) { return rpc.Empty{}, f(ctx, p) }
}
