package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"go.uber.org/goleak"

	"spool/rpc"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

// hang bounds waits that only a bug would make long.
const hang = 20 * time.Second

// request is a request as the fake daemon reads it.
type request struct {
	ID     *int64          `json:"id"`
	Method string          `json:"method"`
	Params json.RawMessage `json:"params"`
}

// fakeConn is the fake daemon's end of one connection.
type fakeConn struct {
	t    *testing.T
	conn net.Conn
	mu   sync.Mutex
}

func (c *fakeConn) send(v any) {
	b, err := json.Marshal(v)
	if err != nil {
		c.t.Error(err)
		return
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	c.conn.Write(append(b, '\n'))
}

func (c *fakeConn) reply(r request, result any) {
	c.send(map[string]any{"jsonrpc": "2.0", "id": *r.ID, "result": result})
}

func (c *fakeConn) fail(r request, e *rpc.Error) {
	c.send(map[string]any{"jsonrpc": "2.0", "id": *r.ID, "error": e})
}

func (c *fakeConn) event(token string, ev map[string]any) {
	c.send(map[string]any{"jsonrpc": "2.0", "method": rpc.MethodEvent, "params": map[string]any{"token": token, "event": ev}})
}

// handler answers one request of the fake daemon.
type handler func(c *fakeConn, r request)

// fakeDaemon serves a scripted JSON-RPC daemon on a socket in a short temp folder,
// and records the requests it got.
type fakeDaemon struct {
	socket string
	mu     sync.Mutex
	reqs   []request
}

func startFake(t *testing.T, h handler) *fakeDaemon {
	t.Helper()
	dir, err := os.MkdirTemp("", "sp")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	f := &fakeDaemon{socket: filepath.Join(dir, "d.sock")}
	ln, err := net.Listen("unix", f.socket)
	if err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	var cmu sync.Mutex
	var conns []net.Conn
	wg.Go(func() {
		for {
			conn, err := ln.Accept()
			if err != nil {
				return
			}
			cmu.Lock()
			conns = append(conns, conn)
			cmu.Unlock()
			wg.Go(func() {
				defer conn.Close()
				fc := &fakeConn{t: t, conn: conn}
				sc := bufio.NewScanner(conn)
				sc.Buffer(nil, 1<<20)
				for sc.Scan() {
					var r request
					if err := json.Unmarshal(sc.Bytes(), &r); err != nil {
						t.Errorf("fake daemon: bad request %q: %v", sc.Bytes(), err)
						return
					}
					f.mu.Lock()
					f.reqs = append(f.reqs, r)
					f.mu.Unlock()
					if r.ID != nil {
						h(fc, r)
					}
				}
			})
		}
	})
	t.Cleanup(func() {
		ln.Close()
		cmu.Lock()
		for _, c := range conns {
			c.Close()
		}
		cmu.Unlock()
		wg.Wait()
	})
	return f
}

// requests returns the requests of a method the fake daemon got.
func (f *fakeDaemon) requests(method string) []request {
	f.mu.Lock()
	defer f.mu.Unlock()
	var out []request
	for _, r := range f.reqs {
		if r.Method == method {
			out = append(out, r)
		}
	}
	return out
}

// result is one run of the command line.
type result struct {
	code   int
	stdout string
	stderr string
}

// spool runs the command line in process with the given environment.
func spool(t *testing.T, env map[string]string, stdin string, args ...string) result {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), hang)
	defer cancel()
	var out, errb bytes.Buffer
	getenv := func(k string) string { return env[k] }
	code := run(ctx, args, strings.NewReader(stdin), &out, &errb, getenv)
	return result{code: code, stdout: out.String(), stderr: errb.String()}
}

// jobJSON is a job as the daemon sends it.
func jobJSON(id int64, state string, extra map[string]any) map[string]any {
	j := map[string]any{
		"id": id, "name": "", "key": nil, "queue": "default", "priority": 0, "labels": map[string]any{},
		"state": state, "waiting": nil, "submitted_at": "2026-11-30T10:00:00Z", "started_at": nil,
		"finished_at": nil, "current_step": 0, "progress": nil, "result": nil, "result_truncated": false,
		"error": "", "retry_of": nil, "template": nil,
		"steps": []any{map[string]any{"name": "step-0", "kind": "exec", "state": "pending", "attempt": 0}},
	}
	for k, v := range extra {
		j[k] = v
	}
	return j
}
