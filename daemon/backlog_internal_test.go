package daemon

import (
	"context"
	"path/filepath"
	"testing"
	"time"

	"github.com/matryer/is"

	"spool/rpc"
	"spool/store"
)

// TestBacklogHoldsNoSpecs checks that past the first maxHeldSpecs, a queued job
// in memory holds no spec (its environment can be kilobytes, times every job of
// a backlog), and that every job still runs with its spec once it starts, after
// a restart too.
func TestBacklogHoldsNoSpecs(t *testing.T) {
	is := is.New(t)
	dir := t.TempDir()
	run := func(fn func(d *Daemon)) {
		st, err := store.Open(filepath.Join(dir, "spool.db"), store.Options{})
		is.NoErr(err)
		d, err := New(Config{Store: st, StateDir: dir, Home: dir, MaxParallel: 8, KillGrace: time.Second})
		is.NoErr(err)
		ctx, cancel := context.WithCancel(context.Background())
		done := make(chan error, 1)
		go func() { done <- d.Run(ctx) }()
		<-d.Ready()
		fn(d)
		cancel()
		is.NoErr(<-done)
		is.NoErr(st.Close())
	}
	env := map[string]string{"BIG": "value"}
	spec := rpc.Spec{Queue: "held", Env: env, Steps: []rpc.Step{{Shell: &rpc.ShellStep{Script: `echo "$BIG"`}}}}
	var ids []int64
	held := true
	run(func(d *Daemon) {
		_, err := d.QueueSet(context.Background(), rpc.QueueSetParams{Name: "held", Paused: &held})
		is.NoErr(err)
		specs := make([]rpc.Spec, maxHeldSpecs+100)
		for i := range specs {
			specs[i] = spec
		}
		res, err := d.Submit(context.Background(), rpc.SubmitParams{Jobs: specs})
		is.NoErr(err)
		for _, j := range res.Jobs {
			ids = append(ids, j.ID)
		}
		is.Equal(heldSpecs(d, ids), maxHeldSpecs) // the first ones keep their spec, no more
	})
	run(func(d *Daemon) {
		is.Equal(heldSpecs(d, ids), maxHeldSpecs) // nor after a restart
		resume := false
		_, err := d.QueueSet(context.Background(), rpc.QueueSetParams{Name: "held", Paused: &resume})
		is.NoErr(err)
		for _, id := range ids {
			j, err := d.Wait(context.Background(), rpc.WaitParams{ID: id, Timeout: rpc.Duration(30 * time.Second)})
			is.NoErr(err)
			is.Equal(j.State, rpc.StateSucceeded) // it ran
			is.Equal(string(j.Result), `"value"`) // with its spec's environment
		}
	})
}

// heldSpecs counts the jobs of ids queued in memory with their spec, checking that
// every one of them is in memory.
func heldSpecs(d *Daemon, ids []int64) int {
	d.mu.Lock()
	defer d.mu.Unlock()
	n := 0
	for _, id := range ids {
		js := d.jobs[id]
		if js == nil {
			return -1
		}
		if js.rec.Spec != nil {
			n++
		}
	}
	if n != d.specsHeld {
		return -2
	}
	return n
}
