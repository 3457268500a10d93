package main

import (
	"context"
	"log/slog"
	"os"
	"path/filepath"
	"sync"
	"syscall"
	"testing"
	"time"

	"spool/client"
	"spool/daemon"
	"spool/rpc"
	"spool/rpc/server"
	"spool/rpc/unixsock"
	"spool/store"
)

// BenchmarkSubmitOverSocket submits single jobs from 8 clients through the whole
// path in one process (client, socket, server, daemon, store), for profiling.
func BenchmarkSubmitOverSocket(b *testing.B) {
	ctx := b.Context()
	bd := startBenchDaemon(b)
	const clients = 8
	cs := make([]*client.Client, clients)
	for i := range cs {
		cs[i] = bd.dial(b)
	}
	spec := rpc.Spec{Queue: "held", Steps: []rpc.Step{{Exec: &rpc.ExecStep{Argv: []string{"true"}}}}}
	cpu0 := cpuTime()
	b.ResetTimer()
	var wg sync.WaitGroup
	per := b.N/clients + 1
	for _, c := range cs {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for range per {
				s := spec
				if _, err := c.Submit(ctx, rpc.SubmitParams{Job: &s}); err != nil {
					b.Error(err)
					return
				}
			}
		}()
	}
	wg.Wait()
	b.ReportMetric(float64(per*clients)/b.Elapsed().Seconds(), "jobs/s")
	b.ReportMetric(float64((cpuTime()-cpu0).Microseconds())/float64(per*clients), "cpu-µs/job")
}

// cpuTime is the CPU time this process has used, user and system: clients, server,
// daemon and store together.
func cpuTime() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// BenchmarkLoneSubmit is one client submitting one job at a time, taken apart:
// the store alone, the daemon over the store, and the whole path over the socket.
// Each op is one durable submit; ns/op is its latency.
func BenchmarkLoneSubmit(b *testing.B) {
	ctx := b.Context()
	bd := startBenchDaemon(b)
	st, d, c := bd.st, bd.d, bd.dial(b)
	spec := rpc.Spec{Queue: "held", Steps: []rpc.Step{{Exec: &rpc.ExecStep{Argv: []string{"true"}}}}}
	b.Run("store", func(b *testing.B) {
		for b.Loop() {
			s := spec
			rec := rpc.Record{Job: rpc.Job{State: rpc.StateQueued, Queue: "held", SubmittedAt: time.Now(), Spec: &s}}
			if _, _, err := st.Submit(ctx, []rpc.NewJob{{Record: rec, Event: rpc.Event{Type: rpc.EventSubmitted, State: rpc.StateQueued}}}); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("daemon", func(b *testing.B) {
		for b.Loop() {
			s := spec
			if _, err := d.Submit(ctx, rpc.SubmitParams{Job: &s}); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("socket", func(b *testing.B) {
		for b.Loop() {
			s := spec
			if _, err := c.Submit(ctx, rpc.SubmitParams{Job: &s}); err != nil {
				b.Fatal(err)
			}
		}
	})
}

// benchDaemon is a daemon over a real store, served on a socket, with a paused
// queue "held" so that submitted jobs stay queued.
type benchDaemon struct {
	st   *store.Store
	d    *daemon.Daemon
	sock string
}

// startBenchDaemon starts a benchDaemon that stops when b ends.
func startBenchDaemon(b *testing.B) *benchDaemon {
	dir, err := os.MkdirTemp("", "sb")
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { os.RemoveAll(dir) })
	st, err := store.Open(filepath.Join(dir, "spool.db"), store.Options{})
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { st.Close() })
	d, err := daemon.New(daemon.Config{Store: st, StateDir: dir, Log: slog.New(slog.DiscardHandler)})
	if err != nil {
		b.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	b.Cleanup(func() { cancel(); <-done })
	go func() { defer close(done); _ = d.Run(ctx) }()
	<-d.Ready()
	paused := true
	if _, err := d.QueueSet(ctx, rpc.QueueSetParams{Name: "held", Paused: &paused}); err != nil {
		b.Fatal(err)
	}
	sock := filepath.Join(dir, "s.sock")
	ln, err := unixsock.Listen(sock)
	if err != nil {
		b.Fatal(err)
	}
	srv := server.New(server.Config{Service: d})
	go func() { _ = srv.Serve(ctx, ln) }()
	return &benchDaemon{st: st, d: d, sock: sock}
}

// dial connects a client, closed when b ends.
func (bd *benchDaemon) dial(b *testing.B) *client.Client {
	c, err := client.Dial(b.Context(), bd.sock)
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { c.Close() })
	return c
}
