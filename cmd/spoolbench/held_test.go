package main

import (
	"context"
	"encoding/json"
	"io"
	"strings"
	"testing"
	"time"

	"spool/rpc"
	"spool/rpc/server"
)

// A fill call, as the client sends it, stays under the daemon's default bound on
// a message, and carries many jobs.
func TestFillBatchFits(t *testing.T) {
	spec := execSpec(benchQueue, "true")
	n := fillBatchSize(spec)
	specs := make([]rpc.Spec, n)
	for i := range specs {
		specs[i] = spec
	}
	req, err := json.Marshal(map[string]any{"jsonrpc": "2.0", "id": int64(1) << 40, "method": rpc.MethodSubmit,
		"params": rpc.SubmitParams{Jobs: specs}})
	if err != nil {
		t.Fatal(err)
	}
	if len(req) >= server.DefaultMaxMessage {
		t.Errorf("a call of %d jobs is %d bytes, over the bound of %d", n, len(req), server.DefaultMaxMessage)
	}
	if n < 1000 || n > rpc.MaxBatch {
		t.Errorf("fillBatchSize = %d, want 1,000 to %d", n, rpc.MaxBatch)
	}
}

func TestHeldFlag(t *testing.T) {
	for _, c := range []struct {
		args []string
		want int
	}{
		{nil, 1_000_000},
		{[]string{"-quick"}, 50_000},
		{[]string{"-held", "3000"}, 3000},
		{[]string{"-quick", "-held", "3000", "-only", "held,queued-memory"}, 3000},
	} {
		o, err := parseFlags(c.args, io.Discard)
		if err != nil {
			t.Fatalf("%v: %v", c.args, err)
		}
		if o.size.heldJobs != c.want {
			t.Errorf("%v: heldJobs = %d, want %d", c.args, o.size.heldJobs, c.want)
		}
	}
}

func TestBatchResultAdd(t *testing.T) {
	var sum batchResult
	for _, r := range []batchResult{
		{elapsed: time.Second, commits: 10, cpu: 3 * time.Millisecond, held: 2 * time.Millisecond, failed: 1},
		{elapsed: 3 * time.Second, commits: 30, cpu: 5 * time.Millisecond, held: 4 * time.Millisecond},
	} {
		sum.add(&r)
	}
	want := batchResult{elapsed: 4 * time.Second, commits: 40, cpu: 8 * time.Millisecond, held: 3 * time.Millisecond, failed: 1, batches: 2}
	if sum != want {
		t.Errorf("sum = %+v, want %+v", sum, want)
	}
}

// The held and queued-memory figures run end to end on small sizes, against
// real binaries.
func TestHeldFigures(t *testing.T) {
	if testing.Short() {
		t.Skip("builds spoold and runs real daemons")
	}
	o, err := parseFlags([]string{"-quick", "-held", "2000", "-dir", t.TempDir()}, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	o.size.e2eJobs = 20
	ctx := context.Background()
	b, err := newBench(ctx, o, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	defer b.close()
	for _, run := range []func(context.Context, *bench, *floors) ([]row, error){runHeld, runQueuedMemory} {
		rows, err := run(ctx, b, &floors{})
		if err != nil {
			t.Fatal(err)
		}
		for _, r := range rows {
			if r.ratio <= 0 || r.verdict == noTarget || !strings.Contains(r.figure, "2,000") {
				t.Errorf("row %+v: want a ratio and a verdict, of 2,000 queued jobs", r)
			}
		}
	}
}
