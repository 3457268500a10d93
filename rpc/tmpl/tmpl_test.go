package tmpl_test

import (
	"encoding/json"
	"testing"
	"time"

	"github.com/matryer/is"

	"spool/rpc"
	"spool/rpc/codec"
	"spool/rpc/tmpl"
)

func TestFollowUp(t *testing.T) {
	is := is.New(t)
	dec := codec.NewDecoder()
	tp := &rpc.Template{Name: "notify", Spec: json.RawMessage(`{"name": "{{job_id}} {{job_state}} {{to}} {{job_error}}", "steps": [{"exec": {"argv": ["echo", "{{job_result}}"]}}]}`),
		Params: map[string]rpc.TemplateParam{"job_id": {Required: true}, "job_state": {}, "job_result": {}, "to": {Required: true}}}
	job := &rpc.Job{ID: 7, State: rpc.StateSucceeded, Name: "n", Error: "e", Result: json.RawMessage(`{"a":1}`)}
	now := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)

	nj, err := tmpl.FollowUp(dec, tp, &rpc.OnFinish{Template: "notify", Params: map[string]string{"to": "ops"}}, job, now, "on_finish")
	is.NoErr(err)
	is.Equal(nj.Record.Name, "7 succeeded ops {{job_error}}")             // only declared builtins are given
	is.Equal(nj.Record.Spec.Steps[0].Exec.Argv[1], `{"a":1}`)             // the result as JSON text
	is.Equal(nj.Record.Template.Params["job_id"], "7")                    // the values are on the template ref
	is.Equal(nj.Record.Template.Params["to"], "ops")                      // with the hook's own
	is.True(nj.Record.SubmittedAt.Equal(now) && nj.Event.Time.Equal(now)) // at the hook's time

	_, err = tmpl.FollowUp(dec, tp, &rpc.OnFinish{Template: "notify"}, job, now, "job.on_finish")
	is.Equal(rpc.AsError(err).Data.Field, "job.on_finish.params.to") // a required param missing
	_, err = tmpl.FollowUp(dec, tp, &rpc.OnFinish{Template: "notify", Params: map[string]string{"to": "x", "cc": "y"}}, job, now, "job.on_finish")
	is.Equal(rpc.AsError(err).Data.Field, "job.on_finish.params.cc") // a param the template does not declare
}

func TestNewRecordCopiesHook(t *testing.T) {
	is := is.New(t)
	of := &rpc.OnFinish{Template: "t"}
	rec := tmpl.NewRecord(&rpc.Spec{Name: "x", OnFinish: of}, time.Now())
	is.Equal(rec.Run.OnFinish, of) // the store reads the hook from the run state
}

func TestNormalizeOnFinish(t *testing.T) {
	is := is.New(t)
	for _, c := range []struct {
		of    rpc.OnFinish
		field string
	}{
		{rpc.OnFinish{}, "job.on_finish.template"},
		{rpc.OnFinish{Template: "a b"}, "job.on_finish.template"},
		{rpc.OnFinish{Template: "t", States: []rpc.State{rpc.StateFailed, rpc.StateQueued}}, "job.on_finish.states[1]"},
		{rpc.OnFinish{Template: "t", Params: map[string]string{"job_state": "x"}}, "job.on_finish.params.job_state"},
	} {
		sp := rpc.Spec{Steps: []rpc.Step{{Sleep: &rpc.SleepStep{Duration: rpc.Duration(time.Millisecond)}}}, OnFinish: &c.of}
		err := rpc.NormalizeSpec("job", &sp)
		is.Equal(rpc.AsError(err).Data.Field, c.field) // refused, naming the field
	}
	of := rpc.OnFinish{Template: "t", States: []rpc.State{rpc.StateCancelled}}
	is.True(of.Matches(rpc.StateCancelled) && !of.Matches(rpc.StateFailed))                    // the states filter
	is.True((&rpc.OnFinish{Template: "t"}).Matches(rpc.StateSkipped))                          // none: every final state
	is.True(!(&rpc.OnFinish{}).Matches(rpc.StateFailed) && !(*rpc.OnFinish)(nil).Matches("x")) // an empty or no hook never
}
