package daemon_test

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"testing"
	"time"

	"spool/daemon"
	"spool/rpc"
	"spool/store"
)

// TestProgressWriterHelper is not a test: BenchmarkProgressEndToEnd runs the test
// binary as a step's process with PROGRESS_LINES set, and this writes that many
// progress lines to SPOOL_PROGRESS_FD, each carrying the time it was written, far
// enough apart that none is coalesced with the next.
func TestProgressWriterHelper(t *testing.T) {
	n, err := strconv.Atoi(os.Getenv("PROGRESS_LINES"))
	if err != nil {
		t.Skip("run by BenchmarkProgressEndToEnd only")
	}
	fd, err := strconv.Atoi(os.Getenv("SPOOL_PROGRESS_FD"))
	if err != nil {
		t.Fatalf("SPOOL_PROGRESS_FD: %v", err)
	}
	f := os.NewFile(uintptr(fd), "progress")
	for i := 1; i <= n; i++ {
		time.Sleep(120 * time.Millisecond)
		fmt.Fprintf(f, "%d/%d %d\n", i, n, time.Now().UnixNano())
	}
}

// BenchmarkProgressEndToEnd measures the time from a process writing a progress
// line to its fd to a watcher receiving the progress event. One op is one line
// (written 120ms after the one before, so that coalescing does not hold it back);
// the metric is latency-ns/line, ns/op is mostly the writer's pause.
func BenchmarkProgressEndToEnd(b *testing.B) {
	dir := b.TempDir()
	st, err := store.Open(filepath.Join(dir, "spool.db"), store.Options{})
	if err != nil {
		b.Fatal(err)
	}
	defer st.Close()
	d, err := daemon.New(daemon.Config{Store: st, StateDir: dir, Home: dir})
	if err != nil {
		b.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	runCtx, stop := context.WithCancel(ctx)
	go func() { _ = d.Run(runCtx) }()
	defer func() { stop(); <-d.Done() }()
	w, err := d.Watch(ctx, rpc.WatchParams{})
	if err != nil {
		b.Fatal(err)
	}
	defer w.Close()
	spec := rpc.Spec{
		Env:   map[string]string{"PROGRESS_LINES": strconv.Itoa(b.N)},
		Steps: []rpc.Step{{Exec: &rpc.ExecStep{Argv: []string{os.Args[0], "-test.run=^TestProgressWriterHelper$"}}}},
	}
	res, err := d.Submit(ctx, rpc.SubmitParams{Job: &spec})
	if err != nil {
		b.Fatal(err)
	}
	id := res.Job.ID
	var total, worst time.Duration
	b.ResetTimer()
	for got := 0; got < b.N; {
		ev, err := w.Next(ctx)
		if err != nil {
			b.Fatal(err)
		}
		if ev.Type != rpc.EventProgress || ev.Job != id {
			continue
		}
		now := time.Now()
		ns, err := strconv.ParseInt(ev.Progress.Message, 10, 64)
		if err != nil {
			b.Fatalf("progress message %q: %v", ev.Progress.Message, err)
		}
		lat := now.Sub(time.Unix(0, ns))
		total += lat
		worst = max(worst, lat)
		got++
	}
	b.StopTimer()
	j, err := d.Wait(ctx, rpc.WaitParams{ID: id})
	if err != nil || j.State != rpc.StateSucceeded {
		b.Fatalf("writer job: %v %+v", err, j)
	}
	b.ReportMetric(float64(total.Nanoseconds())/float64(b.N), "latency-ns/line")
	b.ReportMetric(float64(worst.Nanoseconds()), "worst-ns")
}
