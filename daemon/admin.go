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
	"spool/rpc/tmpl"
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
	if p.OnFinish != nil {
		if err := d.setQueueHook(ctx, &next, p.OnFinish); err != nil {
			return nil, err
		}
	}
	if err := d.store.PutQueue(ctx, rpc.Queue{Name: next.Name, Parallel: next.Parallel, Paused: next.Paused, OnFinish: next.OnFinish}); err != nil {
		return nil, err
	}
	out, err := d.queue(ctx, p.Name)
	if err != nil {
		return nil, err
	}
	d.kick()
	return &out, nil
}

// expandTemplate is tmpl.Expand.
func expandTemplate(raw []byte, values map[string]string) []byte { return tmpl.Expand(raw, values) }

// sampleOpenParams is tmpl.SampleOpen.
func sampleOpenParams(raw []byte, open []string) ([]byte, error) { return tmpl.SampleOpen(raw, open) }

// decodeSpec decodes a spec strictly: unknown fields are errors naming their path.
func (d *Daemon) decodeSpec(raw []byte, field string) (*rpc.Spec, error) {
	return tmpl.Decode(d.specs, raw, field)
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
	if err := d.checkHook(ctx, "job.on_finish", nj.Record.Spec.OnFinish); err != nil {
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
	return tmpl.Job(d.specs, t, p, d.clock.Now())
}
