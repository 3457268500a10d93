package daemon

import (
	"context"
	"time"

	"spool/rpc"
	"spool/rpc/machine"
)

// Stats is what the daemon tells about itself beyond the protocol, for metrics.
type Stats struct {
	// Watchers is the number of watches open now, over every transport.
	Watchers int
	// Running is the number of jobs holding a slot now.
	Running int
	// MaxParallel is the global limit of running jobs.
	MaxParallel int
}

// Stats reads the daemon's figures; it takes the scheduler's lock only briefly.
func (d *Daemon) Stats() Stats {
	w := len(*d.hub.list.Load())
	d.mu.Lock()
	running := d.running
	d.mu.Unlock()
	return Stats{Watchers: w, Running: running, MaxParallel: d.cfg.MaxParallel}
}

// TimeCommits wraps s so that observe is told how long each mutating call took:
// every such call is one durable transaction (committed and synced), so this is
// the commit latency as the daemon sees it, group-commit waits included. Reads
// pass straight through.
func TimeCommits(s Store, observe func(time.Duration)) Store {
	return timedStore{Store: s, observe: observe}
}

// timedStore is a Store whose mutating calls are timed.
type timedStore struct {
	Store
	observe func(time.Duration)
}

func (t timedStore) since(start time.Time) { t.observe(time.Since(start)) }

func (t timedStore) Submit(ctx context.Context, jobs []rpc.NewJob) ([]rpc.Record, []rpc.Event, error) {
	defer t.since(time.Now())
	return t.Store.Submit(ctx, jobs)
}

func (t timedStore) Apply(ctx context.Context, ts []rpc.Transition) ([]rpc.Event, error) {
	defer t.since(time.Now())
	return t.Store.Apply(ctx, ts)
}

func (t timedStore) TrimEvents(ctx context.Context, before time.Time) (int, error) {
	defer t.since(time.Now())
	return t.Store.TrimEvents(ctx, before)
}

func (t timedStore) Remove(ctx context.Context, ids []int64, now time.Time) ([]int64, []rpc.Event, error) {
	defer t.since(time.Now())
	return t.Store.Remove(ctx, ids, now)
}

func (t timedStore) Prune(ctx context.Context, states []rpc.State, cutoff, now time.Time) ([]int64, []rpc.Event, error) {
	defer t.since(time.Now())
	return t.Store.Prune(ctx, states, cutoff, now)
}

func (t timedStore) PutQueue(ctx context.Context, q rpc.Queue) error {
	defer t.since(time.Now())
	return t.Store.PutQueue(ctx, q)
}

func (t timedStore) PutTemplate(ctx context.Context, tp rpc.Template) error {
	defer t.since(time.Now())
	return t.Store.PutTemplate(ctx, tp)
}

func (t timedStore) RemoveTemplate(ctx context.Context, name string) error {
	defer t.since(time.Now())
	return t.Store.RemoveTemplate(ctx, name)
}

func (t timedStore) Claim(ctx context.Context, o machine.Owner, max int, now time.Time) ([]rpc.Record, []rpc.Event, error) {
	defer t.since(time.Now())
	return t.Store.Claim(ctx, o, max, now)
}

func (t timedStore) Cancel(ctx context.Context, id int64, reason string, now time.Time) (rpc.State, []rpc.Record, []rpc.Event, error) {
	defer t.since(time.Now())
	return t.Store.Cancel(ctx, id, reason, now)
}

func (t timedStore) Reap(ctx context.Context, now time.Time) ([]rpc.Record, []rpc.Event, error) {
	defer t.since(time.Now())
	return t.Store.Reap(ctx, now)
}

func (t timedStore) Join(ctx context.Context, node string, now time.Time) (machine.Owner, error) {
	defer t.since(time.Now())
	return t.Store.Join(ctx, node, now)
}
