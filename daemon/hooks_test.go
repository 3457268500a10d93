package daemon_test

import (
	"fmt"
	"testing"

	"github.com/matryer/is"

	"spool/rpc"
)

func TestOnFinish(t *testing.T) {
	is := is.New(t)
	h := start(t, t.TempDir(), nil)
	_, err := putTemplate(t, h, "notify", `{"name": "after {{job_id}}", "steps": [
		{"name": "tell", "shell": {"script": "echo \"$SPOOL_PARAM_JOB_ID $SPOOL_PARAM_JOB_STATE $SPOOL_PARAM_TO\""}}]}`,
		map[string]rpc.TemplateParam{"job_id": {Required: true}, "job_state": {}, "to": {Required: true}})
	is.NoErr(err) // the template is stored
	failing := rpc.Spec{Name: "work", Steps: []rpc.Step{{Name: "run", Shell: &rpc.ShellStep{Script: "exit 3"}}}}

	t.Run("checked at submit", func(t *testing.T) {
		is := is.New(t)
		for _, c := range []struct {
			of    rpc.OnFinish
			field string
		}{
			{rpc.OnFinish{Template: "nope"}, "job.on_finish.template"},
			{rpc.OnFinish{Template: "notify"}, "job.on_finish.params.to"}, // required, no value
			{rpc.OnFinish{Template: "notify", Params: map[string]string{"to": "x", "who": "y"}}, "job.on_finish.params.who"},
			{rpc.OnFinish{Template: "notify", Params: map[string]string{"to": "x"}, States: []rpc.State{rpc.StateRunning}}, "job.on_finish.states[0]"},
			{rpc.OnFinish{Template: "notify", Params: map[string]string{"job_id": "x"}}, "job.on_finish.params.job_id"},
		} {
			sp := failing
			of := c.of
			sp.OnFinish = &of
			_, err := h.d.Submit(ctxT(t), rpc.SubmitParams{Job: &sp})
			is.Equal(rpc.CodeOf(err), rpc.CodeInvalidParams) // refused
			is.Equal(errData(err).Field, c.field)            // naming the field
		}
	})

	t.Run("a failed job's follow-up runs", func(t *testing.T) {
		is := is.New(t)
		sp := failing
		sp.OnFinish = &rpc.OnFinish{Template: "notify", Params: map[string]string{"to": "ops"}}
		j := submit(t, h.d, sp)
		j = wait(t, h.d, j.ID)
		is.Equal(j.State, rpc.StateFailed)
		evs := ofType(stored(t, h, j.ID), rpc.EventOnFinish)
		is.Equal(len(evs), 1) // one follow-up
		f := wait(t, h.d, *evs[0].FollowUp)
		is.Equal(f.State, rpc.StateSucceeded) // claimed and run like any job
		is.Equal(string(f.Result), fmt.Sprintf(`"%d failed ops"`, j.ID))
	})

	t.Run("queue hook set and cleared", func(t *testing.T) {
		is := is.New(t)
		q, err := h.d.QueueSet(ctxT(t), rpc.QueueSetParams{Name: "hooked", OnFinish: &rpc.OnFinish{Template: "notify", Params: map[string]string{"to": "q"}}})
		is.NoErr(err)
		is.Equal(q.OnFinish.Template, "notify") // set
		_, err = h.d.QueueSet(ctxT(t), rpc.QueueSetParams{Name: "hooked", OnFinish: &rpc.OnFinish{Template: "nope"}})
		is.Equal(errData(err).Field, "on_finish.template") // an unknown template is refused
		sp := rpc.Spec{Name: "q", Queue: "hooked", Steps: []rpc.Step{{Name: "run", Shell: &rpc.ShellStep{Script: "true"}}}}
		j := wait(t, h.d, submit(t, h.d, sp).ID)
		is.Equal(len(ofType(stored(t, h, j.ID), rpc.EventOnFinish)), 1) // the queue's hook fired
		q, err = h.d.QueueSet(ctxT(t), rpc.QueueSetParams{Name: "hooked", OnFinish: &rpc.OnFinish{}})
		is.NoErr(err)
		is.Equal(q.OnFinish, nil) // an empty template removes it
	})
}
