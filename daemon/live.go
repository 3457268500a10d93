package daemon

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"net/http"
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

// runSleep waits until the attempt's start plus the duration: after a restart only
// the remainder is slept.
func (d *Daemon) runSleep(ctx context.Context, rec *rpc.Record, i int, live *liveState) outcome {
	dur := rec.Spec.Steps[i].Sleep.Duration.D()
	start := d.clock.Now()
	if s := rec.Steps[i].StartedAt; s != nil {
		start = *s
	}
	end := start.Add(dur)
	tick := dur / 100
	tick = max(tick, progressEvery)
	tick = min(tick, time.Second)
	for {
		now := d.clock.Now()
		left := end.Sub(now)
		if left <= 0 {
			res, t, _ := makeResult(rec.Spec.Steps[i].Result, "", false)
			return outcome{ok: true, result: res, resultText: t}
		}
		if dur >= time.Second {
			done := int64(now.Sub(start) / time.Millisecond)
			total := int64(dur / time.Millisecond)
			live.setProgress(rpc.Progress{Done: &done, Total: &total, Percent: pct(done, total), Message: "slept " + now.Sub(start).Round(time.Second).String() + " of " + dur.String()})
		}
		t := time.NewTimer(min(left, tick))
		select {
		case <-t.C:
		case <-ctx.Done():
			t.Stop()
			return outcome{err: causeText(ctx)}
		}
	}
}

func pct(done, total int64) *float64 {
	if total <= 0 {
		return nil
	}
	v := float64(done) / float64(total) * 100
	v = min(v, 100)
	return &v
}

func causeText(ctx context.Context) string {
	if c := context.Cause(ctx); c != nil {
		return c.Error()
	}
	return "stopped"
}

// runHTTP makes the step's request; it succeeds when the status is expected and
// the body fits in max_body.
func (d *Daemon) runHTTP(ctx context.Context, rec *rpc.Record, i int, live *liveState) outcome {
	h := rec.Spec.Steps[i].HTTP
	var body io.Reader
	if h.Body != "" {
		body = strings.NewReader(h.Body)
	}
	req, err := http.NewRequestWithContext(ctx, h.Method, h.URL, body)
	if err != nil {
		return outcome{err: fmt.Sprintf("build request: %v", err)}
	}
	for k, v := range h.Headers {
		req.Header.Set(k, v)
	}
	logw, err := d.openLog(rec.ID, i, live)
	if err != nil {
		return outcome{err: err.Error()}
	}
	defer logw.Close()
	fmt.Fprintf(logw, "%s %s\n", h.Method, h.URL)
	resp, err := d.httpClient().Do(req)
	if err != nil {
		if ctx.Err() != nil {
			return outcome{err: causeText(ctx)}
		}
		fmt.Fprintf(logw, "error: %v\n", err)
		return outcome{err: fmt.Sprintf("request failed: %v", err)}
	}
	defer resp.Body.Close()
	fmt.Fprintf(logw, "%s\n", resp.Status)
	var buf bytes.Buffer
	total := resp.ContentLength
	chunk := make([]byte, 32<<10)
	var n int64
	for {
		k, rerr := resp.Body.Read(chunk)
		if k > 0 {
			n += int64(k)
			if n > h.MaxBody {
				return outcome{err: fmt.Sprintf("response body is larger than max_body (%d bytes)", h.MaxBody)}
			}
			buf.Write(chunk[:k])
			done := n
			p := rpc.Progress{Done: &done, Message: "received " + fmt.Sprint(n) + " bytes"}
			if total > 0 {
				t := total
				p.Total = &t
				p.Percent = pct(n, total)
			}
			live.setProgress(p)
		}
		if rerr == io.EOF {
			break
		}
		if rerr != nil {
			if ctx.Err() != nil {
				return outcome{err: causeText(ctx)}
			}
			return outcome{err: fmt.Sprintf("read response: %v", rerr)}
		}
	}
	code := resp.StatusCode
	expected := code >= 200 && code < 300
	if len(h.ExpectStatus) > 0 {
		expected = false
		for _, c := range h.ExpectStatus {
			if c == code {
				expected = true
			}
		}
	}
	if !expected {
		return outcome{err: fmt.Sprintf("unexpected status %s", resp.Status)}
	}
	text := buf.String()
	trunc := false
	if len(text) > maxResult {
		text, trunc = text[len(text)-maxResult:], true
	}
	res, t, err := makeResult(rec.Spec.Steps[i].Result, text, trunc)
	if err != nil {
		return outcome{err: err.Error()}
	}
	return outcome{ok: true, result: res, resultText: t, truncated: trunc}
}

func (d *Daemon) httpClient() *http.Client {
	return &http.Client{}
}
