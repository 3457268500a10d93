package main

import (
	"context"
	"fmt"
	"io"
	"net"
	"sync"
	"sync/atomic"
	"time"

	"spool/rpc"
)

// memJobScript is what each job of the memory figure runs: output in several
// writes (with a character of three bytes) and progress lines, over about 50 ms.
const memJobScript = `i=0
while [ $i -lt 8 ]; do
  i=$((i+1))
  printf 'job %s line %s: the quick brown fox jumps over the lazy dog \342\202\254 0123456789abcdef\n' "$SPOOL_JOB_ID" $i
  echo "$i/8 writing" >&3
  [ $((i % 4)) -eq 0 ] && sleep 0.02
done
`

// memWatchRequest starts a watch of all events with output and heartbeats.
const memWatchRequest = `{"jsonrpc":"2.0","id":1,"method":"job.watch","params":{"output":true,"heartbeat":"1s"}}` + "\n"

// memPhase is what one phase of the memory figure measured.
type memPhase struct {
	peak  memory        // the highest RssAnon seen while the jobs ran
	after memory        // once the watchers left and the daemon settled
	read  int64         // bytes the watchers read
	took  time.Duration // from the first submit to the last job final
}

// runMemory measures the anonymous memory of a real spoold idle, while 1,000
// watchers of all events (with output) watch 1,000 jobs run, first watchers that
// read everything, then watchers that never read, and after each group left.
// Each is reported against the idle floor of the same daemon.
func runMemory(ctx context.Context, b *bench, f *floors) ([]row, error) {
	state, err := b.newState("memory")
	if err != nil {
		return nil, err
	}
	d, _, err := b.startDaemon(ctx, "memory", state, "--max-parallel", "8")
	if err != nil {
		return nil, err
	}
	defer d.stop()
	nw, nj := b.opts.size.memWatchers, b.opts.size.memJobs

	time.Sleep(time.Second)
	idle, err := readMemory(d.pid())
	if err != nil {
		return nil, err
	}
	b.logf("memory: idle %s", idle)

	readers, err := memRound(ctx, b, d, nw, nj, true)
	if err != nil {
		return nil, fmt.Errorf("memory: watchers that read: %w", err)
	}
	b.logf("memory: readers peak %s, after %s", readers.peak, readers.after)
	stuck, err := memRound(ctx, b, d, nw, nj, false)
	if err != nil {
		return nil, fmt.Errorf("memory: watchers that never read: %w", err)
	}
	b.logf("memory: non-readers peak %s, after %s", stuck.peak, stuck.after)

	base := fmt.Sprintf("idle %.1f MiB", mib(idle.Anon))
	ratio := func(m memory) float64 { return float64(idle.Anon) / float64(max(m.Anon, 1)) }
	// The bounds of rpc/README.md, "Memory bounds".
	const peakBound, afterBound = 200 << 20, 32 << 20
	what := fmt.Sprintf("%s watchers, %s jobs", thousands(int64(nw)), thousands(int64(nj)))
	return []row{
		{
			figure:   "memory: spoold RssAnon idle",
			value:    fmt.Sprintf("%.1f MiB", mib(idle.Anon)),
			baseline: base,
			ratio:    1,
			note:     fmt.Sprintf("a fresh state folder, one second after start: %s", idle),
		},
		{
			figure:   fmt.Sprintf("memory: %s reading, RssAnon peak", what),
			value:    fmt.Sprintf("%.1f MiB", mib(readers.peak.Anon)),
			baseline: base,
			ratio:    ratio(readers.peak),
			target:   fmt.Sprintf("<= %d MiB", peakBound>>20),
			verdict:  check(readers.peak.Anon <= peakBound),
			note: fmt.Sprintf("watchers of all events with output and 1s heartbeats, each on its own connection, reading all: %.0f MiB read in %s; peak %s",
				mib(readers.read), ms(readers.took), readers.peak),
		},
		{
			figure:   fmt.Sprintf("memory: after %s readers left", thousands(int64(nw))),
			value:    fmt.Sprintf("%.1f MiB", mib(readers.after.Anon)),
			baseline: base,
			ratio:    ratio(readers.after),
			target:   fmt.Sprintf("<= idle + %d MiB", afterBound>>20),
			verdict:  check(readers.after.Anon <= idle.Anon+afterBound),
			note:     fmt.Sprintf("settled after they closed: %s", readers.after),
		},
		{
			figure:   fmt.Sprintf("memory: %s never reading, RssAnon peak", what),
			value:    fmt.Sprintf("%.1f MiB", mib(stuck.peak.Anon)),
			baseline: base,
			ratio:    ratio(stuck.peak),
			target:   fmt.Sprintf("<= %d MiB", peakBound>>20),
			verdict:  check(stuck.peak.Anon <= peakBound),
			note:     fmt.Sprintf("the same watches on connections that read nothing after the request; jobs took %s; peak %s", ms(stuck.took), stuck.peak),
		},
		{
			figure:   fmt.Sprintf("memory: after %s non-readers left", thousands(int64(nw))),
			value:    fmt.Sprintf("%.1f MiB", mib(stuck.after.Anon)),
			baseline: base,
			ratio:    ratio(stuck.after),
			target:   fmt.Sprintf("<= idle + %d MiB", afterBound>>20),
			verdict:  check(stuck.after.Anon <= idle.Anon+afterBound),
			note:     fmt.Sprintf("settled after they closed: %s", stuck.after),
		},
	}, nil
}

// memRound opens nw watchers, each on its own connection, that read everything
// (read) or nothing, submits nj jobs, samples spoold's memory until all of them
// are final, closes the watchers and waits for the daemon to settle.
func memRound(ctx context.Context, b *bench, d *daemon, nw, nj int, read bool) (memPhase, error) {
	var ph memPhase
	conns := make([]net.Conn, 0, nw)
	defer func() {
		for _, c := range conns {
			c.Close()
		}
	}()
	var readBytes atomic.Int64
	var wg sync.WaitGroup
	var dialer net.Dialer
	for i := range nw {
		c, err := dialer.DialContext(ctx, "unix", d.socket)
		if err != nil {
			return ph, fmt.Errorf("dial watcher %d: %w", i, err)
		}
		conns = append(conns, c)
		if _, err := io.WriteString(c, memWatchRequest); err != nil {
			return ph, fmt.Errorf("watch %d: %w", i, err)
		}
		if read {
			wg.Go(func() {
				n, _ := io.Copy(io.Discard, c)
				readBytes.Add(n)
			})
		}
	}
	// Every watch is registered once the daemon counts nw+1 connections;
	// the daemon's info does not say, so give the requests a moment.
	c, err := d.dial(ctx)
	if err != nil {
		return ph, err
	}
	defer c.Close()
	info, err := c.Info(ctx)
	if err != nil {
		return ph, err
	}
	final0 := finalCount(info)
	time.Sleep(500 * time.Millisecond)

	spec := rpc.Spec{Steps: []rpc.Step{{Shell: &rpc.ShellStep{Script: memJobScript}}}}
	t := time.Now()
	const batch = 100
	for left := nj; left > 0; left -= batch {
		specs := make([]rpc.Spec, min(batch, left))
		for i := range specs {
			specs[i] = spec
		}
		if _, err := c.SubmitIDs(ctx, rpc.SubmitParams{Jobs: specs}); err != nil {
			return ph, fmt.Errorf("submit: %w", err)
		}
		sample(d, &ph.peak)
	}
	deadline := time.Now().Add(10 * time.Minute)
	for {
		sample(d, &ph.peak)
		info, err := c.Info(ctx)
		if err != nil {
			return ph, err
		}
		if finalCount(info)-final0 >= nj {
			break
		}
		if time.Now().After(deadline) {
			return ph, fmt.Errorf("the jobs did not end within 10 minutes")
		}
		time.Sleep(50 * time.Millisecond)
	}
	ph.took = time.Since(t)
	// The watchers still hold events to send: keep sampling a while.
	for range 20 {
		sample(d, &ph.peak)
		time.Sleep(50 * time.Millisecond)
	}
	for _, c := range conns {
		c.Close()
	}
	conns = nil
	wg.Wait()
	ph.read = readBytes.Load()
	// Settle: the lowest reading over a few seconds after they left.
	ph.after = settle(d, 5*time.Second)
	return ph, nil
}

// sample raises peak to the daemon's memory if its RssAnon is higher.
func sample(d *daemon, peak *memory) {
	if m, err := readMemory(d.pid()); err == nil && m.Anon > peak.Anon {
		*peak = m
	}
}

// finalCount is how many jobs daemon.info counts as final.
func finalCount(info *rpc.Info) int {
	return info.Counts[rpc.StateSucceeded] + info.Counts[rpc.StateFailed] + info.Counts[rpc.StateCancelled]
}
