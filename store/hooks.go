package store

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"spool/rpc"
	"spool/rpc/tmpl"
)

// Hooks (on_finish): writer.put queues a hook when a job becomes final and its
// own hook (rpc.RunState.OnFinish, copied from its spec at submit) or else its
// queue's matches the final state; writer.finish fires the queued hooks after
// the dependents' consequences, in the same transaction: the follow-up job is
// submitted as Submit does (submitTx), with an on_finish event on the job that
// ended, or, when it cannot be made, an on_finish_failed event. The final state
// is stored either way: a hook never fails its job's transition. A follow-up's
// own hook fires too, up to rpc.MaxHookDepth hooks in a chain.

// hook is a hook to fire, for finish.
type hook struct {
	// job has the fields of the job that ended that the builtin params read.
	job   rpc.Job
	of    *rpc.OnFinish
	depth int
	at    time.Time
}

// queueHook reads the hook of queue name, once per writer.
func (w *writer) queueHook(name string) (*rpc.OnFinish, error) {
	if of, ok := w.qhooks[name]; ok {
		return of, nil
	}
	q, err := w.b.queueSettings(name)
	if err != nil {
		return nil, err
	}
	if w.qhooks == nil {
		w.qhooks = map[string]*rpc.OnFinish{}
	}
	w.qhooks[name] = q.OnFinish
	return q.OnFinish, nil
}

// hookOf queues the hook of rec, which became final at at, if it has one that
// matches its state.
func (w *writer) hookOf(rec *rpc.Record, at time.Time) error {
	of := rec.Run.OnFinish
	if of == nil {
		q, err := w.queueHook(rec.Queue)
		if err != nil {
			return err
		}
		of = q
	}
	if !of.Matches(rec.State) {
		return nil
	}
	w.hooks = append(w.hooks, hook{
		job: rpc.Job{ID: rec.ID, State: rec.State, Name: rec.Name, Error: rec.Error, Result: bytes.Clone(rec.Result)},
		of:  of, depth: rec.Run.HookDepth, at: at,
	})
	return nil
}

// fireHooks fires the queued hooks, and those of the jobs their follow-ups
// end (a follow-up whose dependency failed fails at once), draining the
// consequences of each.
func (w *writer) fireHooks() error {
	w.firing = true
	defer func() { w.firing = false }()
	for len(w.hooks) > 0 {
		h := w.hooks[0]
		w.hooks = w.hooks[1:]
		if err := w.fire(h); err != nil {
			return err
		}
		if err := w.drain(); err != nil {
			return err
		}
	}
	return nil
}

// fire submits the follow-up of hook h, with its event on the job that ended.
func (w *writer) fire(h hook) error {
	id := h.job.ID
	failed := func(msg string) error {
		return w.event(rpc.Event{Time: h.at, Type: rpc.EventOnFinishFailed, Job: id, Error: msg}, id)
	}
	if h.depth >= rpc.MaxHookDepth {
		return failed(fmt.Sprintf("job %d is the follow-up of %d hooks in a chain, the most there may be: its hook does not fire", id, h.depth))
	}
	raw := w.b.templates.Get([]byte(h.of.Template))
	if raw == nil {
		return failed(fmt.Sprintf("template %q not found", h.of.Template))
	}
	var t rpc.Template
	if err := json.Unmarshal(raw, &t); err != nil {
		return failed(fmt.Sprintf("decode template %q: %v", h.of.Template, err))
	}
	nj, err := tmpl.FollowUp(w.b.dec, &t, h.of, &h.job, h.at, "on_finish")
	if err != nil {
		return failed(err.Error())
	}
	nj.Record.Run.HookDepth = h.depth + 1
	ss, err := encodeSpec(nj.Record.Spec)
	if err != nil {
		return failed("encode the follow-up's spec: " + err.Error())
	}
	now := w.now
	recs, _, err := submitTx(w, []rpc.NewJob{nj}, []storedSpec{ss})
	w.now = now
	if err != nil {
		// submitTx checks before it writes: a refusal (a key conflict, say)
		// wrote nothing; any other error fails the transaction.
		var re *rpc.Error
		if errors.As(err, &re) {
			return failed(err.Error())
		}
		return err
	}
	next := recs[0].ID
	return w.event(rpc.Event{Time: h.at, Type: rpc.EventOnFinish, Job: id, FollowUp: &next}, id)
}
