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

// TestBacklogHoldsNoSpecs checks that a queued job in memory holds no spec (its
// environment can be kilobytes, times every job of a backlog), and that the job
// still runs with its spec once it starts, after a restart too.
func TestBacklogHoldsNoSpecs(t *testing.T) {
	is := is.New(t)
	dir := t.TempDir()
	run := func(fn func(d *Daemon)) {
		st, err := store.Open(filepath.Join(dir, "spool.db"), store.Options{})
		is.NoErr(err)
		d, err := New(Config{Store: st, StateDir: dir, Home: dir, MaxParallel: 2, KillGrace: time.Second})
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
		res, err := d.Submit(context.Background(), rpc.SubmitParams{Jobs: []rpc.Spec{spec, spec, spec}})
		is.NoErr(err)
		for _, j := range res.Jobs {
			ids = append(ids, j.ID)
		}
		d.mu.Lock()
		for _, id := range ids {
			is.True(d.jobs[id] != nil)          // queued, in memory
			is.True(d.jobs[id].rec.Spec == nil) // without its spec
		}
		d.mu.Unlock()
	})
	run(func(d *Daemon) {
		d.mu.Lock()
		for _, id := range ids {
			is.True(d.jobs[id].rec.Spec == nil) // nor after a restart
		}
		d.mu.Unlock()
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
