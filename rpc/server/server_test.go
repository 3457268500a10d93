package server

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"spool/rpc"
	"spool/rpc/unixsock"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/matryer/is"
	"go.uber.org/goleak"
)

// ioTimeout only keeps a broken test from hanging; no test measures time with it.
const ioTimeout = 20 * time.Second

// testServer is a Server with a fake service on a real socket.
type testServer struct {
	path   string
	svc    *fakeService
	cancel context.CancelFunc
	done   chan error
	logs   *syncBuffer
}

// startServer serves a fake service on a new socket; cfg's Service and Logger are
// set here.
func startServer(t *testing.T, cfg Config) *testServer {
	t.Helper()
	ts := &testServer{path: filepath.Join(shortDir(t), "d", "s.sock"), svc: newFakeService(), done: make(chan error, 1), logs: &syncBuffer{}}
	ln, err := unixsock.Listen(ts.path)
	if err != nil {
		t.Fatal(err)
	}
	cfg.Service = ts.svc
	cfg.Logger = slog.New(slog.NewTextHandler(ts.logs, nil))
	srv := New(cfg)
	ctx, cancel := context.WithCancel(context.Background())
	ts.cancel = cancel
	go func() { ts.done <- srv.Serve(ctx, ln) }()
	t.Cleanup(func() { ts.stop(t) })
	return ts
}

// stop ends Serve and waits for it.
func (ts *testServer) stop(t *testing.T) {
	t.Helper()
	ts.cancel()
	select {
	case err := <-ts.done:
		if err != nil {
			t.Errorf("Serve: %v", err)
		}
		ts.done <- nil // for a second stop
	case <-time.After(ioTimeout):
		t.Fatal("Serve did not return after its context ended")
	}
}

// syncBuffer is a bytes.Buffer safe for a logger and a test.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// message is any JSON-RPC message as a client reads it.
type message struct {
	JSONRPC string          `json:"jsonrpc"`
	ID      json.RawMessage `json:"id"`
	Method  string          `json:"method"`
	Params  json.RawMessage `json:"params"`
	Result  json.RawMessage `json:"result"`
	Error   *rpc.Error      `json:"error"`
}

// tclient speaks to the server in one framing, byte by byte as a client would.
type tclient struct {
	t   *testing.T
	c   net.Conn
	br  *bufio.Reader
	lsp bool
}

func dial(t *testing.T, path string, lsp bool) *tclient {
	t.Helper()
	c, err := net.Dial("unix", path)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return &tclient{t: t, c: c, br: bufio.NewReader(c), lsp: lsp}
}

// write writes raw bytes.
func (tc *tclient) write(s string) {
	tc.t.Helper()
	tc.c.SetWriteDeadline(time.Now().Add(ioTimeout))
	if _, err := io.WriteString(tc.c, s); err != nil {
		tc.t.Fatalf("write: %v", err)
	}
}

// send writes one message in the client's framing.
func (tc *tclient) send(body string) {
	tc.t.Helper()
	if tc.lsp {
		tc.write(fmt.Sprintf("Content-Length: %d\r\n\r\n%s", len(body), body))
		return
	}
	tc.write(body + "\n")
}

// readRaw reads one framed message, checking the framing.
func (tc *tclient) readRaw() ([]byte, error) {
	tc.t.Helper()
	tc.c.SetReadDeadline(time.Now().Add(ioTimeout))
	if !tc.lsp {
		line, err := tc.br.ReadBytes('\n')
		if err != nil {
			if len(line) > 0 {
				tc.t.Fatalf("message %q not ended by a newline", line)
			}
			return nil, err
		}
		if bytes.Count(line, []byte{'\n'}) != 1 {
			tc.t.Fatalf("message %q holds a newline", line)
		}
		return line[:len(line)-1], nil
	}
	n := -1
	for {
		line, err := tc.br.ReadString('\n')
		if err != nil {
			return nil, err
		}
		if line == "\r\n" {
			break
		}
		if v, ok := strings.CutPrefix(line, "Content-Length: "); ok {
			n, _ = strconv.Atoi(strings.TrimSpace(v))
		}
	}
	if n < 0 {
		tc.t.Fatal("LSP message without Content-Length")
	}
	body := make([]byte, n)
	if _, err := io.ReadFull(tc.br, body); err != nil {
		tc.t.Fatalf("read LSP body: %v", err)
	}
	return body, nil
}

// read reads and decodes one message.
func (tc *tclient) read() message {
	tc.t.Helper()
	b, err := tc.readRaw()
	if err != nil {
		tc.t.Fatalf("read: %v", err)
	}
	var m message
	if err := json.Unmarshal(b, &m); err != nil {
		tc.t.Fatalf("decode %q: %v", b, err)
	}
	if m.JSONRPC != "2.0" {
		tc.t.Fatalf("message %q is not JSON-RPC 2.0", b)
	}
	return m
}

// call sends a request with a numeric id and returns its response.
func (tc *tclient) call(id int, method, params string) message {
	tc.t.Helper()
	tc.send(fmt.Sprintf(`{"jsonrpc":"2.0","id":%d,"method":%q,"params":%s}`, id, method, params))
	m := tc.read()
	if string(m.ID) != strconv.Itoa(id) {
		tc.t.Fatalf("response id %s, want %d", m.ID, id)
	}
	return m
}

// expectEOF reads until the server closes the connection, and returns what came.
func (tc *tclient) expectEOF() []byte {
	tc.t.Helper()
	tc.c.SetReadDeadline(time.Now().Add(ioTimeout))
	b, err := io.ReadAll(tc.br)
	if err != nil && !errors.Is(err, syscall.ECONNRESET) {
		tc.t.Fatalf("want the server to close the connection: %v", err)
	}
	return b
}

func TestServerBothFramings(t *testing.T) {
	is := is.New(t)
	ts := startServer(t, Config{})

	nl := dial(t, ts.path, false)
	m := nl.call(1, rpc.MethodSubmit, `{"job": {"name": "a\nb", "steps": [{"exec": {"argv": ["true"]}}]}}`)
	is.True(m.Error == nil) // submit over newline framing
	var j rpc.Job
	is.NoErr(json.Unmarshal(m.Result, &j)) // the result is the job
	is.Equal(j.ID, int64(1))               // with its id
	is.Equal(j.Name, "a\nb")               // a newline in a value is escaped, not written

	lsp := dial(t, ts.path, true)
	body := `{"jsonrpc":"2.0","id":"x","method":"job.get","params":{"id":1}}`
	lsp.write(fmt.Sprintf("content-length: %d\r\nContent-Type: application/vscode-jsonrpc; charset=utf-8\r\n\r\n", len(body)))
	lsp.write(body[:10]) // the body in two writes
	lsp.write(body[10:])
	m = lsp.read()
	is.Equal(string(m.ID), `"x"`)          // a string id comes back as it was
	is.True(m.Error == nil)                // get over LSP framing
	is.NoErr(json.Unmarshal(m.Result, &j)) // the result is the job
	is.Equal(j.ID, int64(1))               // the job submitted on the other connection

	// Back to back objects, no newline, white space around.
	nl.write("  \r\n\t" + `{"jsonrpc":"2.0","id":2,"method":"daemon.info"}{"jsonrpc":"2.0","id":3,"method":"queue.list","params":{}}` + " \n")
	m = nl.read()
	is.Equal(string(m.ID), "2") // the first of two adjacent objects
	m = nl.read()
	is.Equal(string(m.ID), "3") // the second
	is.True(m.Error == nil)     // both answered
}

func TestServerLSPSplitAcrossWrites(t *testing.T) {
	is := is.New(t)
	ts := startServer(t, Config{})
	lsp := dial(t, ts.path, true)
	body := `{"jsonrpc":"2.0","id":7,"method":"daemon.info"}`
	msg := fmt.Sprintf("Content-Length: %d\r\n\r\n%s", len(body), body)
	for i := range len(msg) {
		lsp.write(msg[i : i+1]) // one byte at a time
	}
	m := lsp.read()
	is.Equal(string(m.ID), "7") // a message written byte by byte is read whole
	is.True(m.Error == nil)     // and answered
}

func TestServerErrors(t *testing.T) {
	ts := startServer(t, Config{})
	cases := []struct {
		name   string
		lsp    bool
		send   string // raw bytes
		code   int
		id     string
		closes bool
		field  string
	}{
		{name: "unknown framing", send: "hello\n", code: rpc.CodeParseError, id: "null", closes: true},
		{name: "malformed JSON", send: `{"jsonrpc":"2.0","id":1,"method":"daemon.info",}` + "\n", code: rpc.CodeParseError, id: "null", closes: true},
		{name: "malformed JSON in LSP", lsp: true, send: "Content-Length: 3\r\n\r\n{x}", code: rpc.CodeParseError, id: "null", closes: true},
		{name: "LSP header line too long", lsp: true, send: "Content-Length: 2\r\nX-Junk: " + strings.Repeat("j", 2000) + "\r\n\r\n{}", code: rpc.CodeParseError, id: "null", closes: true},
		{name: "LSP without length", lsp: true, send: "Content-Type: x\r\n\r\n{}", code: rpc.CodeParseError, id: "null", closes: true},
		{name: "batch", send: `[{"jsonrpc":"2.0","id":1,"method":"daemon.info"}]` + "\n", code: rpc.CodeInvalidRequest, id: "null"},
		{name: "batch in LSP", lsp: true, send: "Content-Length: 2\r\n\r\n[]", code: rpc.CodeInvalidRequest, id: "null"},
		{name: "no jsonrpc", send: `{"id":4,"method":"daemon.info"}` + "\n", code: rpc.CodeInvalidRequest, id: "4"},
		{name: "wrong jsonrpc", send: `{"jsonrpc":"1.0","id":4,"method":"daemon.info"}` + "\n", code: rpc.CodeInvalidRequest, id: "4"},
		{name: "method not a string", send: `{"jsonrpc":"2.0","id":5,"method":5}` + "\n", code: rpc.CodeInvalidRequest, id: "5"},
		{name: "id an object", send: `{"jsonrpc":"2.0","id":{},"method":"daemon.info"}` + "\n", code: rpc.CodeInvalidRequest, id: "null"},
		{name: "scalar in LSP", lsp: true, send: "Content-Length: 1\r\n\r\n1", code: rpc.CodeInvalidRequest, id: "null"},
		{name: "unknown method", send: `{"jsonrpc":"2.0","id":"abc","method":"job.explode"}` + "\n", code: rpc.CodeMethodNotFound, id: `"abc"`},
		{name: "big id kept exactly", send: `{"jsonrpc":"2.0","id":123456789012345678901234567890,"method":"nope"}` + "\n", code: rpc.CodeMethodNotFound, id: "123456789012345678901234567890"},
		{name: "params not an object", send: `{"jsonrpc":"2.0","id":6,"method":"job.get","params":[1]}` + "\n", code: rpc.CodeInvalidParams, id: "6"},
		{name: "unknown nested field", send: `{"jsonrpc":"2.0","id":8,"method":"job.submit","params":{"job":{"steps":[{"exec":{"argv":["x"]}},{"stpes":1}]}}}` + "\n",
			code: rpc.CodeInvalidParams, id: "8", field: "job.steps[1].stpes"},
		{name: "unknown field of a no-params method", send: `{"jsonrpc":"2.0","id":9,"method":"daemon.info","params":{"verbose":true}}` + "\n", code: rpc.CodeInvalidParams, id: "9", field: "verbose"},
		{name: "panic", send: `{"jsonrpc":"2.0","id":10,"method":"template.get","params":{"name":"boom"}}` + "\n", code: rpc.CodeInternal, id: "10"},
		{name: "service error keeps code and data", send: `{"jsonrpc":"2.0","id":11,"method":"job.get","params":{"id":42}}` + "\n", code: rpc.CodeNotFound, id: "11"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			is := is.New(t)
			tc := dial(t, ts.path, c.lsp)
			tc.write(c.send)
			m := tc.read()
			is.True(m.Error != nil)        // an error response
			is.Equal(m.Error.Code, c.code) // with the code of the case
			is.Equal(string(m.ID), c.id)   // and the request's id, or null
			is.True(m.Result == nil)       // and no result
			if c.field != "" {
				is.True(m.Error.Data != nil)                   // the data names the field
				is.Equal(m.Error.Data.Field, c.field)          // by its path
				is.Equal(m.Error.Data.Reason, "unknown field") // said to be unknown
			}
			if c.code == rpc.CodeNotFound {
				is.Equal(m.Error.Data.ID, int64(42)) // data of a service error survives
			}
			if c.closes {
				rest := tc.expectEOF()
				is.Equal(len(rest), 0) // nothing more, then the connection is closed
				return
			}
			m = tc.call(99, rpc.MethodInfo, `{}`)
			is.True(m.Error == nil) // the connection goes on after the error
		})
	}
	is := is.New(t)
	is.True(strings.Contains(ts.logs.String(), "panic")) // the panic was logged
	is.True(!strings.Contains(ts.logs.String(), "boom")) // but no payload
}

func TestServerNotificationsGetNoResponse(t *testing.T) {
	is := is.New(t)
	ts := startServer(t, Config{})
	tc := dial(t, ts.path, false)
	tc.send(`{"jsonrpc":"2.0","method":"daemon.info"}`)
	tc.send(`{"jsonrpc":"2.0","method":"$/setTrace","params":{"value":"off"}}`)
	tc.send(`{"jsonrpc":"2.0","method":"job.submit","params":{"job":{"steps":[{"sleep":{"duration":"1s"}}]}}}`)
	tc.send(`{"jsonrpc":"2.0","method":"$/cancelRequest","params":{"id":77}}`)
	m := tc.call(2, rpc.MethodGet, `{"id":1}`)
	is.True(m.Error == nil) // the first response is for the request; the notification ran
}

func TestServerCancelRequest(t *testing.T) {
	is := is.New(t)
	ts := startServer(t, Config{})
	tc := dial(t, ts.path, true)
	is.True(tc.call(1, rpc.MethodSubmit, `{"job":{"steps":[{"exec":{"argv":["x"]}}]}}`).Error == nil) // a job to wait for
	tc.send(`{"jsonrpc":"2.0","id":5,"method":"job.wait","params":{"id":1}}`)
	<-ts.svc.waiting // the wait is pending
	tc.send(`{"jsonrpc":"2.0","method":"$/cancelRequest","params":{"id":5}}`)
	m := tc.read()
	is.Equal(string(m.ID), "5")                              // the wait's response
	is.True(m.Error != nil)                                  // is an error
	is.Equal(m.Error.Code, rpc.CodeCancelled)                // -32800
	is.True(errors.Is(<-ts.svc.waitEnded, context.Canceled)) // the service saw its context cancelled
}

func TestServerSlowWaitDoesNotDelayLaterRequests(t *testing.T) {
	is := is.New(t)
	ts := startServer(t, Config{})
	tc := dial(t, ts.path, false)
	is.True(tc.call(1, rpc.MethodSubmit, `{"job":{"steps":[{"exec":{"argv":["x"]}}]}}`).Error == nil) // a job
	tc.send(`{"jsonrpc":"2.0","id":2,"method":"job.wait","params":{"id":1,"timeout":"1h"}}`)
	<-ts.svc.waiting // the wait blocks in the service
	m := tc.call(3, rpc.MethodGet, `{"id":1}`)
	is.True(m.Error == nil) // a later get is answered while the wait is pending
	m = tc.call(4, rpc.MethodCancel, `{"id":1,"reason":"test"}`)
	is.True(m.Error == nil) // so is a cancel
	close(ts.svc.release)
	m = tc.read()
	is.Equal(string(m.ID), "2") // the wait ends when released
	var j rpc.Job
	is.NoErr(json.Unmarshal(m.Result, &j)) // the result is the job
	is.Equal(j.State, rpc.StateCancelled)  // with the job as it is then
}

// TestServerTooLarge streams 64 MiB in one message: the server answers -32600 and
// closes without holding the message in memory.
func TestServerTooLarge(t *testing.T) {
	is := is.New(t)
	ts := startServer(t, Config{})
	const total = 64 << 20

	runtime.GC()
	var before runtime.MemStats
	runtime.ReadMemStats(&before)

	tc := dial(t, ts.path, false)
	writeErr := make(chan error, 1)
	go func() {
		chunk := bytes.Repeat([]byte("a"), 64<<10)
		if _, err := io.WriteString(tc.c, `{"jsonrpc":"2.0","id":1,"method":"job.submit","params":{"job":{"name":"`); err != nil {
			writeErr <- err
			return
		}
		for sent := 0; sent < total; sent += len(chunk) {
			if _, err := tc.c.Write(chunk); err != nil {
				writeErr <- err // the server closed the connection
				return
			}
		}
		writeErr <- nil
	}()
	m := tc.read()
	is.True(m.Error != nil)                        // an error
	is.Equal(m.Error.Code, rpc.CodeInvalidRequest) // -32600
	is.Equal(m.Error.Message, "message too large") // saying why
	is.Equal(string(m.ID), "null")                 // id null: the request was not read
	tc.expectEOF()                                 // then the connection is closed
	is.True(<-writeErr != nil)                     // before the client could send it all

	var after runtime.MemStats
	runtime.ReadMemStats(&after)
	grew := int64(after.HeapInuse) - int64(before.HeapInuse)
	allocated := after.TotalAlloc - before.TotalAlloc
	t.Logf("heap in use grew %d bytes; %d bytes allocated meanwhile", grew, allocated)
	is.True(grew < 16<<20)      // the heap did not grow by the message's size
	is.True(allocated < 16<<20) // nor was anything near its size ever allocated

	// The same in LSP framing: the header alone is enough to refuse.
	lsp := dial(t, ts.path, true)
	lsp.write(fmt.Sprintf("Content-Length: %d\r\n\r\n{", total))
	m = lsp.read()
	is.Equal(m.Error.Code, rpc.CodeInvalidRequest) // -32600
	is.Equal(m.Error.Message, "message too large") // too large
	lsp.expectEOF()                                // and closed

	m = dial(t, ts.path, false).call(1, rpc.MethodInfo, `{}`)
	is.True(m.Error == nil) // the server serves on
}

func TestServerMaxMessageConfigured(t *testing.T) {
	is := is.New(t)
	ts := startServer(t, Config{MaxMessage: 200})
	tc := dial(t, ts.path, false)
	is.True(tc.call(1, rpc.MethodInfo, `{}`).Error == nil) // a small message passes
	tc.send(`{"jsonrpc":"2.0","id":2,"method":"job.submit","params":{"job":{"name":"` + strings.Repeat("n", 200) + `"}}}`)
	m := tc.read()
	is.Equal(m.Error.Code, rpc.CodeInvalidRequest) // past the configured limit
	tc.expectEOF()                                 // closed
}

func TestServerMalformedConnectionDoesNotAffectOthers(t *testing.T) {
	is := is.New(t)
	ts := startServer(t, Config{})
	good := dial(t, ts.path, false)
	is.True(good.call(1, rpc.MethodInfo, `{}`).Error == nil) // a working connection
	bad := dial(t, ts.path, false)
	bad.write(`{"jsonrpc": "2.0", "id": 1, "method": daemon.info}` + "\n")
	is.Equal(bad.read().Error.Code, rpc.CodeParseError) // the bad one gets -32700
	bad.expectEOF()                                     // and is closed
	half := dial(t, ts.path, false)
	half.write(`{"jsonrpc": "2.0", "id": 1, "met`)           // another never finishes its message
	is.True(good.call(2, rpc.MethodInfo, `{}`).Error == nil) // the good one goes on
}

func TestServerWatchResponseBeforeEvents(t *testing.T) {
	is := is.New(t)
	ts := startServer(t, Config{})
	for i := range 20 {
		ts.svc.script = append(ts.svc.script, &rpc.Event{Seq: int64(i + 1), Job: 1, Type: rpc.EventSubmitted, State: rpc.StateQueued})
	}
	tc := dial(t, ts.path, false)
	tc.send(`{"jsonrpc":"2.0","id":1,"method":"job.watch","params":{"since":0,"token":"mine"}}`)
	m := tc.read()
	is.Equal(string(m.ID), "1") // the response comes first
	var res rpc.WatchResult
	is.NoErr(json.Unmarshal(m.Result, &res)) // the result is a watch result
	is.Equal(res.Token, "mine")              // with the client's token
	is.Equal(res.StoreID, "store")           // and the store id
	for i := range 20 {
		m := tc.read()
		is.Equal(m.Method, rpc.MethodEvent) // then the events as notifications
		is.True(m.ID == nil)                // without id
		var p rpc.EventParams
		is.NoErr(json.Unmarshal(m.Params, &p)) // the params are event params
		is.Equal(p.Token, "mine")              // naming the watch
		is.Equal(p.Event.Seq, int64(i+1))      // in order, none missing
	}

	m = tc.call(2, rpc.MethodWatch, `{"token":"mine"}`)
	is.Equal(m.Error.Code, rpc.CodeInvalidParams) // a token in use is refused
	is.Equal(m.Error.Data.Field, "token")         // naming the field

	m = tc.call(3, rpc.MethodWatch, `{"jobs":[404]}`)
	is.Equal(m.Error.Code, rpc.CodeNotFound) // the service's error passes through

	m = tc.call(4, rpc.MethodUnwatch, `{"token":"mine"}`)
	is.True(m.Error == nil)               // unwatch answers
	is.Equal(string(m.Result), "{}")      // {}
	is.True(ts.svc.watcher(0).isClosed()) // and closed the watch
	m = tc.call(5, rpc.MethodUnwatch, `{"token":"never"}`)
	is.Equal(string(m.Result), "{}") // an unknown token too

	ts.svc.script = nil
	m = tc.call(6, rpc.MethodWatch, `{}`)
	is.True(m.Error == nil)                  // a watch without a token
	is.NoErr(json.Unmarshal(m.Result, &res)) // the result is a watch result
	is.True(res.Token != "")                 // gets one from the server
	m = tc.call(7, rpc.MethodWatch, `{"token":"mine"}`)
	is.True(m.Error == nil) // an unwatched token may be used again
}

func TestServerMaxWatches(t *testing.T) {
	is := is.New(t)
	ts := startServer(t, Config{MaxWatches: 2})
	tc := dial(t, ts.path, false)
	is.True(tc.call(1, rpc.MethodWatch, `{}`).Error == nil) // first watch
	is.True(tc.call(2, rpc.MethodWatch, `{}`).Error == nil) // second watch
	m := tc.call(3, rpc.MethodWatch, `{}`)
	is.Equal(m.Error.Code, rpc.CodeLimit) // the third is past the limit
}

func TestServerDisconnectCancelsAndCloses(t *testing.T) {
	is := is.New(t)
	ts := startServer(t, Config{})
	tc := dial(t, ts.path, false)
	is.True(tc.call(1, rpc.MethodSubmit, `{"job":{"steps":[{"exec":{"argv":["x"]}}]}}`).Error == nil) // a job
	is.True(tc.call(2, rpc.MethodWatch, `{"jobs":[1]}`).Error == nil)                                 // a watch
	tc.send(`{"jsonrpc":"2.0","id":3,"method":"job.wait","params":{"id":1}}`)
	<-ts.svc.waiting // a pending wait
	tc.c.Close()
	is.True(errors.Is(<-ts.svc.waitEnded, context.Canceled)) // the wait is cancelled
	select {
	case <-ts.svc.watcher(0).closed: // the watch is closed
	case <-time.After(ioTimeout):
		t.Fatal("the watch of a closed connection was not closed")
	}
}

// TestServerStalledWatcher: a client that watches and never reads fills its socket
// and queue; other clients are served all the while, and the stalled connection is
// closed after WriteStall.
func TestServerStalledWatcher(t *testing.T) {
	is := is.New(t)
	ts := startServer(t, Config{WriteStall: 500 * time.Millisecond})
	stalled := dial(t, ts.path, false)
	stalled.send(`{"jsonrpc":"2.0","id":1,"method":"job.watch","params":{"output":true}}`)
	// Wait until the server has produced more than the queue can hold: its writes to
	// the client are blocked.
	deadline := time.Now().Add(ioTimeout)
	// (The writer sends what is queued in batches, and a slow machine may reach the
	// stall before the queue is full again: a closed watch counts as blocked too.)
	blocked := func() bool {
		w := ts.svc.watcher(0)
		if w == nil {
			return false
		}
		select {
		case <-w.closed:
			return true
		default:
			return w.next.Load() >= writeQueue
		}
	}
	for !blocked() {
		if time.Now().After(deadline) {
			t.Fatal("the watch produced nothing")
		}
		time.Sleep(time.Millisecond)
	}
	other := dial(t, ts.path, false)
	for i := range 20 {
		is.True(other.call(i, rpc.MethodInfo, `{}`).Error == nil) // another client is served
	}
	select {
	case <-ts.svc.watcher(0).closed: // the stalled connection was closed, its watch with it
	case <-time.After(ioTimeout):
		t.Fatal("the stalled connection was not closed")
	}
	is.True(strings.Contains(ts.logs.String(), "stalled"))     // and that was logged
	is.True(other.call(99, rpc.MethodInfo, `{}`).Error == nil) // the other client is still served
}

// TestServerStalledWatcherDefaultStall: with the default stall of a minute, a
// client with a full socket still does not keep others waiting.
func TestServerStalledWatcherDoesNotBlockOthers(t *testing.T) {
	is := is.New(t)
	ts := startServer(t, Config{})
	stalled := dial(t, ts.path, false)
	stalled.send(`{"jsonrpc":"2.0","id":1,"method":"job.watch","params":{"output":true}}`)
	stalled.send(`{"jsonrpc":"2.0","id":2,"method":"daemon.info"}`)
	// Wait until the watch is stuck: it produced events, then no more for a while,
	// the socket and the connection's queue being full.
	deadline := time.Now().Add(ioTimeout)
	last, since := int64(-1), time.Now()
	for {
		if time.Now().After(deadline) {
			t.Fatal("the watch never stalled")
		}
		time.Sleep(5 * time.Millisecond)
		w := ts.svc.watcher(0)
		if w == nil {
			continue
		}
		if n := w.next.Load(); n != last {
			last, since = n, time.Now()
			continue
		}
		if last > 0 && time.Since(since) > 200*time.Millisecond {
			break
		}
	}
	other := dial(t, ts.path, true)
	is.True(other.call(1, rpc.MethodSubmit, `{"job":{"steps":[{"exec":{"argv":["x"]}}]}}`).Error == nil) // others submit
	is.True(other.call(2, rpc.MethodGet, `{"id":1}`).Error == nil)                                       // and read
	stalled.c.Close()
	select {
	case <-ts.svc.watcher(0).closed: // closing the stalled client ends its watch
	case <-time.After(ioTimeout):
		t.Fatal("the watch of a closed connection was not closed")
	}
}

func TestServerMaxConns(t *testing.T) {
	is := is.New(t)
	ts := startServer(t, Config{MaxConns: 1})
	first := dial(t, ts.path, false)
	is.True(first.call(1, rpc.MethodInfo, `{}`).Error == nil) // the first connection is served
	second := dial(t, ts.path, false)
	m := second.call(7, rpc.MethodInfo, `{}`)
	is.Equal(m.Error.Code, rpc.CodeLimit) // past the limit: 1005 with the request's id
	second.expectEOF()                    // then closed
	first.c.Close()
	// Once the first is gone, a new connection is served (the count drops when the
	// server notices the close).
	deadline := time.Now().Add(ioTimeout)
	for {
		m = dial(t, ts.path, false).call(1, rpc.MethodInfo, `{}`)
		if m.Error == nil {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("connections are refused after the first closed")
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func TestServerShutdownAnswersThenStops(t *testing.T) {
	is := is.New(t)
	ts := startServer(t, Config{})
	ts.svc.onShutdown = ts.cancel // the daemon stops the server as it shuts down
	tc := dial(t, ts.path, false)
	m := tc.call(1, rpc.MethodShutdown, `{"drain":false}`)
	is.True(m.Error == nil)          // the shutdown is answered
	is.Equal(string(m.Result), "{}") // with {}
	tc.expectEOF()                   // then the connection is closed
	is.NoErr(<-ts.done)              // and Serve returned
	ts.done <- nil
}

// TestServerStopAnswers1006: when the server stops, a request under way whose
// context that ends, a pending slow one, and the requests the client had sent
// already are answered 1006; $/cancelRequest alone answers -32800.
func TestServerStopAnswers1006(t *testing.T) {
	is := is.New(t)
	ts := startServer(t, Config{})
	ts.svc.jobs[1] = &rpc.Job{ID: 1, State: rpc.StateRunning}
	// A wait cancelled by its client, before the stop.
	c := dial(t, ts.path, false)
	c.send(`{"jsonrpc":"2.0","id":1,"method":"job.wait","params":{"id":1}}`)
	<-ts.svc.waiting
	c.send(`{"jsonrpc":"2.0","method":"$/cancelRequest","params":{"id":1}}`)
	m := c.read()
	is.Equal(m.Error.Code, rpc.CodeCancelled) // $/cancelRequest: -32800
	// A wait pending at the stop.
	b := dial(t, ts.path, false)
	b.send(`{"jsonrpc":"2.0","id":1,"method":"job.wait","params":{"id":1}}`)
	<-ts.svc.waiting
	// A submit under way at the stop, and requests sent behind it.
	ts.svc.holdSubmits.Store(true)
	a := dial(t, ts.path, true)
	a.send(`{"jsonrpc":"2.0","id":1,"method":"job.submit","params":{"job":{"steps":[{"exec":{"argv":["x"]}}]}}}`)
	<-ts.svc.submitting
	a.send(`{"jsonrpc":"2.0","id":2,"method":"daemon.info"}`)
	a.send(`{"jsonrpc":"2.0","id":3,"method":"job.get","params":{"id":1}}`)
	a.send(`{"jsonrpc":"2.0","method":"daemon.info"}`) // a notification: no answer
	a.send(`{"jsonrpc":"2.0","id":4,"method":"job.get","params":{"id":1}}`)

	ts.stop(t)
	for _, id := range []string{"1", "2", "3", "4"} {
		m := a.read()
		is.Equal(string(m.ID), id)                   // each request is answered, in order
		is.True(m.Error != nil)                      // with an error
		is.Equal(m.Error.Code, rpc.CodeShuttingDown) // 1006
		is.Equal(m.Error.Message, rpc.ShuttingDown().Message)
	}
	a.expectEOF() // then the connection is closed
	m = b.read()
	is.Equal(m.Error.Code, rpc.CodeShuttingDown) // the pending wait: 1006
	b.expectEOF()
}

func TestServeStopsEverything(t *testing.T) {
	defer goleak.VerifyNone(t, goleak.IgnoreCurrent())
	is := is.New(t)
	ts := startServer(t, Config{})
	a := dial(t, ts.path, false)
	is.True(a.call(1, rpc.MethodSubmit, `{"job":{"steps":[{"exec":{"argv":["x"]}}]}}`).Error == nil) // a job
	a.send(`{"jsonrpc":"2.0","id":2,"method":"job.wait","params":{"id":1}}`)
	<-ts.svc.waiting // a pending wait
	b := dial(t, ts.path, true)
	is.True(b.call(1, rpc.MethodWatch, `{}`).Error == nil) // a pending watch
	c := dial(t, ts.path, false)
	c.write(`{"jsonrpc"`) // a connection in the middle of a message

	ts.stop(t)
	m := a.read()
	is.Equal(m.Error.Code, rpc.CodeShuttingDown) // the pending wait is answered 1006: the server stops
	a.expectEOF()                                // every connection is closed
	b.expectEOF()
	c.expectEOF()
	is.True(ts.svc.watcher(0).isClosed()) // and every watch
	_, err := os.Lstat(ts.path)
	is.True(os.IsNotExist(err)) // the socket is gone
	for _, tc := range []*tclient{a, b, c} {
		tc.c.Close()
	}
}

// TestServerRefusesOtherUsers connects from a child process running as another
// user: the server closes the connection without answering, and logs it.
func TestServerRefusesOtherUsers(t *testing.T) {
	if os.Getuid() != 0 {
		t.Skip("needs root to run a child as another user")
	}
	is := is.New(t)
	ts := startServer(t, Config{CheckPeer: true})
	// The other user must reach the socket and this test binary.
	open := shortDir(t)
	is.NoErr(os.Chmod(open, 0o755))                                // a folder anyone may enter
	is.NoErr(os.Chmod(filepath.Dir(filepath.Dir(ts.path)), 0o755)) // the test folder may be entered by others
	is.NoErr(os.Chmod(filepath.Dir(ts.path), 0o755))               // so may the socket folder
	is.NoErr(os.Chmod(ts.path, 0o777))                             // and the socket may be connected to by anyone
	exe, err := os.Executable()
	is.NoErr(err) // this test binary
	bin := filepath.Join(open, "rpc.test")
	data, err := os.ReadFile(exe)
	is.NoErr(err)                            // read it
	is.NoErr(os.WriteFile(bin, data, 0o755)) // and copy it where the other user can run it

	cmd := exec.Command(bin, "-test.run=^TestHelperPeer$")
	cmd.Env = append(os.Environ(), "SPOOL_TEST_HELPER=peer", "SPOOL_TEST_SOCKET="+ts.path)
	cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: 65534, Gid: 65534}}
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("helper: %v: %s", err, out)
	}
	is.True(strings.Contains(string(out), "answer=0 bytes"))                            // the server closed without a byte
	is.True(strings.Contains(ts.logs.String(), "refused connection from another user")) // and logged it
	is.True(strings.Contains(ts.logs.String(), "peer_uid=65534"))                       // with the uid

	m := dial(t, ts.path, false).call(1, rpc.MethodInfo, `{}`)
	is.True(m.Error == nil) // our own user is served
}

func TestHelperPeer(t *testing.T) {
	if os.Getenv("SPOOL_TEST_HELPER") != "peer" {
		t.Skip("helper process for TestServerRefusesOtherUsers")
	}
	c, err := net.Dial("unix", os.Getenv("SPOOL_TEST_SOCKET"))
	if err != nil {
		fmt.Println("dial:", err)
		os.Exit(1)
	}
	c.SetDeadline(time.Now().Add(ioTimeout))
	io.WriteString(c, `{"jsonrpc":"2.0","id":1,"method":"daemon.info"}`+"\n")
	b, err := io.ReadAll(c)
	if err != nil && !errors.Is(err, syscall.ECONNRESET) {
		fmt.Println("read:", err)
		os.Exit(1)
	}
	fmt.Printf("answer=%d bytes\n", len(b))
}

// TestServerWatchEventsTogether: events the watcher holds are written together;
// each still arrives as a message of its own, in order, in both framings.
func TestServerWatchEventsTogether(t *testing.T) {
	for _, lsp := range []bool{false, true} {
		is := is.New(t)
		ts := startServer(t, Config{})
		for i := range 300 {
			ts.svc.script = append(ts.svc.script, &rpc.Event{Seq: int64(i + 1), Job: 1, Type: rpc.EventSubmitted, State: rpc.StateQueued})
		}
		tc := dial(t, ts.path, lsp)
		m := tc.call(1, rpc.MethodWatch, `{"token":"t"}`)
		is.True(m.Error == nil) // the watch starts
		for i := range 300 {
			m := tc.read()
			is.Equal(m.Method, rpc.MethodEvent) // each event is a notification
			var p rpc.EventParams
			is.NoErr(json.Unmarshal(m.Params, &p)) // whole
			is.Equal(p.Event.Seq, int64(i+1))      // in order, none missing
		}
	}
}

func TestParseRequest(t *testing.T) {
	cases := []struct {
		msg, method, id, params string
		code                    int
	}{
		{msg: `{"jsonrpc":"2.0","id":1,"method":"job.get","params":{"id":3}}`, method: "job.get", id: "1", params: `{"id":3}`},
		{msg: `{ "params" : [ 1 ] , "method" : "m", "id" : "x", "jsonrpc" : "2.0" } `, method: "m", id: `"x"`, params: `[ 1 ]`},
		{msg: `{"jsonrpc":"2.0","method":"note"}`, method: "note"},
		{msg: `{"\u006aso\u006erpc":"2\u002e0","\u0069d":null,"method":"a\u0062"}`, method: "ab", id: "null"},
		{msg: `{"jsonrpc":"2.0","method":"a","method":"b","id":1}`, method: "b", id: "1"},
		{msg: `{"jsonrpc":"2.0","method":"a","id":{}}`, code: rpc.CodeInvalidRequest},
		{msg: `{"jsonrpc":"1.0","method":"a","id":1}`, code: rpc.CodeInvalidRequest},
		{msg: `{"jsonrpc":"2.0","method":7,"id":1}`, code: rpc.CodeInvalidRequest},
		{msg: `{"jsonrpc":"2.0","id":1}`, code: rpc.CodeInvalidRequest},
		{msg: `{"jsonrpc":"2.0","method":"a",}`, code: rpc.CodeInvalidRequest},
		{msg: `{"jsonrpc":"2.0","method":"a"} x`, code: rpc.CodeInvalidRequest},
	}
	for _, c := range cases {
		is := is.New(t)
		req, err := parseRequest([]byte(c.msg))
		if c.code != 0 {
			is.True(err != nil)        // the request is refused
			is.Equal(err.Code, c.code) // as an invalid request
			continue
		}
		is.True(err == nil)                    // the request is taken
		is.Equal(req.method, c.method)         // its method, unescaped
		is.Equal(string(req.id), c.id)         // its id as sent
		is.Equal(string(req.params), c.params) // its params as sent
	}
}

// shortDir is a temporary folder with a short path: a socket's path must fit in
// 108 bytes, which t.TempDir's may not.
func shortDir(t *testing.T) string {
	t.Helper()
	dir, err := os.MkdirTemp("", "sp")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	return dir
}
