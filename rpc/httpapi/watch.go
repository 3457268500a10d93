package httpapi

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"strconv"
	"strings"
	"time"

	"spool/rpc"
)

// stream is one open watch stream.
type stream struct {
	cancel context.CancelFunc
}

// maxEventsPerWrite bounds how many events a stream writes at once.
const maxEventsPerWrite = 256

// watch serves GET /api/v1/watch as Server-Sent Events. Its query holds the params
// of job.watch: jobs (comma-separated ids, or repeated), since, heartbeat, output,
// token; a Last-Event-ID header stands for since (it is the seq of the last stored
// event the client got). The first event is "watch" with the watch's result; then
// each job event is a message whose data is the event, with "id: <seq>" for a
// stored one and no id for a live one (progress, heartbeat, output, done). After
// "done" the stream ends.
//
// A client that stops reading slows nothing: the daemon's watcher holds what it
// has not sent and reads the stored log to catch up; only live events may be
// dropped; and a write blocked for WriteStall ends the stream.
func (s *Server) watch(w http.ResponseWriter, r *http.Request) {
	p, perr := s.watchParams(r)
	if perr != nil {
		writeError(w, statusOf(perr), perr)
		return
	}
	if n := s.streams.Add(1); n > int64(s.cfg.MaxStreams) {
		s.streams.Add(-1)
		writeError(w, http.StatusTooManyRequests, rpc.Errorf(rpc.CodeLimit, "too many watch streams (at most %d)", s.cfg.MaxStreams))
		return
	}
	defer s.streams.Add(-1)
	if s.cfg.Metrics != nil {
		s.cfg.Metrics.streams.Inc()
		defer s.cfg.Metrics.streams.Dec()
	}

	ctx, cancel := context.WithCancel(r.Context())
	defer cancel()
	if p.Token == "" {
		p.Token = newToken()
	}
	s.mu.Lock()
	if _, used := s.watches[p.Token]; used {
		s.mu.Unlock()
		writeError(w, http.StatusBadRequest, rpc.InvalidParams("token", "already in use by an open stream"))
		return
	}
	st := &stream{cancel: cancel}
	s.watches[p.Token] = st
	s.mu.Unlock()
	defer func() {
		s.mu.Lock()
		if s.watches[p.Token] == st {
			delete(s.watches, p.Token)
		}
		s.mu.Unlock()
	}()

	watcher, err := s.cfg.Service.Watch(ctx, p)
	if err != nil {
		e := rpc.AsError(err)
		writeError(w, statusOf(e), e)
		return
	}
	defer watcher.Close()
	res := watcher.Result()
	if res.Token == "" {
		res.Token = p.Token
	}

	rc := http.NewResponseController(w)
	h := w.Header()
	h.Set("Content-Type", "text/event-stream")
	h.Set("Cache-Control", "no-store")
	h.Set("X-Accel-Buffering", "no")
	h.Set("X-Content-Type-Options", "nosniff")
	first, _ := json.Marshal(res)
	buf := append([]byte("event: watch\ndata: "), first...)
	buf = append(buf, "\n\n"...)
	if !s.send(w, rc, buf) {
		return
	}
	buffered, _ := watcher.(rpc.BufferedWatcher)
	for {
		ev, err := watcher.Next(ctx)
		buf = buf[:0]
		done := false
		for n := 0; err == nil; n++ {
			buf = appendSSE(buf, ev)
			if ev.Type == rpc.EventDone {
				done = true
				break
			}
			if buffered == nil || buffered.Buffered() == 0 || n >= maxEventsPerWrite {
				break
			}
			ev, err = watcher.Next(ctx)
		}
		if len(buf) > 0 && !s.send(w, rc, buf) {
			return
		}
		if done {
			return
		}
		if err != nil {
			if !errors.Is(err, io.EOF) && ctx.Err() == nil {
				s.log.Error("http: watch ended with an error", "err", err)
			}
			return
		}
	}
}

// send writes and flushes b within WriteStall; false when the stream must end.
func (s *Server) send(w http.ResponseWriter, rc *http.ResponseController, b []byte) bool {
	_ = rc.SetWriteDeadline(time.Now().Add(s.cfg.WriteStall))
	if _, err := w.Write(b); err != nil {
		return false
	}
	if err := rc.Flush(); err != nil {
		return false
	}
	return true
}

// appendSSE appends ev as one SSE message: "id: <seq>" when it is stored, then its
// JSON as data (one line: the encoding holds no newline).
func appendSSE(b []byte, ev *rpc.Event) []byte {
	data, err := ev.JSON()
	if err != nil {
		return b
	}
	if ev.Stored() && ev.Seq > 0 {
		b = append(b, "id: "...)
		b = strconv.AppendInt(b, ev.Seq, 10)
		b = append(b, '\n')
	}
	b = append(b, "data: "...)
	b = append(b, data...)
	return append(b, "\n\n"...)
}

// watchParams reads job.watch's params from the query, strictly: an unknown name
// or a bad value is -32602 naming it.
func (s *Server) watchParams(r *http.Request) (rpc.WatchParams, *rpc.Error) {
	var p rpc.WatchParams
	q := r.URL.Query()
	for name, vals := range q {
		switch name {
		case "jobs":
			for _, v := range vals {
				for _, part := range strings.Split(v, ",") {
					if part == "" {
						continue
					}
					id, err := strconv.ParseInt(part, 10, 64)
					if err != nil {
						return p, rpc.InvalidParams("jobs", "want job ids separated by commas, got "+strconv.Quote(part))
					}
					p.Jobs = append(p.Jobs, id)
				}
			}
		case "since":
			n, err := strconv.ParseInt(q.Get(name), 10, 64)
			if err != nil {
				return p, rpc.InvalidParams("since", "want a seq (an integer from 0), got "+strconv.Quote(q.Get(name)))
			}
			p.Since = &n
		case "heartbeat":
			d, err := time.ParseDuration(q.Get(name))
			if err != nil || d <= 0 {
				return p, rpc.InvalidParams("heartbeat", "want a positive duration such as \"5s\", got "+strconv.Quote(q.Get(name)))
			}
			p.Heartbeat = rpc.Duration(d)
		case "output":
			b, err := strconv.ParseBool(q.Get(name))
			if err != nil {
				return p, rpc.InvalidParams("output", "want true or false, got "+strconv.Quote(q.Get(name)))
			}
			p.Output = b
		case "token":
			p.Token = q.Get(name)
		default:
			return p, rpc.InvalidParams(name, "unknown field")
		}
	}
	if last := r.Header.Get("Last-Event-ID"); last != "" {
		n, err := strconv.ParseInt(strings.TrimSpace(last), 10, 64)
		if err != nil {
			return p, rpc.InvalidParams("Last-Event-ID", "want the seq of the last event received, got "+strconv.Quote(last))
		}
		p.Since = &n
	}
	if err := p.Validate(); err != nil {
		return p, rpc.AsError(err)
	}
	return p, nil
}

// unwatch serves POST /api/v1/job.unwatch: it ends the open stream with that
// token, if any, and answers {} either way, as the socket does.
func (s *Server) unwatch(w http.ResponseWriter, r *http.Request) {
	body, rerr := s.readBody(w, r)
	if rerr != nil {
		writeError(w, statusOf(rerr), rerr)
		return
	}
	var p rpc.UnwatchParams
	if err := s.dec.Params(body, &p); err != nil {
		e := rpc.AsError(err)
		writeError(w, statusOf(e), e)
		return
	}
	s.mu.Lock()
	st := s.watches[p.Token]
	delete(s.watches, p.Token)
	s.mu.Unlock()
	if st != nil {
		st.cancel()
	}
	s.writeJSON(w, http.StatusOK, []byte("{}"))
}

// newToken makes a watch token nobody can guess, so that no client ends
// another's stream by chance.
func newToken() string {
	var b [12]byte
	_, _ = rand.Read(b[:])
	return "h" + hex.EncodeToString(b[:])
}
