package store_test

import (
	"context"
	"fmt"
	"path/filepath"
	"testing"
	"time"

	"spool/rpc"
	"spool/store"
)

// benchStore opens a store for a benchmark, with syncing as in production.
func benchStore(b *testing.B, opts store.Options) *store.Store {
	b.Helper()
	s, err := store.Open(filepath.Join(b.TempDir(), "spool.db"), opts)
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { s.Close() })
	return s
}

// report adds jobs/s and commits per op to the benchmark's output.
func report(b *testing.B, s *store.Store, commits0 uint64, jobs int) {
	b.ReportMetric(float64(jobs)/b.Elapsed().Seconds(), "jobs/s")
	b.ReportMetric(float64(s.Commits()-commits0)/float64(b.N), "commits/op")
}

func BenchmarkSubmitSingle(b *testing.B) {
	s := benchStore(b, store.Options{})
	ctx := context.Background()
	nj := []rpc.NewJob{job("bench", time.Now())}
	c0 := s.Commits()
	b.ResetTimer()
	for b.Loop() {
		if _, _, err := s.Submit(ctx, nj); err != nil {
			b.Fatal(err)
		}
	}
	report(b, s, c0, b.N)
}

func BenchmarkSubmitParallel(b *testing.B) {
	s := benchStore(b, store.Options{})
	ctx := context.Background()
	c0 := s.Commits()
	b.SetParallelism(8)
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		nj := []rpc.NewJob{job("bench", time.Now())}
		for pb.Next() {
			if _, _, err := s.Submit(ctx, nj); err != nil {
				b.Error(err)
				return
			}
		}
	})
	report(b, s, c0, b.N)
}

func BenchmarkSubmitBatch1000(b *testing.B) {
	s := benchStore(b, store.Options{})
	ctx := context.Background()
	nj := make([]rpc.NewJob, 1000)
	for i := range nj {
		nj[i] = job(fmt.Sprint(i), time.Now())
		nj[i].Field = fmt.Sprintf("jobs[%d]", i)
	}
	c0 := s.Commits()
	b.ResetTimer()
	for b.Loop() {
		if _, _, err := s.Submit(ctx, nj); err != nil {
			b.Fatal(err)
		}
	}
	report(b, s, c0, 1000*b.N)
}

func BenchmarkGet(b *testing.B) {
	const stored = 100000
	s := benchStore(b, store.Options{NoSync: true})
	ctx := context.Background()
	nj := make([]rpc.NewJob, 10000)
	for i := range nj {
		nj[i] = job(fmt.Sprint(i), time.Now())
	}
	for range stored / len(nj) {
		if _, _, err := s.Submit(ctx, nj); err != nil {
			b.Fatal(err)
		}
	}
	b.ResetTimer()
	i := int64(0)
	for b.Loop() {
		i = i*7919%stored + 1
		if _, err := s.Get(ctx, i); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkPrune100k(b *testing.B) {
	const n = 100000
	ctx := context.Background()
	now := time.Now()
	nj := make([]rpc.NewJob, 10000)
	for i := range nj {
		nj[i] = finalJob(fmt.Sprint(i), now.Add(-time.Hour))
	}
	for b.Loop() {
		b.StopTimer()
		s, err := store.Open(filepath.Join(b.TempDir(), "spool.db"), store.Options{})
		if err != nil {
			b.Fatal(err)
		}
		for range n / len(nj) {
			if _, _, err := s.Submit(ctx, nj); err != nil {
				b.Fatal(err)
			}
		}
		b.StartTimer()
		ids, _, err := s.Prune(ctx, nil, now, now)
		if err != nil || len(ids) != n {
			b.Fatal(len(ids), err)
		}
		b.StopTimer()
		s.Close()
		b.StartTimer()
	}
}
