package daemon

import (
	"context"
	"errors"
	"sync"
	"syscall"
	"time"

	"spool/rpc"
	"spool/rpc/machine"
)

// Pausing a running job (job.pause, job.resume) and signalling it (job.signal).
//
// A pause is a runner write of the job's owner: it is stored (machine.Pause,
// fenced by From running and the owner's epoch) under the job's lock, the lock
// the runner holds from its check for a cancel until its step's process runs,
// and only then are the processes stopped: with the cgroup freezer where the
// step has a cgroup, with SIGSTOP to its process group and its marked escapees
// otherwise. The step's timeout and the job's deadline stop with it: their
// timers are paused here, and machine.Resume moves the stored deadline by the
// time paused, so that a restart honours it. A runner between steps or attempts
// waits at the start of its turn until the job is resumed.
//
// A restart cannot adopt a frozen process: start-up kills every leftover, and
// the reap queues the job again at its step with paused_at kept. The store
// never claims it until job.resume (Store.Resume); its step then runs again
// from its start, as after any restart.

// jobPause is what job.pause reaches of a job's running step; guarded by d.mu.
type jobPause struct {
	// sp is the running step's processes, from the start of its process until
	// its main process is gone; nil otherwise.
	sp *stepProcs
	// timers are the running step's timeouts (its own and the job's deadline).
	timers []*pauseTimer
	// resumed is closed by job.resume; it is made by job.pause.
	resumed chan struct{}
}

// procsPause says whether a step's processes are stopped by job.pause.
type procsPause struct {
	mu     sync.Mutex
	frozen bool // stopped: frozen, or sent SIGSTOP
	ended  bool // the step is being stopped: no pause any more
}

// pauseTimer is a timer that stops while the job is paused.
type pauseTimer struct {
	mu      sync.Mutex
	t       *time.Timer
	fire    func()
	left    time.Duration // what is left, while paused
	startAt time.Time     // when the running timer was armed
	armed   time.Duration // the duration it was armed for
	paused  bool
	stopped bool
}

func newPauseTimer(d time.Duration, fire func()) *pauseTimer {
	p := &pauseTimer{fire: fire, startAt: time.Now(), armed: d}
	p.t = time.AfterFunc(max(d, 0), fire)
	return p
}

// pause stops the timer, keeping what is left of it.
func (p *pauseTimer) pause() {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.paused || p.stopped {
		return
	}
	if p.t.Stop() {
		p.paused = true
		p.left = p.armed - time.Since(p.startAt)
	}
}

// resume arms the timer again for what was left.
func (p *pauseTimer) resume() {
	p.mu.Lock()
	defer p.mu.Unlock()
	if !p.paused || p.stopped {
		return
	}
	p.paused = false
	p.startAt, p.armed = time.Now(), p.left
	p.t = time.AfterFunc(max(p.left, 0), p.fire)
}

func (p *pauseTimer) stop() {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.stopped = true
	p.t.Stop()
}

// localJob is the job's state when this daemon runs it, else nil.
func (d *Daemon) localJob(id int64) *jobState {
	// A claim in progress may be about to hand the job to a runner.
	d.claimMu.Lock()
	defer d.claimMu.Unlock()
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.jobs[id]
}

// notHere answers for a job this daemon does not run: 1001, 1002 with its
// state, or 1002 naming the daemon that runs it.
func (d *Daemon) notHere(ctx context.Context, id int64, what string) error {
	rec, err := d.store.Get(ctx, id)
	if err != nil {
		return err
	}
	if rec.State == rpc.StateRunning {
		return rpc.BadState(id, rec.State, what+": it runs on node "+rec.Run.Node+"; ask that daemon")
	}
	return rpc.BadState(id, rec.State, what+": only a running job")
}

// lockRunning takes the job's lock and checks that it still runs here.
func (d *Daemon) lockRunning(ctx context.Context, id int64, what string) (*jobState, error) {
	js := d.localJob(id)
	if js == nil {
		return nil, d.notHere(ctx, id, what)
	}
	if err := js.mu.lock(ctx); err != nil {
		return nil, err
	}
	d.mu.Lock()
	ok := d.jobs[id] == js && js.rec.State == rpc.StateRunning
	d.mu.Unlock()
	if !ok {
		js.mu.unlock()
		return nil, d.notHere(ctx, id, what)
	}
	return js, nil
}

// lost turns a runner's lost race into the protocol's answer.
func (d *Daemon) lost(ctx context.Context, id int64, what string, err error) error {
	if errors.Is(err, errJobOver) {
		return d.notHere(ctx, id, what)
	}
	return err
}

// Pause pauses a running job: the pause is stored (a paused event, paused_at
// set, the job still running and holding its slot), then its step's processes
// are stopped and its timeouts stop. A job already paused is answered as it is.
func (d *Daemon) Pause(ctx context.Context, p rpc.PauseParams) (*rpc.Job, error) {
	if err := d.waitReady(ctx); err != nil {
		return nil, err
	}
	js, err := d.lockRunning(ctx, p.ID, "cannot pause")
	if err != nil {
		return nil, err
	}
	defer js.mu.unlock()
	d.mu.Lock()
	already := js.rec.PausedAt != nil
	d.mu.Unlock()
	if !already {
		if _, err := d.transition(ctx, js, machine.Pause); err != nil {
			return nil, d.lost(ctx, p.ID, "cannot pause", err)
		}
		d.mu.Lock()
		js.pause.resumed = make(chan struct{})
		sp, timers := js.pause.sp, js.pause.timers
		d.mu.Unlock()
		for _, t := range timers {
			t.pause()
		}
		if sp != nil {
			if err := d.freezeStep(sp); err != nil {
				d.log.Error("pause a step's processes", "id", p.ID, "err", err)
			}
		}
	}
	return d.Get(ctx, rpc.GetParams(p))
}

// Resume lets a paused job go: a running one is resumed by its runner's write
// (its deadline moved by the time paused), then its processes thawed and its
// timeouts run again; a queued one (paused, then reaped by a restart) by the
// store, which makes it claimable. A running job that is not paused is
// answered as it is.
func (d *Daemon) Resume(ctx context.Context, p rpc.PauseParams) (*rpc.Job, error) {
	if err := d.waitReady(ctx); err != nil {
		return nil, err
	}
	if d.localJob(p.ID) == nil {
		rec, err := d.store.Get(ctx, p.ID)
		if err != nil {
			return nil, err
		}
		if rec.State == rpc.StateQueued {
			_, evs, err := d.store.Resume(ctx, p.ID, d.clock.Now())
			if err != nil {
				return nil, err
			}
			d.hub.publish(evs)
			d.kick()
			return d.Get(ctx, rpc.GetParams(p))
		}
	}
	js, err := d.lockRunning(ctx, p.ID, "cannot resume")
	if err != nil {
		return nil, err
	}
	defer js.mu.unlock()
	d.mu.Lock()
	paused := js.rec.PausedAt != nil
	d.mu.Unlock()
	if paused {
		if _, err := d.transition(ctx, js, machine.Resume); err != nil {
			return nil, d.lost(ctx, p.ID, "cannot resume", err)
		}
		d.mu.Lock()
		sp, timers, resumed := js.pause.sp, js.pause.timers, js.pause.resumed
		js.pause.resumed = nil
		d.mu.Unlock()
		if sp != nil {
			d.thawStep(sp)
		}
		for _, t := range timers {
			t.resume()
		}
		if resumed != nil {
			close(resumed)
		}
	}
	return d.Get(ctx, rpc.GetParams(p))
}

// Signal sends a named signal to every process of a running job's step, once
// its signalled event is stored (so that the event comes before whatever the
// signal makes of the step). A job whose step runs no process (a sleep or http
// step, a step between two attempts) answers 1002.
func (d *Daemon) Signal(ctx context.Context, p rpc.SignalParams) (*rpc.Job, error) {
	name, ok := rpc.SignalName(p.Signal)
	sig, known := signals[name]
	if !ok || !known {
		return nil, rpc.InvalidParams("signal", "unknown signal "+p.Signal)
	}
	if err := d.waitReady(ctx); err != nil {
		return nil, err
	}
	js, err := d.lockRunning(ctx, p.ID, "cannot signal")
	if err != nil {
		return nil, err
	}
	defer js.mu.unlock()
	d.mu.Lock()
	sp := js.pause.sp
	d.mu.Unlock()
	if sp == nil {
		return nil, rpc.BadState(p.ID, rpc.StateRunning, "cannot signal: its step runs no process now")
	}
	if _, err := d.transition(ctx, js, func(r *rpc.Record, now time.Time) []rpc.Event {
		return []rpc.Event{machine.Signalled(r, name, now)}
	}); err != nil {
		return nil, d.lost(ctx, p.ID, "cannot signal", err)
	}
	if sig == syscall.SIGKILL && sp.cgroup != "" {
		// Not cgroup.kill: that would retire the cgroup; the step ends as killed.
		signalCgroup(sp.cgroup, sig)
	} else {
		d.signalStep(sp, sig)
	}
	return d.Get(ctx, rpc.GetParams{ID: p.ID})
}

// signals maps the names job.signal knows to the signals.
var signals = map[string]syscall.Signal{
	"SIGHUP": syscall.SIGHUP, "SIGINT": syscall.SIGINT, "SIGQUIT": syscall.SIGQUIT,
	"SIGILL": syscall.SIGILL, "SIGTRAP": syscall.SIGTRAP, "SIGABRT": syscall.SIGABRT,
	"SIGBUS": syscall.SIGBUS, "SIGFPE": syscall.SIGFPE, "SIGKILL": syscall.SIGKILL,
	"SIGUSR1": syscall.SIGUSR1, "SIGSEGV": syscall.SIGSEGV, "SIGUSR2": syscall.SIGUSR2,
	"SIGPIPE": syscall.SIGPIPE, "SIGALRM": syscall.SIGALRM, "SIGTERM": syscall.SIGTERM,
	"SIGCHLD": syscall.SIGCHLD, "SIGCONT": syscall.SIGCONT, "SIGSTOP": syscall.SIGSTOP,
	"SIGTSTP": syscall.SIGTSTP, "SIGTTIN": syscall.SIGTTIN, "SIGTTOU": syscall.SIGTTOU,
	"SIGURG": syscall.SIGURG, "SIGXCPU": syscall.SIGXCPU, "SIGXFSZ": syscall.SIGXFSZ,
	"SIGVTALRM": syscall.SIGVTALRM, "SIGPROF": syscall.SIGPROF, "SIGWINCH": syscall.SIGWINCH,
	"SIGIO": syscall.SIGIO, "SIGSYS": syscall.SIGSYS,
}

// freezeStep stops every process of the step: the cgroup freezer where it has
// a cgroup (waiting until the kernel says frozen), SIGSTOP to its group and its
// escapees otherwise.
func (d *Daemon) freezeStep(sp *stepProcs) error {
	sp.pause.mu.Lock()
	defer sp.pause.mu.Unlock()
	if sp.pause.ended || sp.pause.frozen {
		return nil
	}
	sp.pause.frozen = true
	if sp.cgroup != "" {
		return freezeCgroup(sp.cgroup, true, 2*time.Second)
	}
	d.signalStep(sp, syscall.SIGSTOP)
	return nil
}

// thawStep lets the step's processes go again.
func (d *Daemon) thawStep(sp *stepProcs) {
	sp.pause.mu.Lock()
	defer sp.pause.mu.Unlock()
	d.thawLocked(sp)
}

func (d *Daemon) thawLocked(sp *stepProcs) {
	if !sp.pause.frozen {
		return
	}
	sp.pause.frozen = false
	if sp.cgroup != "" {
		if err := freezeCgroup(sp.cgroup, false, 2*time.Second); err != nil {
			d.log.Error("thaw a step's processes", "cgroup", sp.cgroup, "err", err)
		}
		return
	}
	d.signalStep(sp, syscall.SIGCONT)
}

// endPause lets a step that is being stopped go, and keeps it from being
// paused again: its processes must get their SIGTERM (a stopped process would
// take it only after the kill grace, as SIGKILL), and its cgroup must not go
// back to the tree frozen.
func (d *Daemon) endPause(sp *stepProcs) {
	sp.pause.mu.Lock()
	defer sp.pause.mu.Unlock()
	sp.pause.ended = true
	d.thawLocked(sp)
}

// pausedGate is the channel job.resume closes when the job is paused, else nil.
func (d *Daemon) pausedGate(js *jobState) <-chan struct{} {
	d.mu.Lock()
	defer d.mu.Unlock()
	if js.rec.PausedAt == nil {
		return nil
	}
	if js.pause.resumed == nil {
		js.pause.resumed = make(chan struct{})
	}
	return js.pause.resumed
}

// waitResumed waits until the paused job is resumed or cancelled, or the daemon
// stops (the job then stays paused in the store).
func (d *Daemon) waitResumed(parent context.Context, js *jobState, resumed <-chan struct{}) error {
	d.mu.Lock()
	cancelled := js.cancelled
	d.mu.Unlock()
	select {
	case <-resumed:
	case <-cancelled:
	case <-parent.Done():
	}
	return nil
}

// startUnlessPaused stores the start of an attempt of step i, unless the job was
// paused meanwhile (the next turn then waits until it is resumed).
func (d *Daemon) startUnlessPaused(ctx context.Context, js *jobState, i int) error {
	if err := js.mu.lock(ctx); err != nil {
		return err
	}
	defer js.mu.unlock()
	d.mu.Lock()
	paused := js.rec.PausedAt != nil
	d.mu.Unlock()
	if paused {
		return nil
	}
	return d.finish(ctx, js, func(r *rpc.Record, now time.Time) []rpc.Event {
		return []rpc.Event{machine.StartStep(r, i, now)}
	})
}

// sleepPaused waits, while the job is paused, until it is resumed or ctx ends,
// and reports for how long it waited; ok is false when it was not paused.
func (d *Daemon) sleepPaused(ctx context.Context, js *jobState) (time.Duration, bool) {
	resumed := d.pausedGate(js)
	if resumed == nil {
		return 0, false
	}
	from := time.Now()
	select {
	case <-resumed:
	case <-ctx.Done():
	}
	return time.Since(from), true
}
