package httpapi_test

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"spool/daemon"
	"spool/rpc"
	"spool/rpc/httpapi"
	"spool/store"
)

const (
	writeToken = "write-token-0123456789abcdef"
	readToken  = "read-token-0123456789abcdef"
)

// harness is a real daemon on a real bbolt file, behind the HTTP API on a real
// listener.
type harness struct {
	t       *testing.T
	st      *store.Store
	d       *daemon.Daemon
	metrics *httpapi.Metrics
	api     *httpapi.Server
	srv     *httptest.Server
	dir     string
}

type harnessOpts struct {
	writeStall time.Duration
	maxMessage int64
}

func newHarness(t *testing.T, o harnessOpts) *harness {
	t.Helper()
	dir := t.TempDir()
	st, err := store.Open(filepath.Join(dir, "spool.db"), store.Options{Timeout: time.Second})
	if err != nil {
		t.Fatalf("open store: %v", err)
	}
	m := httpapi.NewMetrics(httpapi.MetricsConfig{Commits: st.Commits})
	d, err := daemon.New(daemon.Config{
		Store: daemon.TimeCommits(st, m.ObserveCommit), StateDir: filepath.Join(dir, "state"), Version: "test",
		MaxParallel: 4, KillGrace: 2 * time.Second, Containment: daemon.ContainGroup, Home: dir,
	})
	if err != nil {
		t.Fatalf("daemon: %v", err)
	}
	m.SetService(d, func() httpapi.Stats { return httpapi.Stats{Watchers: d.Stats().Watchers} })
	api, err := httpapi.New(httpapi.Config{
		Service: d, Health: d.Health, Metrics: m, WriteStall: o.writeStall, MaxMessage: o.maxMessage,
		Tokens: []httpapi.Token{{Secret: writeToken, Scope: httpapi.ScopeWrite}, {Secret: readToken, Scope: httpapi.ScopeRead}},
	})
	if err != nil {
		t.Fatalf("httpapi: %v", err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	runDone := make(chan struct{})
	go func() { defer close(runDone); _ = d.Run(ctx) }()
	followDone := make(chan struct{})
	go func() { defer close(followDone); _ = m.Follow(ctx) }()
	srv := httptest.NewUnstartedServer(api)
	srv.Config.ConnState = m.ConnState
	srv.Start()
	h := &harness{t: t, st: st, d: d, metrics: m, api: api, srv: srv, dir: dir}
	t.Cleanup(func() {
		cancel()
		srv.CloseClientConnections()
		srv.Close()
		<-runDone
		<-followDone
		st.Close()
	})
	<-d.Ready()
	return h
}

// post calls a method; it returns the status and the body.
func (h *harness) post(token, method, body string) (int, []byte) {
	h.t.Helper()
	req, err := http.NewRequest(http.MethodPost, h.srv.URL+"/api/v1/"+method, strings.NewReader(body))
	if err != nil {
		h.t.Fatal(err)
	}
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	req.Header.Set("Content-Type", "application/json")
	res, err := h.srv.Client().Do(req)
	if err != nil {
		h.t.Fatalf("POST %s: %v", method, err)
	}
	defer res.Body.Close()
	b, err := io.ReadAll(res.Body)
	if err != nil {
		h.t.Fatalf("read %s: %v", method, err)
	}
	return res.StatusCode, b
}

// call posts with the write token and decodes a 200 answer into out.
func (h *harness) call(method, body string, out any) {
	h.t.Helper()
	code, b := h.post(writeToken, method, body)
	if code != http.StatusOK {
		h.t.Fatalf("%s %s: status %d: %s", method, body, code, b)
	}
	if out != nil {
		if err := json.Unmarshal(b, out); err != nil {
			h.t.Fatalf("%s: decode %s: %v", method, b, err)
		}
	}
}

func (h *harness) submit(spec string) *rpc.Job {
	h.t.Helper()
	var j rpc.Job
	h.call("job.submit", `{"job":`+spec+`}`, &j)
	return &j
}

func (h *harness) wait(id int64) *rpc.Job {
	h.t.Helper()
	var j rpc.Job
	h.call("job.wait", `{"id":`+itoa(id)+`,"timeout":"60s"}`, &j)
	return &j
}

// apiError decodes an error body.
func apiError(t *testing.T, b []byte) *rpc.Error {
	t.Helper()
	var e struct {
		Error *rpc.Error `json:"error"`
	}
	if err := json.Unmarshal(b, &e); err != nil || e.Error == nil {
		t.Fatalf("not an error body: %s (%v)", b, err)
	}
	return e.Error
}

// sseMsg is one Server-Sent Events message.
type sseMsg struct {
	id, event, data string
}

// sseStream reads an event stream.
type sseStream struct {
	res *http.Response
	r   *bufio.Reader
}

// watch opens GET /api/v1/watch with query and, when lastID is not "", a
// Last-Event-ID header. It returns the status, and the stream when it is 200.
func (h *harness) watch(ctx context.Context, token, query, lastID string) (int, *sseStream, []byte) {
	h.t.Helper()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, h.srv.URL+"/api/v1/watch?"+query, nil)
	if err != nil {
		h.t.Fatal(err)
	}
	req.Header.Set("Authorization", "Bearer "+token)
	if lastID != "" {
		req.Header.Set("Last-Event-ID", lastID)
	}
	res, err := h.srv.Client().Do(req)
	if err != nil {
		h.t.Fatalf("watch: %v", err)
	}
	if res.StatusCode != http.StatusOK {
		b, _ := io.ReadAll(res.Body)
		res.Body.Close()
		return res.StatusCode, nil, b
	}
	return res.StatusCode, &sseStream{res: res, r: bufio.NewReader(res.Body)}, nil
}

// next reads the next message; io.EOF when the stream ended.
func (s *sseStream) next() (sseMsg, error) {
	m := sseMsg{event: "message"}
	seen := false
	for {
		line, err := s.r.ReadString('\n')
		if err != nil {
			return m, err
		}
		line = strings.TrimRight(line, "\n")
		if line == "" {
			if seen {
				return m, nil
			}
			continue
		}
		seen = true
		k, v, _ := strings.Cut(line, ":")
		v = strings.TrimPrefix(v, " ")
		switch k {
		case "id":
			m.id = v
		case "event":
			m.event = v
		case "data":
			m.data += v
		}
	}
}

func (s *sseStream) close() { s.res.Body.Close() }

func (m sseMsg) ev(t *testing.T) rpc.Event {
	t.Helper()
	var ev rpc.Event
	if err := json.Unmarshal([]byte(m.data), &ev); err != nil {
		t.Fatalf("event %q: %v", m.data, err)
	}
	return ev
}

func itoa(n int64) string { return jsonNum(n) }

func jsonNum(n int64) string {
	b, _ := json.Marshal(n)
	return string(b)
}

func eventually(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(60 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("gave up waiting: %s", what)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func tctx(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	t.Cleanup(cancel)
	return ctx
}

// gate is a file a step waits for.
type gate string

func (h *harness) gate(name string) gate { return gate(filepath.Join(h.dir, name)) }
func (g gate) wait() string              { return `while [ ! -e '` + string(g) + `' ]; do sleep 0.02; done` }
func (g gate) open(t *testing.T) {
	if err := os.WriteFile(string(g), nil, 0o600); err != nil {
		t.Fatal(err)
	}
}

func jsonStr(s string) string {
	var b bytes.Buffer
	enc := json.NewEncoder(&b)
	enc.SetEscapeHTML(false)
	_ = enc.Encode(s)
	return strings.TrimSpace(b.String())
}
