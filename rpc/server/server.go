// Package server serves an rpc.Service to JSON-RPC 2.0 connections: framing
// chosen from the first byte (newline-delimited or LSP), bounded reads, one
// writer per connection with a bounded queue and a write deadline, watches as
// notifications, $/cancelRequest, and the limits on connections and watches.
// It imports rpc, rpc/codec and rpc/unixsock; spoold imports it.
package server

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"reflect"
	"runtime/debug"
	"spool/rpc"
	"spool/rpc/codec"
	"spool/rpc/unixsock"
	"strconv"
	"sync"
	"sync/atomic"
	"syscall"
	"time"
)

// Defaults of Config.
const (
	DefaultMaxMessage = 1 << 20
	DefaultMaxConns   = 1024
	DefaultMaxWatches = 256
	DefaultWriteStall = 60 * time.Second
)

const (
	// writeQueue is how many messages wait for a connection's writer, and
	// queueBytes how many bytes (those the writer is writing included); past
	// either the senders of that connection (its handlers and watch pumps) wait.
	// A message larger than queueBytes waits for an empty queue.
	writeQueue = 64
	queueBytes = 32 << 10
	// pumpBatch is how many bytes of events a watch encodes before it sends them:
	// what a watch holds while its connection's queue is full.
	pumpBatch = 8 << 10
	// flushGrace bounds how long a closing connection may take to write what is
	// left in its queue.
	flushGrace = 2 * time.Second
	// stopReadGrace is how long a connection goes on reading once the server
	// stops, to answer 1006 to the requests its client had sent already rather
	// than close on them unanswered.
	stopReadGrace = 100 * time.Millisecond
)

// Why the server ended a request's context; the request is answered accordingly
// (see conn.attribute). The server stopping is answered 1006.
var (
	// errCancelRequest: the client sent $/cancelRequest for it.
	errCancelRequest = &rpc.Error{Code: rpc.CodeCancelled, Message: "request cancelled"}
	// errConnEnded: the client closed (or half-closed) the connection, or the
	// connection broke a rule that ends it, while the request was under way.
	errConnEnded = &rpc.Error{Code: rpc.CodeCancelled, Message: "request cancelled: the connection ended"}
)

// Config configures a Server.
type Config struct {
	// Service answers the requests.
	Service rpc.Service
	// MaxMessage is the largest message read, in bytes (default 1 MiB).
	MaxMessage int64
	// MaxConns is how many connections are served at once (default 1024); the first
	// request of a connection past it is answered 1005, and the connection closed.
	MaxConns int
	// MaxWatches is how many watches one connection may hold (default 256); past it
	// job.watch answers 1005.
	MaxWatches int
	// WriteStall closes a connection whose writes have been blocked this long
	// (default 60s): a client that stops reading.
	WriteStall time.Duration
	// Logger receives refused peers and internal errors, never payloads; nil
	// discards.
	Logger *slog.Logger
	// CheckPeer refuses connections from peers whose uid is neither ours nor root's:
	// they are closed before any request is served.
	CheckPeer bool
}

// Server adapts a Service to JSON-RPC 2.0 connections, in the framings of the
// protocol (newline-delimited JSON and LSP's Content-Length).
type Server struct {
	cfg     Config
	log     *slog.Logger
	uid     int
	methods map[string]method
	dec     *codec.Decoder // params, for every connection
	conns   atomic.Int64
}

// method is how the server runs one method of the protocol.
type method struct {
	// slow methods run in their own goroutine, so that they never delay later
	// requests of the connection, and can be cancelled by $/cancelRequest.
	slow bool
	call codec.Call
}

// NewServer returns a server for cfg, with defaults filled in.
func New(cfg Config) *Server {
	if cfg.MaxMessage <= 0 {
		cfg.MaxMessage = DefaultMaxMessage
	}
	if cfg.MaxConns <= 0 {
		cfg.MaxConns = DefaultMaxConns
	}
	if cfg.MaxWatches <= 0 {
		cfg.MaxWatches = DefaultMaxWatches
	}
	if cfg.WriteStall <= 0 {
		cfg.WriteStall = DefaultWriteStall
	}
	log := cfg.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	dec := codec.NewDecoder()
	return &Server{cfg: cfg, log: log, uid: os.Getuid(), methods: methods(cfg.Service, dec), dec: dec}
}

// methods is the dispatch table: the shared calls, with the slow ones marked.
// job.watch, job.unwatch and $/cancelRequest are the connection's own business
// and are not in it.
func methods(svc rpc.Service, dec *codec.Decoder) map[string]method {
	slow := map[string]bool{rpc.MethodCancel: true, rpc.MethodWait: true, rpc.MethodShutdown: true}
	out := map[string]method{}
	for name, call := range codec.Calls(svc, dec) {
		out[name] = method{slow: slow[name], call: call}
	}
	return out
}

// Serve accepts connections on ln and serves each until ctx is done or ln is
// closed; then it closes ln and every connection, waits for them, and returns nil.
// Other accept errors end it with the error.
func (s *Server) Serve(ctx context.Context, ln net.Listener) error {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	stop := context.AfterFunc(ctx, func() { ln.Close() })
	defer stop()
	var wg sync.WaitGroup
	defer func() {
		cancel()
		wg.Wait()
	}()
	var backoff time.Duration
	for {
		c, err := ln.Accept()
		if err != nil {
			if ctx.Err() != nil || errors.Is(err, net.ErrClosed) {
				return nil
			}
			if temporaryAcceptError(err) {
				// Out of descriptors, say: wait a little rather than spin.
				backoff = min(max(2*backoff, 5*time.Millisecond), time.Second)
				s.log.Warn("accept failed; retrying", "err", err, "after", backoff)
				select {
				case <-time.After(backoff):
				case <-ctx.Done():
				}
				continue
			}
			return fmt.Errorf("accept connections: %w", err)
		}
		backoff = 0
		wg.Go(func() { s.ServeConn(ctx, c) })
	}
}

func temporaryAcceptError(err error) bool {
	if errors.Is(err, syscall.EMFILE) || errors.Is(err, syscall.ENFILE) || errors.Is(err, syscall.ENOBUFS) ||
		errors.Is(err, syscall.ENOMEM) || errors.Is(err, syscall.ECONNABORTED) || errors.Is(err, syscall.EINTR) {
		return true
	}
	var ne net.Error
	return errors.As(err, &ne) && ne.Timeout()
}

// ServeConn serves one connection until the client closes it (or shuts down its
// writing half), it breaks a rule that ends it (malformed JSON, a message too
// large), its writes stall, or ctx is done. Then the contexts of its pending
// requests are cancelled and its watches closed; what they answer meanwhile is
// still written, within a short grace. It closes c and returns once everything it
// started for c has ended, so the Service must return once a context is done.
//
// ctx done means the daemon stops: a request whose context that ends answers 1006
// "the daemon is shutting down" unless its Service call completed, and so do the
// requests the client had sent already, which are read for a short while more
// and refused.
func (s *Server) ServeConn(ctx context.Context, c net.Conn) {
	defer c.Close()
	if s.cfg.CheckPeer && !s.peerAllowed(c) {
		return
	}
	n := s.conns.Add(1)
	defer s.conns.Add(-1)
	if n > int64(s.cfg.MaxConns) {
		s.refuseBusy(c)
		return
	}
	cc := newConn(ctx, s, c)
	cc.serve()
}

// peerAllowed checks the uid of the process at the other end of c.
func (s *Server) peerAllowed(c net.Conn) bool {
	uc, ok := c.(*net.UnixConn)
	if !ok {
		s.log.Warn("refused connection: not a unix socket, its peer cannot be checked", "network", c.LocalAddr().Network())
		return false
	}
	uid, pid, err := unixsock.PeerCredentials(uc)
	if err != nil {
		s.log.Warn("refused connection: cannot read its peer credentials", "err", err)
		return false
	}
	if uid != s.uid && uid != 0 {
		s.log.Warn("refused connection from another user", "peer_uid", uid, "peer_pid", pid)
		return false
	}
	return true
}

// refuseBusy answers the first request of a connection past MaxConns with 1005.
func (s *Server) refuseBusy(c net.Conn) {
	s.log.Warn("refused connection: too many connections", "max", s.cfg.MaxConns)
	if err := c.SetDeadline(time.Now().Add(min(s.cfg.WriteStall, 10*time.Second))); err != nil {
		// Without a deadline a client that sends nothing would hold the
		// connection past the limit: close it unanswered.
		s.log.Warn("refused connection closed unanswered: cannot set its deadline", "err", err)
		return
	}
	fr := newFrameReader(c, s.cfg.MaxMessage)
	for range 8 {
		msg, err := fr.next()
		if err != nil {
			if body := readErrorResponse(err); body != nil {
				s.writeRefusal(c, frame(fr.mode, body))
			}
			return
		}
		req, _ := parseRequest(msg)
		if req.id == nil && msg[0] != '[' {
			continue // a notification gets no answer; wait for a request
		}
		id := req.id
		if id == nil {
			id = nullID
		}
		s.writeRefusal(c, frame(fr.mode, encodeResponse(id, nil, rpc.Errorf(rpc.CodeLimit, "too many connections (at most %d)", s.cfg.MaxConns))))
		return
	}
}

// writeRefusal writes the answer to a refused connection; the connection is closed
// next whatever happens, so a failure is only logged.
func (s *Server) writeRefusal(c net.Conn, b []byte) {
	if _, err := c.Write(b); err != nil {
		s.log.Debug("cannot answer a refused connection", "err", err)
	}
}

var nullID = json.RawMessage("null")

// response is a JSON-RPC 2.0 response.
type response struct {
	JSONRPC string          `json:"jsonrpc"`
	ID      json.RawMessage `json:"id"`
	Result  json.RawMessage `json:"result,omitempty"`
	Error   *rpc.Error      `json:"error,omitempty"`
}

// encodeResponse encodes a response with either a result (already encoded) or an
// error.
func encodeResponse(id json.RawMessage, result json.RawMessage, e *rpc.Error) []byte {
	if e == nil {
		// id is as the request sent it and result comes from an encoder, so both
		// are valid JSON: the envelope is written around them as they are.
		if len(result) == 0 {
			result = json.RawMessage("null")
		}
		b := make([]byte, 0, len(`{"jsonrpc":"2.0","id":,"result":}`)+len(id)+len(result))
		b = append(b, `{"jsonrpc":"2.0","id":`...)
		b = append(b, id...)
		b = append(b, `,"result":`...)
		b = append(b, result...)
		return append(b, '}')
	}
	r := response{JSONRPC: "2.0", ID: id, Error: e}
	b, err := json.Marshal(r)
	if err != nil {
		// Only an id or error data that cannot be encoded gets here.
		b, _ = json.Marshal(response{JSONRPC: "2.0", ID: nullID, Error: &rpc.Error{Code: rpc.CodeInternal, Message: "internal error: cannot encode the response"}})
	}
	return b
}

// readErrorResponse is the answer to a read error that ends the connection, or nil
// when there is no one to answer.
func readErrorResponse(err error) []byte {
	var pe *parseError
	switch {
	case errors.As(err, &pe):
		return encodeResponse(nullID, nil, &rpc.Error{Code: rpc.CodeParseError, Message: pe.Error()})
	case errors.Is(err, errTooLarge):
		return encodeResponse(nullID, nil, &rpc.Error{Code: rpc.CodeInvalidRequest, Message: "message too large"})
	}
	return nil
}

// request is a request or notification as received.
type request struct {
	// id is the request's id exactly as sent; nil for a notification.
	id     json.RawMessage
	method string
	params json.RawMessage
}

// parseRequest checks that msg is a JSON-RPC 2.0 request or notification. On error
// req.id is the id when one could be read.
func parseRequest(msg []byte) (request, *rpc.Error) {
	var req request
	invalid := func(why string) (request, *rpc.Error) {
		return req, &rpc.Error{Code: rpc.CodeInvalidRequest, Message: "invalid request: " + why}
	}
	if len(msg) == 0 || msg[0] != '{' {
		return invalid("not a JSON-RPC 2.0 request object")
	}
	// One pass over the members finds the four that matter; params stays as it
	// is, a slice of msg, for its method's decoder.
	var id, version, method json.RawMessage
	err := codec.Members(msg, func(key []byte, val json.RawMessage) {
		switch string(key) {
		case "id":
			id = val
		case "jsonrpc":
			version = val
		case "method":
			method = val
		case "params":
			req.params = val
		}
	})
	if err != nil {
		return invalid("not a JSON-RPC 2.0 request object")
	}
	if id != nil {
		switch {
		case id[0] == '"' || id[0] == '-' || id[0] >= '0' && id[0] <= '9':
			req.id = id
		case string(id) == "null":
			req.id = nullID
		default:
			req.id = nullID
			return invalid("id must be a string or a number")
		}
	}
	if v, ok := codec.StringValue(version); !ok || v != "2.0" {
		return invalid(`"jsonrpc" must be "2.0"`)
	}
	m, ok := codec.StringValue(method)
	if !ok {
		return invalid(`"method" must be a string`)
	}
	req.method = m
	return req, nil
}

// idKey identifies a request id for $/cancelRequest: strings by their value,
// numbers by their text.
func idKey(id json.RawMessage) string {
	if len(id) > 0 && id[0] == '"' {
		var s string
		if json.Unmarshal(id, &s) == nil {
			return "s:" + s
		}
	}
	if n, err := strconv.ParseInt(string(id), 10, 64); err == nil {
		return "n:" + strconv.FormatInt(n, 10)
	}
	return "n:" + string(id)
}

// conn is the state of one served connection.
type conn struct {
	s  *Server
	c  net.Conn
	fr *frameReader
	// parent is the server's context: done when the server stops; what is read
	// then is refused.
	parent context.Context
	ctx    context.Context
	// cancel ends the connection's context, pending requests and watch pumps,
	// with the reason (errConnEnded); the server stopping ends it through parent.
	cancel context.CancelCauseFunc

	out chan []byte
	// wmu is held while writing to c. queued counts the messages in out or in
	// the writer's hands; while it is zero a sender writes its message itself,
	// which saves waking the writer. The writer starts with the first message
	// queued: a connection of single requests never needs it.
	wmu        sync.Mutex
	queued     int
	qbytes     int           // the bytes of the queued messages
	room       chan struct{} // closed when the writer made room, if a sender waits
	writing    bool          // the writer was started
	failed     bool          // a write failed: nothing more is written
	dead       chan struct{} // closed once the writer gave up
	deadOnce   sync.Once
	writerDone chan struct{}
	deadlineMu sync.Mutex
	flushBy    time.Time // set when closing: writes must end by then

	// wg counts the goroutines the connection started: slow requests and pumps.
	wg sync.WaitGroup

	mu       sync.Mutex
	watches  map[string]*watch
	pending  map[string]*pending
	tokenSeq int
}

// watch is one watch of the connection.
type watch struct {
	token     string
	w         rpc.Watcher
	stopped   atomic.Bool
	closeOnce sync.Once
}

func (w *watch) close() {
	if w.w != nil {
		w.closeOnce.Do(func() { w.w.Close() })
	}
}

// pending is a slow request under way.
type pending struct {
	cancel context.CancelCauseFunc
}

func newConn(parent context.Context, s *Server, c net.Conn) *conn {
	ctx, cancel := context.WithCancelCause(parent)
	return &conn{
		s:          s,
		c:          c,
		fr:         newFrameReader(c, s.cfg.MaxMessage),
		parent:     parent,
		ctx:        ctx,
		cancel:     cancel,
		out:        make(chan []byte, writeQueue),
		dead:       make(chan struct{}),
		writerDone: make(chan struct{}),
		watches:    map[string]*watch{},
		pending:    map[string]*pending{},
	}
}

// serve runs the connection: the read loop here, the writer (once needed) in its
// own goroutine. When reading ends, for whatever reason, pending requests are
// cancelled, watches closed, what they answer is written within flushGrace, and
// the connection closed. When the server stops, what the client sent already is
// read for stopReadGrace more and answered 1006.
func (cc *conn) serve() {
	stop := context.AfterFunc(cc.ctx, func() {
		deadline := time.Now()
		if cc.parent.Err() != nil {
			deadline = deadline.Add(stopReadGrace)
		}
		if err := cc.c.SetReadDeadline(deadline); err != nil {
			// Reading would go on: end it the only other way.
			cc.c.Close()
		}
	})

	cc.readLoop()

	stop()                  // reading is over: nothing to interrupt
	cc.cancel(errConnEnded) // a no-op when the server's stop ended it already
	cc.mu.Lock()
	watches := make([]*watch, 0, len(cc.watches))
	for _, w := range cc.watches {
		watches = append(watches, w)
	}
	cc.mu.Unlock()
	for _, w := range watches {
		w.stopped.Store(true)
		w.close()
	}
	cc.startFlush()
	cc.wg.Wait()
	close(cc.out)
	cc.wmu.Lock()
	writing := cc.writing
	cc.wmu.Unlock()
	if writing {
		<-cc.writerDone
	}
	cc.c.Close()
}

func (cc *conn) readLoop() {
	for {
		msg, err := cc.fr.next()
		if err != nil {
			if body := readErrorResponse(err); body != nil {
				cc.send(body)
			}
			return
		}
		if cc.parent.Err() != nil {
			cc.refuse(msg)
			continue
		}
		cc.handle(msg)
	}
}

// refuse answers a request read once the server stops: 1006, or what is wrong
// with it when it is no valid request.
func (cc *conn) refuse(msg []byte) {
	if msg[0] == '[' {
		cc.send(encodeResponse(nullID, nil, &rpc.Error{Code: rpc.CodeInvalidRequest, Message: "invalid request: batches are not supported"}))
		return
	}
	req, rerr := parseRequest(msg)
	if rerr != nil {
		id := req.id
		if id == nil {
			id = nullID
		}
		cc.send(encodeResponse(id, nil, rerr))
		return
	}
	cc.reply(req, nil, rpc.ShuttingDown())
}

// handle answers or starts one message.
func (cc *conn) handle(msg []byte) {
	if msg[0] == '[' {
		cc.send(encodeResponse(nullID, nil, &rpc.Error{Code: rpc.CodeInvalidRequest, Message: "invalid request: batches are not supported"}))
		return
	}
	req, rerr := parseRequest(msg)
	if rerr != nil {
		id := req.id
		if id == nil {
			id = nullID
		}
		cc.send(encodeResponse(id, nil, rerr))
		return
	}
	switch req.method {
	case rpc.MethodCancelRequest:
		cc.cancelRequest(req.params)
		cc.reply(req, rpc.Empty{}, nil)
		return
	case rpc.MethodWatch:
		cc.watch(req)
		return
	case rpc.MethodUnwatch:
		cc.unwatch(req)
		return
	}
	m, ok := cc.s.methods[req.method]
	if !ok {
		cc.reply(req, nil, &rpc.Error{Code: rpc.CodeMethodNotFound, Message: fmt.Sprintf("method %q not found", req.method)})
		return
	}
	if !m.slow {
		res, err := cc.call(cc.ctx, req.method, m.call, req.params)
		cc.reply(req, res, err)
		return
	}
	ctx, cancel := context.WithCancelCause(cc.ctx)
	p := &pending{cancel: cancel}
	var key string
	if req.id != nil {
		key = idKey(req.id)
		cc.mu.Lock()
		cc.pending[key] = p
		cc.mu.Unlock()
	}
	cc.wg.Go(func() {
		defer cancel(nil)
		res, err := cc.call(ctx, req.method, m.call, req.params)
		if req.id != nil {
			cc.mu.Lock()
			if cc.pending[key] == p {
				delete(cc.pending, key)
			}
			cc.mu.Unlock()
		}
		cc.reply(req, res, err)
	})
}

// call runs a method, turning a panic into an internal error.
func (cc *conn) call(ctx context.Context, name string, f func(context.Context, json.RawMessage) (any, error), params json.RawMessage) (res any, err error) {
	defer func() {
		if v := recover(); v != nil {
			cc.s.log.Error("panic in a request handler", "method", name, "panic", fmt.Sprint(v), "stack", string(debug.Stack()))
			res, err = nil, &rpc.Error{Code: rpc.CodeInternal, Message: "internal error"}
		}
	}()
	res, err = f(ctx, params)
	if err != nil {
		err = attribute(ctx, err)
		if e := rpc.AsError(err); e.Code == rpc.CodeInternal {
			cc.s.log.Error("internal error", "method", name, "err", err)
		}
	}
	return res, err
}

// attribute turns the error of a request whose context ended into the reason it
// ended: -32800 when its client cancelled it ($/cancelRequest) or ended the
// connection, 1006 when the server stops. An error that is already a protocol
// error stays as it is.
func attribute(ctx context.Context, err error) error {
	if ctx.Err() == nil || !errors.Is(err, context.Canceled) && !errors.Is(err, context.DeadlineExceeded) {
		return err
	}
	var e *rpc.Error
	if errors.As(err, &e) {
		return err
	}
	if errors.As(context.Cause(ctx), &e) {
		return e
	}
	return rpc.ShuttingDown()
}

// reply answers req with its result or error; a notification gets no answer. This
// is the one place errors become JSON-RPC errors.
func (cc *conn) reply(req request, res any, err error) {
	if req.id == nil {
		return
	}
	if err != nil {
		cc.send(encodeResponse(req.id, nil, rpc.AsError(err)))
		return
	}
	b, merr := encodeResult(res)
	if merr != nil {
		cc.s.log.Error("cannot encode a result", "method", req.method, "err", merr)
		cc.send(encodeResponse(req.id, nil, &rpc.Error{Code: rpc.CodeInternal, Message: "internal error: cannot encode the result"}))
		return
	}
	cc.send(encodeResponse(req.id, b, nil))
}

// encodeResult encodes a method's result. A result that encodes itself is asked
// directly: encoding/json would check and compact its output once more.
func encodeResult(res any) ([]byte, error) {
	if m, ok := res.(json.Marshaler); ok {
		if v := reflect.ValueOf(res); v.Kind() != reflect.Pointer || !v.IsNil() {
			return m.MarshalJSON()
		}
	}
	return json.Marshal(res)
}

// send writes a message, or queues it for the writer when others are ahead of it,
// waiting while the queue is full. It reports false when the connection's writer
// gave up.
func (cc *conn) send(body []byte) bool {
	return cc.sendFramed(frame(cc.fr.mode, body))
}

// sendFramed is send for bytes already framed: one message or several.
func (cc *conn) sendFramed(b []byte) bool {
	select {
	case <-cc.dead:
		return false
	default:
	}
	cc.wmu.Lock()
	for {
		if cc.queued == 0 {
			ok := cc.write(net.Buffers{b})
			cc.wmu.Unlock()
			return ok
		}
		if cc.qbytes+len(b) <= queueBytes {
			break
		}
		// Full: wait for the writer to make room.
		if cc.room == nil {
			cc.room = make(chan struct{})
		}
		room := cc.room
		cc.wmu.Unlock()
		select {
		case <-room:
		case <-cc.dead:
			return false
		}
		cc.wmu.Lock()
	}
	cc.queued++
	cc.qbytes += len(b)
	if !cc.writing {
		cc.writing = true
		go cc.writer()
	}
	cc.wmu.Unlock()
	select {
	case cc.out <- b:
		return true
	case <-cc.dead:
		cc.wmu.Lock()
		cc.queued--
		cc.qbytes -= len(b)
		cc.wmu.Unlock()
		return false
	}
}

// writer writes the queued messages in order. Whatever else is queued goes out in
// the same system call.
func (cc *conn) writer() {
	defer close(cc.writerDone)
	for b := range cc.out {
		bufs := net.Buffers{b}
		size := len(b)
	more:
		for size < writeBatch {
			select {
			case nb, ok := <-cc.out:
				if !ok {
					break more
				}
				bufs = append(bufs, nb)
				size += len(nb)
			default:
				break more
			}
		}
		n := len(bufs)
		cc.wmu.Lock()
		cc.write(bufs)
		cc.queued -= n
		cc.qbytes -= size
		if cc.room != nil {
			close(cc.room)
			cc.room = nil
		}
		cc.wmu.Unlock()
	}
}

// write writes bufs within WriteStall (or by the flush deadline once the connection
// is closing); the caller holds wmu. A write that fails or stalls kills the
// connection; what comes after it is dropped.
func (cc *conn) write(bufs net.Buffers) bool {
	if cc.failed {
		return false
	}
	cc.deadlineMu.Lock()
	deadline := time.Now().Add(cc.s.cfg.WriteStall)
	if !cc.flushBy.IsZero() && cc.flushBy.Before(deadline) {
		deadline = cc.flushBy
	}
	err := cc.c.SetWriteDeadline(deadline)
	cc.deadlineMu.Unlock()
	if err != nil {
		// Without a deadline a client that stops reading would block this
		// connection's writer for good: give up on it now.
		cc.failed = true
		if !errors.Is(err, net.ErrClosed) {
			cc.s.log.Warn("closing a connection whose write deadline cannot be set", "err", err)
		}
		cc.kill()
		return false
	}
	if _, err := bufs.WriteTo(cc.c); err != nil {
		cc.failed = true
		var ne net.Error
		if errors.As(err, &ne) && ne.Timeout() && cc.ctx.Err() == nil {
			cc.s.log.Warn("closing a connection whose writes stalled", "stall", cc.s.cfg.WriteStall)
		}
		cc.kill()
		return false
	}
	return true
}

// writeBatch is how many queued bytes the writer gathers into one write.
const writeBatch = 256 << 10

// kill ends the connection after its writer failed: nothing more can be sent.
func (cc *conn) kill() {
	cc.deadOnce.Do(func() { close(cc.dead) })
	cc.cancel(errConnEnded)
	cc.c.Close()
}

// startFlush gives the writer flushGrace (at most WriteStall) to write what is left.
func (cc *conn) startFlush() {
	cc.deadlineMu.Lock()
	defer cc.deadlineMu.Unlock()
	cc.flushBy = time.Now().Add(min(flushGrace, cc.s.cfg.WriteStall))
	if err := cc.c.SetWriteDeadline(cc.flushBy); err != nil {
		// A write under way would not end by flushBy: close the connection, which
		// ends it (what is left unwritten is lost, as it would be past the grace).
		cc.c.Close()
	}
}

// cancelRequest handles $/cancelRequest: the pending request with that id ends
// with -32800. Unknown or finished ids are ignored.
func (cc *conn) cancelRequest(params json.RawMessage) {
	var p struct {
		ID json.RawMessage `json:"id"`
	}
	if json.Unmarshal(params, &p) != nil || len(p.ID) == 0 {
		return
	}
	cc.mu.Lock()
	pr := cc.pending[idKey(bytes.TrimSpace(p.ID))]
	cc.mu.Unlock()
	if pr != nil {
		pr.cancel(errCancelRequest)
	}
}

// watch handles job.watch: the response is queued before the pump that sends the
// watch's events starts, so it comes first.
func (cc *conn) watch(req request) {
	var p rpc.WatchParams
	if err := cc.s.dec.Params(req.params, &p); err != nil {
		cc.reply(req, nil, err)
		return
	}
	if err := p.Validate(); err != nil {
		cc.reply(req, nil, err)
		return
	}
	w := &watch{}
	cc.mu.Lock()
	if p.Token != "" {
		if _, used := cc.watches[p.Token]; used {
			cc.mu.Unlock()
			cc.reply(req, nil, rpc.InvalidParams("token", "already in use on this connection"))
			return
		}
	} else {
		for {
			cc.tokenSeq++
			p.Token = "w" + strconv.Itoa(cc.tokenSeq)
			if _, used := cc.watches[p.Token]; !used {
				break
			}
		}
	}
	if len(cc.watches) >= cc.s.cfg.MaxWatches {
		cc.mu.Unlock()
		cc.reply(req, nil, rpc.Errorf(rpc.CodeLimit, "too many watches on this connection (at most %d)", cc.s.cfg.MaxWatches))
		return
	}
	w.token = p.Token
	cc.watches[w.token] = w // reserved while the service starts the watch
	cc.mu.Unlock()

	watcher, err := cc.startWatch(p)
	if err != nil {
		cc.mu.Lock()
		delete(cc.watches, w.token)
		cc.mu.Unlock()
		cc.reply(req, nil, err)
		return
	}
	w.w = watcher
	res := watcher.Result()
	if res.Token == "" {
		res.Token = w.token
	}
	cc.reply(req, res, nil)
	cc.wg.Go(func() { cc.pump(w) })
}

// startWatch calls the service's Watch, turning a panic into an internal error.
func (cc *conn) startWatch(p rpc.WatchParams) (w rpc.Watcher, err error) {
	defer func() {
		if v := recover(); v != nil {
			cc.s.log.Error("panic in a request handler", "method", rpc.MethodWatch, "panic", fmt.Sprint(v), "stack", string(debug.Stack()))
			w, err = nil, &rpc.Error{Code: rpc.CodeInternal, Message: "internal error"}
		}
	}()
	w, err = cc.s.cfg.Service.Watch(cc.ctx, p)
	if err != nil {
		err = attribute(cc.ctx, err)
	}
	if err == nil && w == nil {
		err = errors.New("the service started no watch")
	}
	if err != nil && rpc.AsError(err).Code == rpc.CodeInternal {
		cc.s.log.Error("internal error", "method", rpc.MethodWatch, "err", err)
	}
	return w, err
}

// pump sends the events of a watch as job.event notifications until the watch
// ends. It sends everything Next returns, waiting while the connection's queue is
// full.
func (cc *conn) pump(w *watch) {
	defer func() {
		if v := recover(); v != nil {
			cc.s.log.Error("panic in a watch", "panic", fmt.Sprint(v), "stack", string(debug.Stack()))
		}
		w.close()
		cc.mu.Lock()
		if cc.watches[w.token] == w {
			delete(cc.watches, w.token)
		}
		cc.mu.Unlock()
	}()
	buffered, _ := w.w.(rpc.BufferedWatcher)
	prefix, err := eventPrefix(w.token)
	if err != nil {
		cc.s.log.Error("cannot encode a watch token", "err", err)
		return
	}
	for {
		ev, err := w.w.Next(cc.ctx)
		// The events the watcher holds already go out with this one, in one write of
		// at most pumpBatch bytes (and one event).
		var msgs []byte
		for n := 0; err == nil; n++ {
			if !w.stopped.Load() { // unwatched: drain to io.EOF without sending
				var eerr error
				if msgs, eerr = cc.appendEvent(msgs, prefix, ev, buffered); eerr != nil {
					cc.s.log.Error("cannot encode an event", "err", eerr) // and go on without it
				}
			}
			if buffered == nil || buffered.Buffered() == 0 || n >= maxEventsPerWrite || len(msgs) >= pumpBatch {
				break
			}
			ev, err = w.w.Next(cc.ctx)
		}
		if len(msgs) > 0 && !cc.sendFramed(msgs) {
			return
		}
		if err != nil {
			if !errors.Is(err, io.EOF) && cc.ctx.Err() == nil && !w.stopped.Load() {
				cc.s.log.Error("watch ended with an error", "err", err)
			}
			return
		}
	}
}

// maxEventsPerWrite bounds how many events a watch writes at once.
const maxEventsPerWrite = 256

// appendEvent appends a job.event notification for ev, framed, to msgs. prefix is
// the notification's start up to the event, made once per watch (eventPrefix).
//
// The first event of a batch sizes msgs for itself and for the events bw holds,
// at its size, up to pumpBatch: growing by doubling would leave up to half of
// what a connection queues unused.
func (cc *conn) appendEvent(msgs, prefix []byte, ev *rpc.Event, bw rpc.BufferedWatcher) ([]byte, error) {
	evJSON, err := ev.JSON()
	if err != nil {
		return msgs, err
	}
	const suffix = "}}"
	n := len(prefix) + len(evJSON) + len(suffix)
	if msgs == nil {
		held := 0
		if bw != nil {
			held = bw.Buffered()
		}
		size := n + 32 // a header and a newline
		msgs = make([]byte, 0, max(size, min(pumpBatch, (1+held)*size)))
	}
	if cc.fr.mode == framingLSP {
		msgs = append(msgs, "Content-Length: "...)
		msgs = strconv.AppendInt(msgs, int64(n), 10)
		msgs = append(msgs, "\r\n\r\n"...)
	}
	msgs = append(msgs, prefix...)
	msgs = append(msgs, evJSON...)
	msgs = append(msgs, suffix...)
	if cc.fr.mode != framingLSP {
		msgs = append(msgs, '\n')
	}
	return msgs, nil
}

// eventPrefix is the start of a watch's job.event notifications, up to the event.
// The event's own encoding is made once however many watchers send it (Event.JSON).
func eventPrefix(token string) ([]byte, error) {
	tok, err := json.Marshal(token)
	if err != nil {
		return nil, err
	}
	b := append([]byte(`{"jsonrpc":"2.0","method":"`+rpc.MethodEvent+`","params":{"token":`), tok...)
	return append(b, `,"event":`...), nil
}

// unwatch handles job.unwatch: it ends the watch with that token, if any.
func (cc *conn) unwatch(req request) {
	var p rpc.UnwatchParams
	if err := cc.s.dec.Params(req.params, &p); err != nil {
		cc.reply(req, nil, err)
		return
	}
	cc.mu.Lock()
	w := cc.watches[p.Token]
	if w != nil {
		delete(cc.watches, p.Token)
		w.stopped.Store(true)
	}
	cc.mu.Unlock()
	if w != nil {
		w.close()
	}
	cc.reply(req, rpc.Empty{}, nil)
}
