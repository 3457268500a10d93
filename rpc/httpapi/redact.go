package httpapi

import (
	"encoding/json"
	"maps"

	"spool/rpc"
)

// Redacted replaces each value a read-only token may not see.
const Redacted = "[redacted]"

// redact returns res as a read-only token sees it: the values of environment
// variables (the job's, each step's, and a template run's params, which reach
// steps as SPOOL_PARAM_*) and of HTTP step headers (where credentials go) are
// replaced by Redacted; their names stay. It copies what it changes.
func redact(res any) any {
	switch v := res.(type) {
	case *rpc.Job:
		return redactJob(v)
	case *rpc.SubmitResult:
		out := &rpc.SubmitResult{Job: redactJob(v.Job)}
		for i := range v.Jobs {
			out.Jobs = append(out.Jobs, *redactJob(&v.Jobs[i]))
		}
		return out
	case *rpc.ListResult:
		out := &rpc.ListResult{NextCursor: v.NextCursor, Jobs: make([]rpc.Job, len(v.Jobs))}
		for i := range v.Jobs {
			out.Jobs[i] = *redactJob(&v.Jobs[i])
		}
		return out
	case *rpc.Template:
		return redactTemplate(v)
	case *rpc.Schedule:
		return redactSchedule(v)
	case *rpc.ScheduleListResult:
		out := &rpc.ScheduleListResult{Schedules: make([]rpc.Schedule, len(v.Schedules))}
		for i := range v.Schedules {
			out.Schedules[i] = *redactSchedule(&v.Schedules[i])
		}
		return out
	case *rpc.TemplateListResult:
		out := &rpc.TemplateListResult{Templates: make([]rpc.Template, len(v.Templates))}
		for i := range v.Templates {
			out.Templates[i] = *redactTemplate(&v.Templates[i])
		}
		return out
	}
	return res
}

func redactJob(j *rpc.Job) *rpc.Job {
	if j == nil {
		return nil
	}
	c := *j
	if c.Template != nil {
		t := *c.Template
		t.Params = hide(t.Params)
		c.Template = &t
	}
	if c.Spec != nil {
		sp := *c.Spec
		sp.Env = hide(sp.Env)
		sp.Steps = make([]rpc.Step, len(j.Spec.Steps))
		for i, st := range j.Spec.Steps {
			if st.Exec != nil {
				e := *st.Exec
				e.Env = hide(e.Env)
				st.Exec = &e
			}
			if st.Shell != nil {
				sh := *st.Shell
				sh.Env = hide(sh.Env)
				st.Shell = &sh
			}
			if st.HTTP != nil {
				h := *st.HTTP
				h.Headers = hide(h.Headers)
				st.HTTP = &h
			}
			sp.Steps[i] = st
		}
		c.Spec = &sp
	}
	return &c
}

// hide copies m with every value replaced.
func hide(m map[string]string) map[string]string {
	if len(m) == 0 {
		return m
	}
	out := maps.Clone(m)
	for k := range out {
		out[k] = Redacted
	}
	return out
}

// redactTemplate hides the env and header values of a template's spec, and the
// defaults of its params. The spec is kept as JSON; one that does not parse is
// left out rather than shown.
func redactTemplate(t *rpc.Template) *rpc.Template {
	c := *t
	c.Params = make(map[string]rpc.TemplateParam, len(t.Params))
	for k, p := range t.Params {
		if p.Default != nil {
			r := Redacted
			p.Default = &r
		}
		c.Params[k] = p
	}
	var spec any
	if err := json.Unmarshal(t.Spec, &spec); err != nil {
		c.Spec = json.RawMessage("null")
		return &c
	}
	hideIn(spec)
	if b, err := json.Marshal(spec); err == nil {
		c.Spec = b
	} else {
		c.Spec = json.RawMessage("null")
	}
	return &c
}

// hideIn replaces the values of every "env" and "headers" object under v.
func hideIn(v any) {
	switch x := v.(type) {
	case map[string]any:
		for k, val := range x {
			if m, ok := val.(map[string]any); ok && (k == "env" || k == "headers") {
				for name := range m {
					m[name] = Redacted
				}
				continue
			}
			hideIn(val)
		}
	case []any:
		for _, e := range x {
			hideIn(e)
		}
	}
}

// redactSchedule hides the values of a schedule's params, which reach its
// jobs' steps as SPOOL_PARAM_*.
func redactSchedule(sc *rpc.Schedule) *rpc.Schedule {
	c := *sc
	c.Params = hide(sc.Params)
	return &c
}
