package daemon

import (
	"context"
	"fmt"
	"io"
	"runtime/debug"
	"sync"
	"sync/atomic"
	"time"

	"spool/rpc"
)

const (
	ringSize   = 8192 // recent stored events kept in memory for watchers (a power of 2)
	fetchBatch = 256  // stored events a watcher takes from the ring at once
	storeBatch = 64   // stored events a watcher reads from the store at once
	// batchBytes caps (roughly, see eventBytes) the stored events a watcher holds
	// to send: it takes no more once its batch is past this (one event at least).
	batchBytes = 64 << 10
	// liveEvents and liveBytes cap the live events (progress, output) a watcher
	// holds while its connection is slow: the oldest go first.
	liveEvents = 64
	liveBytes  = 256 << 10
	// eventOverhead is what an event costs in memory before its text: the struct,
	// its pointers and what its encoding adds.
	eventOverhead = 384
)

// hub feeds watchers. Stored events are published after their commit and kept, in
// seq order, in a ring; a watcher reads from its own cursor, from the ring or, when
// it fell behind the ring, from the store. No watcher can slow the daemon: nothing
// here waits on one. Live events (progress, heartbeat, output) go to a small
// per-watcher buffer that drops the oldest when full.
//
// A published event is shared: the ring and every watcher hold the same *rpc.Event,
// and nothing changes it once it is published. Watchers read the ring without a
// lock: publishers write an event into its place before they raise last.
type hub struct {
	d *Daemon

	ring []atomic.Pointer[rpc.Event] // the event of seq s at s&(ringSize-1), once published
	last atomic.Int64                // the seq published so far; raised under mu

	mu sync.Mutex
	// pending holds events whose commit returned before an earlier one's.
	pending  map[int64]*rpc.Event
	watchers map[*watcher]struct{}
	// list is the watchers as a slice, replaced (never changed) when one comes or
	// goes, under mu: senders of live events walk it without the lock.
	list    atomic.Pointer[[]*watcher]
	nextTok int64

	outputs atomic.Int64

	// finals holds, per job, the channels closed when its final event (or its
	// removal) is published; under mu.
	finals map[int64][]chan struct{}

	// most is the most watchers held at once since memory was last handed back;
	// releasing is set while a hand-back is scheduled (see released). Under mu.
	most      int
	releasing bool
}

func newHub(d *Daemon) *hub {
	h := &hub{d: d, ring: make([]atomic.Pointer[rpc.Event], ringSize), pending: map[int64]*rpc.Event{}, finals: map[int64][]chan struct{}{}, watchers: map[*watcher]struct{}{}}
	h.list.Store(&[]*watcher{})
	return h
}

// publish takes committed events; they reach watchers in seq order even when
// commits return out of order.
func (h *hub) publish(evs []rpc.Event) {
	if len(evs) == 0 {
		return
	}
	if len(*h.list.Load()) > 1 {
		// Encode once here rather than once per watcher, outside the lock.
		for i := range evs {
			evs[i].Freeze()
		}
	}
	h.mu.Lock()
	last := h.last.Load()
	for i := range evs {
		ev := &evs[i]
		switch {
		case ev.Seq == last+1 && len(h.pending) == 0:
			h.ring[ev.Seq&(ringSize-1)].Store(ev)
			last = ev.Seq
			h.ended(ev)
		case ev.Seq > last:
			h.pending[ev.Seq] = ev
		}
	}
	for len(h.pending) > 0 {
		ev, ok := h.pending[last+1]
		if !ok {
			break
		}
		delete(h.pending, ev.Seq)
		h.ring[ev.Seq&(ringSize-1)].Store(ev)
		last = ev.Seq
		h.ended(ev)
	}
	var ws []*watcher
	if last > h.last.Load() {
		h.last.Store(last)
		// Read under mu: a watcher that registers after this has last as its start.
		ws = *h.list.Load()
	}
	h.mu.Unlock()
	for _, w := range ws {
		w.poke()
	}
}

// ended closes the channels of those waiting for ev's job when ev ends the job;
// h.mu held.
func (h *hub) ended(ev *rpc.Event) {
	if ev.Step != nil || (!ev.State.Final() && ev.Type != rpc.EventRemoved) {
		return
	}
	for _, ch := range h.finals[ev.Job] {
		close(ch)
	}
	delete(h.finals, ev.Job)
}

// waitFinal returns a channel closed once the final event of job id is
// published. Take it before reading the job, so that no final event falls
// between the read and the wait; give it back with unwaitFinal.
func (h *hub) waitFinal(id int64) chan struct{} {
	ch := make(chan struct{})
	h.mu.Lock()
	h.finals[id] = append(h.finals[id], ch)
	h.mu.Unlock()
	return ch
}

// unwaitFinal forgets a channel of waitFinal that was not closed.
func (h *hub) unwaitFinal(id int64, ch chan struct{}) {
	h.mu.Lock()
	defer h.mu.Unlock()
	list := h.finals[id]
	for i, c := range list {
		if c == ch {
			list = append(list[:i], list[i+1:]...)
			break
		}
	}
	if len(list) == 0 {
		delete(h.finals, id)
	} else {
		h.finals[id] = list
	}
}

// setLast sets the seq published so far, at start-up.
func (h *hub) setLast(seq int64) {
	h.mu.Lock()
	h.last.Store(seq)
	h.mu.Unlock()
}

// ephemeral sends a live event to the watchers it concerns. They share it: it is
// encoded once, and each holds a pointer.
func (h *hub) ephemeral(ev rpc.Event, output bool) {
	var e *rpc.Event
	for _, w := range *h.list.Load() {
		if (!output || w.output) && w.wants(ev.Job) {
			if e == nil {
				e = &ev
				e.Freeze()
			}
			w.pushLive(e)
		}
	}
}

func (h *hub) wantsOutput() bool { return h.outputs.Load() > 0 }

func (h *hub) closeAll() {
	for _, w := range *h.list.Load() {
		_ = w.Close()
	}
}

// Once most of a crowd of watchers left, the memory they used (their connections'
// buffers, their goroutines' stacks, the garbage of their encodings) is handed
// back to the system: otherwise the runtime keeps the heap it grew to until its
// next collection, which an idle daemon makes only every two minutes, and
// returns the pages slowly after that.
const (
	crowd        = 64              // watchers that make a crowd
	releaseDelay = 2 * time.Second // after the watchers left, before the hand-back
)

// released notes that a watcher left, and schedules a hand-back of memory once
// at most a quarter of the most watchers held are left; h.mu held.
func (h *hub) released() {
	if h.releasing || h.most < crowd || len(h.watchers)*4 > h.most {
		return
	}
	h.releasing = true
	time.AfterFunc(releaseDelay, func() {
		h.mu.Lock()
		h.releasing = false
		h.most = len(h.watchers)
		h.mu.Unlock()
		debug.FreeOSMemory()
	})
}

// relist rebuilds the list of watchers; h.mu held.
func (h *hub) relist() {
	ws := make([]*watcher, 0, len(h.watchers))
	for w := range h.watchers {
		ws = append(ws, w)
	}
	h.list.Store(&ws)
}

// fromRing appends to buf up to fetchBatch stored events after seq from the ring;
// ok is false when the ring no longer holds seq+1.
func (h *hub) fromRing(after int64, buf []*rpc.Event) (evs []*rpc.Event, last int64, ok bool) {
	last = h.last.Load()
	end := min(last, after+fetchBatch)
	for s := after + 1; s <= end; s++ {
		// A place holds its event, or a later one that overwrote it.
		ev := h.ring[s&(ringSize-1)].Load()
		if ev == nil || ev.Seq != s {
			if s == after+1 {
				return buf, last, false
			}
			break
		}
		buf = append(buf, ev)
	}
	return buf, last, true
}

// The daemon's watches let the server write what they hold in one go.
var _ rpc.BufferedWatcher = (*watcher)(nil)

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
	batch     []*rpc.Event // events to return, from batch[pos]
	pos       int
	fetched   []*rpc.Event // what the last look at the ring found
	beats     []rpc.Event  // heartbeats to return, from beats[0]
	doneSent  bool
	nextBeat  time.Time
	beatTimer *time.Timer

	// live holds the live events not yet returned, oldest first, in a ring of
	// liveEvents places made at the first one: at most liveEvents events and
	// liveBytes bytes (eventBytes) at once.
	mu        sync.Mutex
	live      []*rpc.Event
	liveHead  int
	liveN     int
	liveSize  int
	liveDrops int64 // live events dropped, for tests
}

func (w *watcher) wants(job int64) bool { return w.jobs == nil || w.jobs[job] }

func (w *watcher) poke() {
	select {
	case w.notify <- struct{}{}:
	default:
	}
}

// pushLive adds a live event, dropping the oldest ones while the buffer is past
// its caps. The event is shared with other watchers: it must not change.
func (w *watcher) pushLive(ev *rpc.Event) {
	size := eventBytes(ev)
	w.mu.Lock()
	select {
	case <-w.closed:
		w.mu.Unlock()
		return
	default:
	}
	if w.live == nil {
		w.live = make([]*rpc.Event, liveEvents)
	}
	for w.liveN > 0 && (w.liveN == liveEvents || w.liveSize+size > liveBytes) {
		w.dropOldest()
	}
	w.live[(w.liveHead+w.liveN)%liveEvents] = ev
	w.liveN++
	w.liveSize += size
	w.mu.Unlock()
	w.poke()
}

// dropOldest drops the oldest live event; w.mu held.
func (w *watcher) dropOldest() {
	w.liveSize -= eventBytes(w.live[w.liveHead])
	w.live[w.liveHead] = nil
	w.liveHead = (w.liveHead + 1) % liveEvents
	w.liveN--
	w.liveDrops++
}

// popLive takes the oldest live event. The ring is let go once empty: a watcher
// that goes quiet holds none.
func (w *watcher) popLive() (*rpc.Event, bool) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.liveN == 0 {
		return nil, false
	}
	ev := w.live[w.liveHead]
	w.live[w.liveHead] = nil
	w.liveHead = (w.liveHead + 1) % liveEvents
	w.liveN--
	w.liveSize -= eventBytes(ev)
	if w.liveN == 0 {
		w.live, w.liveHead, w.liveSize = nil, 0, 0
	}
	return ev, true
}

// liveHeld is how many live events, and how many bytes of them, the watcher holds.
func (w *watcher) liveHeld() (n, bytes int) {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.liveN, w.liveSize
}

// eventBytes estimates what an event costs in memory: its struct and its text,
// twice (once as fields, once encoded).
func eventBytes(ev *rpc.Event) int {
	n := len(ev.StepName) + len(ev.Error) + len(ev.Result)
	if ev.Data != nil {
		n += len(*ev.Data)
	}
	if ev.LastLine != nil {
		n += len(*ev.LastLine)
	}
	if ev.Progress != nil {
		n += len(ev.Progress.Message)
	}
	return eventOverhead + 2*n
}

// Result is the watch's response.
func (w *watcher) Result() rpc.WatchResult { return w.result }

// Close ends the watch.
func (w *watcher) Close() error {
	w.once.Do(func() {
		w.mu.Lock()
		close(w.closed)
		w.live, w.liveN, w.liveHead, w.liveSize = nil, 0, 0, 0
		w.mu.Unlock()
		w.h.mu.Lock()
		delete(w.h.watchers, w)
		w.h.relist()
		w.h.released()
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

// Buffered is how many events Next returns without waiting: those it fetched
// already. The server writes them together (rpc.BufferedWatcher).
func (w *watcher) Buffered() int { return len(w.batch) - w.pos }

// Next returns the watch's next event: stored ones in seq order first, then live
// ones once caught up, then "done" for a watch of named jobs once all are final.
// A stored event is shared with the other watchers: it must not be changed.
func (w *watcher) Next(ctx context.Context) (*rpc.Event, error) {
	for {
		select {
		case <-w.closed:
			w.release()
			return nil, io.EOF
		default:
		}
		if w.pos < len(w.batch) {
			ev := w.batch[w.pos]
			w.batch[w.pos] = nil
			w.pos++
			return ev, nil
		}
		w.batch, w.pos = w.batch[:0], 0
		if w.doneSent {
			_ = w.Close()
			w.release()
			return nil, io.EOF
		}
		evs, last, ok := w.h.fromRing(w.scanned, w.fetched[:0])
		if !ok {
			stored, err := w.h.d.store.Events(ctx, w.scanned, storeBatch)
			if err != nil {
				return nil, fmt.Errorf("read stored events: %w", err)
			}
			for i := range stored {
				evs = append(evs, &stored[i])
			}
		}
		if len(evs) > 0 {
			size := 0
			for _, ev := range evs {
				if ev.Seq > last || size >= batchBytes {
					break // the rest is fetched again next time
				}
				w.scanned = ev.Seq
				if !w.wants(ev.Job) {
					continue
				}
				switch ev.Type {
				case rpc.EventSucceeded, rpc.EventFailed, rpc.EventCancelled, rpc.EventRemoved:
					if w.jobs != nil {
						w.finals[ev.Job] = true
					}
				}
				w.batch = append(w.batch, ev)
				size += eventBytes(ev)
			}
			clear(evs)
			w.fetched = evs[:0]
			continue
		}
		// Caught up with the stored events.
		if len(w.beats) > 0 {
			ev := &w.beats[0]
			if w.beats = w.beats[1:]; len(w.beats) == 0 {
				w.beats = nil
			}
			return ev, nil
		}
		if ev, ok := w.popLive(); ok {
			return ev, nil
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
				w.beats = w.h.d.heartbeats(w)
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

// release lets go of what Next holds, once the watch is over.
func (w *watcher) release() {
	w.batch, w.fetched, w.beats, w.pos = nil, nil, nil, 0
	if w.beatTimer != nil {
		w.beatTimer.Stop()
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
		startSeq:  h.last.Load(),
		heartbeat: p.Heartbeat.D(),
		output:    p.Output,
		notify:    make(chan struct{}, 1),
		closed:    make(chan struct{}),
		finals:    map[int64]bool{},
		result:    rpc.WatchResult{Token: p.Token, Seq: h.last.Load(), StoreID: storeID},
	}
	w.scanned = h.last.Load()
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
	h.relist()
	h.most = max(h.most, len(h.watchers))
	if w.output {
		h.outputs.Add(1)
	}
	return w
}
