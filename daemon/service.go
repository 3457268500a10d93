package daemon

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"io"
	"maps"
	"os"
	"slices"
	"time"
	"unicode/utf8"

	"spool/rpc"
	"spool/rpc/tmpl"
)

var _ rpc.Service = (*Daemon)(nil)

// Submit stores new jobs, all or none, and answers once they are committed.
func (d *Daemon) Submit(ctx context.Context, p rpc.SubmitParams) (*rpc.SubmitResult, error) {
	var specs []rpc.Spec
	var fields []string
	switch {
	case p.Job != nil && p.Jobs != nil:
		return nil, rpc.InvalidParams("jobs", "give either job or jobs, not both")
	case p.Job != nil:
		specs, fields = []rpc.Spec{*p.Job}, []string{"job"}
	case p.Jobs != nil:
		if len(p.Jobs) == 0 {
			return nil, rpc.InvalidParams("jobs", "must not be empty")
		}
		if len(p.Jobs) > rpc.MaxBatch {
			return nil, rpc.InvalidParams("jobs", fmt.Sprintf("at most %d jobs in one call", rpc.MaxBatch))
		}
		specs = p.Jobs
		for i := range specs {
			fields = append(fields, fmt.Sprintf("jobs[%d]", i))
		}
	default:
		return nil, rpc.InvalidParams("job", "a job or jobs is required")
	}
	news := make([]rpc.NewJob, len(specs))
	now := d.clock.Now()
	for i := range specs {
		// Normalizing fills in defaults: work on a copy, never on the caller's spec.
		s := cloneSpec(specs[i])
		if err := rpc.NormalizeSpec(fields[i], &s); err != nil {
			return nil, err
		}
		if err := d.checkHook(ctx, fields[i]+".on_finish", s.OnFinish); err != nil {
			return nil, err
		}
		for k, idx := range s.AfterIndex {
			if idx >= i {
				return nil, rpc.InvalidParams(fmt.Sprintf("%s.after_index[%d]", fields[i], k), "must name an earlier entry of the batch")
			}
		}
		news[i] = rpc.NewJob{Record: newRecord(&s, now), Event: rpc.Event{Time: now, Type: rpc.EventSubmitted, State: rpc.StateQueued}, Field: fields[i]}
	}
	recs, err := d.submit(ctx, news)
	if err != nil {
		return nil, err
	}
	if p.Job != nil {
		return &rpc.SubmitResult{Job: &recs[0].Job}, nil
	}
	jobs := make([]rpc.Job, len(recs))
	for i := range recs {
		jobs[i] = recs[i].Job
	}
	return &rpc.SubmitResult{Jobs: jobs}, nil
}

// submit stores new records and admits them to the scheduler.
func (d *Daemon) submit(ctx context.Context, news []rpc.NewJob) ([]rpc.Record, error) {
	if err := d.waitReady(ctx); err != nil {
		return nil, err
	}
	d.mu.Lock()
	refuse := d.stopping && !d.draining
	d.mu.Unlock()
	if refuse {
		return nil, rpc.ShuttingDown()
	}
	recs, evs, err := d.store.Submit(ctx, news)
	if err != nil {
		return nil, err
	}
	d.bursts.note(len(news))
	d.hub.publish(evs)
	d.mu.Lock()
	room := d.hasRoom()
	d.mu.Unlock()
	if room {
		d.kick()
	}
	out := make([]rpc.Record, len(recs))
	for i, r := range recs {
		out[i] = r
		if len(recs) > 1 {
			out[i].Job.Spec = nil // a batch answers like job.list, without specs
		}
		d.present(&out[i].Job, false)
		if out[i].Job.Result == nil {
			out[i].Job.Result = json.RawMessage("null")
		}
	}
	return out, nil
}

// cloneSpec copies a spec deeply enough that normalizing the copy leaves the
// original as it was: the steps, what they point to, and the maps and slices.
func cloneSpec(s rpc.Spec) rpc.Spec {
	s.Labels = maps.Clone(s.Labels)
	s.After = slices.Clone(s.After)
	s.AfterIndex = slices.Clone(s.AfterIndex)
	s.Env = maps.Clone(s.Env)
	if s.NotBefore != nil {
		nb := *s.NotBefore
		s.NotBefore = &nb
	}
	s.Steps = slices.Clone(s.Steps)
	for i := range s.Steps {
		st := &s.Steps[i]
		if st.Exec != nil {
			e := *st.Exec
			e.Argv = slices.Clone(e.Argv)
			e.Env = maps.Clone(e.Env)
			st.Exec = &e
		}
		if st.Shell != nil {
			sh := *st.Shell
			sh.Env = maps.Clone(sh.Env)
			st.Shell = &sh
		}
		if st.Sleep != nil {
			sl := *st.Sleep
			st.Sleep = &sl
		}
		if st.HTTP != nil {
			h := *st.HTTP
			h.Headers = maps.Clone(h.Headers)
			h.ExpectStatus = slices.Clone(h.ExpectStatus)
			st.HTTP = &h
		}
		if st.Retry != nil {
			r := *st.Retry
			st.Retry = &r
		}
	}
	return s
}

// newRecord builds the record of a job about to be submitted.
func newRecord(s *rpc.Spec, now time.Time) rpc.Record { return tmpl.NewRecord(s, now) }

// waitReady waits until recovery at start-up is over.
func (d *Daemon) waitReady(ctx context.Context) error {
	select {
	case <-d.ready:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// present fills what a client sees of a job but the store does not keep: the
// live progress of a step this daemon runs, and "capacity" for a queued job the
// store finds nothing against while this daemon is full; full adds output tails
// and a null result.
func (d *Daemon) present(j *rpc.Job, full bool) {
	d.mu.Lock()
	if js := d.jobs[j.ID]; js != nil {
		if js.live != nil {
			if p, _ := js.live.snapshot(); p != nil {
				j.Progress = p
			}
		} else if js.rec.Progress != nil {
			p := *js.rec.Progress
			j.Progress = &p
		}
	}
	if j.State == rpc.StateQueued && j.Waiting == nil && d.running >= d.cfg.MaxParallel {
		r := "capacity"
		j.Waiting = &r
	}
	d.mu.Unlock()
	if j.After == nil {
		j.After = []int64{}
	}
	if j.Labels == nil {
		j.Labels = map[string]string{}
	}
	if !full {
		return
	}
	if j.Result == nil {
		j.Result = []byte("null")
	}
	for i := range j.Steps {
		tail := d.outputTail(j.ID, i)
		j.Steps[i].OutputTail = &tail
	}
}

// outputTail is the last 4 KiB at most of a step's log, as text: from this
// host's file, or from the store's copy of a step that ran on another host.
func (d *Daemon) outputTail(id int64, step int) string {
	const n = 4096
	var buf []byte
	var off int64
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	if src, err := d.storedLogSource(ctx, id, step, rpc.StreamAll); err == nil && src != nil {
		size, err := src.Size()
		if err != nil {
			return ""
		}
		off = max(size-n, 0)
		buf = make([]byte, size-off)
		k, _ := src.ReadAt(buf, off)
		buf = buf[:k]
	} else {
		f, err := os.Open(d.logPath(id, step))
		if err != nil {
			return ""
		}
		defer f.Close()
		fi, err := f.Stat()
		if err != nil {
			return ""
		}
		off = max(fi.Size()-n, 0)
		buf = make([]byte, fi.Size()-off)
		k, _ := f.ReadAt(buf, off)
		buf = buf[:k]
	}
	// Start on a character boundary.
	for len(buf) > 0 && off > 0 && !utf8.RuneStart(buf[0]) {
		buf = buf[1:]
	}
	return toText(buf)
}

func toText(b []byte) string {
	return string([]rune(string(b))) // invalid bytes become U+FFFD
}

// Get reads a job with its spec, its output tails and its result.
func (d *Daemon) Get(ctx context.Context, p rpc.GetParams) (*rpc.Job, error) {
	// What a job waits for is known once the unfinished jobs are loaded.
	if err := d.waitReady(ctx); err != nil {
		return nil, err
	}
	rec, err := d.store.Get(ctx, p.ID)
	if err != nil {
		return nil, err
	}
	j := rec.Job
	d.present(&j, true)
	return &j, nil
}

// List reads a page of jobs.
func (d *Daemon) List(ctx context.Context, p rpc.ListParams) (*rpc.ListResult, error) {
	if err := p.Validate(); err != nil {
		return nil, err
	}
	if p.Limit == 0 {
		p.Limit = 100
	}
	if p.Order == "" {
		p.Order = "desc"
	}
	if err := d.waitReady(ctx); err != nil {
		return nil, err
	}
	res, err := d.store.List(ctx, p)
	if err != nil {
		return nil, err
	}
	for i := range res.Jobs {
		res.Jobs[i].Spec = nil
		res.Jobs[i].Result = nil
		d.present(&res.Jobs[i], false)
	}
	if res.Jobs == nil {
		res.Jobs = []rpc.Job{}
	}
	return res, nil
}

// Cancel cancels a job and answers once it is final. The store decides: a queued
// job is cancelled in one transaction; for a running one it stores the request,
// which its owner (this daemon, or another on a shared store) acts on. The
// answer comes when the job's final event has been published.
func (d *Daemon) Cancel(ctx context.Context, p rpc.CancelParams) (*rpc.Job, error) {
	if err := d.waitReady(ctx); err != nil {
		return nil, err
	}
	reason := p.Reason
	if reason == "" {
		reason = "cancelled"
	}
	final := d.hub.waitFinal(p.ID)
	defer d.hub.unwaitFinal(p.ID, final)
	_, _, evs, err := d.store.Cancel(ctx, p.ID, reason, d.clock.Now())
	if err != nil {
		return nil, err
	}
	d.hub.publish(evs)
	// A job this daemon runs: its runner learns of the cancel now (when the
	// store ended the job at once, between two attempts, the runner stops
	// waiting for the next).
	d.cancelLocal(ctx, p.ID)
	j, err := d.waitForFinal(ctx, p.ID, final, nil)
	if err != nil {
		return nil, err
	}
	if j.State.Final() && j.State != rpc.StateCancelled {
		// The job ended on its own before the cancel could be stored.
		return nil, rpc.BadState(p.ID, j.State, "already final")
	}
	return j, nil
}

// cancelLocal tells the runner of a job this daemon runs that a cancel of it was
// stored: its step stops, and the runner stores the cancelled outcome. A job
// this daemon does not run is left to its owner.
func (d *Daemon) cancelLocal(ctx context.Context, id int64) {
	// A claim in progress may be about to hand the job to a runner.
	d.claimMu.Lock()
	d.mu.Lock()
	js := d.jobs[id]
	d.mu.Unlock()
	d.claimMu.Unlock()
	if js == nil {
		return
	}
	rec, err := d.store.Get(ctx, id)
	if err != nil || rec.Run.CancelReason == nil {
		return
	}
	if err := js.mu.lock(ctx); err != nil {
		return
	}
	defer js.mu.unlock()
	d.mu.Lock()
	defer d.mu.Unlock()
	if js.rec.Run.CancelReason != nil || d.jobs[id] != js {
		return
	}
	js.rec.Run.CancelReason = rec.Run.CancelReason
	if js.stopStep != nil {
		js.stopStep(errCancelRequested)
	}
	close(js.cancelled)
}

// waitForFinal answers with the job once the hub has published its final event
// (final is from hub.waitFinal, taken before the store was read), or as it is
// when timeout fires.
func (d *Daemon) waitForFinal(ctx context.Context, id int64, final <-chan struct{}, timeout <-chan time.Time) (*rpc.Job, error) {
	j, err := d.Get(ctx, rpc.GetParams{ID: id})
	if err != nil || j.State.Final() {
		return j, err
	}
	select {
	case <-final:
	case <-timeout:
	case <-ctx.Done():
		return nil, ctx.Err()
	}
	return d.Get(ctx, rpc.GetParams{ID: id})
}

// Wait answers with the job once it is final, or as it is when the timeout passes.
// It decides from the store and the event stream, so it works for a job that any
// daemon on the store runs.
func (d *Daemon) Wait(ctx context.Context, p rpc.WaitParams) (*rpc.Job, error) {
	if err := d.waitReady(ctx); err != nil {
		return nil, err
	}
	final := d.hub.waitFinal(p.ID)
	defer d.hub.unwaitFinal(p.ID, final)
	var timeout <-chan time.Time
	if p.Timeout > 0 {
		t := time.NewTimer(p.Timeout.D())
		defer t.Stop()
		timeout = t.C
	}
	return d.waitForFinal(ctx, p.ID, final, timeout)
}

// Logs reads part of a step's log.
func (d *Daemon) Logs(ctx context.Context, p rpc.LogsParams) (*rpc.LogsResult, error) {
	if err := p.Validate(); err != nil {
		return nil, err
	}
	if p.Limit == 0 {
		p.Limit = 65536
	}
	if p.Encoding == "" {
		p.Encoding = "text"
	}
	rec, err := d.store.Get(ctx, p.ID)
	if err != nil {
		return nil, err
	}
	step := rec.CurrentStep
	switch {
	case p.Step.Index != nil:
		step = *p.Step.Index
		if step < 0 || step >= len(rec.Steps) {
			return nil, rpc.InvalidParams("step", fmt.Sprintf("job %d has steps 0 to %d", p.ID, len(rec.Steps)-1))
		}
	case p.Step.Name != "":
		step = slices.IndexFunc(rec.Steps, func(s rpc.StepStatus) bool { return s.Name == p.Step.Name })
		if step < 0 {
			return nil, rpc.InvalidParams("step", fmt.Sprintf("job %d has no step %q", p.ID, p.Step.Name))
		}
	}
	over := rec.Steps[step].State.Final() || rec.State.Final() || (rec.State == rpc.StateQueued && rec.Steps[step].State == rpc.StatePending)
	res := &rpc.LogsResult{Offset: p.Offset, Step: step}
	stored, err := d.storedLogSource(ctx, p.ID, step, p.Stream)
	if err != nil {
		return nil, err
	}
	if stored != nil {
		return readLog(stored, p, res, over)
	}
	f, err := os.Open(d.streamLogPath(p.ID, step, p.Stream))
	if err != nil {
		if os.IsNotExist(err) {
			if p.Stream == rpc.StreamStderr && d.cfg.NoStderrLog {
				return nil, rpc.InvalidParams("stream", "this daemon keeps no stderr logs (spoold --stderr-log=false): read the merged log")
			}
			res.EOF = over
			return res, nil
		}
		return nil, fmt.Errorf("open step log: %w", err)
	}
	defer f.Close()
	return readLog(fileLog{f}, p, res, over)
}

// readLog answers job.logs from a log, this host's file or the store's copy;
// over says the step is over.
func readLog(src logSource, p rpc.LogsParams, res *rpc.LogsResult, over bool) (*rpc.LogsResult, error) {
	size, err := src.Size()
	if err != nil {
		return nil, err
	}
	if p.Lines > 0 {
		if p.Offset, err = tailStart(src, size, p.Lines); err != nil {
			return nil, err
		}
	}
	buf := make([]byte, p.Limit)
	n, err := src.ReadAt(buf, p.Offset)
	if err != nil && err != io.EOF {
		return nil, fmt.Errorf("read step log: %w", err)
	}
	buf = buf[:n]
	if end := p.Offset + int64(n); end > size {
		// The log grew since its size was read: what was read is there.
		if size, err = src.Size(); err != nil {
			return nil, err
		}
	}
	if p.Encoding == "base64" {
		res.Data = base64.StdEncoding.EncodeToString(buf)
	} else {
		// Cut on a character boundary: an incomplete last character is left for the next read.
		if p.Offset+int64(n) < size || !over {
			for cut := 1; cut <= 3 && cut <= len(buf); cut++ {
				if utf8.RuneStart(buf[len(buf)-cut]) {
					if !utf8.FullRune(buf[len(buf)-cut:]) {
						buf = buf[:len(buf)-cut]
					}
					break
				}
			}
		}
		res.Data = toText(buf)
	}
	res.Offset = p.Offset + int64(len(buf))
	res.EOF = over && res.Offset >= size
	return res, nil
}

// Watch opens a watch.
func (d *Daemon) Watch(ctx context.Context, p rpc.WatchParams) (rpc.Watcher, error) {
	if err := p.Validate(); err != nil {
		return nil, err
	}
	if err := d.waitReady(ctx); err != nil {
		return nil, err
	}
	oldest, last, err := d.store.Bounds(ctx)
	if err != nil {
		return nil, err
	}
	if p.Since != nil && (*p.Since < oldest-1 || *p.Since > last) {
		return nil, rpc.SinceOutside(oldest, last)
	}
	w := d.hub.newWatcher(p, d.store.StoreID())
	for _, id := range p.Jobs {
		d.mu.Lock()
		_, unfinished := d.jobs[id]
		d.mu.Unlock()
		if unfinished {
			continue
		}
		rec, err := d.store.Get(ctx, id)
		if err != nil {
			_ = w.Close()
			return nil, err
		}
		if rec.State.Final() {
			w.finals[id] = true
		}
	}
	return w, nil
}

// Info describes the daemon.
func (d *Daemon) Info(ctx context.Context) (*rpc.Info, error) {
	counts, err := d.store.Counts(ctx)
	if err != nil {
		return nil, err
	}
	oldest, last, err := d.store.Bounds(ctx)
	if err != nil {
		return nil, err
	}
	for _, s := range []rpc.State{rpc.StateQueued, rpc.StateRunning, rpc.StateSucceeded, rpc.StateFailed, rpc.StateCancelled} {
		if _, ok := counts[s]; !ok {
			counts[s] = 0
		}
	}
	// The containment is known once Run set it up, a moment after the socket
	// may already serve: wait for it rather than say "".
	select {
	case <-d.contained:
	case <-d.done:
	case <-ctx.Done():
		return nil, ctx.Err()
	}
	d.mu.Lock()
	mode, note := d.containment, d.containNote
	owner := d.owner
	d.mu.Unlock()
	return &rpc.Info{
		Version: d.cfg.Version, Protocol: rpc.ProtocolVersion, PID: os.Getpid(), StartedAt: d.start,
		Socket: d.cfg.Socket, StateDir: d.cfg.StateDir, StoreID: d.store.StoreID(), Store: d.cfg.StoreKind,
		MaxParallel: d.cfg.MaxParallel, Counts: counts, LastSeq: last, OldestSeq: oldest,
		Containment: mode, ContainmentNote: note, Node: owner.Node, Epoch: owner.Epoch,
	}, nil
}

// Shutdown stops the daemon; with drain, running jobs finish first.
func (d *Daemon) Shutdown(ctx context.Context, p rpc.ShutdownParams) error {
	d.log.Info("shutdown requested", "drain", p.Drain)
	d.shutdown(p.Drain)
	return nil
}
