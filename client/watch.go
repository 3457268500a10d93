package client

import (
	"context"
	"errors"
	"fmt"
	"io"
	"strconv"
	"sync"

	"spool/rpc"
)

// Watch implements rpc.Service (job.watch). Without a token in p it picks one unique
// on the connection. The watcher is registered before the request is written, so
// that events the server sends before its response are kept too.
func (c *Client) Watch(ctx context.Context, p rpc.WatchParams) (rpc.Watcher, error) {
	c.mu.Lock()
	if p.Token == "" {
		c.nextTok++
		p.Token = "c" + strconv.FormatInt(c.nextTok, 10)
	}
	if _, dup := c.watches[p.Token]; dup {
		c.mu.Unlock()
		return nil, rpc.InvalidParams("token", "already in use on this connection")
	}
	w := &watcher{c: c, token: p.Token, signal: make(chan struct{}, 1)}
	c.watches[p.Token] = w
	c.inflight++
	c.mu.Unlock()

	var res rpc.WatchResult
	err := c.call(ctx, rpc.MethodWatch, p, &res)

	c.mu.Lock()
	c.inflight--
	if err != nil {
		if c.watches[p.Token] == w {
			delete(c.watches, p.Token)
		}
		c.dropOrphans()
		c.mu.Unlock()
		if ctx.Err() != nil {
			// The server may have made the watch all the same: end it, best effort.
			c.forget(p.Token)
		}
		return nil, err
	}
	var early []*rpc.Event
	if res.Token != "" && res.Token != p.Token {
		// The server named the watch otherwise: follow its name.
		if c.watches[p.Token] == w {
			delete(c.watches, p.Token)
		}
		w.token = res.Token
		c.watches[res.Token] = w
		early = c.orphans[res.Token]
	}
	c.dropOrphans()
	c.mu.Unlock()
	if res.Token == "" {
		res.Token = p.Token
	}
	w.mu.Lock()
	w.result = res
	w.mu.Unlock()
	for _, ev := range early {
		w.push(ev)
	}
	return w, nil
}

// dropOrphans forgets events of unknown tokens once no watch is in flight; c.mu is
// held.
func (c *Client) dropOrphans() {
	if c.inflight == 0 && len(c.orphans) > 0 {
		clear(c.orphans)
	}
}

// forget sends job.unwatch without waiting for its answer, best effort: the Conn
// forgets the call at once.
func (c *Client) forget(token string) {
	ctx, cancel := context.WithTimeout(context.Background(), controlTimeout)
	defer cancel()
	if id, _, err := c.send(ctx, rpc.MethodUnwatch, rpc.UnwatchParams{Token: token}); err == nil {
		c.stream.abandon(id)
		c.stream.take(id)
	}
}

// watcher is one watch's queue of events. The connection's reader appends to it
// without ever blocking; Next takes from it.
type watcher struct {
	c      *Client
	signal chan struct{} // capacity 1: something changed

	mu     sync.Mutex
	token  string
	result rpc.WatchResult
	queue  []*rpc.Event
	ended  bool // a "done" event was queued: the server ended the watch
	closed bool // Close was called
}

// Result implements rpc.Watcher.
func (w *watcher) Result() rpc.WatchResult {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.result
}

func (w *watcher) push(ev *rpc.Event) {
	w.mu.Lock()
	if w.closed || w.ended {
		w.mu.Unlock()
		return
	}
	w.queue = append(w.queue, ev)
	if ev.Type == rpc.EventDone {
		w.ended = true
	}
	w.mu.Unlock()
	w.wake()
}

func (w *watcher) wake() {
	select {
	case w.signal <- struct{}{}:
	default:
	}
}

// Next implements rpc.Watcher: the next event in order; io.EOF after the "done" event
// or once closed; an error wrapping ErrDisconnected (or ErrClosed) when the
// connection ended first.
func (w *watcher) Next(ctx context.Context) (*rpc.Event, error) {
	for {
		w.mu.Lock()
		switch {
		case w.closed:
			w.mu.Unlock()
			return nil, io.EOF
		case len(w.queue) > 0:
			ev := w.queue[0]
			w.queue[0] = nil
			w.queue = w.queue[1:]
			if len(w.queue) == 0 {
				w.queue = nil
			}
			w.mu.Unlock()
			return ev, nil
		case w.ended:
			w.mu.Unlock()
			return nil, io.EOF
		}
		w.mu.Unlock()
		select {
		case <-w.signal:
		case <-ctx.Done():
			return nil, fmt.Errorf("watch: %w", ctx.Err())
		case <-w.c.done():
			// Events queued before the end are still delivered.
			w.mu.Lock()
			more := len(w.queue) > 0 || w.closed || w.ended
			w.mu.Unlock()
			if !more {
				return nil, fmt.Errorf("watch: %w", w.c.connErr())
			}
		}
	}
}

// Close implements rpc.Watcher: it ends the watch (job.unwatch) unless the server
// already ended it. Next then returns io.EOF.
func (w *watcher) Close() error {
	w.mu.Lock()
	if w.closed {
		w.mu.Unlock()
		return nil
	}
	w.closed = true
	w.queue = nil
	ended := w.ended
	token := w.token
	w.mu.Unlock()
	w.wake()

	c := w.c
	c.mu.Lock()
	if c.watches[token] == w {
		delete(c.watches, token)
	}
	c.mu.Unlock()
	if ended {
		return nil
	}
	ctx, cancel := context.WithTimeout(context.Background(), controlTimeout)
	defer cancel()
	err := c.call(ctx, rpc.MethodUnwatch, rpc.UnwatchParams{Token: token}, nil)
	if errors.Is(err, ErrDisconnected) || errors.Is(err, ErrClosed) {
		return nil // the watch ended with the connection
	}
	if err != nil {
		return fmt.Errorf("unwatch: %w", err)
	}
	return nil
}
