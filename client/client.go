// Package client talks to spoold over its Unix socket. Dial returns a *Client that
// implements rpc.Service with newline-delimited JSON-RPC 2.0: one reader goroutine,
// requests with increasing ids, responses matched by id in any order, and watch
// events routed to their watchers. A Client is safe for use by many goroutines.
package client

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"strconv"
	"sync"
	"time"

	"spool/rpc"
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
	conn net.Conn
	// dec decodes events and results, leniently: members a newer daemon adds are
	// skipped. It keeps the plans of the types it met, for every call.
	dec *rpc.Decoder

	// wmu serializes writes, so that ids go out in increasing order and messages
	// never interleave.
	wmu sync.Mutex
	// dl guards writing, with which a done context interrupts a blocked write.
	dl      sync.Mutex
	writing bool

	mu       sync.Mutex
	nextID   int64
	nextTok  int64
	pending  map[int64]chan response
	watches  map[string]*watcher
	inflight int                     // job.watch requests without a response yet
	orphans  map[string][]*rpc.Event // events for tokens not (yet) known, while inflight > 0
	closing  bool
	err      error         // why the connection ended; set before done is closed
	done     chan struct{} // closed when the reader ended
}

var _ rpc.Service = (*Client)(nil)

// New returns a client on an established connection and starts its reader. It makes
// none of Dial's checks; Close closes conn.
func New(conn net.Conn) *Client {
	c := &Client{
		conn:    conn,
		dec:     rpc.NewDecoder(),
		pending: make(map[int64]chan response),
		watches: make(map[string]*watcher),
		orphans: make(map[string][]*rpc.Event),
		done:    make(chan struct{}),
	}
	go c.read()
	return c
}

// Close closes the connection and waits for the reader to end. Pending calls return
// ErrClosed, watchers' Next too.
func (c *Client) Close() error {
	c.mu.Lock()
	c.closing = true
	c.mu.Unlock()
	err := c.conn.Close()
	<-c.done
	if errors.Is(err, net.ErrClosed) {
		err = nil
	}
	if err != nil {
		return fmt.Errorf("close the connection: %w", err)
	}
	return nil
}

// response is a response as the reader hands it to its call.
type response struct {
	result json.RawMessage
	err    *rpc.Error
}

// message is any JSON-RPC message the server sends.
type message struct {
	ID     json.RawMessage `json:"id"`
	Method string          `json:"method"`
	Params json.RawMessage `json:"params"`
	Result json.RawMessage `json:"result"`
	Error  *wireError      `json:"error"`
}

// parseMessage takes a message apart in one pass; the members it keeps are parts of
// line. ok is false for a line that is not a JSON object or has members of the
// wrong type.
func parseMessage(line []byte) (m message, ok bool) {
	ok = true
	err := rpc.Members(bytes.TrimSpace(line), func(key []byte, val json.RawMessage) {
		switch string(key) {
		case "id":
			m.ID = val
		case "method":
			if json.Unmarshal(val, &m.Method) != nil {
				ok = false
			}
		case "params":
			m.Params = val
		case "result":
			m.Result = val
		case "error":
			m.Error = nil
			if string(val) != "null" && json.Unmarshal(val, &m.Error) != nil {
				ok = false
			}
		}
	})
	return m, ok && err == nil
}

// wireError is a JSON-RPC error object as it arrives.
type wireError struct {
	Code    int             `json:"code"`
	Message string          `json:"message"`
	Data    json.RawMessage `json:"data"`
}

// rebuild makes the *rpc.Error the daemon returned in process.
func (e *wireError) rebuild() *rpc.Error {
	out := &rpc.Error{Code: e.Code, Message: e.Message}
	if len(e.Data) > 0 && !bytes.Equal(e.Data, []byte("null")) {
		var d rpc.ErrorData
		if json.Unmarshal(e.Data, &d) == nil {
			out.Data = &d
		}
	}
	return out
}

// read is the connection's only reader. It never blocks on a caller: responses go
// to buffered channels and events to unbounded queues.
func (c *Client) read() {
	// The server writes each message on a line of its own.
	br := bufio.NewReaderSize(c.conn, 64<<10)
	var err error
	for {
		var line []byte
		if line, err = br.ReadBytes('\n'); err != nil {
			break
		}
		m, ok := parseMessage(line)
		if !ok {
			continue // not an object: nothing we can match it to
		}
		c.dispatch(&m)
	}
	c.mu.Lock()
	if c.closing {
		c.err = ErrClosed
	} else {
		c.err = fmt.Errorf("%w: %v", ErrDisconnected, err)
	}
	c.mu.Unlock()
	close(c.done)
	c.conn.Close()
}

func (c *Client) dispatch(m *message) {
	hasID := len(m.ID) > 0 && !bytes.Equal(m.ID, []byte("null"))
	if m.Method != "" {
		if !hasID && m.Method == rpc.MethodEvent {
			var p rpc.EventParams
			if c.dec.Lenient(m.Params, &p) == nil && p.Event != nil {
				c.route(p.Token, p.Event)
			}
		}
		// Other notifications, and requests from the server, are not part of the
		// protocol: ignore them.
		return
	}
	if !hasID {
		return // an error about no request in particular (id null)
	}
	id, err := strconv.ParseInt(string(m.ID), 10, 64)
	if err != nil {
		return // not one of our ids
	}
	r := response{result: m.Result}
	if m.Error != nil {
		r.err = m.Error.rebuild()
	}
	c.mu.Lock()
	if ch, ok := c.pending[id]; ok {
		delete(c.pending, id)
		ch <- r // buffered: never blocks
	}
	c.mu.Unlock()
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
	defer c.mu.Unlock()
	return c.err
}

// call sends a request and waits for its response, decoding the result into result
// (when not nil). A protocol error comes back as *rpc.Error. When ctx is done first,
// it sends $/cancelRequest and returns ctx's error.
func (c *Client) call(ctx context.Context, method string, params, result any) error {
	if err := ctx.Err(); err != nil {
		return fmt.Errorf("%s: %w", method, err)
	}
	ch := make(chan response, 1)
	id, err := c.send(ctx, method, params, ch)
	if err != nil {
		return err
	}
	select {
	case r := <-ch:
		return c.decodeResult(method, r, result)
	case <-ctx.Done():
		c.mu.Lock()
		_, waiting := c.pending[id]
		delete(c.pending, id)
		c.mu.Unlock()
		if !waiting { // the response was delivered meanwhile
			return c.decodeResult(method, <-ch, result)
		}
		c.notify(rpc.MethodCancelRequest, struct {
			ID int64 `json:"id"`
		}{id})
		return fmt.Errorf("%s: %w", method, ctx.Err())
	case <-c.done:
		select {
		case r := <-ch:
			return c.decodeResult(method, r, result)
		default:
		}
		return fmt.Errorf("%s: %w", method, c.connErr())
	}
}

// decodeResult returns the call's error, or decodes its result into result (when
// not nil) as encoding/json would, skipping members it does not know of.
func (c *Client) decodeResult(method string, r response, result any) error {
	if r.err != nil {
		return r.err
	}
	if result == nil {
		return nil
	}
	if err := c.dec.Lenient(r.result, result); err != nil {
		return fmt.Errorf("decode the result of %s: %w", method, err)
	}
	return nil
}

// send writes a request. With ch it registers the request so that the reader hands
// it the response; without, the response is ignored.
func (c *Client) send(ctx context.Context, method string, params any, ch chan response) (int64, error) {
	p, err := json.Marshal(params)
	if err != nil {
		return 0, fmt.Errorf("encode the params of %s: %w", method, err)
	}
	m, _ := json.Marshal(method)
	c.wmu.Lock()
	defer c.wmu.Unlock()
	c.mu.Lock()
	if c.err != nil || c.closing {
		err := c.err
		if c.closing {
			err = ErrClosed
		}
		c.mu.Unlock()
		return 0, fmt.Errorf("%s: %w", method, err)
	}
	c.nextID++
	id := c.nextID
	if ch != nil {
		c.pending[id] = ch
	}
	c.mu.Unlock()

	var b bytes.Buffer
	b.Grow(len(p) + len(m) + 48)
	b.WriteString(`{"jsonrpc":"2.0","id":`)
	b.WriteString(strconv.FormatInt(id, 10))
	b.WriteString(`,"method":`)
	b.Write(m)
	b.WriteString(`,"params":`)
	b.Write(p)
	b.WriteString("}\n")
	if err := c.write(ctx, b.Bytes()); err != nil {
		c.mu.Lock()
		delete(c.pending, id)
		c.mu.Unlock()
		return 0, fmt.Errorf("send %s: %w", method, err)
	}
	return id, nil
}

// notify writes a notification on the caller's behalf, best effort.
func (c *Client) notify(method string, params any) {
	p, err := json.Marshal(params)
	if err != nil {
		return
	}
	m, _ := json.Marshal(method)
	line := make([]byte, 0, len(p)+len(m)+40)
	line = append(line, `{"jsonrpc":"2.0","method":`...)
	line = append(line, m...)
	line = append(line, `,"params":`...)
	line = append(line, p...)
	line = append(line, "}\n"...)
	ctx, cancel := context.WithTimeout(context.Background(), controlTimeout)
	defer cancel()
	c.wmu.Lock()
	defer c.wmu.Unlock()
	select {
	case <-c.done:
		return
	default:
	}
	_ = c.write(ctx, line)
}

// write writes one whole message; the caller holds wmu. A done ctx interrupts a
// blocked write; as a message may then be half written, any failed write closes the
// connection.
func (c *Client) write(ctx context.Context, b []byte) error {
	if err := ctx.Err(); err != nil {
		return err // nothing written: the connection is fine
	}
	c.dl.Lock()
	c.writing = true
	c.dl.Unlock()
	stop := context.AfterFunc(ctx, func() {
		c.dl.Lock()
		if c.writing {
			c.conn.SetWriteDeadline(time.Unix(1, 0))
		}
		c.dl.Unlock()
	})
	_, err := c.conn.Write(b)
	stop()
	c.dl.Lock()
	c.writing = false
	c.conn.SetWriteDeadline(time.Time{})
	c.dl.Unlock()
	if err != nil {
		if ctxErr := ctx.Err(); ctxErr != nil {
			err = ctxErr
		}
		c.conn.Close()
		return err
	}
	return nil
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
	if err := rpc.Members(raw, func(key []byte, val json.RawMessage) {
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
