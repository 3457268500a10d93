package postgres_test

import (
	"context"
	"encoding/json"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"spool/rpc"
	"spool/rpc/machine"
	"spool/store/postgres"
	"spool/store/postgres/pgtest"
	"spool/store/storetest"
)

// BenchmarkClaimFinish is the store's side of the cluster's throughput: 16
// workers of one handle, each claiming one job and storing its step's
// success (2 transactions a job), on a server with fsync on. b.N jobs.
func BenchmarkClaimFinish(b *testing.B) {
	ctx := context.Background()
	srv, err := pgtest.Start(ctx, pgtest.Options{Fsync: true})
	if err != nil {
		b.Skipf("no PostgreSQL: %v", err)
	}
	defer srv.Stop()
	dsn, err := srv.NewDB(ctx)
	if err != nil {
		b.Fatal(err)
	}
	s, err := postgres.Open(ctx, dsn, postgres.Options{})
	if err != nil {
		b.Fatal(err)
	}
	defer s.Close()
	o, err := s.Join(ctx, "bench", time.Now())
	if err != nil {
		b.Fatal(err)
	}
	now := time.Now()
	for left := b.N; left > 0; left -= 1000 {
		var njs []rpc.NewJob
		for range min(left, 1000) {
			njs = append(njs, storetest.NewJob("job", storetest.Spec("j"), now))
		}
		if _, _, err := s.Submit(ctx, njs); err != nil {
			b.Fatal(err)
		}
	}
	b.ResetTimer()
	var done atomic.Int64
	var wg sync.WaitGroup
	start := time.Now()
	for range 16 {
		wg.Go(func() {
			for done.Load() < int64(b.N) {
				recs, _, err := s.Claim(ctx, o, 1, time.Now())
				if err != nil {
					b.Error(err)
					return
				}
				if len(recs) == 0 {
					return
				}
				r := recs[0]
				r.Steps = slices.Clone(r.Steps)
				evs := machine.StepSucceeded(&r, r.CurrentStep, machine.Outcome{KeepResult: true, Result: json.RawMessage(`"ok"`)}, time.Now())
				if _, err := s.Apply(ctx, []rpc.Transition{{Record: r, From: rpc.StateRunning, Events: evs, Epoch: o.Epoch}}); err != nil {
					b.Error(err)
					return
				}
				done.Add(1)
			}
		})
	}
	wg.Wait()
	b.ReportMetric(float64(done.Load())/time.Since(start).Seconds(), "jobs/s")
}
