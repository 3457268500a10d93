// Package client talks to spoold over its Unix socket. Dial returns a *Client that
// implements rpc.Service with JSON-RPC 2.0 in the protocol's newline framing: a
// jsonrpc2.Conn (github.com/sourcegraph/jsonrpc2) on a bounded stream of the
// client's own, requests with increasing ids, responses matched by id in any order,
// watch events routed to their watchers in the order they arrive, and
// $/cancelRequest sent for a call whose context ends first. A Client is safe for
// use by many goroutines.
//
// It imports rpc, for the contract, rpc/codec and rpc/unixsock below it, and
// jsonrpc2: the CLI links no store and no scheduler.
package client

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log"
	"net"
	"strconv"
	"sync"
	"time"

	"github.com/sourcegraph/jsonrpc2"

	"spool/rpc"
	"spool/rpc/codec"
)

// ErrClosed is returned by calls made after Close, and by their pending calls.
var ErrClosed = errors.New("client closed")

// ErrDisconnected is wrapped by the error of calls (and watchers' Next) when the
// connection to the daemon ended.
var ErrDisconnected = errors.New("connection to the daemon lost")

// controlTimeout bounds writes made on the caller's behalf after its context is
// done ($/cancelRequest, job.unwatch).
const controlTimeout = 5 * time.Second

// Client is a connection to the daemon. It implements rpc.Service.
type Client struct {
	rc     *jsonrpc2.Conn
	stream *lineStream
	// dec decodes events and results, leniently: members a newer daemon adds are
	// skipped. It keeps the plans of the types it met, for every call.
	dec *codec.Decoder

	// wmu serializes writes, so that ids go out in increasing order and a done
	// context interrupts only its own write.
	wmu    sync.Mutex
	nextID int64 // guarded by wmu

	mu       sync.Mutex
	nextTok  int64
	watches  map[string]*watcher
	inflight int                     // job.watch requests without a response yet
	orphans  map[string][]*rpc.Event // events for tokens not (yet) known, while inflight > 0
	closing  bool
}

var _ rpc.Service = (*Client)(nil)

// New returns a client on an established connection and starts its reader. It makes
// none of Dial's checks; Close closes conn.
func New(conn net.Conn) *Client {
	return newClient(conn, DefaultMaxMessage)
}

func newClient(conn net.Conn, maxMessage int) *Client {
	c := &Client{
		stream:  newLineStream(conn, maxMessage),
		dec:     codec.NewDecoder(),
		watches: make(map[string]*watcher),
		orphans: make(map[string][]*rpc.Event),
	}
	// The Conn logs protocol errors and answers to calls it forgot (abandoned
	// ones): neither is the caller's business, and the errors reach the calls.
	c.rc = jsonrpc2.NewConn(context.Background(), c.stream, events{c},
		jsonrpc2.SetLogger(log.New(io.Discard, "", 0)), jsonrpc2.OnSend(c.stream.onSend))
	return c
}

// Close closes the connection and waits for the reader to end. Pending calls return
// ErrClosed, watchers' Next too.
func (c *Client) Close() error {
	c.mu.Lock()
	c.closing = true
	c.mu.Unlock()
	err := c.rc.Close()
	<-c.stream.ended
	if errors.Is(err, jsonrpc2.ErrClosed) || errors.Is(err, net.ErrClosed) {
		err = nil // closed already, when the connection ended
	}
	if err != nil {
		return fmt.Errorf("close the connection: %w", err)
	}
	return nil
}

// done is closed once the connection ended.
func (c *Client) done() <-chan struct{} {
	return c.rc.DisconnectNotify()
}

// events is the Conn's handler of what the daemon sends on its own: job.event
// notifications. It runs on the Conn's reader, one message at a time, so events
// reach their watchers in the order they arrived; it never blocks on a watcher.
type events struct{ c *Client }

// Handle implements jsonrpc2.Handler. Other notifications, and requests from the
// server, are not part of the protocol: they are ignored.
func (h events) Handle(_ context.Context, _ *jsonrpc2.Conn, req *jsonrpc2.Request) {
	if !req.Notif || req.Method != rpc.MethodEvent || req.Params == nil {
		return
	}
	var p rpc.EventParams
	if h.c.dec.Lenient(*req.Params, &p) == nil && p.Event != nil {
		h.c.route(p.Token, p.Event)
	}
}

// rebuild makes the *rpc.Error the daemon returned in process.
func rebuild(e *jsonrpc2.Error) *rpc.Error {
	out := &rpc.Error{Code: int(e.Code), Message: e.Message}
	if e.Data != nil && string(*e.Data) != "null" {
		var d rpc.ErrorData
		if json.Unmarshal(*e.Data, &d) == nil {
			out.Data = &d
		}
	}
	return out
}

// route hands an event to the watcher of token. An event for a token that is not
// known yet is kept while a job.watch is in flight, in case the server names the
// watch differently from what was asked.
func (c *Client) route(token string, ev *rpc.Event) {
	c.mu.Lock()
	w := c.watches[token]
	if w == nil {
		if c.inflight > 0 {
			c.orphans[token] = append(c.orphans[token], ev)
		}
		c.mu.Unlock()
		return
	}
	c.mu.Unlock()
	w.push(ev)
}

// connErr is the error of the ended connection.
func (c *Client) connErr() error {
	c.mu.Lock()
	closing := c.closing
	c.mu.Unlock()
	if closing {
		return ErrClosed
	}
	err := c.stream.readErr()
	if err == nil {
		err = errors.New("the connection was closed")
	}
	return fmt.Errorf("%w: %v", ErrDisconnected, err)
}

// call sends a request and waits for its response, decoding the result into result
// (when not nil). A protocol error comes back as *rpc.Error. When ctx is done first,
// it sends $/cancelRequest and returns ctx's error, leaving nothing of the call
// behind.
func (c *Client) call(ctx context.Context, method string, params, result any) error {
	if err := ctx.Err(); err != nil {
		return fmt.Errorf("%s: %w", method, err)
	}
	id, w, err := c.send(ctx, method, params)
	if err != nil {
		return err
	}
	defer c.stream.take(id) // whatever happens, forget the call
	err = w.Wait(ctx, nil)
	if ctx.Err() != nil && (errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded)) {
		// The Conn still waits for an answer: give it one, so that it forgets
		// the call, and tell the daemon.
		c.stream.abandon(id)
		c.notify(rpc.MethodCancelRequest, struct {
			ID int64 `json:"id"`
		}{id})
		// The answer is the one made up, or the daemon's when it came first.
		err = w.Wait(context.WithoutCancel(ctx), nil)
		if isAbandoned(err) || errors.Is(err, jsonrpc2.ErrClosed) {
			return fmt.Errorf("%s: %w", method, ctx.Err())
		}
	}
	var e *jsonrpc2.Error
	switch {
	case err == nil:
	case errors.As(err, &e):
		return rebuild(e)
	case errors.Is(err, jsonrpc2.ErrClosed):
		return fmt.Errorf("%s: %w", method, c.connErr())
	default:
		return fmt.Errorf("decode the result of %s: %w", method, err)
	}
	if result == nil {
		return nil
	}
	raw := c.stream.take(id)
	if raw == nil {
		raw = json.RawMessage("null") // the stream keeps every result: not reached
	}
	if err := c.dec.Lenient(raw, result); err != nil {
		return fmt.Errorf("decode the result of %s: %w", method, err)
	}
	return nil
}

// send writes a request and returns its id with the Conn's waiter of its response.
func (c *Client) send(ctx context.Context, method string, params any) (int64, jsonrpc2.Waiter, error) {
	c.mu.Lock()
	closing := c.closing
	c.mu.Unlock()
	if closing {
		return 0, jsonrpc2.Waiter{}, fmt.Errorf("%s: %w", method, ErrClosed)
	}
	c.wmu.Lock()
	defer c.wmu.Unlock()
	c.nextID++
	id := c.nextID
	c.stream.expect(id)
	stop := c.stream.interruptWrites(ctx)
	w, err := c.rc.DispatchCall(ctx, method, params, jsonrpc2.PickID(jsonrpc2.ID{Num: uint64(id)}))
	stop()
	if err != nil {
		c.stream.take(id)
		return 0, jsonrpc2.Waiter{}, c.sendErr(ctx, method, err)
	}
	return id, w, nil
}

// sendErr is the error of a request or notification that could not be sent.
func (c *Client) sendErr(ctx context.Context, method string, err error) error {
	var je *json.MarshalerError
	var ue *json.UnsupportedTypeError
	var uv *json.UnsupportedValueError
	switch {
	case errors.As(err, &je) || errors.As(err, &ue) || errors.As(err, &uv):
		return fmt.Errorf("encode the params of %s: %w", method, err)
	case ctx.Err() != nil:
		return fmt.Errorf("send %s: %w", method, ctx.Err())
	case errors.Is(err, jsonrpc2.ErrClosed) || c.stream.readErr() != nil:
		return fmt.Errorf("%s: %w", method, c.connErr())
	}
	return fmt.Errorf("send %s: %w", method, err)
}

// notify writes a notification on the caller's behalf, best effort.
func (c *Client) notify(method string, params any) {
	ctx, cancel := context.WithTimeout(context.Background(), controlTimeout)
	defer cancel()
	c.wmu.Lock()
	defer c.wmu.Unlock()
	stop := c.stream.interruptWrites(ctx)
	defer stop()
	_ = c.rc.Notify(ctx, method, params) // a connection that failed fails the calls
}

// Submit implements rpc.Service (job.submit). The answer is decoded in one pass
// by the Client's decoder, whichever of its two shapes it has: one job, or
// {"jobs": [...]}.
func (c *Client) Submit(ctx context.Context, p rpc.SubmitParams) (*rpc.SubmitResult, error) {
	raw, _, jobs, err := c.submit(ctx, p)
	if err != nil {
		return nil, err
	}
	if jobs != nil {
		r := rpc.SubmitResult{Jobs: []rpc.Job{}}
		if err := c.dec.Lenient(jobs, &r.Jobs); err != nil {
			return nil, fmt.Errorf("decode the result of %s: %w", rpc.MethodSubmit, err)
		}
		if r.Jobs == nil { // "jobs": null
			r.Jobs = []rpc.Job{}
		}
		return &r, nil
	}
	var j rpc.Job
	if err := c.dec.Lenient(raw, &j); err != nil {
		return nil, fmt.Errorf("decode the result of %s: %w", rpc.MethodSubmit, err)
	}
	return &rpc.SubmitResult{Job: &j}, nil
}

// SubmitIDs submits like Submit and returns only the ids of the jobs, in order,
// without decoding the jobs themselves: for callers that print the ids alone (a
// short-lived command saves the decoding and its first-use setup).
func (c *Client) SubmitIDs(ctx context.Context, p rpc.SubmitParams) ([]int64, error) {
	raw, id, jobs, err := c.submit(ctx, p)
	if err != nil {
		return nil, err
	}
	if jobs == nil {
		n, err := strconv.ParseInt(string(id), 10, 64)
		if err != nil {
			return nil, fmt.Errorf("decode the result of %s: no job id in %.100s", rpc.MethodSubmit, raw)
		}
		return []int64{n}, nil
	}
	var js []struct {
		ID int64 `json:"id"`
	}
	if err := c.dec.Lenient(jobs, &js); err != nil {
		return nil, fmt.Errorf("decode the result of %s: %w", rpc.MethodSubmit, err)
	}
	ids := make([]int64, len(js))
	for i, j := range js {
		ids[i] = j.ID
	}
	return ids, nil
}

// submit calls job.submit and returns its answer with the values of its "id" and
// "jobs" members: jobs is set for a batch, nil for one job.
func (c *Client) submit(ctx context.Context, p rpc.SubmitParams) (raw, id, jobs json.RawMessage, err error) {
	if err := c.call(ctx, rpc.MethodSubmit, p, &raw); err != nil {
		return nil, nil, nil, err
	}
	if err := codec.Members(raw, func(key []byte, val json.RawMessage) {
		switch string(key) {
		case "id":
			id = val
		case "jobs":
			jobs = val
		}
	}); err != nil {
		return nil, nil, nil, fmt.Errorf("decode the result of %s: %w", rpc.MethodSubmit, err)
	}
	return raw, id, jobs, nil
}

// Get implements rpc.Service (job.get).
func (c *Client) Get(ctx context.Context, p rpc.GetParams) (*rpc.Job, error) {
	return callJob(ctx, c, rpc.MethodGet, p)
}

// List implements rpc.Service (job.list).
func (c *Client) List(ctx context.Context, p rpc.ListParams) (*rpc.ListResult, error) {
	var r rpc.ListResult
	if err := c.call(ctx, rpc.MethodList, p, &r); err != nil {
		return nil, err
	}
	return &r, nil
}

// Cancel implements rpc.Service (job.cancel).
func (c *Client) Cancel(ctx context.Context, p rpc.CancelParams) (*rpc.Job, error) {
	return callJob(ctx, c, rpc.MethodCancel, p)
}

// Wait implements rpc.Service (job.wait).
func (c *Client) Wait(ctx context.Context, p rpc.WaitParams) (*rpc.Job, error) {
	return callJob(ctx, c, rpc.MethodWait, p)
}

// Logs implements rpc.Service (job.logs).
func (c *Client) Logs(ctx context.Context, p rpc.LogsParams) (*rpc.LogsResult, error) {
	var r rpc.LogsResult
	if err := c.call(ctx, rpc.MethodLogs, p, &r); err != nil {
		return nil, err
	}
	return &r, nil
}

// Retry implements rpc.Service (job.retry).
func (c *Client) Retry(ctx context.Context, p rpc.RetryParams) (*rpc.Job, error) {
	return callJob(ctx, c, rpc.MethodRetry, p)
}

// Remove implements rpc.Service (job.remove).
func (c *Client) Remove(ctx context.Context, p rpc.RemoveParams) (*rpc.RemoveResult, error) {
	var r rpc.RemoveResult
	if err := c.call(ctx, rpc.MethodRemove, p, &r); err != nil {
		return nil, err
	}
	return &r, nil
}

// Prune implements rpc.Service (job.prune).
func (c *Client) Prune(ctx context.Context, p rpc.PruneParams) (*rpc.RemoveResult, error) {
	var r rpc.RemoveResult
	if err := c.call(ctx, rpc.MethodPrune, p, &r); err != nil {
		return nil, err
	}
	return &r, nil
}

// QueueList implements rpc.Service (queue.list).
func (c *Client) QueueList(ctx context.Context) (*rpc.QueueListResult, error) {
	var r rpc.QueueListResult
	if err := c.call(ctx, rpc.MethodQueueList, rpc.Empty{}, &r); err != nil {
		return nil, err
	}
	return &r, nil
}

// QueueSet implements rpc.Service (queue.set).
func (c *Client) QueueSet(ctx context.Context, p rpc.QueueSetParams) (*rpc.Queue, error) {
	var r rpc.Queue
	if err := c.call(ctx, rpc.MethodQueueSet, p, &r); err != nil {
		return nil, err
	}
	return &r, nil
}

// TemplatePut implements rpc.Service (template.put).
func (c *Client) TemplatePut(ctx context.Context, p rpc.TemplatePutParams) (*rpc.Template, error) {
	return callTemplate(ctx, c, rpc.MethodTemplatePut, p)
}

// TemplateGet implements rpc.Service (template.get).
func (c *Client) TemplateGet(ctx context.Context, p rpc.TemplateNameParams) (*rpc.Template, error) {
	return callTemplate(ctx, c, rpc.MethodTemplateGet, p)
}

// TemplateList implements rpc.Service (template.list).
func (c *Client) TemplateList(ctx context.Context) (*rpc.TemplateListResult, error) {
	var r rpc.TemplateListResult
	if err := c.call(ctx, rpc.MethodTemplateList, rpc.Empty{}, &r); err != nil {
		return nil, err
	}
	return &r, nil
}

// TemplateRemove implements rpc.Service (template.remove).
func (c *Client) TemplateRemove(ctx context.Context, p rpc.TemplateNameParams) error {
	return c.call(ctx, rpc.MethodTemplateRemove, p, nil)
}

// TemplateRun implements rpc.Service (template.run).
func (c *Client) TemplateRun(ctx context.Context, p rpc.TemplateRunParams) (*rpc.Job, error) {
	return callJob(ctx, c, rpc.MethodTemplateRun, p)
}

// Info implements rpc.Service (daemon.info).
func (c *Client) Info(ctx context.Context) (*rpc.Info, error) {
	var r rpc.Info
	if err := c.call(ctx, rpc.MethodInfo, rpc.Empty{}, &r); err != nil {
		return nil, err
	}
	return &r, nil
}

// Shutdown implements rpc.Service (daemon.shutdown).
func (c *Client) Shutdown(ctx context.Context, p rpc.ShutdownParams) error {
	return c.call(ctx, rpc.MethodShutdown, p, nil)
}

func callJob(ctx context.Context, c *Client, method string, params any) (*rpc.Job, error) {
	var j rpc.Job
	if err := c.call(ctx, method, params, &j); err != nil {
		return nil, err
	}
	return &j, nil
}

func callTemplate(ctx context.Context, c *Client, method string, params any) (*rpc.Template, error) {
	var t rpc.Template
	if err := c.call(ctx, method, params, &t); err != nil {
		return nil, err
	}
	return &t, nil
}
