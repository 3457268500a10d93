package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"spool/rpc"
	"spool/store"
)

// fillBatch is how many final jobs one store transaction writes when filling.
const fillBatch = 10000

// fill writes n final (succeeded) jobs into a new database in stateDir through
// the store package, as a daemon would have left them, in big unsynced batches.
// Each job gets its submitted event only: the event log is smaller than a real
// history's.
func fill(ctx context.Context, stateDir string, n int) error {
	st, err := store.Open(filepath.Join(stateDir, "spool.db"), store.Options{NoSync: true, Timeout: 5 * time.Second})
	if err != nil {
		return fmt.Errorf("fill: %w", err)
	}
	spec := execSpec("default", "true")
	spec.Dir = "/"
	if err := rpc.NormalizeSpec("job", &spec); err != nil {
		return fmt.Errorf("fill: %w", err)
	}
	zero := 0
	result := json.RawMessage(`""`)
	base := time.Now().Add(-time.Duration(n) * time.Millisecond).UTC()
	batch := make([]rpc.NewJob, 0, fillBatch)
	for i := 0; i < n; {
		batch = batch[:0]
		for ; i < n && len(batch) < fillBatch; i++ {
			sub := base.Add(time.Duration(i) * time.Millisecond)
			started, finished := sub.Add(100*time.Microsecond), sub.Add(900*time.Microsecond)
			rec := rpc.Record{Job: rpc.Job{
				Name: fmt.Sprintf("history-%d", i), Queue: "default", Labels: map[string]string{}, After: []int64{},
				State: rpc.StateSucceeded, SubmittedAt: sub, StartedAt: &started, FinishedAt: &finished,
				Steps: []rpc.StepStatus{{Name: spec.Steps[0].Name, Kind: rpc.KindExec, State: rpc.StateSucceeded,
					Attempt: 1, StartedAt: &started, FinishedAt: &finished, ExitCode: &zero, Result: result}},
				Result: result, Spec: &spec,
			}}
			batch = append(batch, rpc.NewJob{Record: rec, Field: "job",
				Event: rpc.Event{Time: sub, Type: rpc.EventSubmitted, State: rpc.StateQueued}})
		}
		if _, _, err := st.Submit(ctx, batch); err != nil {
			st.Close()
			return fmt.Errorf("fill: %w", err)
		}
	}
	if err := st.Close(); err != nil {
		return fmt.Errorf("fill: %w", err)
	}
	return nil
}

// runScale measures job.get, job.list, restart and RSS with many final jobs
// stored, each against the same daemon on an empty state folder.
func runScale(ctx context.Context, b *bench, f *floors) ([]row, error) {
	n := b.opts.size.scaleJobs

	// The baseline: an empty state folder.
	empty, err := b.newState("scale-empty")
	if err != nil {
		return nil, err
	}
	d0, ready0, err := b.startDaemon(ctx, "scale-empty", empty)
	if err != nil {
		return nil, err
	}
	mem0, _ := readMemory(d0.pid())
	d0.stop()

	state, err := b.newState("scale")
	if err != nil {
		return nil, err
	}
	b.logf("scale: storing %s final jobs", thousands(int64(n)))
	t := time.Now()
	if err := fill(ctx, state, n); err != nil {
		return nil, err
	}
	fillTime := time.Since(t)
	var dbSize int64
	if fi, err := os.Stat(filepath.Join(state, "spool.db")); err == nil {
		dbSize = fi.Size()
	}
	b.logf("scale: stored in %s (%.0f MiB); starting spoold on them", fillTime.Round(time.Millisecond), mib(dbSize))

	d, ready, err := b.startDaemon(ctx, "scale", state)
	if err != nil {
		return nil, err
	}
	defer d.stop()
	mem1, _ := readMemory(d.pid())
	c, err := d.dial(ctx)
	if err != nil {
		return nil, err
	}
	defer c.Close()
	info, err := c.Info(ctx)
	if err != nil {
		return nil, fmt.Errorf("scale: %w", err)
	}
	if got := info.Counts[rpc.StateSucceeded]; got != n {
		return nil, fmt.Errorf("scale: the daemon counts %d succeeded jobs, %d were stored", got, n)
	}

	// job.get of random ids.
	rng := rand.New(rand.NewPCG(1, 2))
	var gets durations
	faults0, faultsOK := pageFaults(d.pid())
	for range b.opts.size.scaleGets {
		id := rng.Int64N(int64(n)) + 1
		t := time.Now()
		j, err := c.Get(ctx, rpc.GetParams{ID: id})
		if err != nil {
			return nil, fmt.Errorf("scale: job.get %d: %w", id, err)
		}
		gets = append(gets, time.Since(t))
		if j.ID != id {
			return nil, fmt.Errorf("scale: job.get %d answered job %d", id, j.ID)
		}
	}

	faults1, ok := pageFaults(d.pid())
	faultsOK = faultsOK && ok

	// job.list, first page, newest first; and filtered by state.
	list := func(p rpc.ListParams) (durations, error) {
		var lat durations
		for range b.opts.size.scaleLists {
			t := time.Now()
			res, err := c.List(ctx, p)
			if err != nil {
				return nil, fmt.Errorf("scale: job.list: %w", err)
			}
			lat = append(lat, time.Since(t))
			if len(res.Jobs) == 0 {
				return nil, fmt.Errorf("scale: job.list answered no job")
			}
		}
		return lat, nil
	}
	lists, err := list(rpc.ListParams{})
	if err != nil {
		return nil, err
	}
	byState, err := list(rpc.ListParams{State: []rpc.State{rpc.StateSucceeded}, Order: "asc"})
	if err != nil {
		return nil, err
	}
	mem2, _ := readMemory(d.pid())

	// A second restart, on a warm state folder.
	d.stop()
	d2, ready2, err := b.startDaemon(ctx, "scale-again", state)
	if err != nil {
		return nil, err
	}
	d2.stop()

	stored := thousands(int64(n))
	getNote := fmt.Sprintf("%d random ids from one client; p50 %s; stored in %s (%.0f MiB database, fill %s jobs/s unsynced)",
		len(gets), ms(gets.pct(50)), fillTime.Round(time.Millisecond), mib(dbSize), thousands(int64(perSec(n, fillTime))))
	if faultsOK {
		// Major faults are reads from the disk: pages of the database that
		// the system evicted from its page cache.
		getNote += fmt.Sprintf("; spoold page faults during the gets: %d minor, %d major",
			faults1.minor-faults0.minor, faults1.major-faults0.major)
	}
	return []row{
		{
			figure:  fmt.Sprintf("scale (%s final): job.get p99", stored),
			value:   ms(gets.pct(99)),
			target:  "<= 2 ms",
			verdict: check(gets.pct(99) <= 2*time.Millisecond),
			note:    getNote,
		},
		{
			figure:  fmt.Sprintf("scale (%s final): job.list first page, p50", stored),
			value:   ms(lists.pct(50)),
			target:  "<= 10 ms",
			verdict: check(lists.pct(50) <= 10*time.Millisecond),
			note: fmt.Sprintf("100 jobs, newest first, %d times: p99 %s; state=succeeded oldest first: p50 %s, p99 %s",
				len(lists), ms(lists.pct(99)), ms(byState.pct(50)), ms(byState.pct(99))),
		},
		{
			figure:   fmt.Sprintf("scale (%s final): restart to ready", stored),
			value:    ms(ready),
			baseline: "empty state folder " + ms(ready0),
			ratio:    float64(ready0) / float64(ready),
			target:   "<= 1 s",
			verdict:  check(ready <= time.Second),
			note:     fmt.Sprintf("process start to the first daemon.info answer; a second restart: %s", ms(ready2)),
		},
		{
			// The daemon's own memory: bbolt's map of the file is page cache,
			// which the kernel drops when it needs the room.
			figure:   fmt.Sprintf("scale (%s final): spoold RssAnon", stored),
			value:    fmt.Sprintf("%.1f MiB", mib(mem2.Anon)),
			baseline: fmt.Sprintf("empty state folder %.1f MiB", mib(mem0.Anon)),
			ratio:    float64(mem0.Anon) / float64(max(mem2.Anon, 1)),
			target:   "<= 100 MiB",
			verdict:  check(mem2.Anon <= 100<<20),
			note: fmt.Sprintf("after the gets and lists: %s; right after start: %s; empty: %s (RssFile is bbolt's map of the file: page cache the kernel can drop)",
				mem2, mem1, mem0),
		},
	}, nil
}

// faults counts the page faults of a process.
type faults struct{ minor, major int64 }

// pageFaults reads the page faults of process pid so far, from /proc; ok is
// false where there is none.
func pageFaults(pid int) (faults, bool) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return faults{}, false
	}
	// The command name may hold spaces: the fields start after its ')', with
	// the state (field 3); minflt is field 10 and majflt field 12.
	i := bytes.LastIndexByte(b, ')')
	if i < 0 {
		return faults{}, false
	}
	f := strings.Fields(string(b[i+1:]))
	if len(f) < 10 {
		return faults{}, false
	}
	minor, err1 := strconv.ParseInt(f[7], 10, 64)
	major, err2 := strconv.ParseInt(f[9], 10, 64)
	if err1 != nil || err2 != nil {
		return faults{}, false
	}
	return faults{minor: minor, major: major}, true
}
