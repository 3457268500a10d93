package daemon

import (
	"bytes"
	"context"
	"strings"
	"sync"
	"time"
	"unicode/utf8"

	"spool/rpc"
)

// progressEvery is the shortest time between two progress events of one job.
const progressEvery = 100 * time.Millisecond

// liveState is what a running step shows watchers without storing it: its
// progress (coalesced to at most one event per progressEvery) and its last line of
// output.
//
// Lock order: pubMu, then d.mu. mu is only ever held alone or inside d.mu (job.get
// and heartbeats read a snapshot with d.mu held), so nothing takes d.mu while
// holding mu.
type liveState struct {
	d    *Daemon
	job  int64
	step int

	// pubMu serialises publications, so that progress events leave in order.
	pubMu sync.Mutex

	mu       sync.Mutex
	progress *rpc.Progress
	lastLine string
	partial  []byte
	// carry is the end of the last chunk of output that is the start of a
	// character whose other bytes were not read yet: the next chunk's output
	// event starts with it, so that no event cuts a character.
	carry    []byte
	carryOff int64 // the offset of carry in the log
	lastPub  time.Time
	timer    *time.Timer
	dirty    bool
}

func (l *liveState) setProgress(p rpc.Progress) {
	p.At = l.d.clock.Now()
	l.mu.Lock()
	l.progress = &p
	l.dirty = true
	wait := progressEvery - time.Since(l.lastPub)
	now := wait <= 0
	if !now && l.timer == nil {
		l.timer = time.AfterFunc(wait, func() {
			l.mu.Lock()
			l.timer = nil
			l.mu.Unlock()
			l.publish()
		})
	}
	l.mu.Unlock()
	if now {
		l.publish()
	}
}

// publish sends the latest progress, if it is new, to watchers and keeps it on
// the job. It is called with no lock held.
func (l *liveState) publish() {
	l.pubMu.Lock()
	defer l.pubMu.Unlock()
	l.mu.Lock()
	if !l.dirty || l.progress == nil {
		l.mu.Unlock()
		return
	}
	l.dirty = false
	l.lastPub = time.Now()
	p := *l.progress
	l.mu.Unlock()
	l.d.mu.Lock()
	if js := l.d.jobs[l.job]; js != nil {
		js.rec.Progress = &p
	}
	l.d.mu.Unlock()
	step := l.step
	ev := rpc.Event{Time: p.At, Job: l.job, Type: rpc.EventProgress, Step: &step, Progress: &p}
	l.d.hub.ephemeral(ev, false)
	if lr, ok := l.d.store.(LiveRelay); ok {
		lr.RelayLive(ev)
	}
}

// relayed publishes to this daemon's watchers the live events of the steps
// other daemons run, as they relay them, until ctx ends.
func (d *Daemon) relayed(ctx context.Context, lr LiveRelay) {
	for {
		select {
		case <-ctx.Done():
			return
		case ev := <-lr.Live():
			d.hub.ephemeral(ev, ev.Type == rpc.EventOutput)
		}
	}
}

// flush publishes a pending progress at the end of the step, and the last bytes
// of output if they were held back (they are no character: invalid bytes).
func (l *liveState) flush() {
	l.mu.Lock()
	if l.timer != nil {
		l.timer.Stop()
		l.timer = nil
	}
	l.mu.Unlock()
	l.publish()
	l.output(0, nil)
}

// output passes a chunk of the log, written at off, to output watchers. An event
// never ends inside a character: the bytes of one that the chunk cuts go out with
// the next chunk, whose event starts at their offset. A nil p (at the end of the
// step) sends what is held back, at its own offset.
func (l *liveState) output(off int64, p []byte) {
	l.mu.Lock()
	l.noteLines(p)
	text := p
	if len(l.carry) > 0 {
		off = l.carryOff
		text = append(l.carry, p...)
		l.carry = nil
	}
	if p != nil {
		if k := cutRune(text); k > 0 {
			l.carry = append([]byte(nil), text[len(text)-k:]...)
			l.carryOff = off + int64(len(text)-k)
			text = text[:len(text)-k]
		}
	}
	l.mu.Unlock()
	if len(text) == 0 || !l.d.hub.wantsOutput() {
		return
	}
	step := l.step
	data := strings.ToValidUTF8(string(text), "\uFFFD")
	l.d.hub.ephemeral(rpc.Event{Time: l.d.clock.Now(), Job: l.job, Type: rpc.EventOutput, Step: &step, Offset: &off, Data: &data}, true)
}

// noteLines keeps the last complete line of output that is not blank, and the
// end of the line under way (its last 512 bytes, from a character's start); l.mu
// held.
func (l *liveState) noteLines(p []byte) {
	buf := append(l.partial, p...)
	if k := bytes.LastIndexByte(buf, '\n'); k >= 0 {
		line := buf[:k]
		if j := bytes.LastIndexByte(line, '\n'); j >= 0 {
			line = line[j+1:]
		}
		if len(bytes.TrimSpace(line)) > 0 {
			l.lastLine = truncateText(strings.ToValidUTF8(string(line), "\uFFFD"), 512)
		}
		buf = buf[k+1:]
	}
	if len(buf) > 512 {
		buf = buf[len(buf)-512:]
		for i := 0; i < utf8.UTFMax && len(buf) > 0 && !utf8.RuneStart(buf[0]); i++ {
			buf = buf[1:]
		}
	}
	l.partial = append(l.partial[:0:0], buf...)
}

// cutRune reports how many bytes at the end of b are the start of a character
// whose other bytes are missing (0 to 3).
func cutRune(b []byte) int {
	for i := 1; i < utf8.UTFMax && i <= len(b); i++ {
		if utf8.RuneStart(b[len(b)-i]) {
			if utf8.FullRune(b[len(b)-i:]) {
				return 0
			}
			return i
		}
	}
	return 0
}

func (l *liveState) snapshot() (*rpc.Progress, string) {
	l.mu.Lock()
	defer l.mu.Unlock()
	var p *rpc.Progress
	if l.progress != nil {
		c := *l.progress
		p = &c
	}
	return p, l.lastLine
}

// truncateText cuts s to at most n bytes, at the start of a character.
func truncateText(s string, n int) string {
	if len(s) <= n {
		return s
	}
	for n > 0 && !utf8.RuneStart(s[n]) {
		n--
	}
	return s[:n]
}
