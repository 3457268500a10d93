// Package daemon is spool's engine: it implements rpc.Service on top of a Store,
// schedules queued jobs under the queue and global limits, runs their steps, feeds
// watchers, and recovers what a previous run left behind.
//
// The store decides who runs what (Store.Claim, Cancel, Reap, and the cascade of
// a dependency's failure); the daemon decides how many jobs it takes and what
// happens while a step runs, and fences each write by the epoch the job was
// claimed under. On a store whose leases expire it stops its jobs' processes
// itself once it could not renew for most of its lease, and joins again.
//
// It imports rpc (the contract), rpc/codec and rpc/machine, never store or the
// server: the Store it needs is an interface of its own, and cmd/spoold wires the
// rest.
package daemon

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"runtime"
	"spool/rpc/codec"
	"spool/rpc/machine"
	"strconv"
	"sync"
	"time"
)

// Clock tells the time; tests pass a fake one.
type Clock interface {
	Now() time.Time
}

// SystemClock is the real clock.
type SystemClock struct{}

// Now returns the current time in UTC.
func (SystemClock) Now() time.Time { return time.Now().UTC() }

// Config holds what a Daemon needs; zero fields take the defaults named.
type Config struct {
	Store    Store
	StateDir string // logs and results live under it
	Socket   string // reported by daemon.info
	Version  string
	// MaxParallel bounds the running jobs of all queues (default: number of CPUs).
	MaxParallel int
	// KillGrace is the time between SIGTERM and SIGKILL (default 10s).
	KillGrace time.Duration
	// MaxLog caps one step's log (default 64 MiB).
	MaxLog int64
	// NoStderrLog keeps no stderr log beside each step's merged log (spoold
	// --stderr-log=false): steps that write on stderr then make one file
	// fewer.
	NoStderrLog bool
	// EventRetention trims stored events older than this (default 30 days; <0: never).
	EventRetention time.Duration
	// Retain removes final jobs this long after they finished (0: never).
	Retain time.Duration
	// Env is the environment jobs start from (default os.Environ()).
	Env   []string
	Clock Clock
	Log   *slog.Logger
	// Subreaper makes the daemon the parent of its jobs' orphaned processes and
	// reaps them (Linux). Only for a process that starts no children of its own
	// outside the daemon: spoold sets it, tests in one process with others do not.
	Subreaper bool
	// Home is the default working directory of steps (default the user's home).
	Home string
	// Containment is how a step's processes are kept together: ContainAuto (the
	// default), ContainCgroup or ContainGroup.
	Containment string
	// Node names this daemon in the store (default the host name).
	Node string
	// StoreKind names the kind of store for daemon.info ("bbolt",
	// "postgres"); empty leaves it out.
	StoreKind string
	// LeaseEvery is how often the daemon renews its lease in the store, learns
	// of cancels stored for its jobs elsewhere and reaps the jobs of owners that
	// are gone (default 2s).
	LeaseEvery time.Duration
	// LeaseFence is, on a store whose leases expire (ExpiringLeases), how long
	// the daemon keeps its jobs' processes running while no renewal succeeds:
	// then it kills them and stores nothing more of them, before another daemon
	// may rescue them, and joins again. It counts from the start of the last
	// renewal that succeeded, on the local monotonic clock (default, and at
	// most, 6/10 of the store's LeaseTTL; unused with a store whose leases do
	// not expire).
	LeaseFence time.Duration
}

// Daemon is the engine. It implements rpc.Service.
type Daemon struct {
	cfg    Config
	store  Store
	clock  Clock
	log    *slog.Logger
	hub    *hub
	spawn  *spawner
	start  time.Time
	logDir string
	resDir string
	// folders hands out the jobs' results folders.
	folders *folderPool
	// cgroups is the tree of step cgroups; nil when steps are contained by process
	// groups. containment names the mode in force, containNote says why.
	cgroups     *cgroupTree
	containment string
	containNote string
	// specs decodes templates' specs strictly, knowing the spec's shape once.
	specs *codec.Decoder
	env   []string // the base environment of processes
	paths pathCache

	// lease is the daemon's membership in the store that claims use, nil while
	// it is lost; owner is the identity of the last join (daemon.info). Both
	// guarded by mu; a runner's writes use the epoch its job was claimed under.
	lease *lease
	owner machine.Owner
	// rejoin asks keepLease to join again at once, after a lost lease.
	rejoin chan struct{}
	// claimMu is held from a claim until its jobs are in jobs (see claim).
	claimMu sync.Mutex
	// claimFails and claimWait follow a run of claims the store failed;
	// guarded by claimMu. timerFails follows the scheduler's reads of the
	// next not_before; the scheduler's goroutine only.
	claimFails burst
	claimWait  time.Duration
	timerFails burst
	// queueMu serialises queue.set's read and write of a queue's settings.
	queueMu sync.Mutex
	// bursts hands back the memory a burst of submits took.
	bursts bursts
	// sched is the schedules' loop (schedules.go).
	sched *schedState

	mu        sync.Mutex
	jobs      map[int64]*jobState // the jobs this daemon claimed and runs
	running   int                 // the slots of --max-parallel in use
	closing   bool                // no new starts
	stopping  bool                // daemon.shutdown or signal: submits refused unless draining
	draining  bool
	wake      chan struct{}
	ready     chan struct{} // closed once recovery is over
	contained chan struct{} // closed once the containment in force is known
	probe     chan chan struct{}
	done      chan struct{} // closed when Run returns
	stop      chan struct{} // closed by Shutdown
	stopOnce  sync.Once
	runners   sync.WaitGroup
	bg        sync.WaitGroup
	runCtx    context.Context
}

// New builds a daemon over an open store. Call Run to start it.
func New(cfg Config) (*Daemon, error) {
	if cfg.Store == nil {
		return nil, errors.New("daemon: no store")
	}
	if cfg.StateDir == "" {
		return nil, errors.New("daemon: no state folder")
	}
	if cfg.MaxParallel <= 0 {
		cfg.MaxParallel = runtime.NumCPU()
	}
	if cfg.KillGrace <= 0 {
		cfg.KillGrace = 10 * time.Second
	}
	if cfg.MaxLog <= 0 {
		cfg.MaxLog = 64 << 20
	}
	if cfg.EventRetention == 0 {
		cfg.EventRetention = 30 * 24 * time.Hour
	}
	if cfg.Env == nil {
		cfg.Env = os.Environ()
	}
	if cfg.Clock == nil {
		cfg.Clock = SystemClock{}
	}
	if cfg.Log == nil {
		cfg.Log = slog.New(slog.DiscardHandler)
	}
	if cfg.Node == "" {
		if h, err := os.Hostname(); err == nil && h != "" {
			cfg.Node = h
		} else {
			cfg.Node = "spoold"
		}
	}
	if cfg.LeaseEvery <= 0 {
		cfg.LeaseEvery = 2 * time.Second
	}
	if cfg.Home == "" {
		if h, err := os.UserHomeDir(); err == nil {
			cfg.Home = h
		} else {
			cfg.Home = "/"
		}
	}
	d := &Daemon{
		cfg:       cfg,
		store:     cfg.Store,
		clock:     cfg.Clock,
		log:       cfg.Log,
		logDir:    filepath.Join(cfg.StateDir, "logs"),
		resDir:    filepath.Join(cfg.StateDir, "results"),
		specs:     codec.NewDecoder(),
		env:       baseEnv(cfg.Env),
		jobs:      map[int64]*jobState{},
		ready:     make(chan struct{}),
		contained: make(chan struct{}),
		probe:     make(chan chan struct{}),
		done:      make(chan struct{}),
		wake:      make(chan struct{}, 1),
		rejoin:    make(chan struct{}, 1),
		stop:      make(chan struct{}),
		sched:     newSchedState(),
		start:     cfg.Clock.Now(), // set here, not in Run: Info may be served before Run begins
	}
	for _, dir := range []string{cfg.StateDir, d.logDir, d.resDir} {
		if err := os.MkdirAll(dir, 0o700); err != nil {
			return nil, fmt.Errorf("daemon: create %s: %w", dir, err)
		}
		if err := os.Chmod(dir, 0o700); err != nil {
			return nil, fmt.Errorf("daemon: chmod %s: %w", dir, err)
		}
	}
	// Earlier versions gave jobs of one step a shared, empty results folder.
	_ = os.Remove(filepath.Join(d.resDir, "none"))
	folders, err := newFolderPool(d.resDir)
	if err != nil {
		return nil, fmt.Errorf("daemon: %w", err)
	}
	d.folders = folders
	d.hub = newHub(d)
	return d, nil
}

// Ready is closed once recovery is over and the daemon serves requests.
func (d *Daemon) Ready() <-chan struct{} { return d.ready }

// Health checks that the daemon is alive: the store answers a read and the
// scheduler loop answers a probe. It is what a watchdog should ping on.
func (d *Daemon) Health(ctx context.Context) error {
	if _, _, err := d.store.Bounds(ctx); err != nil {
		return fmt.Errorf("store: %w", err)
	}
	reply := make(chan struct{})
	select {
	case d.probe <- reply:
	case <-ctx.Done():
		return fmt.Errorf("scheduler does not answer: %w", ctx.Err())
	case <-d.done:
		return fmt.Errorf("daemon stopped")
	}
	select {
	case <-reply:
		return nil
	case <-ctx.Done():
		return fmt.Errorf("scheduler does not answer: %w", ctx.Err())
	}
}

// Done is closed when Run has returned.
func (d *Daemon) Done() <-chan struct{} { return d.done }

// Stopped is closed once daemon.shutdown was asked for.
func (d *Daemon) Stopped() <-chan struct{} { return d.stop }

// Run recovers what the last run left, then schedules jobs until ctx is done or
// daemon.shutdown is called. On return running processes were stopped and their
// jobs are left running in the store, to be resumed at the next start.
func (d *Daemon) Run(ctx context.Context) error {
	defer close(d.done)
	sp, err := newSpawner()
	if err != nil {
		return fmt.Errorf("daemon: start the process spawner: %w", err)
	}
	d.spawn = sp
	if d.cfg.Subreaper {
		sp.becomeSubreaper(d.log.Warn)
	}
	defer sp.close()
	if err := d.setupContainment(); err != nil {
		return fmt.Errorf("daemon: %w", err)
	}
	close(d.contained)
	if d.cgroups != nil {
		defer d.cgroups.close()
	}
	d.log.Info("step containment", "mode", d.containment, "how", d.containNote) // written before, by this goroutine
	runCtx, cancelRuns := context.WithCancel(context.Background())
	defer cancelRuns()
	d.mu.Lock()
	d.runCtx = runCtx
	d.mu.Unlock()
	l, err := d.recover(ctx)
	if err != nil {
		return fmt.Errorf("daemon: recover: %w", err)
	}
	close(d.ready)
	d.log.Info("daemon ready", "node", l.owner.Node, "epoch", l.owner.Epoch, "max_parallel", d.cfg.MaxParallel,
		"lease_every", d.cfg.LeaseEvery, "lease_fence", leaseFence(d.store, d.cfg.LeaseFence))
	if lr, ok := d.store.(LiveRelay); ok {
		d.bg.Add(1)
		go func() { defer d.bg.Done(); d.relayed(runCtx, lr) }()
	}
	d.bg.Add(4)
	go func() { defer d.bg.Done(); d.runSchedules(runCtx) }()
	go func() { defer d.bg.Done(); d.maintain(runCtx) }()
	go func() { defer d.bg.Done(); d.tail(runCtx) }()
	go func() { defer d.bg.Done(); d.keepLease(runCtx, l) }()

	d.kick()
	for {
		select {
		case <-ctx.Done():
			d.shutdown(false)
		case <-d.stop:
		case <-d.wake:
			d.claim(runCtx)
			continue
		case reply := <-d.probe:
			close(reply)
			continue
		case <-d.nextTimer(runCtx):
			d.claim(runCtx)
			continue
		}
		break
	}
	d.mu.Lock()
	drain := d.draining
	d.closing = true
	d.mu.Unlock()
	if drain {
		d.log.Info("draining: waiting for running jobs")
		d.runners.Wait()
	}
	cancelRuns()
	d.runners.Wait()
	d.hub.closeAll()
	d.bg.Wait()
	d.log.Info("daemon stopped")
	return nil
}

// shutdown asks Run to stop; drain lets running jobs finish first.
func (d *Daemon) shutdown(drain bool) {
	d.mu.Lock()
	d.stopping = true
	if drain {
		d.draining = true
		d.closing = true
	}
	d.mu.Unlock()
	d.stopOnce.Do(func() { close(d.stop) })
}

// Wake makes the scheduler claim again at once. The scheduler wakes by itself on
// every change of the store and when the next not_before falls due by the clock;
// Wake is for clocks that jump (tests, tools). It wakes the schedules too.
func (d *Daemon) Wake() { d.kick(); d.sched.kick() }

// Housekeep does now what the hourly maintenance does: it trims the event log past
// Config.EventRetention and removes the final jobs past Config.Retain, by the
// daemon's clock. It is for tests and tools.
func (d *Daemon) Housekeep(ctx context.Context) { d.housekeep(ctx) }

// kick wakes the scheduler.
func (d *Daemon) kick() {
	select {
	case d.wake <- struct{}{}:
	default:
	}
}

// tail feeds the watch hub from the store: after each change the store signals
// (and every quarter second, for a signal lost), it reads the events after the
// last one published, so that events another writer stored reach local watchers
// in seq order without a gap. It wakes the scheduler too: a change may have made
// jobs runnable.
func (d *Daemon) tail(ctx context.Context) {
	poll := time.NewTicker(250 * time.Millisecond)
	defer poll.Stop()
	var reading burst
	for {
		select {
		case <-ctx.Done():
			return
		case <-d.store.Changed():
			d.mu.Lock()
			room := d.hasRoom()
			d.mu.Unlock()
			if room {
				d.kick()
			}
		case <-poll.C:
		}
		for {
			evs, err := d.store.Events(ctx, d.hub.last.Load(), 1000)
			if err != nil {
				if ctx.Err() == nil {
					reading.fail(d, "read events to publish", err)
				}
				break
			}
			reading.ok(d, "read events to publish")
			d.hub.publish(evs)
			if len(evs) < 1000 {
				break
			}
		}
	}
}

// maintain trims the event log and removes expired jobs, hourly.
func (d *Daemon) maintain(ctx context.Context) {
	t := time.NewTicker(time.Hour)
	defer t.Stop()
	for {
		d.housekeep(ctx)
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

func (d *Daemon) housekeep(ctx context.Context) {
	now := d.clock.Now()
	if d.cfg.EventRetention > 0 {
		if n, err := d.store.TrimEvents(ctx, now.Add(-d.cfg.EventRetention)); err != nil {
			d.log.Error("trim events", "err", err)
		} else if n > 0 {
			d.log.Info("trimmed events", "count", n)
		}
	}
	if d.cfg.Retain > 0 {
		ids, evs, err := d.store.Prune(ctx, nil, now.Add(-d.cfg.Retain), now)
		if err != nil {
			d.log.Error("retention", "err", err)
			return
		}
		d.hub.publish(evs)
		d.removeFiles(ids)
		if len(ids) > 0 {
			d.log.Info("retention removed jobs", "count", len(ids))
		}
	}
}

func (d *Daemon) removeFiles(ids []int64) {
	for _, id := range ids {
		_ = os.RemoveAll(d.jobLogDir(id))
		_ = os.RemoveAll(d.jobResultDir(id))
	}
}

func (d *Daemon) jobLogDir(id int64) string {
	return filepath.Join(d.logDir, strconv.FormatInt(id, 10))
}

func (d *Daemon) jobResultDir(id int64) string {
	return filepath.Join(d.resDir, strconv.FormatInt(id, 10))
}
func (d *Daemon) logPath(id int64, step int) string {
	return filepath.Join(d.jobLogDir(id), strconv.Itoa(step)+".log")
}
