package server

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"io"
	"log"
	"net"
	"path/filepath"
	"spool/rpc"
	"spool/rpc/codec"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/sourcegraph/jsonrpc2"
)

// The benchmarks of this file weigh the server against the smallest server on
// github.com/sourcegraph/jsonrpc2 that does the same work: a jsonrpc2.Conn per
// connection on a bounded newline stream, params decoded and checked as the
// protocol asks (Decoder.Params, Validate), one switch on the method. Both serve
// the same fake service on a real socket to the same client, which writes one
// request and reads its answer. rpc/README.md quotes them:
//
//	go test -run '^$' -bench 'ServerVsJSONRPC2' -count 6 ./rpc/

// benchLineStream is the prototype's jsonrpc2.ObjectStream: newline-delimited
// JSON, reads bounded by bufio's buffer growth checked against max.
type benchLineStream struct {
	c   net.Conn
	r   *bufio.Reader
	max int
	wmu sync.Mutex
}

func (s *benchLineStream) ReadObject(v any) error {
	line, err := s.r.ReadSlice('\n')
	if errors.Is(err, bufio.ErrBufferFull) {
		buf := append([]byte(nil), line...)
		for errors.Is(err, bufio.ErrBufferFull) && len(buf) <= s.max {
			line, err = s.r.ReadSlice('\n')
			buf = append(buf, line...)
		}
		line = buf
	}
	if err != nil {
		return err
	}
	if len(line) > s.max {
		return errors.New("message too large")
	}
	return json.Unmarshal(line, v)
}

func (s *benchLineStream) WriteObject(obj any) error {
	b, err := json.Marshal(obj)
	if err != nil {
		return err
	}
	s.wmu.Lock()
	defer s.wmu.Unlock()
	_, err = s.c.Write(append(b, '\n'))
	return err
}

func (s *benchLineStream) Close() error { return s.c.Close() }

// serveJSONRPC2 serves svc on ln with jsonrpc2.Conn until ln is closed.
func serveJSONRPC2(ln net.Listener, svc rpc.Service) {
	dec := codec.NewDecoder()
	params := func(req *jsonrpc2.Request, v any) error {
		var raw json.RawMessage
		if req.Params != nil {
			raw = *req.Params
		}
		if err := dec.Params(raw, v); err != nil {
			return err
		}
		if val, ok := v.(rpc.Validator); ok {
			return val.Validate()
		}
		return nil
	}
	h := jsonrpc2.HandlerWithError(func(ctx context.Context, _ *jsonrpc2.Conn, req *jsonrpc2.Request) (result any, err error) {
		switch req.Method {
		case rpc.MethodGet:
			var p rpc.GetParams
			if err = params(req, &p); err == nil {
				result, err = svc.Get(ctx, p)
			}
		case rpc.MethodSubmit:
			var p rpc.SubmitParams
			if err = params(req, &p); err == nil {
				result, err = svc.Submit(ctx, p)
			}
		default:
			return nil, &jsonrpc2.Error{Code: rpc.CodeMethodNotFound, Message: "method not found"}
		}
		if err != nil {
			// The protocol's codes, as HandlerWithError would send code 0.
			e := rpc.AsError(err)
			je := &jsonrpc2.Error{Code: int64(e.Code), Message: e.Message}
			if e.Data != nil {
				je.SetError(e.Data)
			}
			return nil, je
		}
		return result, nil
	})
	quiet := jsonrpc2.SetLogger(log.New(io.Discard, "", 0))
	for {
		c, err := ln.Accept()
		if err != nil {
			return
		}
		stream := &benchLineStream{c: c, r: bufio.NewReaderSize(c, 64<<10), max: DefaultMaxMessage}
		jsonrpc2.NewConn(context.Background(), stream, h, quiet)
	}
}

// benchCall writes request and reads one answer line, b.N times, on a new
// connection to socket.
func benchCall(b *testing.B, socket string, request []byte) {
	c, err := net.Dial("unix", socket)
	if err != nil {
		b.Fatal(err)
	}
	defer c.Close()
	r := bufio.NewReaderSize(c, 1<<20)
	b.ReportAllocs()
	for b.Loop() {
		if _, err := c.Write(request); err != nil {
			b.Fatal(err)
		}
		var line []byte
		for {
			frag, err := r.ReadSlice('\n')
			line = append(line[:len(line):len(line)], frag...)
			if err == nil {
				break
			}
			if !errors.Is(err, bufio.ErrBufferFull) {
				b.Fatal(err)
			}
		}
		if !bytes.Contains(line[:min(len(line), 40)], []byte(`"result":`)) {
			b.Fatalf("not a result: %.200s", line)
		}
	}
}

// benchService answers job.get with one job and job.submit with new jobs, keeping
// none: what the benchmarks weigh is the server, not a store.
type benchService struct {
	*fakeService
	job rpc.Job
}

func newBenchService() *benchService {
	spec := rpc.Spec{Name: "build", Queue: "default", Dir: "/src", Env: map[string]string{},
		Steps: []rpc.Step{{Exec: &rpc.ExecStep{Argv: []string{"make", "-j2", "test"}}}}}
	for i := range 30 { // a shell's environment, as the CLI sends it
		spec.Env["VAR_"+strconv.Itoa(i)] = "/usr/local/share/some/value/" + strconv.Itoa(i)
	}
	return &benchService{fakeService: newFakeService(), job: rpc.Job{ID: 1, Name: spec.Name, Queue: "default",
		State: rpc.StateQueued, SubmittedAt: time.Unix(0, 0).UTC(), Spec: &spec}}
}

func (s *benchService) Get(ctx context.Context, p rpc.GetParams) (*rpc.Job, error) {
	j := s.job
	return &j, nil
}

func (s *benchService) Submit(ctx context.Context, p rpc.SubmitParams) (*rpc.SubmitResult, error) {
	job := func(i int, spec rpc.Spec) rpc.Job {
		return rpc.Job{ID: int64(i + 1), Name: spec.Name, Queue: "default", State: rpc.StateQueued, SubmittedAt: time.Unix(0, 0).UTC(), Spec: &spec}
	}
	if p.Job != nil {
		j := job(0, *p.Job)
		return &rpc.SubmitResult{Job: &j}, nil
	}
	res := &rpc.SubmitResult{Jobs: make([]rpc.Job, len(p.Jobs))}
	for i, spec := range p.Jobs {
		res.Jobs[i] = job(i, spec)
	}
	return res, nil
}

// BenchmarkServerVsJSONRPC2 is job.get of one job, and job.submit of 1,000 jobs,
// on this package's server ("own") and on a jsonrpc2.Conn server ("jsonrpc2").
func BenchmarkServerVsJSONRPC2(b *testing.B) {
	request := func(method string, params json.RawMessage) []byte {
		var buf bytes.Buffer
		buf.WriteString(`{"jsonrpc":"2.0","id":1,"method":"` + method + `","params":`)
		if err := json.Compact(&buf, params); err != nil { // one line
			b.Fatal(err)
		}
		buf.WriteString("}\n")
		return buf.Bytes()
	}
	get := request(rpc.MethodGet, json.RawMessage(`{"id":1}`))
	submit := request(rpc.MethodSubmit, benchBatch(1000))
	one := request(rpc.MethodSubmit, benchBatch(1))

	for _, kind := range []string{"own", "jsonrpc2"} {
		svc := newBenchService()
		socket := filepath.Join(b.TempDir(), "s.sock")
		ln, err := net.Listen("unix", socket)
		if err != nil {
			b.Fatal(err)
		}
		ctx, cancel := context.WithCancel(context.Background())
		done := make(chan struct{})
		go func() {
			defer close(done)
			if kind == "own" {
				_ = New(Config{Service: svc}).Serve(ctx, ln)
			} else {
				serveJSONRPC2(ln, svc)
			}
		}()
		benchCallOnce(b, socket, one) // both serve, before the timing

		b.Run("get/"+kind, func(b *testing.B) { benchCall(b, socket, get) })
		b.Run("submit1000/"+kind, func(b *testing.B) { benchCall(b, socket, submit) })
		cancel()
		ln.Close()
		<-done
	}
}

// benchCallOnce makes one call, outside the timing.
func benchCallOnce(b *testing.B, socket string, request []byte) {
	c, err := net.Dial("unix", socket)
	if err != nil {
		b.Fatal(err)
	}
	defer c.Close()
	if _, err := c.Write(request); err != nil {
		b.Fatal(err)
	}
	line, err := bufio.NewReader(c).ReadBytes('\n')
	if err != nil {
		b.Fatal(err)
	}
	if n := len(line); n < 20 {
		b.Fatalf("answer too short: %q (%s bytes)", line, strconv.Itoa(n))
	}
}

// benchBatch is job.submit params with n jobs shaped like a typical CLI submit.
func benchBatch(n int) json.RawMessage {
	job := `{"name": "build", "queue": "default", "priority": 2, "labels": {"team": "a"}, "timeout": "1h",
		"steps": [{"exec": {"argv": ["make", "-j2", "test"], "dir": "/src"}, "retry": {"attempts": 3, "backoff": "1s"}}]}`
	if n == 1 {
		return json.RawMessage(`{"job": ` + job + `}`)
	}
	return json.RawMessage(`{"jobs": [` + strings.TrimSuffix(strings.Repeat(job+",", n), ",") + `]}`)
}
