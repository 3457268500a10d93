package main

import (
	"context"
	"fmt"
	"sync"
	"time"

	"spool/client"
	"spool/rpc"
)

// benchQueue is the paused queue that submit figures fill: its jobs never run.
const benchQueue = "bench"

// pausedDaemon starts a daemon whose bench queue is paused.
func pausedDaemon(ctx context.Context, b *bench, name string) (*daemon, error) {
	state, err := b.newState(name)
	if err != nil {
		return nil, err
	}
	d, _, err := b.startDaemon(ctx, name, state, "--max-parallel", "2")
	if err != nil {
		return nil, err
	}
	c, err := d.dial(ctx)
	if err != nil {
		d.stop()
		return nil, err
	}
	defer c.Close()
	paused := true
	if _, err := c.QueueSet(ctx, rpc.QueueSetParams{Name: benchQueue, Paused: &paused}); err != nil {
		d.stop()
		return nil, fmt.Errorf("pause the bench queue: %w", err)
	}
	return d, nil
}

// runBulk times job.submit calls of 1,000 jobs each, one after another.
func runBulk(ctx context.Context, b *bench, f *floors) ([]row, error) {
	d, err := pausedDaemon(ctx, b, "bulk")
	if err != nil {
		return nil, err
	}
	defer d.stop()
	c, err := d.dial(ctx)
	if err != nil {
		return nil, err
	}
	defer c.Close()
	const per = 1000
	specs := make([]rpc.Spec, per)
	for i := range specs {
		specs[i] = execSpec(benchQueue, "true")
		specs[i].Name = fmt.Sprintf("bulk-%d", i)
	}
	// One call to warm up.
	if _, err := c.Submit(ctx, rpc.SubmitParams{Jobs: specs}); err != nil {
		return nil, fmt.Errorf("bulk submit: %w", err)
	}
	c0, _ := d.commits()
	cpu0, _ := cpuTime(d.pid())
	var lat durations
	t := time.Now()
	for range b.opts.size.bulkCalls {
		t1 := time.Now()
		res, err := c.Submit(ctx, rpc.SubmitParams{Jobs: specs})
		if err != nil {
			return nil, fmt.Errorf("bulk submit: %w", err)
		}
		lat = append(lat, time.Since(t1))
		if len(res.Jobs) != per {
			return nil, fmt.Errorf("bulk submit: %d jobs answered for %d", len(res.Jobs), per)
		}
	}
	el := time.Since(t)
	c1, _ := d.commits()
	cpu1, _ := cpuTime(d.pid())
	jobs := per * b.opts.size.bulkCalls
	v := perSec(jobs, el)
	return []row{{
		figure:   "bulk submit, 1,000 jobs per call",
		value:    rate(v, "jobs/s"),
		baseline: "bbolt 1,000 puts/commit " + rate(f.boltBatch, "rec/s"),
		ratio:    v / f.boltBatch,
		target:   ">= 50,000 jobs/s",
		verdict:  check(v >= targetBulk),
		note: fmt.Sprintf("%d calls; call p50 %s, p99 %s; %d commits; spoold CPU %s (%.1f µs/job)",
			b.opts.size.bulkCalls, ms(lat.pct(50)), ms(lat.pct(99)), c1-c0, ms(cpu1-cpu0),
			float64((cpu1-cpu0)/time.Microsecond)/float64(jobs)),
	}, refRow("bulk submit", v, "bbolt 1,000 small puts/commit", f.boltSmall, targetBulk, refBoltSmall)}, nil
}

// refRow holds a throughput figure to its target as the issue meant it on its own
// machine: as a share of a floor the issue measured there too. Here the same
// floor is measured in this run, so the verdict does not depend on how fast this
// machine is.
func refRow(name string, v float64, floorName string, floor float64, target, ref float64) row {
	want := target / ref
	return row{
		figure:   name + ", as a share of its floor",
		value:    rate(v, "jobs/s"),
		baseline: floorName + " " + rate(floor, "rec/s"),
		ratio:    v / floor,
		target:   fmt.Sprintf(">= %.3f (%s of %s)", want, thousands(int64(target)), thousands(int64(ref))),
		verdict:  check(v/floor >= want),
	}
}

// runConcurrent times single-job submits from many clients at once, and a lone
// client's submit latency.
func runConcurrent(ctx context.Context, b *bench, f *floors) ([]row, error) {
	d, err := pausedDaemon(ctx, b, "concurrent")
	if err != nil {
		return nil, err
	}
	defer d.stop()
	var rows []row
	commitRate := float64(time.Second) / float64(f.boltCommit)
	for _, n := range []int{8, 16} {
		v, commits, cpu, err := concurrentSubmits(ctx, d, n, b.opts.size.concurrentJobs)
		if err != nil {
			return rows, err
		}
		jobs := b.opts.size.concurrentJobs
		rows = append(rows, row{
			figure:   fmt.Sprintf("concurrent submit, %d clients", n),
			value:    rate(v, "jobs/s"),
			baseline: "1 job per bbolt commit " + rate(commitRate, "jobs/s"),
			ratio:    v / commitRate,
			target:   ">= 10,000 jobs/s",
			verdict:  check(v >= targetConcurrent),
			note: fmt.Sprintf("%d jobs; %d commits (%.1f jobs per commit); spoold CPU %s (%.1f µs/job)",
				jobs, commits, float64(jobs)/float64(max(commits, 1)), ms(cpu), float64(cpu/time.Microsecond)/float64(jobs)),
		}, refRow(fmt.Sprintf("concurrent submit, %d clients", n), v, "bbolt 64 writers", f.boltWriters, targetConcurrent, refBoltWriters))
	}

	// A lone client: latency of each submit.
	c, err := d.dial(ctx)
	if err != nil {
		return rows, err
	}
	defer c.Close()
	spec := execSpec(benchQueue, "true")
	var lat durations
	c0, _ := d.commits()
	for range b.opts.size.loneN {
		t := time.Now()
		if _, err := c.Submit(ctx, rpc.SubmitParams{Job: &spec}); err != nil {
			return rows, fmt.Errorf("lone submit: %w", err)
		}
		lat = append(lat, time.Since(t))
	}
	c1, _ := d.commits()
	p50 := lat.pct(50)
	limit := f.boltCommit + time.Millisecond
	rows = append(rows, row{
		figure:   "lone client submit latency, p50",
		value:    ms(p50),
		baseline: "bbolt commit " + ms(f.boltCommit),
		ratio:    float64(f.boltCommit) / float64(p50),
		target:   "<= commit + 1 ms (" + ms(limit) + ")",
		verdict:  check(p50 <= limit),
		note: fmt.Sprintf("%d submits; p99 %s (bbolt commit p99 %s); %d commits, each on its caller's goroutine (no hand-off to a writer)",
			b.opts.size.loneN, ms(lat.pct(99)), ms(f.boltCommit99), c1-c0),
	})
	return rows, nil
}

// concurrentSubmits submits total single jobs from n clients, each on its own
// connection, and returns jobs/s, the commits and the daemon's CPU time.
func concurrentSubmits(ctx context.Context, d *daemon, n, total int) (float64, uint64, time.Duration, error) {
	clients := make([]*client.Client, n)
	for i := range clients {
		c, err := d.dial(ctx)
		if err != nil {
			return 0, 0, 0, err
		}
		defer c.Close()
		clients[i] = c
	}
	per := total / n
	spec := execSpec(benchQueue, "true")
	// Warm each connection up.
	for _, c := range clients {
		if _, err := c.Submit(ctx, rpc.SubmitParams{Job: &spec}); err != nil {
			return 0, 0, 0, fmt.Errorf("concurrent submit: %w", err)
		}
	}
	c0, _ := d.commits()
	cpu0, _ := cpuTime(d.pid())
	var wg sync.WaitGroup
	errs := make(chan error, n)
	startLine := make(chan struct{})
	for _, c := range clients {
		wg.Add(1)
		go func() {
			defer wg.Done()
			<-startLine
			for range per {
				if _, err := c.Submit(ctx, rpc.SubmitParams{Job: &spec}); err != nil {
					errs <- err
					return
				}
			}
		}()
	}
	t := time.Now()
	close(startLine)
	wg.Wait()
	el := time.Since(t)
	close(errs)
	if err := <-errs; err != nil {
		return 0, 0, 0, fmt.Errorf("concurrent submit: %w", err)
	}
	c1, _ := d.commits()
	cpu1, _ := cpuTime(d.pid())
	return perSec(per*n, el), c1 - c0, cpu1 - cpu0, nil
}
