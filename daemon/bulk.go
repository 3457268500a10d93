package daemon

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strconv"

	"spool/rpc"
)

// The methods that act on every job a filter selects. Each reads the jobs
// the filter selects at call time from the store (in pages, bounded by the
// call's limit) and decides from the store and the event stream, like Wait
// and Cancel, so they work for jobs any daemon on the store runs.

// JobsWait answers once every unfinished job the filter selects at call time
// is final, or at the timeout, with their states summed up.
func (d *Daemon) JobsWait(ctx context.Context, p rpc.JobsWaitParams) (*rpc.JobsResult, error) {
	if err := p.Validate(); err != nil {
		return nil, err
	}
	if err := d.waitReady(ctx); err != nil {
		return nil, err
	}
	// The watch starts before the read: no final event falls between them.
	w := d.hub.newWatcher(rpc.WatchParams{}, d.store.StoreID())
	defer w.Close()
	jobs, err := d.matching(ctx, p.Filter, rpc.WaitStates, p.Limit)
	if err != nil {
		return nil, err
	}
	states := make(map[int64]rpc.State, len(jobs))
	for _, j := range jobs {
		states[j.ID] = j.State
	}
	if p.Timeout > 0 {
		wctx, cancel := context.WithTimeout(ctx, p.Timeout.D())
		defer cancel()
		return d.awaitJobs(ctx, wctx, w, states)
	}
	return d.awaitJobs(ctx, ctx, w, states)
}

// JobsCancel cancels every queued or running job the filter selects, in one
// store transaction (a running job gets its request stored, which its owner
// acts on), and answers once they are all final.
func (d *Daemon) JobsCancel(ctx context.Context, p rpc.JobsCancelParams) (*rpc.JobsResult, error) {
	if err := p.Validate(); err != nil {
		return nil, err
	}
	if err := d.waitReady(ctx); err != nil {
		return nil, err
	}
	reason := p.Reason
	if reason == "" {
		reason = "cancelled"
	}
	w := d.hub.newWatcher(rpc.WatchParams{}, d.store.StoreID())
	defer w.Close()
	jobs, err := d.matching(ctx, p.Filter, rpc.CancelStates, p.Limit)
	if err != nil {
		return nil, err
	}
	states := make(map[int64]rpc.State, len(jobs))
	ids := make([]int64, len(jobs))
	for i, j := range jobs {
		states[j.ID] = j.State
		ids[i] = j.ID
	}
	if len(ids) > 0 {
		recs, evs, err := d.store.CancelMany(ctx, ids, reason, d.clock.Now())
		if err != nil {
			return nil, err
		}
		d.hub.publish(evs)
		for _, r := range recs {
			if _, ok := states[r.ID]; ok && r.State == rpc.StateRunning {
				d.cancelLocal(ctx, r.ID)
			}
		}
	}
	res, err := d.awaitJobs(ctx, ctx, w, states)
	if err != nil {
		return nil, err
	}
	res.Cancelled = []int64{}
	for _, id := range ids {
		if states[id] == rpc.StateCancelled {
			res.Cancelled = append(res.Cancelled, id)
		}
	}
	return res, nil
}

// JobsRetry submits a retry of every failed or cancelled job the filter
// selects, as Retry does for one, in one store transaction: all or none.
func (d *Daemon) JobsRetry(ctx context.Context, p rpc.JobsRetryParams) (*rpc.JobsRetryResult, error) {
	if err := p.Validate(); err != nil {
		return nil, err
	}
	if err := d.waitReady(ctx); err != nil {
		return nil, err
	}
	jobs, err := d.matching(ctx, p.Filter, rpc.RetryStates, p.Limit)
	if err != nil {
		return nil, err
	}
	res := &rpc.JobsRetryResult{IDs: []int64{}, RetryOf: []int64{}, Skipped: []int64{}}
	if len(jobs) == 0 {
		return res, nil
	}
	retried, err := d.retried(ctx, jobs[0].ID)
	if err != nil {
		return nil, err
	}
	now := d.clock.Now()
	news := make([]rpc.NewJob, 0, len(jobs))
	for i, j := range jobs {
		if retried[j.ID] {
			res.Skipped = append(res.Skipped, j.ID)
			continue
		}
		rec, err := d.store.Get(ctx, j.ID)
		if err != nil {
			var re *rpc.Error
			if errors.As(err, &re) && re.Code == rpc.CodeNotFound {
				continue // removed since it was listed
			}
			return nil, err
		}
		field := fmt.Sprintf("retry_of[%d]", i)
		spec := cloneSpec(*rec.Spec)
		spec.Key = ""
		spec.After = slices.Clone(rec.After)
		spec.AfterIndex = nil
		if err := rpc.NormalizeSpec(field, &spec); err != nil {
			return nil, err
		}
		nr := newRecord(&spec, now)
		id := rec.ID
		nr.RetryOf = &id
		nr.Template = rec.Template
		news = append(news, rpc.NewJob{Record: nr, Event: rpc.Event{Time: now, Type: rpc.EventSubmitted, State: rpc.StateQueued}, Field: field})
		res.RetryOf = append(res.RetryOf, id)
	}
	if len(news) == 0 {
		return res, nil
	}
	recs, err := d.submit(ctx, news)
	if err != nil {
		return nil, err
	}
	for _, r := range recs {
		res.IDs = append(res.IDs, r.ID)
	}
	return res, nil
}

// retried is the set of jobs that a job after job first retries: a job
// already retried is not retried again by jobs.retry (its retry, when it
// failed too, is). It reads every job after first, in pages: its cost grows
// with the jobs submitted since the oldest one to retry.
func (d *Daemon) retried(ctx context.Context, first int64) (map[int64]bool, error) {
	out := map[int64]bool{}
	p := rpc.ListParams{Limit: rpc.MaxListLimit, Order: "asc"}
	if first > 0 {
		c := strconv.FormatInt(first, 10)
		p.Cursor = &c
	}
	for {
		page, err := d.store.List(ctx, p)
		if err != nil {
			return nil, err
		}
		for _, j := range page.Jobs {
			if j.RetryOf != nil {
				out[*j.RetryOf] = true
			}
		}
		if page.NextCursor == nil {
			return out, nil
		}
		p.Cursor = page.NextCursor
	}
}

// matching reads the jobs f selects in one of states (f's own when it names
// some), in ascending id order: at most limit (0: rpc.MaxBulk), else -32602
// naming limit.
func (d *Daemon) matching(ctx context.Context, f rpc.Filter, states []rpc.State, limit int) ([]rpc.Job, error) {
	if limit == 0 {
		limit = rpc.MaxBulk
	}
	p := f.ListParams(rpc.MaxListLimit)
	p.State = f.States(states)
	var out []rpc.Job
	for {
		page, err := d.store.List(ctx, p)
		if err != nil {
			return nil, err
		}
		out = append(out, page.Jobs...)
		if len(out) > limit {
			how := "narrow the filter (state, queue, label, name, age)"
			if limit < rpc.MaxBulk {
				how += fmt.Sprintf(" or raise limit (at most %d)", rpc.MaxBulk)
			}
			return nil, rpc.InvalidParams("limit", fmt.Sprintf("more than %d jobs match: %s", limit, how))
		}
		if page.NextCursor == nil {
			return out, nil
		}
		p.Cursor = page.NextCursor
	}
}

// awaitJobs follows the stored events from w (opened before the jobs were
// read) until every job of states is final or wctx is done, keeping each
// job's last known state in states; a job removed meanwhile counts as it was
// last seen. ctx done is an error; wctx done alone is the timeout, answered
// with the states as they are.
func (d *Daemon) awaitJobs(ctx, wctx context.Context, w *watcher, states map[int64]rpc.State) (*rpc.JobsResult, error) {
	pending := 0
	for _, st := range states {
		if !st.Final() {
			pending++
		}
	}
	// removed holds jobs removed before a final event reached this call
	// (removal needs a final job, so only a store's trimmed history can do
	// that): they count as last seen, and are waited for no more.
	removed := map[int64]bool{}
	for pending > 0 {
		ev, err := w.Next(wctx)
		if err != nil {
			if ctx.Err() != nil {
				return nil, ctx.Err()
			}
			if wctx.Err() != nil {
				break
			}
			return nil, fmt.Errorf("follow the event stream: %w", err)
		}
		if ev.Seq == 0 || ev.Step != nil {
			continue
		}
		st, ok := states[ev.Job]
		if !ok || st.Final() || removed[ev.Job] {
			continue
		}
		switch {
		case ev.Type == rpc.EventRemoved:
			removed[ev.Job] = true
			pending--
		case ev.State != "":
			states[ev.Job] = ev.State
			if ev.State.Final() {
				pending--
			}
		}
	}
	return summarise(states, pending == 0), nil
}

// summarise counts jobs by state and lists, in id order, those that did not
// succeed.
func summarise(states map[int64]rpc.State, done bool) *rpc.JobsResult {
	res := &rpc.JobsResult{Jobs: len(states), Counts: map[rpc.State]int{}, NotSucceeded: []int64{}, Done: done}
	for id, st := range states {
		res.Counts[st]++
		if st != rpc.StateSucceeded {
			res.NotSucceeded = append(res.NotSucceeded, id)
		}
	}
	slices.Sort(res.NotSucceeded)
	return res
}
