package daemon

import (
	"context"
	"fmt"

	"spool/rpc"
	"spool/rpc/tmpl"
)

// Hooks (on_finish) fire in the store, in the transaction of the job's final
// state (store/hooks.go). The daemon checks a hook when it is set: its
// template must exist and take the hook's params, with sample values for the
// builtin ones; else -32602 and nothing is stored.

// checkHook checks hook o, set at field.
func (d *Daemon) checkHook(ctx context.Context, field string, o *rpc.OnFinish) error {
	if o == nil {
		return nil
	}
	t, err := d.store.Template(ctx, o.Template)
	if err != nil {
		if rpc.CodeOf(err) == rpc.CodeNoTemplate {
			return rpc.InvalidParams(field+".template", fmt.Sprintf("template %q not found: store it first (template.put)", o.Template))
		}
		return err
	}
	sample := &rpc.Job{ID: 1, State: rpc.StateFailed, Name: "sample", Error: "sample"}
	_, err = tmpl.FollowUp(d.specs, t, o, sample, d.clock.Now(), field)
	return err
}

// setQueueHook sets the hook of queue q to o, or removes it when o's template
// is empty.
func (d *Daemon) setQueueHook(ctx context.Context, q *rpc.Queue, o *rpc.OnFinish) error {
	if o.Template == "" {
		q.OnFinish = nil
		return nil
	}
	if err := d.checkHook(ctx, "on_finish", o); err != nil {
		return err
	}
	c := *o
	q.OnFinish = &c
	return nil
}
