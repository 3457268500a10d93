package client_test

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/matryer/is"
	"go.uber.org/goleak"

	"spool/client"
	"spool/rpc"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

// hang bounds waits that only a bug would make long.
const hang = 10 * time.Second

// request is a request (or notification) as the fake server reads it.
type request struct {
	JSONRPC string          `json:"jsonrpc"`
	ID      *int64          `json:"id"`
	Method  string          `json:"method"`
	Params  json.RawMessage `json:"params"`
}

// fakeServer is a JSON-RPC peer that the test scripts by hand: it reads the client's
// lines and writes whatever the test tells it to.
type fakeServer struct {
	t      *testing.T
	socket string
	ln     net.Listener
	conns  chan *fakeConn
}

type fakeConn struct {
	t    *testing.T
	conn net.Conn
	r    *bufio.Reader
	mu   sync.Mutex
}

// shortDir is a temp folder with a path short enough for a Unix socket.
func shortDir(t *testing.T) string {
	t.Helper()
	dir, err := os.MkdirTemp("", "sp")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	return dir
}

func newFakeServer(t *testing.T) *fakeServer {
	t.Helper()
	socket := filepath.Join(shortDir(t), "s.sock")
	ln, err := net.Listen("unix", socket)
	if err != nil {
		t.Fatal(err)
	}
	f := &fakeServer{t: t, socket: socket, ln: ln, conns: make(chan *fakeConn, 4)}
	done := make(chan struct{})
	go func() {
		defer close(done)
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			f.conns <- &fakeConn{t: t, conn: c, r: bufio.NewReader(c)}
		}
	}()
	t.Cleanup(func() {
		ln.Close()
		<-done
		for {
			select {
			case c := <-f.conns:
				c.conn.Close()
			default:
				return
			}
		}
	})
	return f
}

// dial connects a client and returns it with the server's end of the connection.
func (f *fakeServer) dial() (*client.Client, *fakeConn) {
	f.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), hang)
	defer cancel()
	c, err := client.Dial(ctx, f.socket)
	if err != nil {
		f.t.Fatalf("dial: %v", err)
	}
	select {
	case sc := <-f.conns:
		f.t.Cleanup(func() { sc.conn.Close() })
		f.t.Cleanup(func() { c.Close() })
		return c, sc
	case <-time.After(hang):
		f.t.Fatal("no connection accepted")
	}
	return nil, nil
}

// read reads the next message the client wrote.
func (s *fakeConn) read() request {
	s.t.Helper()
	s.conn.SetReadDeadline(time.Now().Add(hang))
	line, err := s.r.ReadBytes('\n')
	if err != nil {
		s.t.Fatalf("server read: %v", err)
	}
	var r request
	if err := json.Unmarshal(line, &r); err != nil {
		s.t.Fatalf("server decode %q: %v", line, err)
	}
	return r
}

// send writes one message (any JSON value) and a newline.
func (s *fakeConn) send(v any) {
	s.t.Helper()
	b, err := json.Marshal(v)
	if err != nil {
		s.t.Fatal(err)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if _, err := s.conn.Write(append(b, '\n')); err != nil {
		s.t.Fatalf("server write: %v", err)
	}
}

func (s *fakeConn) reply(id int64, result any) {
	s.t.Helper()
	s.send(map[string]any{"jsonrpc": "2.0", "id": id, "result": result})
}

func (s *fakeConn) fail(id int64, code int, message string, data any) {
	s.t.Helper()
	s.send(map[string]any{"jsonrpc": "2.0", "id": id, "error": map[string]any{"code": code, "message": message, "data": data}})
}

func (s *fakeConn) event(token string, ev map[string]any) {
	s.t.Helper()
	s.send(map[string]any{"jsonrpc": "2.0", "method": "job.event", "params": map[string]any{"token": token, "event": ev}})
}

// async runs f in a goroutine and returns a channel for its error.
func async(f func() error) <-chan error {
	ch := make(chan error, 1)
	go func() { ch <- f() }()
	return ch
}

func recv[T any](t *testing.T, ch <-chan T) T {
	t.Helper()
	select {
	case v := <-ch:
		return v
	case <-time.After(hang):
		t.Fatal("nothing arrived")
	}
	var zero T
	return zero
}

func TestCallResponse(t *testing.T) {
	is := is.New(t)
	f := newFakeServer(t)
	c, s := f.dial()

	var job *rpc.Job
	done := async(func() (err error) {
		job, err = c.Get(context.Background(), rpc.GetParams{ID: 42})
		return err
	})
	r := s.read()
	is.Equal(r.JSONRPC, "2.0")              // the request is JSON-RPC 2.0
	is.Equal(r.Method, rpc.MethodGet)       // the method is job.get
	is.True(r.ID != nil)                    // a request carries an id
	is.Equal(string(r.Params), `{"id":42}`) // the params are the protocol's
	s.reply(*r.ID, map[string]any{"id": 42, "state": "running", "name": "build",
		"future_field": []int{1, 2}, "steps": []any{map[string]any{"name": "a", "kind": "exec", "state": "odd-new-state"}}})
	is.NoErr(recv(t, done))                                  // unknown fields and states are ignored
	is.Equal(job.ID, int64(42))                              // the result is decoded
	is.Equal(job.State, rpc.StateRunning)                    // with its state
	is.Equal(job.Name, "build")                              // and its name
	is.Equal(job.Steps[0].State, rpc.State("odd-new-state")) // an unknown state is kept as it is

	// The next request gets a larger id.
	first := *r.ID
	done = async(func() error { _, err := c.QueueList(context.Background()); return err })
	r = s.read()
	is.True(*r.ID > first)           // ids increase
	is.Equal(string(r.Params), `{}`) // methods without params send {}
	s.reply(*r.ID, map[string]any{"queues": []any{}})
	is.NoErr(recv(t, done)) // the second call succeeds too
}

func TestErrorRebuilt(t *testing.T) {
	is := is.New(t)
	f := newFakeServer(t)
	c, s := f.dial()

	done := async(func() error { _, err := c.Get(context.Background(), rpc.GetParams{ID: 7}); return err })
	r := s.read()
	s.fail(*r.ID, rpc.CodeNotFound, "job 7 not found", map[string]any{"id": 7})
	err := recv(t, done)
	var e *rpc.Error
	is.True(errors.As(err, &e))                 // the error is an *rpc.Error
	is.Equal(e.Code, rpc.CodeNotFound)          // with the code
	is.Equal(e.Message, "job 7 not found")      // and the message
	is.True(e.Data != nil)                      // and the data
	is.Equal(e.Data.ID, int64(7))               // data.id is rebuilt
	is.Equal(rpc.CodeOf(err), rpc.CodeNotFound) // CodeOf sees the same code as in process

	done = async(func() error {
		_, err := c.Submit(context.Background(), rpc.SubmitParams{Job: &rpc.Spec{}})
		return err
	})
	r = s.read()
	s.fail(*r.ID, rpc.CodeInvalidParams, "invalid params", map[string]any{"field": "job.steps", "reason": "required", "extra": true})
	err = recv(t, done)
	is.True(errors.As(err, &e))                                  // -32602 is an *rpc.Error too
	is.Equal(e.Data.Field, "job.steps")                          // naming the field
	is.Equal(e.Data.Reason, "required")                          // and the reason
	is.Equal(err.Error(), "invalid params: job.steps: required") // formatted as in process

	done = async(func() error { _, err := c.Info(context.Background()); return err })
	r = s.read()
	s.fail(*r.ID, rpc.CodeShuttingDown, "the daemon is shutting down", nil)
	err = recv(t, done)
	is.True(errors.As(err, &e))            // an error without data
	is.Equal(e.Code, rpc.CodeShuttingDown) // keeps its code
	is.True(e.Data == nil)                 // and has no data
}

func TestOutOfOrderResponses(t *testing.T) {
	is := is.New(t)
	f := newFakeServer(t)
	c, s := f.dial()

	const n = 5
	results := make([]chan *rpc.Job, n)
	for i := range n {
		results[i] = make(chan *rpc.Job, 1)
		go func() {
			j, err := c.Get(context.Background(), rpc.GetParams{ID: int64(100 + i)})
			if err != nil {
				t.Errorf("get %d: %v", 100+i, err)
			}
			results[i] <- j
		}()
	}
	reqs := make([]request, n)
	for i := range n {
		reqs[i] = s.read()
	}
	// Answer in reverse order: each caller must get its own job.
	for i := n - 1; i >= 0; i-- {
		var p rpc.GetParams
		is.NoErr(json.Unmarshal(reqs[i].Params, &p)) // params decode
		s.reply(*reqs[i].ID, map[string]any{"id": p.ID, "state": "queued"})
	}
	for i := range n {
		j := recv(t, results[i])
		is.True(j != nil)            // every call got an answer
		is.Equal(j.ID, int64(100+i)) // matched by id, not by order
	}
}

func TestWatchRouting(t *testing.T) {
	is := is.New(t)
	f := newFakeServer(t)
	c, s := f.dial()
	ctx := context.Background()

	var w1 rpc.Watcher
	done := async(func() (err error) { w1, err = c.Watch(ctx, rpc.WatchParams{Jobs: []int64{1}}); return err })
	r := s.read()
	is.Equal(r.Method, rpc.MethodWatch) // job.watch is sent
	var p rpc.WatchParams
	is.NoErr(json.Unmarshal(r.Params, &p)) // its params decode
	is.True(p.Token != "")                 // the client names the watch
	tok1 := p.Token
	// An event before the response must not be lost.
	s.event(tok1, map[string]any{"seq": 5, "job": 1, "type": "started"})
	s.reply(*r.ID, map[string]any{"token": tok1, "seq": 4, "store_id": "abc", "new": 1})
	is.NoErr(recv(t, done))              // the watch starts
	is.Equal(w1.Result().Seq, int64(4))  // the response is kept
	is.Equal(w1.Result().StoreID, "abc") // with the store id

	// A second watch on the same connection.
	var w2 rpc.Watcher
	done = async(func() (err error) { w2, err = c.Watch(ctx, rpc.WatchParams{}); return err })
	r = s.read()
	is.NoErr(json.Unmarshal(r.Params, &p)) // params decode
	tok2 := p.Token
	is.True(tok2 != tok1) // tokens are unique on the connection
	s.reply(*r.ID, map[string]any{"token": tok2, "seq": 5, "store_id": "abc"})
	is.NoErr(recv(t, done)) // the second watch starts

	s.event(tok2, map[string]any{"seq": 6, "job": 2, "type": "submitted", "state": "queued"})
	s.event(tok1, map[string]any{"seq": 7, "job": 1, "type": "some_future_type"})
	s.event("unknown-token", map[string]any{"seq": 8, "job": 1, "type": "started"})
	s.event(tok1, map[string]any{"seq": 9, "job": 1, "type": "succeeded", "state": "succeeded"})
	s.event(tok1, map[string]any{"type": "done"})

	var seqs []int64
	for {
		ev, err := w1.Next(ctx)
		if err == io.EOF {
			break
		}
		is.NoErr(err) // events come until done
		seqs = append(seqs, ev.Seq)
	}
	is.Equal(seqs, []int64{5, 7, 9, 0}) // in order, only this watch's, the done event last
	_, err := w1.Next(ctx)
	is.Equal(err, io.EOF) // after done, Next keeps saying EOF
	is.NoErr(w1.Close())  // closing an ended watch sends nothing and succeeds

	ev, err := w2.Next(ctx)
	is.NoErr(err)                       // the other watch has its own event
	is.Equal(ev.Seq, int64(6))          // routed by token
	is.Equal(ev.State, rpc.StateQueued) // with its fields

	// Close sends job.unwatch.
	closed := async(w2.Close)
	r = s.read()
	is.Equal(r.Method, rpc.MethodUnwatch)              // Close unwatches
	is.Equal(string(r.Params), `{"token":"`+tok2+`"}`) // naming the token
	s.reply(*r.ID, map[string]any{})
	is.NoErr(recv(t, closed)) // Close succeeds
	_, err = w2.Next(ctx)
	is.Equal(err, io.EOF) // a closed watch says EOF
}

func TestWatchNextBlocksUntilEvent(t *testing.T) {
	is := is.New(t)
	f := newFakeServer(t)
	c, s := f.dial()
	ctx := context.Background()

	var w rpc.Watcher
	done := async(func() (err error) { w, err = c.Watch(ctx, rpc.WatchParams{Token: "mine"}); return err })
	r := s.read()
	s.reply(*r.ID, map[string]any{"token": "mine", "seq": 0, "store_id": "x"})
	is.NoErr(recv(t, done)) // the watch starts with the caller's token

	next := make(chan *rpc.Event, 1)
	go func() {
		ev, err := w.Next(ctx)
		if err != nil {
			t.Errorf("next: %v", err)
		}
		next <- ev
	}()
	s.event("mine", map[string]any{"type": "progress", "job": 3, "progress": map[string]any{"done": 1, "total": 2}})
	ev := recv(t, next)
	is.Equal(ev.Type, rpc.EventProgress)   // a waiting Next gets the event
	is.Equal(*ev.Progress.Total, int64(2)) // decoded

	// A context ends a waiting Next.
	cctx, cancel := context.WithCancel(ctx)
	errc := async(func() error { _, err := w.Next(cctx); return err })
	cancel()
	is.True(errors.Is(recv(t, errc), context.Canceled)) // Next returns the context's error

	// The same token again is refused before anything is sent.
	_, err := c.Watch(ctx, rpc.WatchParams{Token: "mine"})
	is.Equal(rpc.CodeOf(err), rpc.CodeInvalidParams) // a token in use is -32602
}

func TestCancelRequest(t *testing.T) {
	is := is.New(t)
	f := newFakeServer(t)
	c, s := f.dial()

	ctx, cancel := context.WithCancel(context.Background())
	done := async(func() error { _, err := c.Wait(ctx, rpc.WaitParams{ID: 3}); return err })
	r := s.read()
	is.Equal(r.Method, rpc.MethodWait) // job.wait is sent
	cancel()
	err := recv(t, done)
	is.True(errors.Is(err, context.Canceled)) // the call returns the context's error
	n := s.read()
	is.Equal(n.Method, rpc.MethodCancelRequest)             // then $/cancelRequest is sent
	is.True(n.ID == nil)                                    // as a notification
	is.Equal(string(n.Params), `{"id":`+jsonInt(*r.ID)+`}`) // naming the request

	// The late answer is ignored, and the connection still works.
	s.fail(*r.ID, rpc.CodeCancelled, "request cancelled", nil)
	done = async(func() error { _, err := c.Get(context.Background(), rpc.GetParams{ID: 1}); return err })
	r = s.read()
	s.reply(*r.ID, map[string]any{"id": 1, "state": "queued"})
	is.NoErr(recv(t, done)) // later calls are unaffected
}

func jsonInt(i int64) string {
	b, _ := json.Marshal(i)
	return string(b)
}

func TestConnectionDrop(t *testing.T) {
	is := is.New(t)
	f := newFakeServer(t)
	c, s := f.dial()
	ctx := context.Background()

	var w rpc.Watcher
	done := async(func() (err error) { w, err = c.Watch(ctx, rpc.WatchParams{}); return err })
	r := s.read()
	var p rpc.WatchParams
	is.NoErr(json.Unmarshal(r.Params, &p)) // params decode
	s.reply(*r.ID, map[string]any{"token": p.Token, "seq": 0, "store_id": "x"})
	is.NoErr(recv(t, done)) // the watch starts

	pending := async(func() error { _, err := c.Wait(ctx, rpc.WaitParams{ID: 1}); return err })
	s.read()
	s.event(p.Token, map[string]any{"seq": 1, "job": 1, "type": "started"})
	s.conn.Close()

	err := recv(t, pending)
	is.True(errors.Is(err, client.ErrDisconnected)) // a pending call fails when the connection drops
	ev, err := w.Next(ctx)
	is.NoErr(err)              // events that arrived before the drop are delivered
	is.Equal(ev.Seq, int64(1)) // in order
	_, err = w.Next(ctx)
	is.True(errors.Is(err, client.ErrDisconnected)) // then Next reports the drop
	_, err = c.Info(ctx)
	is.True(errors.Is(err, client.ErrDisconnected)) // and so do later calls
	is.NoErr(w.Close())                             // closing a watch of a dropped connection is fine
}

func TestClose(t *testing.T) {
	is := is.New(t)
	f := newFakeServer(t)
	c, s := f.dial()
	ctx := context.Background()

	pending := async(func() error { _, err := c.Wait(ctx, rpc.WaitParams{ID: 1}); return err })
	s.read()
	is.NoErr(c.Close())                                    // Close succeeds
	is.True(errors.Is(recv(t, pending), client.ErrClosed)) // pending calls end with ErrClosed
	_, err := c.Info(ctx)
	is.True(errors.Is(err, client.ErrClosed)) // later calls too
}

func TestNotRunning(t *testing.T) {
	is := is.New(t)
	dir := shortDir(t)
	ctx := context.Background()

	_, err := client.Dial(ctx, filepath.Join(dir, "none.sock"))
	is.True(errors.Is(err, client.ErrNotRunning)) // no socket: not running

	_, err = client.Dial(ctx, filepath.Join(dir, "missing", "s.sock"))
	is.True(errors.Is(err, client.ErrNotRunning)) // no folder: not running

	// A stale socket file that nobody serves.
	stale := filepath.Join(dir, "stale.sock")
	ln, err := net.ListenUnix("unix", &net.UnixAddr{Name: stale, Net: "unix"})
	is.NoErr(err) // listen
	ln.SetUnlinkOnClose(false)
	is.NoErr(ln.Close()) // stop serving, leave the file
	_, err = client.Dial(ctx, stale)
	is.True(errors.Is(err, client.ErrNotRunning)) // refused: not running
}

func TestSubmitIDs(t *testing.T) {
	is := is.New(t)
	f := newFakeServer(t)
	c, s := f.dial()

	var ids []int64
	done := async(func() (err error) {
		ids, err = c.SubmitIDs(context.Background(), rpc.SubmitParams{Job: &rpc.Spec{Name: "one"}})
		return err
	})
	r := s.read()
	is.Equal(r.Method, rpc.MethodSubmit) // it is job.submit
	s.reply(*r.ID, map[string]any{"id": 7, "state": "queued", "spec": map[string]any{"name": "one"}})
	is.NoErr(recv(t, done))   // a single job
	is.Equal(ids, []int64{7}) // gives its id

	done = async(func() (err error) {
		ids, err = c.SubmitIDs(context.Background(), rpc.SubmitParams{Jobs: []rpc.Spec{{}, {}}})
		return err
	})
	r = s.read()
	s.reply(*r.ID, map[string]any{"jobs": []any{map[string]any{"id": 8}, map[string]any{"id": 9}}})
	is.NoErr(recv(t, done))      // a batch
	is.Equal(ids, []int64{8, 9}) // gives the ids in order

	done = async(func() (err error) {
		ids, err = c.SubmitIDs(context.Background(), rpc.SubmitParams{Job: &rpc.Spec{}})
		return err
	})
	r = s.read()
	s.reply(*r.ID, map[string]any{"state": "queued"})
	is.True(recv(t, done) != nil) // a result without an id is an error
}

// TestLenientDecoding checks that events and results with members the client does
// not know of decode as encoding/json decodes them, and that values of the wrong
// type are refused as before: an event is dropped, a result is an error of the
// client's own, not the daemon's.
func TestLenientDecoding(t *testing.T) {
	is := is.New(t)
	f := newFakeServer(t)
	c, s := f.dial()
	ctx := context.Background()

	var w rpc.Watcher
	done := async(func() (err error) { w, err = c.Watch(ctx, rpc.WatchParams{Jobs: []int64{1}}); return err })
	r := s.read()
	var p rpc.WatchParams
	is.NoErr(json.Unmarshal(r.Params, &p)) // the watch's params decode
	s.reply(*r.ID, map[string]any{"token": p.Token, "seq": 4, "store_id": "abc", "zz": map[string]any{"a": []any{1, "x"}}})
	is.NoErr(recv(t, done)) // the watch starts despite an unknown member

	unknown := map[string]any{
		"zz_obj": map[string]any{"a": []any{1.5, map[string]any{"b": "c\"\\\u00e9\n"}}, "n": nil},
		"zz_arr": []any{[]any{}, map[string]any{}, "x", -1e30, true, false, nil},
		"zz_str": "esc \" \\ / \b \f \n \r \t \u2028 😀", "zz_num": -0.5, "zz_true": true, "zz_false": false, "zz_null": nil,
	}
	ev := map[string]any{"seq": 5, "job": 1, "type": "step_finished", "step": 0, "step_name": "build", "state": "succeeded",
		"exit_code": 0, "elapsed": "1.5s", "result": map[string]any{"ok": true}, "time": "2026-01-02T03:04:05.000000006Z"}
	for k, v := range unknown {
		ev[k] = v
	}
	s.event(p.Token, ev)
	s.event(p.Token, map[string]any{"seq": "six", "job": 1, "type": "started"}) // a value of the wrong type
	s.event(p.Token, map[string]any{"Seq": 7, "JOB": 1, "type": "succeeded"})   // keys in another case
	s.event(p.Token, map[string]any{"type": "done"})

	var got []*rpc.Event
	for {
		e, err := w.Next(ctx)
		if err == io.EOF {
			break
		}
		is.NoErr(err) // events come until done
		got = append(got, e)
	}
	is.Equal(len(got), 3) // the event of the wrong type is dropped, the others kept

	raw, err := json.Marshal(ev)
	is.NoErr(err) // the event encodes
	var want rpc.Event
	is.NoErr(json.Unmarshal(raw, &want))                // and encoding/json decodes it
	is.Equal(*got[0], want)                             // as the client does
	is.Equal(got[0].Elapsed.D(), 1500*time.Millisecond) // with its known fields
	is.Equal(got[1].Seq, int64(7))                      // a key in another case decodes as in encoding/json
	is.Equal(got[1].Job, int64(1))                      // whatever the case
	is.Equal(got[2].Type, rpc.EventDone)                // and the watch ends

	// A result of the wrong type is the client's error, not the daemon's.
	errc := async(func() error { _, err := c.Get(ctx, rpc.GetParams{ID: 1}); return err })
	r = s.read()
	s.reply(*r.ID, map[string]any{"id": "one", "zz": []any{nil}})
	err = recv(t, errc)
	is.True(err != nil) // the result is refused
	var re *rpc.Error
	is.True(!errors.As(err, &re)) // not as an error of the daemon

	// A list whose jobs carry unknown members decodes as encoding/json decodes it.
	var list *rpc.ListResult
	errc = async(func() (err error) { list, err = c.List(ctx, rpc.ListParams{}); return err })
	r = s.read()
	job := map[string]any{"id": 3, "state": "queued", "steps": []any{map[string]any{"name": "a", "zz": unknown}}}
	for k, v := range unknown {
		job[k] = v
	}
	result := map[string]any{"jobs": []any{job}, "next_cursor": "c", "zz": unknown}
	s.reply(*r.ID, result)
	is.NoErr(recv(t, errc)) // the list decodes
	raw, err = json.Marshal(result)
	is.NoErr(err) // the result encodes
	var wantList rpc.ListResult
	is.NoErr(json.Unmarshal(raw, &wantList)) // and encoding/json decodes it
	is.Equal(*list, wantList)                // as the client does
}

// TestSubmitShapes: a submit's answer, one job or {"jobs": [...]}, decodes as
// rpc.SubmitResult's own decoding (encoding/json) would, unknown members skipped.
func TestSubmitShapes(t *testing.T) {
	is := is.New(t)
	f := newFakeServer(t)
	c, s := f.dial()
	ctx := context.Background()
	job := func(id int) map[string]any {
		return map[string]any{"id": id, "name": fmt.Sprint("j", id), "queue": "default", "state": "queued",
			"after": []any{}, "labels": map[string]any{"k": "v"}, "submitted_at": "2026-01-02T03:04:05Z",
			"steps": []any{map[string]any{"name": "s", "state": "pending"}}, "zz_new": []any{1, "x"}}
	}
	for _, answer := range []any{
		job(7),
		map[string]any{"jobs": []any{job(8), job(9)}},
		map[string]any{"jobs": []any{}},
	} {
		var got *rpc.SubmitResult
		done := async(func() (err error) { got, err = c.Submit(ctx, rpc.SubmitParams{Job: &rpc.Spec{}}); return err })
		r := s.read()
		s.reply(*r.ID, answer)
		is.NoErr(recv(t, done)) // the answer decodes
		raw, err := json.Marshal(answer)
		is.NoErr(err)
		var want rpc.SubmitResult
		is.NoErr(json.Unmarshal(raw, &want)) // encoding/json decodes it too
		is.Equal(*got, want)                 // to the same result
	}
}
