package main

import (
	"context"
	"encoding/json"
	"fmt"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"spool/client"
	"spool/rpc"
	"spool/rpc/server"
)

// fillClients is how many connections submit at once when filling a queue.
const fillClients = 8

// fillQueued submits `true` jobs into the daemon's paused bench queue until it
// holds n, in job.submit calls as large as fillBatchSize allows from fillClients
// connections at once; the client decodes only the ids of each answer. have is
// how many it holds already. peak, when not nil, is raised to the daemon's
// highest memory seen meanwhile, sampled every 100 ms.
func fillQueued(ctx context.Context, d *daemon, have, n int, peak *memory) error {
	if n <= have {
		return nil
	}
	clients := make([]*client.Client, fillClients)
	for i := range clients {
		c, err := d.dial(ctx)
		if err != nil {
			return err
		}
		defer c.Close()
		clients[i] = c
	}
	spec := execSpec(benchQueue, "true")
	batch := make([]rpc.Spec, fillBatchSize(spec))
	for i := range batch {
		batch[i] = spec
	}
	per := int64(len(batch))
	var left atomic.Int64
	left.Store(int64(n - have))
	stop := make(chan struct{})
	sampled := make(chan struct{})
	go func() {
		defer close(sampled)
		for peak != nil {
			sample(d, peak)
			select {
			case <-stop:
				return
			case <-time.After(100 * time.Millisecond):
			}
		}
	}()
	var wg sync.WaitGroup
	errs := make([]error, len(clients))
	for i, c := range clients {
		wg.Go(func() {
			for {
				k := min(left.Add(-per)+per, per)
				if k <= 0 {
					return
				}
				ids, err := c.SubmitIDs(ctx, rpc.SubmitParams{Jobs: batch[:k]})
				if err == nil && len(ids) != int(k) {
					err = fmt.Errorf("%d ids answered for %d jobs", len(ids), k)
				}
				if err != nil {
					errs[i] = fmt.Errorf("submit: %w", err)
					return
				}
			}
		})
	}
	wg.Wait()
	close(stop)
	<-sampled
	for _, err := range errs {
		if err != nil {
			return err
		}
	}
	return nil
}

// fillBatchSize is how many copies of spec one job.submit may carry: at most
// rpc.MaxBatch, in a message that stays under the daemon's default bound of 1 MiB
// (server.DefaultMaxMessage), with a tenth of it to spare.
func fillBatchSize(spec rpc.Spec) int {
	b, err := json.Marshal(spec)
	if err != nil {
		return 1000
	}
	return max(1, min(rpc.MaxBatch, server.DefaultMaxMessage*9/10/(len(b)+1)))
}

// heldRounds is how many times the held figure runs its jobs beside each backlog.
// All rounds count, not the best: a garbage collection that marks a backlog held
// in the daemon's memory (about a second of CPU for a million jobs, once every
// several thousand jobs run) lands in some rounds and not others, and is part of
// the cost.
const heldRounds = 5

// heldStep is the end-to-end rate measured beside one backlog.
type heldStep struct {
	queued int
	rate   float64       // jobs/s over all rounds
	all    batchResult   // the rounds summed
	rounds []string      // each round's time
	fill   time.Duration // filling up to queued from the step before
}

// runHeld runs `true` jobs at --max-parallel 2 on one daemon while its paused
// bench queue holds a backlog that grows, step by step, from none to
// size.heldJobs: a hundredth, a tenth, then all of it. The rate beside the full
// backlog is reported against the rate beside none, on the same daemon.
func runHeld(ctx context.Context, b *bench, f *floors) ([]row, error) {
	d, err := pausedDaemon(ctx, b, "held")
	if err != nil {
		return nil, err
	}
	defer d.stop()
	n, jobs := b.opts.size.heldJobs, b.opts.size.e2eJobs
	specs := make([]rpc.Spec, jobs)
	for i := range specs {
		specs[i] = execSpec("default", "true")
	}
	var steps []heldStep
	have := 0
	for _, q := range []int{0, n / 100, n / 10, n} {
		if len(steps) > 0 && q <= have {
			continue
		}
		t := time.Now()
		if err := fillQueued(ctx, d, have, q, nil); err != nil {
			return nil, fmt.Errorf("fill to %s: %w", thousands(int64(q)), err)
		}
		st := heldStep{queued: q, fill: time.Since(t)}
		have = q
		for range heldRounds {
			r, err := runBatch(ctx, d, specs)
			if err != nil {
				return nil, fmt.Errorf("%s queued: %w", thousands(int64(q)), err)
			}
			st.all.add(r)
			st.rounds = append(st.rounds, ms(r.elapsed))
		}
		st.rate = perSec(jobs*heldRounds, st.all.elapsed)
		b.logf("held: %s queued: %s (rounds %s; filled in %s)", thousands(int64(q)), rate(st.rate, "jobs/s"),
			strings.Join(st.rounds, ", "), st.fill.Round(time.Millisecond))
		steps = append(steps, st)
	}
	none, full := steps[0], steps[len(steps)-1]
	var ladder []string
	var fillTime time.Duration
	for _, s := range steps {
		ladder = append(ladder, fmt.Sprintf("%s queued %s (rounds %s; spoold CPU %.0f µs/job)",
			thousands(int64(s.queued)), rate(s.rate, "jobs/s"), strings.Join(s.rounds, ", "),
			float64(s.all.cpu/time.Microsecond)/float64(jobs*heldRounds)))
		fillTime += s.fill
	}
	mem, _ := readMemory(d.pid())
	ratio := full.rate / none.rate
	return []row{{
		figure:   fmt.Sprintf("held: %d true, --max-parallel 2, %s queued beside", jobs, thousands(int64(n))),
		value:    rate(full.rate, "jobs/s"),
		baseline: "none queued " + rate(none.rate, "jobs/s"),
		ratio:    ratio,
		target:   ">= 0.8 of none queued",
		verdict:  check(ratio >= 0.8 && full.all.failed == 0),
		note: fmt.Sprintf("one daemon, its paused queue filled step by step; %d rounds at each, all counted: %s; %s jobs submitted in %s (%s jobs/s, calls of %s from %d clients); with all queued, the rounds together: %s; spoold %s at the end",
			heldRounds, strings.Join(ladder, "; "), thousands(int64(n)), fillTime.Round(time.Millisecond),
			thousands(int64(perSec(n, fillTime))), thousands(int64(fillBatchSize(execSpec(benchQueue, "true")))), fillClients,
			full.all.describe(jobs*heldRounds), mem),
	}}, nil
}

// queuedMemoryBound is the most anonymous memory a daemon may use with
// size.heldJobs jobs queued.
const queuedMemoryBound = 100 << 20

// runQueuedMemory measures the anonymous memory of a real spoold whose paused
// queue holds size.heldJobs jobs: once they were submitted to it, and again after
// a restart over the same store.
func runQueuedMemory(ctx context.Context, b *bench, f *floors) ([]row, error) {
	d, err := pausedDaemon(ctx, b, "queued-memory")
	if err != nil {
		return nil, err
	}
	defer func() { d.stop() }()
	n := b.opts.size.heldJobs
	idle, err := readMemory(d.pid())
	if err != nil {
		return nil, err
	}
	var peak memory
	t := time.Now()
	if err := fillQueued(ctx, d, 0, n, &peak); err != nil {
		return nil, fmt.Errorf("queued-memory: %w", err)
	}
	fillTime := time.Since(t)
	sample(d, &peak)
	submitted := settle(d, settleTime)
	if err := checkQueued(ctx, d, n); err != nil {
		return nil, err
	}
	b.logf("queued-memory: %s queued in %s: %s", thousands(int64(n)), fillTime.Round(time.Millisecond), submitted)

	d.stop()
	t = time.Now()
	d2, ready, err := b.startDaemon(ctx, "queued-memory-restart", d.stateDir)
	if err != nil {
		return nil, err
	}
	d = d2
	// daemon.info answers before the daemon has loaded its unfinished jobs;
	// queue.list waits for that.
	if err := queueList(ctx, d); err != nil {
		return nil, err
	}
	recovered := time.Since(t)
	atReady, _ := readMemory(d.pid())
	restarted := settle(d, settleTime)
	if err := checkQueued(ctx, d, n); err != nil {
		return nil, err
	}
	b.logf("queued-memory: restarted, jobs loaded in %s: %s", ms(recovered), restarted)
	db, disk := fileSize(d.dbPath())

	queued := thousands(int64(n))
	memRow := func(figure string, m memory, note string) row {
		return row{
			figure:   figure,
			value:    fmt.Sprintf("%.1f MiB", mib(m.Anon)),
			baseline: fmt.Sprintf("bound %d MiB", queuedMemoryBound>>20),
			ratio:    float64(queuedMemoryBound) / float64(max(m.Anon, 1)),
			target:   fmt.Sprintf("< %d MiB", queuedMemoryBound>>20),
			verdict:  check(m.Anon < queuedMemoryBound),
			note:     note,
		}
	}
	return []row{
		memRow(fmt.Sprintf("queued-memory: %s submitted, spoold RssAnon", queued), submitted,
			fmt.Sprintf("the lowest over %s after the last submit answered: %s; idle before %s; peak while submitting %s; submitted in %s (calls of %s from %d clients); ratio: the bound over the value",
				ms(settleTime), submitted, idle, peak, fillTime.Round(time.Millisecond), thousands(int64(fillBatchSize(execSpec(benchQueue, "true")))), fillClients)),
		memRow(fmt.Sprintf("queued-memory: %s queued, restarted, spoold RssAnon", queued), restarted,
			fmt.Sprintf("spoold started over that store: daemon.info answered after %s, queue.list (once the unfinished jobs are loaded) after %s, with %s; then the lowest over %s: %s; database %.0f MiB (%.0f MiB on disk)",
				ms(ready), ms(recovered), atReady, ms(settleTime), restarted, mib(db), mib(disk))),
	}, nil
}

// settleTime is how long the queued-memory figure watches a daemon's memory.
const settleTime = 3 * time.Second

// settle returns the lowest memory of the daemon over span, sampled every 100 ms:
// what it keeps once the work it was given is over.
func settle(d *daemon, span time.Duration) memory {
	low := memory{Anon: 1 << 62}
	for t := time.Now(); time.Since(t) < span; {
		time.Sleep(100 * time.Millisecond)
		if m, err := readMemory(d.pid()); err == nil && m.Anon < low.Anon {
			low = m
		}
	}
	return low
}

// queueList calls queue.list, which the daemon answers once it has loaded the
// unfinished jobs at start.
func queueList(ctx context.Context, d *daemon) error {
	c, err := d.dial(ctx)
	if err != nil {
		return err
	}
	defer c.Close()
	if _, err := c.QueueList(ctx); err != nil {
		return fmt.Errorf("queue.list: %w", err)
	}
	return nil
}

// checkQueued fails unless daemon.info counts n queued jobs and none running.
func checkQueued(ctx context.Context, d *daemon, n int) error {
	c, err := d.dial(ctx)
	if err != nil {
		return err
	}
	defer c.Close()
	info, err := c.Info(ctx)
	if err != nil {
		return fmt.Errorf("queued-memory: %w", err)
	}
	if q, r := info.Counts[rpc.StateQueued], info.Counts[rpc.StateRunning]; q != n || r != 0 {
		return fmt.Errorf("queued-memory: the daemon counts %d queued and %d running, want %d and 0", q, r, n)
	}
	return nil
}
