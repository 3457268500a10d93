package daemon_test

import (
	"context"
	"errors"
	"io"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"spool/daemon"
	"spool/rpc"
)

// offsetClock is the real clock moved by an offset that a test can change: timers
// that the daemon arms from it stay meaningful, and a test can jump ahead.
type offsetClock struct {
	mu  sync.Mutex
	off time.Duration
}

func (c *offsetClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return time.Now().UTC().Add(c.off)
}

// Advance moves the clock forward by d.
func (c *offsetClock) Advance(d time.Duration) {
	c.mu.Lock()
	c.off += d
	c.mu.Unlock()
}

var _ daemon.Clock = (*offsetClock)(nil)

// get reads a job, failing the test on error.
func get(t *testing.T, d *daemon.Daemon, id int64) *rpc.Job {
	t.Helper()
	j, err := d.Get(ctxT(t), rpc.GetParams{ID: id})
	if err != nil {
		t.Fatalf("get %d: %v", id, err)
	}
	return j
}

// eventually polls cond until it holds, failing the test after a generous limit
// (only to avoid a hang).
func eventually(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("gave up waiting: %s", what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// events reads a watch until it ends (done) and returns every event it gave.
func events(t *testing.T, w rpc.Watcher) []rpc.Event {
	t.Helper()
	var out []rpc.Event
	for {
		ev, err := w.Next(ctxT(t))
		if errors.Is(err, io.EOF) {
			return out
		}
		if err != nil {
			t.Fatalf("watch: %v", err)
		}
		out = append(out, *ev)
	}
}

// stored reads every stored event of a job from the start of the log.
func stored(t *testing.T, h *harness, id int64) []rpc.Event {
	t.Helper()
	evs, err := h.st.Events(ctxT(t), 0, 1<<20)
	if err != nil {
		t.Fatalf("read events: %v", err)
	}
	var out []rpc.Event
	for _, ev := range evs {
		if ev.Job == id {
			out = append(out, ev)
		}
	}
	return out
}

// ofType keeps the events of one type.
func ofType(evs []rpc.Event, typ string) []rpc.Event {
	var out []rpc.Event
	for _, ev := range evs {
		if ev.Type == typ {
			out = append(out, ev)
		}
	}
	return out
}

// gate is a file a step's script waits for; the test opens the gate.
type gate string

func newGate(t *testing.T, dir, name string) gate { return gate(filepath.Join(dir, name)) }

// wait is the shell code that waits for the gate.
func (g gate) wait() string { return `while [ ! -e '` + string(g) + `' ]; do sleep 0.02; done` }

func (g gate) open(t *testing.T) {
	t.Helper()
	if err := os.WriteFile(string(g), nil, 0o600); err != nil {
		t.Fatalf("open gate: %v", err)
	}
}

func dur(d time.Duration) rpc.Duration { return rpc.Duration(d) }

func errData(err error) *rpc.ErrorData {
	var e *rpc.Error
	if errors.As(err, &e) && e.Data != nil {
		return e.Data
	}
	return &rpc.ErrorData{}
}

func ctxShort(t *testing.T, d time.Duration) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), d)
	t.Cleanup(cancel)
	return ctx
}
