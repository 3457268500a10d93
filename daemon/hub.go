package daemon

import (
	"context"
	"fmt"
	"io"
	"sync"
	"sync/atomic"
	"time"

	"spool/rpc"
)

const (
	ringSize      = 8192 // recent stored events kept in memory for watchers
	fetchBatch    = 256  // stored events a lagging watcher reads at once
	ephemeralSize = 256  // live events a watcher holds before dropping the oldest
)

// hub feeds watchers. Stored events are published after their commit and kept, in
// seq order, in a ring; a watcher reads from its own cursor, from the ring or, when
// it fell behind the ring, from the store. No watcher can slow the daemon: nothing
// here waits on one. Live events (progress, heartbeat, output) go to a small
// per-watcher buffer that drops the oldest when full.
type hub struct {
	d *Daemon

	mu       sync.Mutex
	ring     []rpc.Event
	last     int64
	pending  map[int64]rpc.Event
	watchers map[*watcher]struct{}
	nextTok  int64

	outputs atomic.Int64
}

func newHub(d *Daemon) *hub {
	return &hub{d: d, pending: map[int64]rpc.Event{}, watchers: map[*watcher]struct{}{}}
}

// publish takes committed events; they reach watchers in seq order even when
// commits return out of order.
func (h *hub) publish(evs []rpc.Event) {
	if len(evs) == 0 {
		return
	}
	h.mu.Lock()
	if len(h.watchers) > 1 {
		// Encode once here rather than once per watcher.
		for i := range evs {
			evs[i].Freeze()
		}
	}
	for _, ev := range evs {
		if ev.Seq > h.last {
			h.pending[ev.Seq] = ev
		}
	}
	advanced := false
	for {
		ev, ok := h.pending[h.last+1]
		if !ok {
			break
		}
		delete(h.pending, ev.Seq)
		h.ring = append(h.ring, ev)
		h.last = ev.Seq
		advanced = true
	}
	if len(h.ring) > 2*ringSize {
		h.ring = append(h.ring[:0:0], h.ring[len(h.ring)-ringSize:]...)
	}
	var ws []*watcher
	if advanced {
		ws = make([]*watcher, 0, len(h.watchers))
		for w := range h.watchers {
			ws = append(ws, w)
		}
	}
	h.mu.Unlock()
	for _, w := range ws {
		w.poke()
	}
}

// setLast sets the seq published so far, at start-up.
func (h *hub) setLast(seq int64) {
	h.mu.Lock()
	h.last = seq
	h.mu.Unlock()
}

func (h *hub) lastSeq() int64 {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.last
}

// ephemeral sends a live event to the watchers it concerns.
func (h *hub) ephemeral(ev rpc.Event, output bool) {
	h.mu.Lock()
	ws := make([]*watcher, 0, len(h.watchers))
	for w := range h.watchers {
		if (!output || w.output) && w.wants(ev.Job) {
			ws = append(ws, w)
		}
	}
	h.mu.Unlock()
	for _, w := range ws {
		w.pushLive(ev)
	}
}

func (h *hub) wantsOutput() bool { return h.outputs.Load() > 0 }

func (h *hub) closeAll() {
	h.mu.Lock()
	ws := make([]*watcher, 0, len(h.watchers))
	for w := range h.watchers {
		ws = append(ws, w)
	}
	h.mu.Unlock()
	for _, w := range ws {
		_ = w.Close()
	}
}

// events copies up to fetchBatch stored events after seq from the ring; ok is false
// when the ring no longer holds seq+1.
func (h *hub) fromRing(after int64) (evs []rpc.Event, last int64, ok bool) {
	h.mu.Lock()
	defer h.mu.Unlock()
	last = h.last
	if after >= h.last {
		return nil, last, true
	}
	if len(h.ring) == 0 || h.ring[0].Seq > after+1 {
		return nil, last, false
	}
	k := int(after + 1 - h.ring[0].Seq)
	end := min(k+fetchBatch, len(h.ring))
	return append([]rpc.Event(nil), h.ring[k:end]...), last, true
}

// watcher is one watch. It implements rpc.Watcher.
type watcher struct {
	h         *hub
	result    rpc.WatchResult
	jobs      map[int64]bool // watched jobs; nil: all
	finals    map[int64]bool
	startSeq  int64
	heartbeat time.Duration
	output    bool

	notify chan struct{}
	closed chan struct{}
	once   sync.Once

	// Used by Next only (one reader at a time).
	scanned   int64
	batch     []rpc.Event
	doneSent  bool
	nextBeat  time.Time
	beatTimer *time.Timer

	mu   sync.Mutex
	live []rpc.Event
}

func (w *watcher) wants(job int64) bool { return w.jobs == nil || w.jobs[job] }

func (w *watcher) poke() {
	select {
	case w.notify <- struct{}{}:
	default:
	}
}

func (w *watcher) pushLive(ev rpc.Event) {
	w.mu.Lock()
	if len(w.live) >= ephemeralSize {
		copy(w.live, w.live[1:])
		w.live = w.live[:len(w.live)-1]
	}
	w.live = append(w.live, ev)
	w.mu.Unlock()
	w.poke()
}

func (w *watcher) popLive() (rpc.Event, bool) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if len(w.live) == 0 {
		return rpc.Event{}, false
	}
	ev := w.live[0]
	w.live = w.live[1:]
	return ev, true
}

// Result is the watch's response.
func (w *watcher) Result() rpc.WatchResult { return w.result }

// Close ends the watch.
func (w *watcher) Close() error {
	w.once.Do(func() {
		close(w.closed)
		w.h.mu.Lock()
		delete(w.h.watchers, w)
		w.h.mu.Unlock()
		if w.output {
			w.h.outputs.Add(-1)
		}
	})
	return nil
}

func (w *watcher) allFinal() bool {
	for id := range w.jobs {
		if !w.finals[id] {
			return false
		}
	}
	return true
}

// Next returns the watch's next event: stored ones in seq order first, then live
// ones once caught up, then "done" for a watch of named jobs once all are final.
func (w *watcher) Next(ctx context.Context) (*rpc.Event, error) {
	for {
		select {
		case <-w.closed:
			return nil, io.EOF
		default:
		}
		if len(w.batch) > 0 {
			ev := w.batch[0]
			w.batch = w.batch[1:]
			return &ev, nil
		}
		if w.doneSent {
			_ = w.Close()
			return nil, io.EOF
		}
		evs, last, ok := w.h.fromRing(w.scanned)
		if !ok {
			var err error
			evs, err = w.h.d.store.Events(ctx, w.scanned, fetchBatch)
			if err != nil {
				return nil, fmt.Errorf("read stored events: %w", err)
			}
		}
		if len(evs) > 0 {
			for _, ev := range evs {
				if ev.Seq > last {
					break
				}
				w.scanned = ev.Seq
				if !w.wants(ev.Job) {
					continue
				}
				switch ev.Type {
				case rpc.EventSucceeded, rpc.EventFailed, rpc.EventCancelled, rpc.EventRemoved:
					w.finals[ev.Job] = true
				}
				w.batch = append(w.batch, ev)
			}
			continue
		}
		// Caught up with the stored events.
		if ev, ok := w.popLive(); ok {
			return &ev, nil
		}
		if w.jobs != nil && w.scanned >= w.startSeq && w.allFinal() {
			w.doneSent = true
			return &rpc.Event{Time: w.h.d.clock.Now(), Type: rpc.EventDone}, nil
		}
		var beat <-chan time.Time
		if w.heartbeat > 0 {
			now := time.Now()
			if !now.Before(w.nextBeat) {
				w.nextBeat = now.Add(w.heartbeat)
				for _, ev := range w.h.d.heartbeats(w) {
					w.pushLive(ev)
				}
				continue
			}
			if w.beatTimer == nil {
				w.beatTimer = time.NewTimer(w.nextBeat.Sub(now))
			} else {
				w.beatTimer.Reset(w.nextBeat.Sub(now))
			}
			beat = w.beatTimer.C
		}
		select {
		case <-w.notify:
		case <-beat:
		case <-w.closed:
		case <-ctx.Done():
			return nil, ctx.Err()
		}
	}
}

// heartbeats makes a heartbeat event for each running job the watcher watches.
func (d *Daemon) heartbeats(w *watcher) []rpc.Event {
	now := d.clock.Now()
	d.mu.Lock()
	defer d.mu.Unlock()
	var evs []rpc.Event
	for id, js := range d.jobs {
		if js.rec.State != rpc.StateRunning || !w.wants(id) {
			continue
		}
		step := js.rec.CurrentStep
		ev := rpc.Event{Time: now, Job: id, Type: rpc.EventHeartbeat, State: js.rec.State, Step: &step,
			StepName: js.rec.Steps[step].Name, Progress: js.rec.Progress}
		if js.rec.StartedAt != nil {
			ev.Elapsed = rpc.Duration(now.Sub(*js.rec.StartedAt))
		}
		if js.live != nil {
			p, line := js.live.snapshot()
			if p != nil {
				ev.Progress = p
			}
			if line != "" {
				ev.LastLine = &line
			}
		}
		evs = append(evs, ev)
	}
	return evs
}

// newWatcher registers a watch. since is nil for live events only.
func (h *hub) newWatcher(p rpc.WatchParams, storeID string) *watcher {
	h.mu.Lock()
	defer h.mu.Unlock()
	if p.Token == "" {
		h.nextTok++
		p.Token = fmt.Sprintf("w%d", h.nextTok)
	}
	w := &watcher{
		h:         h,
		startSeq:  h.last,
		heartbeat: p.Heartbeat.D(),
		output:    p.Output,
		notify:    make(chan struct{}, 1),
		closed:    make(chan struct{}),
		finals:    map[int64]bool{},
		result:    rpc.WatchResult{Token: p.Token, Seq: h.last, StoreID: storeID},
	}
	w.scanned = h.last
	if p.Since != nil {
		w.scanned = *p.Since
	}
	if p.Jobs != nil {
		w.jobs = map[int64]bool{}
		for _, id := range p.Jobs {
			w.jobs[id] = true
		}
	}
	if w.heartbeat > 0 {
		w.nextBeat = time.Now().Add(w.heartbeat)
	}
	h.watchers[w] = struct{}{}
	if w.output {
		h.outputs.Add(1)
	}
	return w
}
