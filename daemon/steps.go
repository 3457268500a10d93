package daemon

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"net/http"
	"strings"
	"time"

	"spool/rpc"
)

// runSleep waits until the attempt's start plus the duration: after a restart only
// the remainder is slept.
func (d *Daemon) runSleep(ctx context.Context, js *jobState, rec *rpc.Record, i int, live *liveState) outcome {
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
		// A paused sleep stops its clock: its end moves by the time paused.
		if p, ok := d.sleepPaused(ctx, js); ok {
			end = end.Add(p)
		}
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
			return outcome{err: causeText(ctx), stopped: context.Cause(ctx)}
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
	logw := d.newLog(rec.ID, i, live)
	defer logw.Close()
	fmt.Fprintf(logw, "%s %s\n", h.Method, h.URL)
	resp, err := d.httpClient().Do(req)
	if err != nil {
		if ctx.Err() != nil {
			return outcome{err: causeText(ctx), stopped: context.Cause(ctx)}
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
				return outcome{err: causeText(ctx), stopped: context.Cause(ctx)}
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
