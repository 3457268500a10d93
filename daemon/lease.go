package daemon

import (
	"context"
	"errors"
	"fmt"
	"time"

	"spool/rpc"
	"spool/rpc/machine"
)

// lease is one membership of this daemon in the store: the owner identity a
// Join gave, and the context of the jobs claimed under it. The context ends,
// with a cause that wraps errLeaseLost, once the lease is gone (the store said
// so, or the daemon fenced itself): the runners of those jobs kill their
// processes at once and store nothing more.
type lease struct {
	owner machine.Owner
	// joined is when the Join that gave the lease started, on the monotonic
	// clock: the lease counts from there.
	joined time.Time
	ctx    context.Context
	end    context.CancelCauseFunc
}

// errSelfFence says the daemon could not renew its lease for LeaseFence and
// stopped its jobs before another daemon may rescue them.
var errSelfFence = errors.New("no lease renewal succeeded for the fence time")

// join joins the store under the daemon's node name and makes the new lease
// the one its claims use; ctx bounds the call only.
func (d *Daemon) join(ctx context.Context) (*lease, error) {
	joined := time.Now()
	owner, err := d.store.Join(ctx, d.cfg.Node, d.clock.Now())
	if err != nil {
		return nil, fmt.Errorf("join the store as %q: %w", d.cfg.Node, err)
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	lctx, end := context.WithCancelCause(d.runCtx)
	l := &lease{owner: owner, joined: joined, ctx: lctx, end: end}
	d.lease = l
	d.owner = owner
	return l, nil
}

// currentLease is the lease the daemon's claims use; nil from a lost lease
// until the next join.
func (d *Daemon) currentLease() *lease {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.lease
}

// loseLease ends lease l, once: every job claimed under it has its processes
// killed at once and nothing more of it stored (their runners see why in the
// context's cause); claims stop until keepLease joins again.
func (d *Daemon) loseLease(l *lease, why error) {
	d.mu.Lock()
	if l.ctx.Err() != nil {
		d.mu.Unlock()
		return
	}
	if d.lease == l {
		d.lease = nil
	}
	n := 0
	for _, js := range d.jobs {
		if js.lease == l {
			n++
		}
	}
	// Cancelled under d.mu: a claim that holds l then finds it ended.
	l.end(fmt.Errorf("%w: %w", errLeaseLost, why))
	d.mu.Unlock()
	d.log.Error("lease lost: killing the processes of its jobs, storing nothing more of them",
		"node", l.owner.Node, "epoch", l.owner.Epoch, "jobs", n, "why", why)
	select {
	case d.rejoin <- struct{}{}:
	default:
	}
}

// leaseFence is how long the daemon runs its jobs without a successful
// renewal, or 0 when the store's leases do not expire.
func leaseFence(st Store, fence time.Duration) time.Duration {
	el, ok := st.(ExpiringLeases)
	if !ok || el.LeaseTTL() <= 0 {
		return 0
	}
	ttl := el.LeaseTTL()
	if fence <= 0 || fence >= ttl {
		return ttl * 6 / 10
	}
	return fence
}

// keepLease renews the daemon's lease every LeaseEvery, acts on the cancels
// stored for its jobs by others, and reaps the jobs of owners that are gone.
// On a store whose leases expire it fences itself: when no renewal started in
// the last LeaseFence succeeded (each call is bounded by LeaseEvery, so a hung
// connection cannot hold the fence back), it loses the lease on its own. A
// lost lease is followed by a new join (a greater epoch), retried every
// LeaseEvery while the store fails.
func (d *Daemon) keepLease(ctx context.Context, l *lease) {
	fenceAfter := leaseFence(d.store, d.cfg.LeaseFence)
	t := time.NewTicker(d.cfg.LeaseEvery)
	defer t.Stop()
	var fence *time.Timer
	// arm (re)starts the fence of lease l, counted from since.
	arm := func(l *lease, since time.Time) {
		if fence != nil {
			fence.Stop()
			fence = nil
		}
		if fenceAfter > 0 && l != nil {
			fence = time.AfterFunc(fenceAfter-time.Since(since), func() { d.loseLease(l, errSelfFence) })
		}
	}
	defer arm(nil, time.Time{})
	arm(l, l.joined)
	var renewing, joining, reaping burst
	var cancels <-chan struct{}
	if cn, ok := d.store.(CancelNotifier); ok {
		cancels = cn.CancelRequested()
	}
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		case <-d.rejoin:
		case <-cancels:
		}
		if l.ctx.Err() != nil {
			arm(nil, time.Time{})
			jctx, cancel := context.WithTimeout(ctx, d.cfg.LeaseEvery)
			nl, err := d.join(jctx)
			cancel()
			if err != nil {
				if ctx.Err() == nil {
					joining.fail(d, "join the store again after a lost lease", err)
				}
				continue
			}
			joining.ok(d, "joined the store again")
			l = nl
			arm(l, l.joined)
			d.log.Info("joined the store again after a lost lease", "node", l.owner.Node, "epoch", l.owner.Epoch)
			d.kick()
			continue
		}
		started := time.Now()
		rctx, cancel := context.WithTimeout(ctx, d.cfg.LeaseEvery)
		ids, err := d.store.Renew(rctx, l.owner, d.clock.Now())
		cancel()
		if err != nil {
			if ctx.Err() != nil {
				return
			}
			if rpc.CodeOf(err) == rpc.CodeBadState {
				d.loseLease(l, fmt.Errorf("the store refused its renewal: %w", err))
				continue
			}
			renewing.fail(d, "renew the lease", err)
			continue // the fence decides
		}
		if l.ctx.Err() == nil {
			arm(l, started)
		}
		renewing.ok(d, "renewed the lease")
		for _, id := range ids {
			d.cancelLocal(ctx, id)
		}
		// Bounded like the renewal: a hung reap must not hold the next one back.
		rctx, cancel = context.WithTimeout(ctx, d.cfg.LeaseEvery)
		err = d.reap(rctx)
		cancel()
		if err != nil {
			if ctx.Err() == nil {
				reaping.fail(d, "reap", err)
			}
		} else {
			reaping.ok(d, "reaped")
		}
	}
}

// burst logs a run of failures of one task once, at its first failure, and
// once more when the task succeeds again, with how many tries failed.
type burst struct {
	fails int
	since time.Time
}

// fail counts a failure, logging the first of a run.
func (b *burst) fail(d *Daemon, what string, err error) {
	if b.fails == 0 {
		b.since = time.Now()
		d.log.Error(what+"; trying again", "err", err)
	}
	b.fails++
}

// ok ends a run of failures, if any, saying so.
func (b *burst) ok(d *Daemon, what string) {
	if b.fails > 0 {
		d.log.Info(what+" after failures", "tries", b.fails, "for", time.Since(b.since).Round(time.Millisecond))
		b.fails = 0
	}
}

// storeRetry is the wait before the next try of a write the store failed
// (1004, a lost connection): 50 ms doubling up to 1 s.
func storeRetry(prev time.Duration) time.Duration {
	if prev <= 0 {
		return 50 * time.Millisecond
	}
	return min(2*prev, time.Second)
}

// refused reports whether err is the store's answer about the job rather than
// a failure of the store: the job is unknown (1001) or in another state or
// epoch (1002); trying again changes nothing.
func refused(err error) bool {
	c := rpc.CodeOf(err)
	return c == rpc.CodeBadState || c == rpc.CodeNotFound
}
