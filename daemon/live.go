package daemon

import (
	"bytes"
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
	l.d.hub.ephemeral(rpc.Event{Time: p.At, Job: l.job, Type: rpc.EventProgress, Step: &step, Progress: &p}, false)
}

// flush publishes a pending progress at the end of the step.
func (l *liveState) flush() {
	l.mu.Lock()
	if l.timer != nil {
		l.timer.Stop()
		l.timer = nil
	}
	l.mu.Unlock()
	l.publish()
}

// output passes a chunk of the log, written at off, to output watchers.
func (l *liveState) output(off int64, p []byte) {
	l.mu.Lock()
	buf := append(l.partial, p...)
	if k := bytes.LastIndexByte(buf, '\n'); k >= 0 {
		line := buf[:k]
		if j := bytes.LastIndexByte(line, '\n'); j >= 0 {
			line = line[j+1:]
		}
		if len(bytes.TrimSpace(line)) > 0 {
			l.lastLine = truncateText(string(line), 512)
		}
		buf = buf[k+1:]
	}
	if len(buf) > 512 {
		buf = buf[len(buf)-512:]
	}
	l.partial = append([]byte(nil), buf...)
	l.mu.Unlock()
	if !l.d.hub.wantsOutput() {
		return
	}
	step := l.step
	data := strings.ToValidUTF8(string(p), "\uFFFD")
	l.d.hub.ephemeral(rpc.Event{Time: l.d.clock.Now(), Job: l.job, Type: rpc.EventOutput, Step: &step, Offset: &off, Data: &data}, true)
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

func truncateText(s string, n int) string {
	if len(s) <= n {
		return s
	}
	s = s[:n]
	for !utf8.ValidString(s) && len(s) > 0 {
		s = s[:len(s)-1]
	}
	return s
}
