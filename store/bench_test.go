package store_test

import (
	"context"
	"fmt"
	"path/filepath"
	"testing"
	"time"

	"spool/daemon"
	"spool/rpc"
	"spool/rpc/machine"
	"spool/store"
	"spool/store/storetest"
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

// The daemon over a real store, in process: what a job costs the engine, without
// the socket. Profile with
//
//	go test -run '^$' -bench Daemon -cpuprofile cpu.out ./store/
//	go tool pprof -top store.test cpu.out

// benchDaemon runs a daemon over a synced store in a temp folder until the
// benchmark ends.
func benchDaemon(b *testing.B, maxParallel int) (*daemon.Daemon, *store.Store) {
	b.Helper()
	dir := b.TempDir()
	s := benchStore(b, store.Options{})
	d, err := daemon.New(daemon.Config{Store: s, StateDir: dir, MaxParallel: maxParallel, Home: dir})
	if err != nil {
		b.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- d.Run(ctx) }()
	b.Cleanup(func() {
		cancel()
		<-done
	})
	<-d.Ready()
	return d, s
}

// runJobs submits specs in one call and waits, through a watch opened first,
// until every one is final.
func runJobs(b *testing.B, d *daemon.Daemon, specs []rpc.Spec) {
	b.Helper()
	ctx := context.Background()
	w, err := d.Watch(ctx, rpc.WatchParams{})
	if err != nil {
		b.Fatal(err)
	}
	defer w.Close()
	if _, err := d.Submit(ctx, rpc.SubmitParams{Jobs: specs}); err != nil {
		b.Fatal(err)
	}
	for final := 0; final < len(specs); {
		ev, err := w.Next(ctx)
		if err != nil {
			b.Fatal(err)
		}
		switch ev.Type {
		case rpc.EventSucceeded, rpc.EventFailed, rpc.EventCancelled:
			if ev.Type != rpc.EventSucceeded {
				b.Fatalf("job %d: %s: %s", ev.Job, ev.Type, ev.Error)
			}
			final++
		}
	}
}

// benchJobs times batches of n jobs made by spec at maxParallel.
func benchJobs(b *testing.B, maxParallel, n int, spec rpc.Spec) {
	benchJobsBeside(b, maxParallel, n, spec, 0)
}

// benchJobsBeside is benchJobs with held jobs queued first in a paused queue.
func benchJobsBeside(b *testing.B, maxParallel, n int, spec rpc.Spec, held int) {
	d, s := benchDaemon(b, maxParallel)
	if held > 0 {
		holdJobs(b, d, held)
	}
	specs := make([]rpc.Spec, n)
	for i := range specs {
		specs[i] = spec
	}
	c0 := s.Commits()
	b.ResetTimer()
	for b.Loop() {
		runJobs(b, d, specs)
	}
	b.ReportMetric(float64(n*b.N)/b.Elapsed().Seconds(), "jobs/s")
	b.ReportMetric(float64(s.Commits()-c0)/float64(n*b.N), "commits/job")
}

// BenchmarkDaemonSleepJobs: 1,000 jobs of one sleep 1ms step at --max-parallel 256.
func BenchmarkDaemonSleepJobs(b *testing.B) {
	benchJobs(b, 256, 1000, rpc.Spec{Steps: []rpc.Step{{Sleep: &rpc.SleepStep{Duration: rpc.Duration(time.Millisecond)}}}})
}

// BenchmarkDaemonTrueJobs: 200 jobs of one exec `true` step at --max-parallel 2.
func BenchmarkDaemonTrueJobs(b *testing.B) {
	benchJobs(b, 2, 200, rpc.Spec{Steps: []rpc.Step{{Exec: &rpc.ExecStep{Argv: []string{"true"}}}}})
}

// BenchmarkDaemonSubmitBatch1000: job.submit of 1,000 jobs into a paused queue,
// in process: the daemon's cost above the store's (BenchmarkSubmitBatch1000).
func BenchmarkDaemonSubmitBatch1000(b *testing.B) {
	d, s := benchDaemon(b, 2)
	ctx := context.Background()
	paused := true
	if _, err := d.QueueSet(ctx, rpc.QueueSetParams{Name: "paused", Paused: &paused}); err != nil {
		b.Fatal(err)
	}
	specs := make([]rpc.Spec, 1000)
	for i := range specs {
		specs[i] = rpc.Spec{Queue: "paused", Steps: []rpc.Step{{Exec: &rpc.ExecStep{Argv: []string{"true"}}}}}
	}
	c0 := s.Commits()
	b.ResetTimer()
	for b.Loop() {
		if _, err := d.Submit(ctx, rpc.SubmitParams{Jobs: specs}); err != nil {
			b.Fatal(err)
		}
	}
	report(b, s, c0, 1000*b.N)
}

// BenchmarkDaemonTrueJobsHeld: BenchmarkDaemonTrueJobs beside a paused queue that
// holds a backlog of queued jobs: what a backlog adds to the cost of each job that
// runs (spoolbench's held figure, in process). A -cpuprofile covers the filling
// of the backlog too; the jobs' own share is under daemon.(*Daemon).runJob and the
// garbage collector's.
func BenchmarkDaemonTrueJobsHeld(b *testing.B) {
	for _, held := range []int{0, 100_000, 1_000_000} {
		b.Run(fmt.Sprintf("held=%d", held), func(b *testing.B) {
			benchJobsBeside(b, 2, 200, rpc.Spec{Steps: []rpc.Step{{Exec: &rpc.ExecStep{Argv: []string{"true"}}}}}, held)
		})
	}
}

// BenchmarkClaim: one job's cycle through the store, a Claim of one job and the
// Apply that finishes it, beside 0 or 1,000,000 queued jobs held in a paused
// queue (with a higher priority than the active jobs). The held jobs have their
// own bucket of claimable jobs, which a claim looks past: its cost must not grow
// with them, beyond the depth of the trees every job is in (jobs, by state,
// events). claim-ns/op is the Claim alone; sync syncs as in production, nosync
// shows the work without the disk's flush.
func BenchmarkClaim(b *testing.B) {
	for _, held := range []int{0, 1_000_000} {
		b.Run(fmt.Sprintf("held=%d", held), func(b *testing.B) {
			path := filepath.Join(b.TempDir(), "spool.db")
			fillHeld(b, path, held)
			b.Run("sync", func(b *testing.B) { benchClaim(b, path, store.Options{}) })
			b.Run("nosync", func(b *testing.B) { benchClaim(b, path, store.Options{NoSync: true}) })
		})
	}
}

// holdJobs submits n `true` jobs to a paused queue of d, rpc.MaxBatch to a call.
func holdJobs(b *testing.B, d *daemon.Daemon, n int) {
	ctx := context.Background()
	paused := true
	if _, err := d.QueueSet(ctx, rpc.QueueSetParams{Name: "held", Paused: &paused}); err != nil {
		b.Fatal(err)
	}
	backlog := make([]rpc.Spec, rpc.MaxBatch)
	for i := range backlog {
		backlog[i] = rpc.Spec{Queue: "held", Steps: []rpc.Step{{Exec: &rpc.ExecStep{Argv: []string{"true"}}}}}
	}
	for left := n; left > 0; left -= len(backlog) {
		if _, err := d.Submit(ctx, rpc.SubmitParams{Jobs: backlog[:min(left, len(backlog))]}); err != nil {
			b.Fatal(err)
		}
	}
}

// fillHeld makes the database at path with held jobs in the paused queue held.
func fillHeld(b *testing.B, path string, held int) {
	ctx := context.Background()
	now := time.Now()
	s, err := store.Open(path, store.Options{NoSync: true})
	if err != nil {
		b.Fatal(err)
	}
	defer s.Close()
	if err := s.PutQueue(ctx, rpc.Queue{Name: "held", Paused: true}); err != nil {
		b.Fatal(err)
	}
	batch := make([]rpc.NewJob, 10000)
	for i := range batch {
		sp := storetest.Spec("held")
		sp.Queue = "held"
		sp.Priority = 10
		batch[i] = storetest.NewJob(fmt.Sprintf("jobs[%d]", i), sp, now)
	}
	for n := 0; n < held; n += len(batch) {
		if _, _, err := s.Submit(ctx, batch[:min(len(batch), held-n)]); err != nil {
			b.Fatal(err)
		}
	}
}

// benchClaim times claims and finishes of active jobs in the database at path.
func benchClaim(b *testing.B, path string, opts store.Options) {
	ctx := context.Background()
	now := time.Now()
	s, err := store.Open(path, opts)
	if err != nil {
		b.Fatal(err)
	}
	defer s.Close()
	o, err := s.Join(ctx, "bench", now)
	if err != nil {
		b.Fatal(err)
	}
	active := make([]rpc.NewJob, 1000)
	for i := range active {
		active[i] = storetest.NewJob(fmt.Sprintf("jobs[%d]", i), storetest.Spec("active"), now)
	}
	var claimTime time.Duration
	refills := 0
	c0 := s.Commits()
	for b.Loop() {
		t0 := time.Now()
		recs, _, err := s.Claim(ctx, o, 1, now)
		if err != nil {
			b.Fatal(err)
		}
		if len(recs) == 0 {
			b.StopTimer()
			if _, _, err := s.Submit(ctx, active); err != nil {
				b.Fatal(err)
			}
			refills++
			b.StartTimer()
			t0 = time.Now()
			if recs, _, err = s.Claim(ctx, o, 1, now); err != nil || len(recs) != 1 {
				b.Fatal(len(recs), err)
			}
		}
		claimTime += time.Since(t0)
		rec := recs[0]
		rec.Steps = append([]rpc.StepStatus(nil), rec.Steps...)
		evs := machine.StepSucceeded(&rec, 0, machine.Outcome{}, now)
		if _, err := s.Apply(ctx, []rpc.Transition{{Record: rec, From: rpc.StateRunning, Events: evs, Epoch: o.Epoch}}); err != nil {
			b.Fatal(err)
		}
	}
	b.ReportMetric(float64(claimTime.Nanoseconds())/float64(b.N), "claim-ns/op")
	b.ReportMetric(float64(s.Commits()-c0-uint64(refills))/float64(b.N), "commits/op")
}
