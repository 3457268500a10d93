package main

import (
	"context"
	"fmt"
	"sort"
	"strings"
	"sync"
	"syscall"
	"time"

	"spool/client"
	"spool/rpc"
)

// runWatch opens watchers of all events, each on its own connection, then submits
// jobs one at a time while they run, and measures each stored event's delivery
// latency: from its time field to when a watcher's Next returned it.
func runWatch(ctx context.Context, b *bench, f *floors) ([]row, error) {
	state, err := b.newState("watch")
	if err != nil {
		return nil, err
	}
	d, _, err := b.startDaemon(ctx, "watch", state, "--max-parallel", "2")
	if err != nil {
		return nil, err
	}
	defer d.stop()
	nw, nj := b.opts.size.watchers, b.opts.size.watchJobs

	type seen struct {
		lat    durations
		byType map[string]durations
		err    error
	}
	results := make([]seen, nw)
	var ready, wg sync.WaitGroup
	wctx, cancel := context.WithTimeout(ctx, 5*time.Minute)
	defer cancel()
	for i := range nw {
		c, err := d.dial(ctx)
		if err != nil {
			return nil, err
		}
		defer c.Close()
		w, err := c.Watch(ctx, rpc.WatchParams{})
		if err != nil {
			return nil, fmt.Errorf("watch %d: %w", i, err)
		}
		ready.Add(1)
		wg.Add(1)
		go func(r *seen, w rpc.Watcher) {
			defer wg.Done()
			defer w.Close()
			r.byType = map[string]durations{}
			final := 0
			ready.Done()
			for final < nj {
				ev, err := w.Next(wctx)
				if err != nil {
					r.err = fmt.Errorf("after %d final events: %w", final, err)
					return
				}
				now := time.Now()
				if ev.Seq == 0 {
					continue // not stored: progress, heartbeat
				}
				l := now.Sub(ev.Time)
				r.lat = append(r.lat, l)
				r.byType[ev.Type] = append(r.byType[ev.Type], l)
				switch ev.Type {
				case rpc.EventSucceeded, rpc.EventFailed, rpc.EventCancelled:
					final++
				}
			}
		}(&results[i], w)
	}
	ready.Wait()

	sub, err := client.Dial(ctx, d.socket)
	if err != nil {
		return nil, err
	}
	defer sub.Close()
	cpu0, _ := cpuTime(d.pid())
	self0 := selfCPU()
	t := time.Now()
	spec := execSpec("default", "true")
	for range nj {
		if _, err := sub.Submit(ctx, rpc.SubmitParams{Job: &spec}); err != nil {
			return nil, fmt.Errorf("watch: submit: %w", err)
		}
	}
	wg.Wait()
	el := time.Since(t)
	cpu1, _ := cpuTime(d.pid())
	self1 := selfCPU()

	var all durations
	byType := map[string]durations{}
	for i, r := range results {
		if r.err != nil {
			return nil, fmt.Errorf("watcher %d: %w", i, r.err)
		}
		all = append(all, r.lat...)
		for k, v := range r.byType {
			byType[k] = append(byType[k], v...)
		}
	}
	var types []string
	for k := range byType {
		types = append(types, k)
	}
	sort.Strings(types)
	var parts []string
	for _, k := range types {
		parts = append(parts, fmt.Sprintf("%s %s", k, ms(byType[k].pct(99))))
	}
	p99 := all.pct(99)
	return []row{{
		figure:  fmt.Sprintf("watch: %d watchers, %d jobs, delivery p99", nw, nj),
		value:   ms(p99),
		target:  "<= 10 ms",
		verdict: check(p99 <= 10*time.Millisecond),
		note: fmt.Sprintf("%s deliveries in %s; p50 %s, max %s; p99 by type: %s; spoold CPU %s, harness CPU %s",
			thousands(int64(len(all))), ms(el), ms(all.pct(50)), ms(all.pct(100)), strings.Join(parts, ", "),
			ms(cpu1-cpu0), ms(self1-self0)),
	}}, nil
}

// selfCPU is the CPU time the harness used so far.
func selfCPU() time.Duration {
	var ru syscall.Rusage
	if syscall.Getrusage(syscall.RUSAGE_SELF, &ru) != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}
