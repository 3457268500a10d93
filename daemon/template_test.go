package daemon_test

import (
	"encoding/json"
	"strings"
	"testing"

	"github.com/matryer/is"

	"spool/rpc"
)

func putTemplate(t *testing.T, h *harness, name, spec string, params map[string]rpc.TemplateParam) (*rpc.Template, error) {
	t.Helper()
	return h.d.TemplatePut(ctxT(t), rpc.TemplatePutParams{Name: name, Spec: json.RawMessage(spec), Params: params})
}

func TestTemplates(t *testing.T) {
	is := is.New(t)
	h := start(t, t.TempDir(), nil)
	backup := `{"name": "backup {{dir}}", "labels": {"what": "{{dir}}"}, "steps": [
		{"name": "show", "exec": {"argv": ["echo", "{{dir}}", "level={{level}}", "{{other}}"]}},
		{"name": "env", "shell": {"script": "echo \"$SPOOL_PARAM_DIR $SPOOL_PARAM_LEVEL\""}}
	]}`
	params := map[string]rpc.TemplateParam{"dir": {Required: true}, "level": {Default: ptr("3")}}
	tpl, err := putTemplate(t, h, "backup", backup, params)
	is.NoErr(err)                       // a valid template is stored
	is.Equal(tpl.Name, "backup")        // by name
	is.True(tpl.Params["dir"].Required) // with its params
	is.Equal(*tpl.Params["level"].Default, "3")

	t.Run("get and list", func(t *testing.T) {
		is := is.New(t)
		g, err := h.d.TemplateGet(ctxT(t), rpc.TemplateNameParams{Name: "backup"})
		is.NoErr(err)
		is.True(json.Valid(g.Spec))                          // the spec as given
		is.True(strings.Contains(string(g.Spec), "{{dir}}")) // placeholders kept
		_, err = putTemplate(t, h, "another", `{"steps": [{"sleep": {"duration": "1ms"}}]}`, nil)
		is.NoErr(err)
		l, err := h.d.TemplateList(ctxT(t))
		is.NoErr(err)
		is.Equal(len(l.Templates), 2)                         // both listed
		is.Equal(l.Templates[0].Name, "another")              // in name order
		is.Equal(l.Templates[1].Params["dir"].Required, true) // with their params
		is.NoErr(h.d.TemplateRemove(ctxT(t), rpc.TemplateNameParams{Name: "another"}))
		_, err = h.d.TemplateGet(ctxT(t), rpc.TemplateNameParams{Name: "another"})
		is.Equal(rpc.CodeOf(err), rpc.CodeNoTemplate) // removed
		is.Equal(errData(err).Name, "another")        // naming it
		err = h.d.TemplateRemove(ctxT(t), rpc.TemplateNameParams{Name: "another"})
		is.Equal(rpc.CodeOf(err), rpc.CodeNoTemplate) // a second remove finds nothing
		_, err = h.d.TemplateRun(ctxT(t), rpc.TemplateRunParams{Name: "nope"})
		is.Equal(rpc.CodeOf(err), rpc.CodeNoTemplate) // an unknown template cannot run
	})

	t.Run("run expands params and stores the expanded spec", func(t *testing.T) {
		is := is.New(t)
		j, err := h.d.TemplateRun(ctxT(t), rpc.TemplateRunParams{Name: "backup", Params: map[string]string{"dir": `/home/"me"`},
			Labels: map[string]string{"extra": "1"}, Priority: ptr(4)})
		is.NoErr(err)
		is.Equal(j.Name, `backup /home/"me"`)                                             // placeholders replaced, quotes and all
		is.Equal(j.Labels["what"], `/home/"me"`)                                          // in every string
		is.Equal(j.Labels["extra"], "1")                                                  // run's labels added
		is.Equal(j.Priority, 4)                                                           // and its priority
		is.Equal(j.Template.Name, "backup")                                               // the job names its template
		is.Equal(j.Template.Params, map[string]string{"dir": `/home/"me"`, "level": "3"}) // with every param's value
		j = wait(t, h.d, j.ID)
		is.Equal(j.State, rpc.StateSucceeded)
		is.Equal(j.Spec.Steps[0].Exec.Argv, []string{"echo", `/home/"me"`, "level=3", "{{other}}"}) // the stored spec is expanded; an undeclared placeholder stays
		is.Equal(string(j.Steps[0].Result), `"/home/\"me\" level=3 {{other}}"`)
		is.Equal(string(j.Result), `"/home/\"me\" 3"`) // SPOOL_PARAM_<NAME> for every param
	})

	t.Run("a value is text, never expanded again", func(t *testing.T) {
		is := is.New(t)
		j, err := h.d.TemplateRun(ctxT(t), rpc.TemplateRunParams{Name: "backup", Params: map[string]string{"dir": "{{level}}"}})
		is.NoErr(err)
		is.Equal(j.Name, "backup {{level}}") // the value's "{{level}}" stays as it is
		_, err = h.d.Cancel(ctxT(t), rpc.CancelParams{ID: j.ID})
		if err != nil {
			is.Equal(rpc.CodeOf(err), rpc.CodeBadState) // or it was already over
		}
	})

	t.Run("params are checked", func(t *testing.T) {
		is := is.New(t)
		_, err := h.d.TemplateRun(ctxT(t), rpc.TemplateRunParams{Name: "backup"})
		is.Equal(rpc.CodeOf(err), rpc.CodeInvalidParams) // a required param is missing
		is.Equal(errData(err).Field, "params.dir")       // and named
		_, err = h.d.TemplateRun(ctxT(t), rpc.TemplateRunParams{Name: "backup", Params: map[string]string{"dir": "/x", "levle": "2"}})
		is.Equal(rpc.CodeOf(err), rpc.CodeInvalidParams) // an unknown param
		is.Equal(errData(err).Field, "params.levle")     // is named
		_, err = h.d.TemplateRun(ctxT(t), rpc.TemplateRunParams{Name: "backup", Params: map[string]string{"dir": "/x"}, Queue: ptr("Bad Queue")})
		is.Equal(rpc.CodeOf(err), rpc.CodeInvalidParams) // the expanded job is validated too
		is.Equal(errData(err).Field, "queue")            // naming the field of the run
	})

	t.Run("put validates", func(t *testing.T) {
		is := is.New(t)
		cases := []struct {
			name, spec string
			params     map[string]rpc.TemplateParam
			field      string
		}{
			{"no-kind", `{"steps": [{"name": "x"}]}`, nil, "spec.steps[0]"},
			{"unknown-field", `{"stpes": []}`, nil, "spec.stpes"},
			{"no-steps", `{"steps": []}`, nil, "spec.steps"},
			{"script", `{"steps": [{"shell": {"script": "tar czf {{dir}}.tgz"}}]}`, map[string]rpc.TemplateParam{"dir": {Required: true}}, "spec.steps[0].shell.script"},
			{"bad-param", `{"steps": [{"shell": {"script": "true"}}]}`, map[string]rpc.TemplateParam{"no-dash": {}}, "params.no-dash"},
			{"bad-default", `{"dir": "{{d}}", "steps": [{"shell": {"script": "true"}}]}`, map[string]rpc.TemplateParam{"d": {Default: ptr("relative")}}, "spec.dir"},
			{"bad name", `{"steps": [{"shell": {"script": "true"}}]}`, nil, "name"},
		}
		for _, c := range cases {
			_, err := putTemplate(t, h, c.name, c.spec, c.params)
			is.Equal(rpc.CodeOf(err), rpc.CodeInvalidParams) // rejected at put
			is.Equal(errData(err).Field, c.field)            // naming the field
		}
		_, err := h.d.TemplateGet(ctxT(t), rpc.TemplateNameParams{Name: "no-kind"})
		is.Equal(rpc.CodeOf(err), rpc.CodeNoTemplate) // nothing was stored
	})

	t.Run("required params of any kind of field", func(t *testing.T) {
		is := is.New(t)
		// Required params stand where a path, a URL, a duration or a time is needed:
		// the template is valid for suitable values and must be accepted.
		spec := `{"dir": "{{dir}}", "timeout": "{{limit}}", "not_before": "{{when}}", "steps": [
			{"name": "{{step}}", "http": {"url": "{{url}}"}},
			{"sleep": {"duration": "{{nap}}"}, "retry": {"attempts": 2, "backoff": "{{nap}}"}}
		]}`
		req := map[string]rpc.TemplateParam{"dir": {Required: true}, "limit": {Required: true}, "when": {Required: true},
			"step": {Required: true}, "url": {Required: true}, "nap": {Required: true}}
		_, err := putTemplate(t, h, "typed", spec, req)
		is.NoErr(err) // accepted
		_, err = h.d.TemplateRun(ctxT(t), rpc.TemplateRunParams{Name: "typed", Params: map[string]string{
			"dir": "/tmp", "limit": "1m", "when": "2020-01-01T00:00:00Z", "step": "fetch", "url": "ftp://x", "nap": "1ms"}})
		is.Equal(rpc.CodeOf(err), rpc.CodeInvalidParams)      // but a run with a bad value is not
		is.Equal(errData(err).Field, "job.steps[0].http.url") // naming where it went
	})

	t.Run("retry reruns the stored spec, not the template as it is now", func(t *testing.T) {
		is := is.New(t)
		_, err := putTemplate(t, h, "greet", `{"steps": [{"exec": {"argv": ["echo", "hello {{who}}"]}}]}`, map[string]rpc.TemplateParam{"who": {Default: ptr("world")}})
		is.NoErr(err)
		j, err := h.d.TemplateRun(ctxT(t), rpc.TemplateRunParams{Name: "greet"})
		is.NoErr(err)
		j = wait(t, h.d, j.ID)
		is.Equal(string(j.Result), `"hello world"`) // the default was used
		_, err = putTemplate(t, h, "greet", `{"steps": [{"exec": {"argv": ["echo", "bye {{who}}"]}}]}`, map[string]rpc.TemplateParam{"who": {Default: ptr("moon")}})
		is.NoErr(err) // the template changed
		r, err := h.d.Retry(ctxT(t), rpc.RetryParams{ID: j.ID})
		is.NoErr(err)
		r = wait(t, h.d, r.ID)
		is.Equal(string(r.Result), `"hello world"`) // the retry ran the stored spec
		is.Equal(*r.RetryOf, j.ID)
		is.Equal(r.Template.Name, "greet")                             // and still names the template
		is.Equal(r.Template.Params, map[string]string{"who": "world"}) // with the params it ran with
		n, err := h.d.TemplateRun(ctxT(t), rpc.TemplateRunParams{Name: "greet"})
		is.NoErr(err)
		is.Equal(string(wait(t, h.d, n.ID).Result), `"bye moon"`) // a new run uses the new template
	})
}
