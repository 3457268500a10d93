package daemon

import (
	"container/heap"
	"context"
	"time"

	"spool/rpc"
)

// jobState is an unfinished job in memory. mu serialises its transitions: it is held
// from reading rec to storing the next record, never while a step runs.
type jobState struct {
	mu  chanMutex
	rec rpc.Record // the latest stored record, with its spec; guarded by d.mu to read

	pending  map[int64]bool // dependencies that have not succeeded yet
	heapIdx  int            // index in its queue's ready heap, -1 when not in it
	timerIdx int            // index in the not-before heap, -1 when not in it
	claimed  bool           // picked by the scheduler, runner started
	freed    bool           // its slot was given back before its final commit

	cancelled chan struct{} // closed when a cancel of the running job was stored
	// stopStep ends the context of the step that runs, if any; guarded by d.mu.
	stopStep context.CancelCauseFunc
	live     *liveState // progress and last output line of the running step
	// reaped is closed once no process of the last step that ran is left;
	// guarded by d.mu.
	reaped <-chan struct{}
	// heldSpec says the job was queued with its spec in memory, one of
	// d.specsHeld; guarded by d.mu.
	heldSpec bool
}

// chanMutex is a mutex that can be taken with a context.
type chanMutex chan struct{}

func newChanMutex() chanMutex { return make(chanMutex, 1) }

func (m chanMutex) lock(ctx context.Context) error {
	select {
	case m <- struct{}{}:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

func (m chanMutex) unlock() { <-m }

// queueState is a queue's settings, counts and ready heap.
type queueState struct {
	name     string
	parallel *int
	paused   bool
	queued   int
	running  int
	ready    jobHeap
}

func (q *queueState) hasRoom() bool {
	return !q.paused && (q.parallel == nil || q.running < *q.parallel) && len(q.ready.jobs) > 0
}

// jobHeap is a heap of jobs in the order of less; each job keeps its index in the
// heap in the field that at names, -1 when it is not in it.
type jobHeap struct {
	jobs []*jobState
	less func(a, b *jobState) bool
	at   func(js *jobState) *int
}

// readyHeap orders runnable jobs: higher priority first, then lower id.
func readyHeap() jobHeap {
	return jobHeap{less: before, at: func(js *jobState) *int { return &js.heapIdx }}
}

// notBeforeHeap orders jobs waiting for their not_before time.
func notBeforeHeap() jobHeap {
	return jobHeap{
		less: func(a, b *jobState) bool { return a.rec.NotBefore.Before(*b.rec.NotBefore) },
		at:   func(js *jobState) *int { return &js.timerIdx },
	}
}

func before(a, b *jobState) bool {
	if a.rec.Priority != b.rec.Priority {
		return a.rec.Priority > b.rec.Priority
	}
	return a.rec.ID < b.rec.ID
}

func (h *jobHeap) Len() int           { return len(h.jobs) }
func (h *jobHeap) Less(i, j int) bool { return h.less(h.jobs[i], h.jobs[j]) }
func (h *jobHeap) Swap(i, j int) {
	h.jobs[i], h.jobs[j] = h.jobs[j], h.jobs[i]
	*h.at(h.jobs[i]), *h.at(h.jobs[j]) = i, j
}
func (h *jobHeap) Push(x any) {
	js := x.(*jobState)
	*h.at(js) = len(h.jobs)
	h.jobs = append(h.jobs, js)
}
func (h *jobHeap) Pop() any {
	old := h.jobs
	js := old[len(old)-1]
	old[len(old)-1] = nil
	h.jobs = old[:len(old)-1]
	*h.at(js) = -1
	return js
}

// queue returns the queue's state, making it with default settings; d.mu held.
func (d *Daemon) queue(name string) *queueState {
	q := d.queues[name]
	if q == nil {
		q = &queueState{name: name, ready: readyHeap()}
		d.queues[name] = q
	}
	return q
}

// admit adds a queued or running job to memory; d.mu held. depFinal holds the
// states of dependencies that are no longer in memory. It reports a dependency
// that failed or was cancelled, or 0.
func (d *Daemon) admit(rec rpc.Record, depFinal map[int64]rpc.State) (failedDep int64) {
	if rec.State == rpc.StateQueued {
		// A queued job's spec (with its environment, often kilobytes) stays in
		// the store until the job starts, past the first few: a backlog holds
		// only what the scheduler needs, and a short queue reads no spec back.
		if rec.Spec != nil && d.specsHeld < maxHeldSpecs {
			d.specsHeld++
		} else {
			rec.Spec = nil
		}
	}
	js := &jobState{mu: newChanMutex(), rec: rec, pending: map[int64]bool{}, heapIdx: -1, timerIdx: -1,
		heldSpec: rec.State == rpc.StateQueued && rec.Spec != nil}
	d.jobs[rec.ID] = js
	q := d.queue(rec.Queue)
	if rec.State == rpc.StateRunning {
		q.running++
		d.running++
		js.claimed = true
		return 0
	}
	q.queued++
	for _, dep := range rec.After {
		if _, ok := d.jobs[dep]; ok {
			js.pending[dep] = true
			continue
		}
		if st := depFinal[dep]; st != rpc.StateSucceeded && failedDep == 0 {
			failedDep = dep
		}
	}
	for dep := range js.pending {
		d.dependents[dep] = append(d.dependents[dep], rec.ID)
	}
	if failedDep == 0 {
		d.makeReady(js)
	}
	return failedDep
}

// makeReady puts a queued job whose dependencies succeeded into its queue's heap,
// or into the timer heap when its not_before is still ahead; d.mu held.
func (d *Daemon) makeReady(js *jobState) {
	if len(js.pending) > 0 || js.claimed || js.heapIdx >= 0 || js.timerIdx >= 0 {
		return
	}
	if nb := js.rec.NotBefore; nb != nil && nb.After(d.clock.Now()) {
		heap.Push(&d.timers, js)
		return
	}
	heap.Push(&d.queue(js.rec.Queue).ready, js)
}

// maxHeldSpecs is how many queued jobs keep their spec in memory.
const maxHeldSpecs = 1024

// specTaken counts out a queued job's spec held in memory once its job starts
// or ends; d.mu held.
func (d *Daemon) specTaken(js *jobState) {
	if js.heldSpec {
		js.heldSpec = false
		d.specsHeld--
	}
}

// forget removes a job from memory once it is final; d.mu held.
func (d *Daemon) forget(js *jobState) {
	d.specTaken(js)
	delete(d.jobs, js.rec.ID)
	q := d.queue(js.rec.Queue)
	switch {
	case js.claimed:
		d.freeSlot(js)
	default:
		q.queued--
	}
	if js.heapIdx >= 0 {
		heap.Remove(&q.ready, js.heapIdx)
	}
	if js.timerIdx >= 0 {
		heap.Remove(&d.timers, js.timerIdx)
	}
	for _, ch := range d.waiters[js.rec.ID] {
		close(ch)
	}
	delete(d.waiters, js.rec.ID)
}

// freeSlot gives back a running job's slot in its queue and the global limit, once;
// d.mu held.
func (d *Daemon) freeSlot(js *jobState) {
	if !js.claimed || js.freed {
		return
	}
	js.freed = true
	d.queue(js.rec.Queue).running--
	d.running--
}

// takeSlotBack undoes freeSlot for a job that must run its step again; d.mu held.
func (d *Daemon) takeSlotBack(js *jobState) {
	if !js.freed || d.jobs[js.rec.ID] != js || js.rec.State.Final() {
		return // forget has counted it out already
	}
	js.freed = false
	d.queue(js.rec.Queue).running++
	d.running++
}

// schedulable reports whether the scheduler has something to do: a job it can
// start now, or not_before times to watch; d.mu held. Callers reschedule only
// then, which spares the work when jobs come one at a time.
func (d *Daemon) schedulable() bool {
	if len(d.timers.jobs) > 0 {
		return true
	}
	if d.running >= d.cfg.MaxParallel {
		return false
	}
	for _, q := range d.queues {
		if q.hasRoom() {
			return true
		}
	}
	return false
}

// nextTimer returns a channel that fires when the earliest not_before is due.
func (d *Daemon) nextTimer() <-chan time.Time {
	d.mu.Lock()
	defer d.mu.Unlock()
	if len(d.timers.jobs) == 0 {
		return nil
	}
	wait := d.timers.jobs[0].rec.NotBefore.Sub(d.clock.Now())
	if wait < 0 {
		wait = 0
	}
	return time.After(wait)
}

// schedule starts as many runnable jobs as the limits allow: the one with the
// highest priority, then the lowest id, among the heads of the queues with room.
// Any goroutine may call it. It reports whether jobs wait for their not_before,
// which only the scheduler's loop watches.
func (d *Daemon) schedule() (timers bool) {
	d.mu.Lock()
	if d.closing {
		d.mu.Unlock()
		return false
	}
	now := d.clock.Now()
	for len(d.timers.jobs) > 0 && !d.timers.jobs[0].rec.NotBefore.After(now) {
		js := heap.Pop(&d.timers).(*jobState)
		d.makeReady(js)
	}
	picks := d.pickLocked()
	// Counted under d.mu: Run waits for the runners only after it set closing.
	d.runners.Add(len(picks))
	timers = len(d.timers.jobs) > 0
	d.mu.Unlock()
	d.startJobs(picks)
	return timers
}

// pickLocked claims as many runnable jobs as the limits allow: each time the head
// with the highest priority, then the lowest id, among the ready heaps of the
// queues with room. Its cost per job is the number of queues plus a heap pop,
// whatever the number of queued jobs; d.mu held.
func (d *Daemon) pickLocked() []*jobState {
	var picks []*jobState
	for d.running < d.cfg.MaxParallel {
		var best *queueState
		for _, q := range d.queues {
			if q.hasRoom() && (best == nil || before(q.ready.jobs[0], best.ready.jobs[0])) {
				best = q
			}
		}
		if best == nil {
			break
		}
		js := heap.Pop(&best.ready).(*jobState)
		js.claimed = true
		best.queued--
		best.running++
		d.running++
		picks = append(picks, js)
	}
	return picks
}

// reschedule starts what can start now from the calling goroutine, which spares
// waking the scheduler's loop, and wakes the loop only for not_before times.
func (d *Daemon) reschedule() {
	if d.schedule() {
		d.kick()
	}
}

// startJobs hands each picked job to a runner, counted in d.runners already. The
// runner stores the job's start together with the process of its first step.
func (d *Daemon) startJobs(picks []*jobState) {
	for _, js := range picks {
		go d.runJob(js)
	}
}

// startStep marks an attempt of step i as running and returns its event. An
// attempt that resumes after an interruption keeps its number and start time.
func startStep(rec *rpc.Record, i int, now time.Time) rpc.Event {
	st := &rec.Steps[i]
	if rec.Run.Interrupted {
		rec.Run.Interrupted = false
		if st.Attempt == 0 {
			st.Attempt = 1
		}
		if st.StartedAt == nil {
			st.StartedAt = &now
		}
	} else {
		st.Attempt++
		st.StartedAt = &now
	}
	st.State = rpc.StateRunning
	st.RetryAt = nil
	st.FinishedAt = nil
	st.ExitCode, st.Signal, st.Error = nil, nil, ""
	rec.CurrentStep = i
	return stepEvent(rec, i, rpc.EventStepStarted, now)
}

func stepEvent(rec *rpc.Record, i int, typ string, now time.Time) rpc.Event {
	st := rec.Steps[i]
	idx := i
	return rpc.Event{Time: now, Job: rec.ID, Type: typ, Step: &idx, StepName: st.Name,
		State: st.State, Attempt: st.Attempt, ExitCode: st.ExitCode, Signal: st.Signal, Error: st.Error, RetryAt: st.RetryAt}
}

// waitingReason says why a queued job is not running; d.mu held.
func (d *Daemon) waitingReason(js *jobState) *string {
	if js.rec.State != rpc.StateQueued || js.claimed {
		return nil
	}
	r := "capacity"
	q := d.queue(js.rec.Queue)
	switch {
	case len(js.pending) > 0:
		r = "after"
	case js.rec.NotBefore != nil && js.rec.NotBefore.After(d.clock.Now()):
		r = "not_before"
	case q.paused:
		r = "paused"
	case d.running < d.cfg.MaxParallel && (q.parallel == nil || q.running < *q.parallel):
		return nil // there is room: the scheduler is about to start it
	}
	return &r
}
