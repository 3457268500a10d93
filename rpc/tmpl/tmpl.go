// Package tmpl makes jobs from templates: it resolves a run's params against
// a template's, expands the {{param}} placeholders of its spec, decodes the
// spec strictly and builds the new job. It is pure (no store, no clock): the
// daemon's template.run and schedules use it, and so does the store for the
// follow-up jobs of on_finish hooks, in the transaction of the job that ended.
// It imports rpc and rpc/codec only.
package tmpl

import (
	"bytes"
	"encoding/json"
	"fmt"
	"maps"
	"slices"
	"strings"
	"time"

	"spool/rpc"
	"spool/rpc/codec"
)

// Expand replaces each {{name}} of a declared param in the raw spec with its
// value, escaped for a JSON string. It is one pass over the spec: a value is
// text, and a "{{other}}" inside it, or one it forms with the text around it, is
// left as it is.
func Expand(raw []byte, values map[string]string) []byte {
	if len(values) == 0 {
		return raw
	}
	pairs := make([]string, 0, 2*len(values))
	for _, name := range slices.Sorted(maps.Keys(values)) {
		q, _ := json.Marshal(values[name])
		pairs = append(pairs, "{{"+name+"}}", string(q[1:len(q)-1]))
	}
	return []byte(strings.NewReplacer(pairs...).Replace(string(raw)))
}

// SampleOpen replaces, in a template's spec, each string (value or object
// key) that holds a placeholder of one of the params named by open with a value
// that is valid for the field it stands in, so that the rest of the spec can be
// validated before the params' values are known.
func SampleOpen(raw []byte, open []string) ([]byte, error) {
	if len(open) == 0 {
		return raw, nil
	}
	dec := json.NewDecoder(bytes.NewReader(raw))
	dec.UseNumber()
	var v any
	if err := dec.Decode(&v); err != nil {
		return nil, err
	}
	holds := func(s string) bool {
		for _, name := range open {
			if strings.Contains(s, "{{"+name+"}}") {
				return true
			}
		}
		return false
	}
	n := 0
	sample := func(field string) string {
		switch field {
		case "dir":
			return "/"
		case "url":
			return "http://localhost/"
		case "not_before":
			return "2000-01-01T00:00:00Z"
		case "timeout", "duration", "backoff", "max_backoff":
			return "1s"
		case "method":
			return "GET"
		case "result":
			return rpc.ResultText
		case "on_interrupt":
			return rpc.OnInterruptRetry
		}
		// Names must be unique among steps: each stand-in is a new one.
		n++
		return fmt.Sprintf("sample-%d", n)
	}
	var walk func(field string, v any) any
	walk = func(field string, v any) any {
		switch x := v.(type) {
		case map[string]any:
			out := make(map[string]any, len(x))
			for _, k := range slices.Sorted(maps.Keys(x)) {
				nk := k
				if holds(k) {
					n++
					nk = fmt.Sprintf("SAMPLE_%d", n)
				}
				out[nk] = walk(k, x[k])
			}
			return out
		case []any:
			for i := range x {
				x[i] = walk(field, x[i])
			}
			return x
		case string:
			if holds(x) {
				return sample(field)
			}
		}
		return v
	}
	return json.Marshal(walk("", v))
}

// Decode decodes a spec strictly: unknown fields are errors naming their path.
func Decode(dec *codec.Decoder, raw []byte, field string) (*rpc.Spec, error) {
	var s rpc.Spec
	if err := dec.Strict(raw, &s, field); err != nil {
		return nil, err
	}
	return &s, nil
}

// Resolve gives every param of template t its value for a run with params:
// the run's own, else the param's default, else "" (an error naming
// field.NAME for a required one). A run's param the template does not declare
// is an error naming field.NAME.
func Resolve(t *rpc.Template, params map[string]string, field string) (map[string]string, error) {
	values := map[string]string{}
	for _, name := range slices.Sorted(maps.Keys(params)) {
		if _, ok := t.Params[name]; !ok {
			return nil, rpc.InvalidParams(field+"."+name, fmt.Sprintf("template %q has no param %q", t.Name, name))
		}
		values[name] = params[name]
	}
	for _, name := range slices.Sorted(maps.Keys(t.Params)) {
		prm := t.Params[name]
		if _, ok := values[name]; ok {
			continue
		}
		if prm.Default != nil {
			values[name] = *prm.Default
			continue
		}
		if prm.Required {
			return nil, rpc.InvalidParams(field+"."+name, "is required")
		}
		values[name] = ""
	}
	return values, nil
}

// NewRecord builds the record of a job about to be submitted. The job's own
// hook is copied to its run state, where the store reads it.
func NewRecord(s *rpc.Spec, now time.Time) rpc.Record {
	j := rpc.Job{
		Name: s.Name, Queue: s.Queue, Priority: s.Priority, Labels: s.Labels,
		NotBefore: s.NotBefore, State: rpc.StateQueued, SubmittedAt: now, Spec: s,
		After: []int64{},
	}
	if s.Key != "" {
		k := s.Key
		j.Key = &k
	}
	if s.NotBefore != nil {
		nb := s.NotBefore.UTC()
		j.NotBefore = &nb
	}
	j.Steps = make([]rpc.StepStatus, len(s.Steps))
	for i, st := range s.Steps {
		j.Steps[i] = rpc.StepStatus{Name: st.Name, Kind: st.Kind(), State: rpc.StatePending}
	}
	return rpc.Record{Job: j, Run: rpc.RunState{OnFinish: s.OnFinish}}
}

// Job makes the new job that a run of template t with p submits at now: params
// resolved (errors under "params"), the spec expanded, decoded strictly,
// overridden by p's fields and normalized (errors under "job"), with its
// submitted event and its template ref.
func Job(dec *codec.Decoder, t *rpc.Template, p rpc.TemplateRunParams, now time.Time) (rpc.NewJob, error) {
	values, err := Resolve(t, p.Params, "params")
	if err != nil {
		return rpc.NewJob{}, err
	}
	spec, err := Decode(dec, Expand(t.Spec, values), "spec")
	if err != nil {
		return rpc.NewJob{}, err
	}
	if p.Queue != nil {
		spec.Queue = *p.Queue
	}
	if p.Priority != nil {
		spec.Priority = *p.Priority
	}
	if p.Labels != nil {
		if spec.Labels == nil {
			spec.Labels = map[string]string{}
		}
		maps.Copy(spec.Labels, p.Labels)
	}
	if p.After != nil {
		spec.After = append(spec.After, p.After...)
	}
	if p.Key != nil {
		spec.Key = *p.Key
	}
	if p.NotBefore != nil {
		at := *p.NotBefore
		spec.NotBefore = &at
	}
	if err := rpc.NormalizeSpec("job", spec); err != nil {
		return rpc.NewJob{}, err
	}
	nr := NewRecord(spec, now)
	nr.Template = &rpc.TemplateRef{Name: t.Name, Params: values}
	return rpc.NewJob{Record: nr, Event: rpc.Event{Time: now, Type: rpc.EventSubmitted, State: rpc.StateQueued}, Field: "job"}, nil
}

// HookValues are the builtin params (rpc.HookParams) of a follow-up of job
// rec, for the names template t declares.
func HookValues(t *rpc.Template, rec *rpc.Job) map[string]string {
	all := map[string]string{
		"job_id":     fmt.Sprint(rec.ID),
		"job_state":  string(rec.State),
		"job_name":   rec.Name,
		"job_error":  rec.Error,
		"job_result": string(rec.Result),
	}
	out := map[string]string{}
	for name, v := range all {
		if _, ok := t.Params[name]; ok {
			out[name] = v
		}
	}
	return out
}

// FollowUp makes the follow-up job of hook o for job rec, which ended, from
// template t at now: o's params and the builtins, resolved against t (errors
// under field.params), then as Job.
func FollowUp(dec *codec.Decoder, t *rpc.Template, o *rpc.OnFinish, rec *rpc.Job, now time.Time, field string) (rpc.NewJob, error) {
	params := HookValues(t, rec)
	for name, v := range o.Params {
		if _, ok := t.Params[name]; !ok {
			return rpc.NewJob{}, rpc.InvalidParams(field+".params."+name, fmt.Sprintf("template %q has no param %q", t.Name, name))
		}
		params[name] = v
	}
	if _, err := Resolve(t, params, field+".params"); err != nil {
		return rpc.NewJob{}, err
	}
	return Job(dec, t, rpc.TemplateRunParams{Name: t.Name, Params: params}, now)
}
