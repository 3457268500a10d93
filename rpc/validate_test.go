package rpc_test

import (
	"encoding/json"
	"spool/rpc"
	"spool/rpc/codec"
	"strings"
	"testing"

	"github.com/matryer/is"
)

// TestValidateParams runs params through what the server does with them (strict
// decoding, then Validate) and, for job.submit, the spec's normalization: each
// case is refused with -32602 naming its field.
func TestValidateParams(t *testing.T) {
	long := func(n int) string { q, _ := json.Marshal(strings.Repeat("x", n)); return string(q) }
	job := func(extra string) string { return `{"job":{` + extra + `,"steps":[{"shell":{"script":"true"}}]}}` }
	step := func(s string) string { return `{"job":{"steps":[` + s + `]}}` }
	cases := []struct {
		name   string
		params string
		decode func(raw string) error
		field  string
	}{
		{"zero job timeout", job(`"timeout":"0s"`), submit, "job.timeout"},
		{"zero step timeout", step(`{"shell":{"script":"x"},"timeout":"0ms"}`), submit, "job.steps[0].timeout"},
		{"escaped zero", job(`"timeout":"\u0030s"`), submit, "job.timeout"},
		{"zero backoff", step(`{"shell":{"script":"x"},"retry":{"attempts":2,"backoff":"0s"}}`), submit, "job.steps[0].retry.backoff"},
		{"backoff over the bound", step(`{"shell":{"script":"x"},"retry":{"attempts":2,"backoff":"721h"}}`), submit, "job.steps[0].retry.backoff"},
		{"job dir with NUL", job(`"dir":"/a\u0000"`), submit, "job.dir"},
		{"exec dir with NUL", step(`{"exec":{"argv":["x"],"dir":"/\u0000"}}`), submit, "job.steps[0].exec.dir"},
		{"env name with =", job(`"env":{"A=B":"1"}`), submit, `job.env["A=B"]`},
		{"label too long", job(`"labels":{"k":` + long(257) + `}`), submit, "job.labels.k"},
		{"header name not a token", step(`{"http":{"url":"http://x/","headers":{"a(b)":"1"}}}`), submit, `job.steps[0].http.headers["a(b)"]`},
		{"header value with a control", step(`{"http":{"url":"http://x/","headers":{"A":"\u007f"}}}`), submit, "job.steps[0].http.headers.A"},
		{"method too long", step(`{"http":{"method":` + strings.ToUpper(long(33)) + `,"url":"http://x/"}}`), submit, "job.steps[0].http.method"},
		{"get id", `{"id":0}`, as[rpc.GetParams], "id"},
		{"cancel reason", `{"id":1,"reason":` + long(rpc.MaxReasonLen+1) + `}`, as[rpc.CancelParams], "reason"},
		{"wait zero timeout", `{"id":1,"timeout":"0s"}`, as[rpc.WaitParams], "timeout"},
		{"retry id", `{"id":-4}`, as[rpc.RetryParams], "id"},
		{"list limit", `{"limit":1001}`, as[rpc.ListParams], "limit"},
		{"list queue", `{"queue":"A"}`, as[rpc.ListParams], "queue"},
		{"list state", `{"state":["final"]}`, as[rpc.ListParams], "state[0]"},
		{"logs step", `{"id":1,"step":-1}`, as[rpc.LogsParams], "step"},
		{"logs limit", `{"id":1,"limit":1048577}`, as[rpc.LogsParams], "limit"},
		{"logs stream", `{"id":1,"stream":"stdout"}`, as[rpc.LogsParams], "stream"},
		{"logs lines", `{"id":1,"lines":-1}`, as[rpc.LogsParams], "lines"},
		{"logs lines and offset", `{"id":1,"lines":3,"offset":10}`, as[rpc.LogsParams], "offset"},
		{"remove id", `{"ids":[3,-1]}`, as[rpc.RemoveParams], "ids[1]"},
		{"remove none", `{"ids":[]}`, as[rpc.RemoveParams], "ids"},
		{"prune zero", `{"older_than":"0s"}`, as[rpc.PruneParams], "older_than"},
		{"prune state", `{"states":["queued"]}`, as[rpc.PruneParams], "states[0]"},
		{"watch heartbeat", `{"heartbeat":"99ms"}`, as[rpc.WatchParams], "heartbeat"},
		{"watch id", `{"jobs":[1,0]}`, as[rpc.WatchParams], "jobs[1]"},
		{"watch token", `{"token":` + long(rpc.MaxTokenLen+1) + `}`, as[rpc.WatchParams], "token"},
		{"queue name", `{"name":"Q"}`, as[rpc.QueueSetParams], "name"},
		{"queue parallel", `{"name":"q","parallel":-1}`, as[rpc.QueueSetParams], "parallel"},
		{"template name", `{"name":"a/b","spec":{}}`, as[rpc.TemplatePutParams], "name"},
		{"template params collide", `{"name":"t","spec":{},"params":{"a_b":{},"A_B":{}}}`, as[rpc.TemplatePutParams], "params.a_b"},
		{"template param name", `{"name":"t","spec":{},"params":{"a.b":{}}}`, as[rpc.TemplatePutParams], `params["a.b"]`},
		{"template default NUL", `{"name":"t","spec":{},"params":{"a":{"default":"\u0000"}}}`, as[rpc.TemplatePutParams], "params.a.default"},
		{"run value NUL", `{"name":"t","params":{"a":"\u0000"}}`, as[rpc.TemplateRunParams], "params.a"},
		{"run after", `{"name":"t","after":[0]}`, as[rpc.TemplateRunParams], "after[0]"},
		{"run queue", `{"name":"t","queue":""}`, as[rpc.TemplateRunParams], "queue"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			is := is.New(t)
			err := c.decode(c.params)
			is.True(err != nil) // refused
			e := rpc.AsError(err)
			is.Equal(e.Code, rpc.CodeInvalidParams) // -32602
			is.True(e.Data != nil)                  // with data
			is.Equal(e.Data.Field, c.field)         // naming the field
			is.True(e.Data.Reason != "")            // and what is allowed
		})
	}
}

// as decodes raw as the params of a method and validates them, as the server does.
func as[P any](raw string) error {
	var p P
	if err := codec.DecodeParams(json.RawMessage(raw), &p); err != nil {
		return err
	}
	if v, ok := any(p).(rpc.Validator); ok {
		return v.Validate()
	}
	return nil
}

// submit decodes job.submit params and normalizes the job, as the daemon does.
func submit(raw string) error {
	var p rpc.SubmitParams
	if err := codec.DecodeParams(json.RawMessage(raw), &p); err != nil {
		return err
	}
	return rpc.NormalizeSpec("job", p.Job)
}

// TestValidateKeepsValid checks what stays allowed around the new bounds.
func TestValidateKeepsValid(t *testing.T) {
	is := is.New(t)
	is.NoErr(submit(`{"job":{"steps":[{"shell":{"script":"x"},"timeout":"1ns"}]}}`))                                        // any positive timeout
	is.NoErr(submit(`{"job":{"timeout":null,"steps":[{"http":{"url":"http://x/","headers":{"X-A_b.c~":"a\tb é"}}}]}}`))     // null, token names, tab and UTF-8 in values
	is.NoErr(as[rpc.QueueSetParams](`{"name":"q","parallel":0}`))                                                           // 0 removes a queue's limit
	is.NoErr(as[rpc.WatchParams](`{"heartbeat":"100ms","since":0}`))                                                        // the shortest heartbeat
	is.NoErr(as[rpc.TemplatePutParams](`{"name":"a.b-c_d","spec":{},"params":{"a":{"default":""},"B":{"required":true}}}`)) // distinct params
	var p rpc.SubmitParams
	is.NoErr(codec.DecodeParams(json.RawMessage(`{"job":{"steps":[{"shell":{"script":"x"},"retry":{"attempts":3,"backoff":"10m"}}]}}`), &p))
	is.NoErr(rpc.NormalizeSpec("job", p.Job))                          // a backoff past the default max_backoff
	is.Equal(p.Job.Steps[0].Retry.MaxBackoff, rpc.Duration(10*60*1e9)) // makes max_backoff the backoff
	is.Equal(p.Job.Steps[0].Retry.Backoff, rpc.Duration(10*60*1e9))    // and keeps it
}
