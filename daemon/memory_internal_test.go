package daemon

import (
	"strings"
	"testing"
	"time"

	"github.com/matryer/is"

	"spool/rpc"
)

// TestLiveBufferIsCapped: a watcher that never reads holds at most liveEvents
// live events and liveBytes bytes of them, the newest ones; once it closes it
// holds none, and takes no more.
func TestLiveBufferIsCapped(t *testing.T) {
	is := is.New(t)
	d := &Daemon{clock: SystemClock{}}
	d.hub = newHub(d)
	w := d.hub.newWatcher(rpc.WatchParams{Output: true}, "store")
	idle := d.hub.newWatcher(rpc.WatchParams{}, "store") // no output asked

	chunk := strings.Repeat("x", 4<<10)
	var last int64
	for i := range 1000 {
		step, off := 0, int64(i)*int64(len(chunk))
		data := chunk
		d.hub.ephemeral(rpc.Event{Time: time.Now(), Job: 1, Type: rpc.EventOutput, Step: &step, Offset: &off, Data: &data}, true)
		last = off
		n, size := w.liveHeld()
		is.True(n <= liveEvents)   // never more events than the cap
		is.True(size <= liveBytes) // nor more bytes
	}
	n, size := w.liveHeld()
	is.True(n > 0 && size > liveBytes/2) // it holds what fits
	is.True(w.liveDrops > 0)             // the oldest were dropped
	n2, _ := idle.liveHeld()
	is.Equal(n2, 0) // a watcher without output gets no output events

	var got *rpc.Event
	for {
		ev, ok := w.popLive()
		if !ok {
			break
		}
		got = ev
	}
	is.True(got != nil && *got.Offset == last) // the newest event is kept
	is.True(w.live == nil)                     // a drained buffer is let go

	d.hub.ephemeral(rpc.Event{Time: time.Now(), Job: 1, Type: rpc.EventProgress, Progress: &rpc.Progress{Message: "m"}}, false)
	n, _ = w.liveHeld()
	is.Equal(n, 1) // progress reaches it
	is.NoErr(w.Close())
	n, size = w.liveHeld()
	is.Equal(n, 0)         // a closed watcher holds no live event
	is.Equal(size, 0)      // nor bytes
	is.True(w.live == nil) // nor its ring
	d.hub.ephemeral(rpc.Event{Time: time.Now(), Job: 1, Type: rpc.EventProgress, Progress: &rpc.Progress{Message: "m"}}, false)
	n, _ = w.liveHeld()
	is.Equal(n, 0)                       // and takes no more
	is.Equal(len(*d.hub.list.Load()), 1) // it left the hub
}

// TestLiveEventsAreShared: one live event sent to many watchers is one event,
// encoded once.
func TestLiveEventsAreShared(t *testing.T) {
	is := is.New(t)
	d := &Daemon{clock: SystemClock{}}
	d.hub = newHub(d)
	a := d.hub.newWatcher(rpc.WatchParams{}, "store")
	b := d.hub.newWatcher(rpc.WatchParams{}, "store")
	d.hub.ephemeral(rpc.Event{Time: time.Now(), Job: 1, Type: rpc.EventProgress, Progress: &rpc.Progress{Message: "m"}}, false)
	ea, _ := a.popLive()
	eb, _ := b.popLive()
	is.True(ea != nil && ea == eb) // the same event, not a copy each
}
