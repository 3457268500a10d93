package daemon

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"maps"
	"slices"
	"strings"
	"time"

	"spool/rpc"
)

// Retry submits a final job's stored spec again as a new job.
func (d *Daemon) Retry(ctx context.Context, p rpc.RetryParams) (*rpc.Job, error) {
	if err := p.Validate(); err != nil {
		return nil, err
	}
	rec, err := d.store.Get(ctx, p.ID)
	if err != nil {
		return nil, err
	}
	if !rec.State.Final() {
		return nil, rpc.BadState(p.ID, rec.State, "only a final job can be retried")
	}
	spec := *rec.Spec
	spec.Key = ""
	spec.After = slices.Clone(rec.After)
	spec.AfterIndex = nil
	if err := rpc.NormalizeSpec("job", &spec); err != nil {
		return nil, err
	}
	now := d.clock.Now()
	nr := newRecord(&spec, now)
	id := p.ID
	nr.RetryOf = &id
	nr.Template = rec.Template
	recs, err := d.submit(ctx, []rpc.NewJob{{Record: nr, Event: rpc.Event{Time: now, Type: rpc.EventSubmitted, State: rpc.StateQueued}, Field: "job"}})
	if err != nil {
		return nil, err
	}
	return &recs[0].Job, nil
}

// Remove removes final jobs, all or none.
func (d *Daemon) Remove(ctx context.Context, p rpc.RemoveParams) (*rpc.RemoveResult, error) {
	if err := p.Validate(); err != nil {
		return nil, err
	}
	ids, evs, err := d.store.Remove(ctx, p.IDs, d.clock.Now())
	if err != nil {
		return nil, err
	}
	d.hub.publish(evs)
	d.removeFiles(ids)
	return &rpc.RemoveResult{Removed: len(ids)}, nil
}

// Prune removes final jobs by state and age.
func (d *Daemon) Prune(ctx context.Context, p rpc.PruneParams) (*rpc.RemoveResult, error) {
	if err := p.Validate(); err != nil {
		return nil, err
	}
	now := d.clock.Now()
	var cutoff time.Time
	if p.OlderThan > 0 {
		cutoff = now.Add(-p.OlderThan.D())
	}
	ids, evs, err := d.store.Prune(ctx, p.States, cutoff, now)
	if err != nil {
		return nil, err
	}
	d.hub.publish(evs)
	d.removeFiles(ids)
	return &rpc.RemoveResult{Removed: len(ids)}, nil
}

// QueueList lists the queues with their counts, as the store has them.
func (d *Daemon) QueueList(ctx context.Context) (*rpc.QueueListResult, error) {
	if err := d.waitReady(ctx); err != nil {
		return nil, err
	}
	qs, err := d.store.Queues(ctx)
	if err != nil {
		return nil, err
	}
	// The default queue is always there, as jobs that name none go to it.
	if !slices.ContainsFunc(qs, func(q rpc.Queue) bool { return q.Name == "default" }) {
		qs = append(qs, rpc.Queue{Name: "default"})
		slices.SortFunc(qs, func(a, b rpc.Queue) int { return strings.Compare(a.Name, b.Name) })
	}
	return &rpc.QueueListResult{Queues: qs}, nil
}

// queue reads one queue's settings and counts; a queue the store does not know
// has the default settings and no jobs.
func (d *Daemon) queue(ctx context.Context, name string) (rpc.Queue, error) {
	qs, err := d.store.Queues(ctx)
	if err != nil {
		return rpc.Queue{}, err
	}
	for _, q := range qs {
		if q.Name == name {
			return q, nil
		}
	}
	return rpc.Queue{Name: name}, nil
}

// QueueSet changes a queue's settings, making the queue when it is new.
func (d *Daemon) QueueSet(ctx context.Context, p rpc.QueueSetParams) (*rpc.Queue, error) {
	if err := p.Validate(); err != nil {
		return nil, err
	}
	if err := d.waitReady(ctx); err != nil {
		return nil, err
	}
	d.queueMu.Lock()
	defer d.queueMu.Unlock()
	next, err := d.queue(ctx, p.Name)
	if err != nil {
		return nil, err
	}
	if p.Parallel != nil {
		if *p.Parallel == 0 {
			next.Parallel = nil
		} else {
			n := *p.Parallel
			next.Parallel = &n
		}
	}
	if p.Paused != nil {
		next.Paused = *p.Paused
	}
	if err := d.store.PutQueue(ctx, rpc.Queue{Name: next.Name, Parallel: next.Parallel, Paused: next.Paused}); err != nil {
		return nil, err
	}
	out, err := d.queue(ctx, p.Name)
	if err != nil {
		return nil, err
	}
	d.kick()
	return &out, nil
}

// expandTemplate replaces each {{name}} of a declared param in the raw spec with
// its value, escaped for a JSON string. It is one pass over the spec: a value is
// text, and a "{{other}}" inside it, or one it forms with the text around it, is
// left as it is.
func expandTemplate(raw []byte, values map[string]string) []byte {
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

// sampleOpenParams replaces, in a template's spec, each string (value or object
// key) that holds a placeholder of one of the params named by open with a value
// that is valid for the field it stands in, so that the rest of the spec can be
// validated before the params' values are known.
func sampleOpenParams(raw []byte, open []string) ([]byte, error) {
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

// decodeSpec decodes a spec strictly: unknown fields are errors naming their path.
func (d *Daemon) decodeSpec(raw []byte, field string) (*rpc.Spec, error) {
	var s rpc.Spec
	if err := d.specs.Strict(raw, &s, field); err != nil {
		return nil, err
	}
	return &s, nil
}

// TemplatePut validates and stores a template.
func (d *Daemon) TemplatePut(ctx context.Context, p rpc.TemplatePutParams) (*rpc.Template, error) {
	if err := p.Validate(); err != nil {
		return nil, err
	}
	if p.Params == nil {
		p.Params = map[string]rpc.TemplateParam{}
	}
	// Scripts read their params from the environment: a placeholder in one is an
	// error. Only the scripts are read here; the whole spec is checked below.
	var scripts struct {
		Steps []struct {
			Shell *struct {
				Script string `json:"script"`
			} `json:"shell"`
		} `json:"steps"`
	}
	if json.Unmarshal(p.Spec, &scripts) == nil {
		for i, st := range scripts.Steps {
			if st.Shell == nil {
				continue
			}
			for _, name := range slices.Sorted(maps.Keys(p.Params)) {
				if strings.Contains(st.Shell.Script, "{{"+name+"}}") {
					return nil, rpc.InvalidParams(fmt.Sprintf("spec.steps[%d].shell.script", i),
						fmt.Sprintf("placeholder {{%s}} in a script: use $%s", name, rpc.ParamEnv(name)))
				}
			}
		}
	}
	// Validate with the defaults filled in. A string that holds a param without a
	// default can only be checked when the template runs: it stands in as a value
	// that suits its field.
	values := map[string]string{}
	var open []string
	for name, prm := range p.Params {
		if prm.Default != nil {
			values[name] = *prm.Default
		} else {
			open = append(open, name)
		}
	}
	filled, err := sampleOpenParams(expandTemplate(p.Spec, values), open)
	if err != nil {
		return nil, rpc.InvalidParams("spec", "must be valid JSON")
	}
	s, err := d.decodeSpec(filled, "spec")
	if err != nil {
		return nil, err
	}
	if err := rpc.NormalizeSpec("spec", s); err != nil {
		return nil, err
	}
	now := d.clock.Now()
	t := rpc.Template{Name: p.Name, Spec: bytes.Clone(p.Spec), Params: p.Params, CreatedAt: now, UpdatedAt: now}
	if old, err := d.store.Template(ctx, p.Name); err == nil {
		t.CreatedAt = old.CreatedAt
	}
	if err := d.store.PutTemplate(ctx, t); err != nil {
		return nil, err
	}
	return &t, nil
}

// TemplateGet reads a template.
func (d *Daemon) TemplateGet(ctx context.Context, p rpc.TemplateNameParams) (*rpc.Template, error) {
	return d.store.Template(ctx, p.Name)
}

// TemplateList lists the templates.
func (d *Daemon) TemplateList(ctx context.Context) (*rpc.TemplateListResult, error) {
	ts, err := d.store.Templates(ctx)
	if err != nil {
		return nil, err
	}
	if ts == nil {
		ts = []rpc.Template{}
	}
	return &rpc.TemplateListResult{Templates: ts}, nil
}

// TemplateRemove removes a template.
func (d *Daemon) TemplateRemove(ctx context.Context, p rpc.TemplateNameParams) error {
	return d.store.RemoveTemplate(ctx, p.Name)
}

// TemplateRun makes a job from a template and submits it.
func (d *Daemon) TemplateRun(ctx context.Context, p rpc.TemplateRunParams) (*rpc.Job, error) {
	if err := p.Validate(); err != nil {
		return nil, err
	}
	nj, err := d.templateJob(ctx, p)
	if err != nil {
		return nil, err
	}
	recs, err := d.submit(ctx, []rpc.NewJob{nj})
	if err != nil {
		return nil, err
	}
	return &recs[0].Job, nil
}

// templateJob makes the new job that template.run with p submits (schedules
// fire through it too), checking p's params against the template.
func (d *Daemon) templateJob(ctx context.Context, p rpc.TemplateRunParams) (rpc.NewJob, error) {
	t, err := d.store.Template(ctx, p.Name)
	if err != nil {
		return rpc.NewJob{}, err
	}
	values := map[string]string{}
	for _, name := range slices.Sorted(maps.Keys(p.Params)) {
		if _, ok := t.Params[name]; !ok {
			return rpc.NewJob{}, rpc.InvalidParams("params."+name, fmt.Sprintf("template %q has no param %q", p.Name, name))
		}
		values[name] = p.Params[name]
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
			return rpc.NewJob{}, rpc.InvalidParams("params."+name, "is required")
		}
		values[name] = ""
	}
	spec, err := d.decodeSpec(expandTemplate(t.Spec, values), "spec")
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
	now := d.clock.Now()
	nr := newRecord(spec, now)
	nr.Template = &rpc.TemplateRef{Name: t.Name, Params: values}
	return rpc.NewJob{Record: nr, Event: rpc.Event{Time: now, Type: rpc.EventSubmitted, State: rpc.StateQueued}, Field: "job"}, nil
}
