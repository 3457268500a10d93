package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/matryer/is"

	"spool/client"
	"spool/rpc"
	"spool/store/postgres/pgtest"
)

// bins holds the spoold and spool binaries built once for the end-to-end tests.
type bins struct{ spoold, spool string }

func buildBins(t *testing.T) bins {
	t.Helper()
	if testing.Short() {
		t.Skip("end-to-end tests build binaries; skipped with -short")
	}
	dir := sharedBinDir(t)
	return bins{spoold: filepath.Join(dir, "spoold"), spool: filepath.Join(dir, "spool")}
}

var buildOnce sync.Once
var buildDir string
var buildErr error

func sharedBinDir(t *testing.T) string {
	buildOnce.Do(func() {
		buildDir, buildErr = os.MkdirTemp("", "spoolbin")
		if buildErr != nil {
			return
		}
		out, err := exec.Command("go", "build", "-race", "-o", buildDir+"/", "spool/cmd/spoold", "spool/cmd/spool").CombinedOutput()
		if err != nil {
			buildErr = fmt.Errorf("go build: %v\n%s", err, out)
		}
	})
	if buildErr != nil {
		t.Fatal(buildErr)
	}
	return buildDir
}

func TestMain(m *testing.M) {
	pgServers = pgtest.NewPool(pgtest.Options{})
	code := m.Run()
	pgServers.Close()
	if buildDir != "" {
		os.RemoveAll(buildDir)
	}
	os.Exit(code)
}

// daemonProc is a running spoold.
type daemonProc struct {
	t      *testing.T
	bins   bins
	state  string
	socket string
	args   []string
	cmd    *exec.Cmd
	logs   *syncBuffer
	exited chan struct{}
}

type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// shortDir makes a folder with a short path, for sockets.
func shortDir(t *testing.T) string {
	t.Helper()
	dir, err := os.MkdirTemp("", "sp")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	return dir
}

func newDaemon(t *testing.T, args ...string) *daemonProc {
	t.Helper()
	b := buildBins(t)
	dir := shortDir(t)
	p := &daemonProc{t: t, bins: b, state: filepath.Join(dir, "state"), socket: filepath.Join(dir, "run", "s.sock"), args: args}
	p.start()
	t.Cleanup(p.kill)
	return p
}

func (p *daemonProc) start() {
	p.t.Helper()
	args := append([]string{"--socket", p.socket, "--state-dir", p.state, "--kill-grace", "2s", "--log-level", "debug"}, p.args...)
	p.cmd = exec.Command(p.bins.spoold, args...)
	p.logs = &syncBuffer{}
	p.cmd.Stderr = p.logs
	p.cmd.Env = append(os.Environ(), "HOME="+p.state)
	if err := p.cmd.Start(); err != nil {
		p.t.Fatalf("start spoold: %v", err)
	}
	p.exited = make(chan struct{})
	go func() { _ = p.cmd.Wait(); close(p.exited) }()
	deadline := time.Now().Add(30 * time.Second)
	for {
		c, err := client.Dial(context.Background(), p.socket)
		if err == nil {
			_, ierr := c.Info(context.Background())
			c.Close()
			if ierr == nil {
				return
			}
		}
		select {
		case <-p.exited:
			p.t.Fatalf("spoold exited at start:\n%s", p.logs.String())
		default:
		}
		if time.Now().After(deadline) {
			p.t.Fatalf("spoold did not come up: %v\n%s", err, p.logs.String())
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// kill9 kills the daemon with SIGKILL and waits for it.
func (p *daemonProc) kill9() {
	_ = p.cmd.Process.Signal(syscall.SIGKILL)
	<-p.exited
}

// stop sends SIGTERM and waits.
func (p *daemonProc) stop() {
	_ = p.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-p.exited:
	case <-time.After(30 * time.Second):
		p.t.Errorf("spoold did not stop on SIGTERM:\n%s", p.logs.String())
		p.kill9()
	}
}

func (p *daemonProc) kill() {
	select {
	case <-p.exited:
		return
	default:
	}
	p.stop()
	if p.t.Failed() {
		p.t.Logf("spoold log:\n%s", p.logs.String())
	}
}

func (p *daemonProc) client() *client.Client {
	p.t.Helper()
	c, err := client.Dial(context.Background(), p.socket)
	if err != nil {
		p.t.Fatalf("dial: %v", err)
	}
	p.t.Cleanup(func() { c.Close() })
	return c
}

func tctx(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	t.Cleanup(cancel)
	return ctx
}

func sh(script string) rpc.Step { return rpc.Step{Shell: &rpc.ShellStep{Script: script}} }

// rawConn is a connection that speaks newline JSON by hand.
type rawConn struct {
	t *testing.T
	c net.Conn
	r *bufio.Reader
}

func (p *daemonProc) raw() *rawConn {
	p.t.Helper()
	c, err := net.Dial("unix", p.socket)
	if err != nil {
		p.t.Fatalf("dial: %v", err)
	}
	p.t.Cleanup(func() { c.Close() })
	return &rawConn{t: p.t, c: c, r: bufio.NewReaderSize(c, 1<<20)}
}

func (r *rawConn) send(s string) {
	r.t.Helper()
	if _, err := io.WriteString(r.c, s); err != nil {
		r.t.Fatalf("write: %v", err)
	}
}

type wireMsg struct {
	ID     json.RawMessage `json:"id"`
	Method string          `json:"method"`
	Params json.RawMessage `json:"params"`
	Result json.RawMessage `json:"result"`
	Error  *rpc.Error      `json:"error"`
}

func (r *rawConn) recv() (*wireMsg, error) {
	_ = r.c.SetReadDeadline(time.Now().Add(30 * time.Second))
	line, err := r.r.ReadBytes('\n')
	if err != nil {
		return nil, err
	}
	var m wireMsg
	if err := json.Unmarshal(line, &m); err != nil {
		return nil, fmt.Errorf("bad message %q: %w", line, err)
	}
	return &m, nil
}

// call sends a request and returns the response with that id, skipping notifications.
func (r *rawConn) call(id int, method, params string) *wireMsg {
	r.t.Helper()
	r.send(fmt.Sprintf(`{"jsonrpc":"2.0","id":%d,"method":%q,"params":%s}`+"\n", id, method, params))
	for {
		m, err := r.recv()
		if err != nil {
			r.t.Fatalf("recv: %v", err)
		}
		if string(m.ID) == strconv.Itoa(id) {
			return m
		}
	}
}

func TestE2ESubmitWatchWaitLogsCancel(t *testing.T) {
	is := is.New(t)
	p := newDaemon(t)
	c := p.client()
	ctx := tctx(t)
	spec := rpc.Spec{Name: "hello", Steps: []rpc.Step{sh("echo hello; echo err >&2"), sh("echo world")}}
	res, err := c.Submit(ctx, rpc.SubmitParams{Job: &spec})
	is.NoErr(err) // submit over the socket
	id := res.Job.ID
	w, err := c.Watch(ctx, rpc.WatchParams{Jobs: []int64{id}, Since: rpc.Since(0)})
	is.NoErr(err) // watch
	var types []string
	for {
		ev, err := w.Next(ctx)
		if errors.Is(err, io.EOF) {
			break
		}
		is.NoErr(err)
		types = append(types, ev.Type)
	}
	is.Equal(types[len(types)-2:], []string{"succeeded", "done"}) // the watch ends with the outcome and done
	j, err := c.Wait(ctx, rpc.WaitParams{ID: id})
	is.NoErr(err)
	is.Equal(j.State, rpc.StateSucceeded) // the job succeeded
	is.Equal(string(j.Result), `"world"`) // with the last step's result
	lg, err := c.Logs(ctx, rpc.LogsParams{ID: id, Step: rpc.StepRef{Name: "step-0"}})
	is.NoErr(err)
	is.True(strings.Contains(lg.Data, "hello\n") && strings.Contains(lg.Data, "err\n")) // stdout and stderr merged
	is.Equal(len(lg.Data), len("hello\nerr\n"))                                         // and nothing else
	is.True(lg.EOF)                                                                     // the step is over

	long := rpc.Spec{Steps: []rpc.Step{sh("sleep 60")}}
	res, err = c.Submit(ctx, rpc.SubmitParams{Job: &long})
	is.NoErr(err)
	waitRunning(t, c, res.Job.ID)
	j, err = c.Cancel(ctx, rpc.CancelParams{ID: res.Job.ID, Reason: "enough"})
	is.NoErr(err)
	is.Equal(j.State, rpc.StateCancelled) // cancel answers with the final job
	is.Equal(j.Error, "enough")           // carrying the reason

	// The CLI against the same daemon.
	out := runCLI(t, p, 0, "status")
	is.True(strings.Contains(out, "succeeded")) // status shows the jobs
	out = runCLI(t, p, 0, "--json", "show", strconv.FormatInt(id, 10))
	var shown rpc.Job
	is.NoErr(json.Unmarshal([]byte(out), &shown)) // --json show prints the job
	is.Equal(shown.ID, id)
	out = runCLI(t, p, 0, "submit", "--", "sh", "-c", "echo from-cli")
	newID := strings.TrimSpace(out)
	runCLI(t, p, 0, "wait", newID)
	out = runCLI(t, p, 0, "logs", newID)
	is.Equal(out, "from-cli\n")                                // logs prints the output
	runCLI(t, p, 1, "wait", strconv.FormatInt(res.Job.ID, 10)) // a cancelled job makes wait exit 1
}

func waitRunning(t *testing.T, c rpc.Service, id int64) {
	t.Helper()
	for i := 0; ; i++ {
		j, err := c.Get(context.Background(), rpc.GetParams{ID: id})
		if err != nil {
			t.Fatalf("get: %v", err)
		}
		if j.State == rpc.StateRunning && j.Steps[j.CurrentStep].State == rpc.StateRunning {
			return
		}
		if i > 3000 {
			t.Fatalf("job %d never ran", id)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func runCLI(t *testing.T, p *daemonProc, wantCode int, args ...string) string {
	t.Helper()
	cmd := exec.Command(p.bins.spool, append([]string{"--socket", p.socket}, args...)...)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	err := cmd.Run()
	code := 0
	var ee *exec.ExitError
	if errors.As(err, &ee) {
		code = ee.ExitCode()
	} else if err != nil {
		t.Fatalf("spool %v: %v", args, err)
	}
	if code != wantCode {
		t.Fatalf("spool %v: exit %d, want %d\nstdout: %s\nstderr: %s", args, code, wantCode, stdout.String(), stderr.String())
	}
	return stdout.String()
}

// TestE2EKill9 kills the daemon while jobs run and wait, restarts it, and checks
// that nothing acknowledged was lost, the running job resumed, and the event log
// has no gap.
func TestE2EKill9(t *testing.T) {
	is := is.New(t)
	p := newDaemon(t, "--max-parallel", "1")
	c := p.client()
	ctx := tctx(t)
	marker := filepath.Join(p.state, "..", "runs")
	var ids []int64
	first := rpc.Spec{Steps: []rpc.Step{sh("echo one"), sh("echo run >> " + marker + "; sleep 1; echo done")}}
	res, err := c.Submit(ctx, rpc.SubmitParams{Job: &first})
	is.NoErr(err)
	ids = append(ids, res.Job.ID)
	for i := 0; i < 5; i++ {
		s := rpc.Spec{Name: fmt.Sprintf("queued-%d", i), Steps: []rpc.Step{sh("true")}}
		res, err := c.Submit(ctx, rpc.SubmitParams{Job: &s})
		is.NoErr(err)
		ids = append(ids, res.Job.ID)
	}
	// Wait until the first job's second step runs.
	for {
		j, err := c.Get(ctx, rpc.GetParams{ID: ids[0]})
		is.NoErr(err)
		if _, err := os.Stat(marker); err == nil && j.CurrentStep == 1 {
			break
		}
		time.Sleep(10 * time.Millisecond)
	}
	c.Close()
	p.kill9()

	p.start()
	c = p.client()
	for _, id := range ids {
		j, err := c.Wait(ctx, rpc.WaitParams{ID: id, Timeout: rpc.Duration(60 * time.Second)})
		is.NoErr(err)                         // every acknowledged job is there
		is.Equal(j.State, rpc.StateSucceeded) // and finished
	}
	j, err := c.Get(ctx, rpc.GetParams{ID: ids[0]})
	is.NoErr(err)
	is.Equal(j.Steps[0].Attempt, 1) // the finished step did not run again
	runs, _ := os.ReadFile(marker)
	is.Equal(strings.Count(string(runs), "run"), 2) // the interrupted step ran again, once

	w, err := c.Watch(ctx, rpc.WatchParams{Since: rpc.Since(0)})
	is.NoErr(err)
	info, err := c.Info(ctx)
	is.NoErr(err)
	var seq int64
	var first0 []string
	for seq < w.Result().Seq {
		ev, err := w.Next(ctx)
		is.NoErr(err)
		if ev.Seq == 0 {
			continue
		}
		is.Equal(ev.Seq, seq+1) // no gap, none twice
		seq = ev.Seq
		if ev.Job == ids[0] {
			first0 = append(first0, ev.Type)
		}
	}
	is.True(seq <= info.LastSeq)
	joined := strings.Join(first0, ",")
	is.True(strings.Contains(joined, "interrupted,started,step_started")) // the running job was interrupted, then resumed
	is.True(strings.HasSuffix(joined, "succeeded"))                       // and succeeded
}

// TestE2ESecondDaemonRefused starts a second daemon on the same state folder.
func TestE2ESecondDaemonRefused(t *testing.T) {
	is := is.New(t)
	p := newDaemon(t)
	other := filepath.Join(shortDir(t), "other.sock")
	cmd := exec.Command(p.bins.spoold, "--socket", other, "--state-dir", p.state)
	start := time.Now()
	out, err := cmd.CombinedOutput()
	is.True(err != nil) // it exits non-zero
	is.True(time.Since(start) < 20*time.Second)
	is.True(strings.Contains(string(out), "pid "+strconv.Itoa(p.cmd.Process.Pid))) // naming the running one
}

// TestE2EErrorCodes checks each protocol error over a raw connection.
func TestE2EErrorCodes(t *testing.T) {
	is := is.New(t)
	p := newDaemon(t, "--max-parallel", "1")
	r := p.raw()
	code := func(m *wireMsg) int {
		if m.Error == nil {
			t.Fatalf("want an error, got result %s", m.Result)
		}
		return m.Error.Code
	}
	is.Equal(code(r.call(1, "job.nope", `{}`)), rpc.CodeMethodNotFound) // -32601
	m := r.call(2, "job.submit", `{"job":{"stpes":[]}}`)
	is.Equal(code(m), rpc.CodeInvalidParams)  // -32602
	is.Equal(m.Error.Data.Field, "job.stpes") // naming the unknown field
	m = r.call(3, "job.submit", `{"job":{"steps":[{"exec":{"argv":[]}}]}}`)
	is.Equal(m.Error.Data.Field, "job.steps[0].exec.argv")                           // naming the bad field
	is.Equal(code(r.call(4, "job.get", `{"id":999}`)), rpc.CodeNotFound)             // 1001
	is.Equal(code(r.call(5, "template.get", `{"name":"nope"}`)), rpc.CodeNoTemplate) // 1003
	is.Equal(code(r.call(6, "job.watch", `{"since":99999}`)), rpc.CodeSinceOutside)  // 1007
	m = r.call(7, "job.submit", `{"job":{"key":"k1","steps":[{"shell":{"script":"true"}}]}}`)
	is.True(m.Error == nil)
	is.Equal(code(r.call(8, "job.submit", `{"job":{"key":"k1","steps":[{"shell":{"script":"false"}}]}}`)), rpc.CodeKeyConflict) // 1008
	var j rpc.Job
	is.NoErr(json.Unmarshal(m.Result, &j))
	r.call(9, "job.wait", fmt.Sprintf(`{"id":%d}`, j.ID))
	is.Equal(code(r.call(10, "job.cancel", fmt.Sprintf(`{"id":%d}`, j.ID))), rpc.CodeBadState) // 1002

	// -32800: $/cancelRequest ends a pending job.wait.
	m = r.call(11, "job.submit", `{"job":{"steps":[{"shell":{"script":"sleep 30"}}]}}`)
	is.NoErr(json.Unmarshal(m.Result, &j))
	r.send(fmt.Sprintf(`{"jsonrpc":"2.0","id":12,"method":"job.wait","params":{"id":%d}}`+"\n", j.ID))
	m = r.call(13, "job.get", fmt.Sprintf(`{"id":%d}`, j.ID)) // the wait does not delay a later request
	is.True(m.Error == nil)
	r.send(`{"jsonrpc":"2.0","method":"$/cancelRequest","params":{"id":12}}` + "\n")
	for {
		m, err := r.recv()
		is.NoErr(err)
		if string(m.ID) == "12" {
			is.Equal(code(m), rpc.CodeCancelled) // -32800
			break
		}
	}
	// -32600: not JSON-RPC 2.0, and a batch; the connection goes on.
	r.send(`{"id":14,"method":"job.get"}` + "\n")
	m, err := r.recv()
	is.NoErr(err)
	is.Equal(code(m), rpc.CodeInvalidRequest)
	r.send(`[{"jsonrpc":"2.0","id":15,"method":"daemon.info"}]` + "\n")
	m, err = r.recv()
	is.NoErr(err)
	is.Equal(code(m), rpc.CodeInvalidRequest)
	is.True(r.call(16, "daemon.info", `{}`).Error == nil) // still served

	// -32700 on one connection; another keeps working.
	bad := p.raw()
	bad.send("{\"jsonrpc\": nope}\n")
	m, err = bad.recv()
	is.NoErr(err)
	is.Equal(code(m), rpc.CodeParseError)
	_, err = bad.recv()
	is.True(err != nil) // then the connection is closed
	is.True(r.call(17, "daemon.info", `{}`).Error == nil)
}

func rss(t *testing.T, pid int) int64 {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		t.Skipf("no /proc: %v", err)
	}
	for _, line := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(line, "VmRSS:"); ok {
			f := strings.Fields(v)
			n, _ := strconv.ParseInt(f[0], 10, 64)
			return n << 10
		}
	}
	return 0
}

// TestE2EOversizeMessage sends a message far over the limit: the daemon answers
// -32600, closes that connection, and does not read it into memory.
func TestE2EOversizeMessage(t *testing.T) {
	is := is.New(t)
	p := newDaemon(t)
	before := rss(t, p.cmd.Process.Pid)
	r := p.raw()
	big := `{"jsonrpc":"2.0","id":1,"method":"job.submit","params":{"job":{"name":"` + strings.Repeat("x", 64<<20) + `"}}}` + "\n"
	go func() { _, _ = io.WriteString(r.c, big) }()
	m, err := r.recv()
	is.NoErr(err)
	is.Equal(m.Error.Code, rpc.CodeInvalidRequest) // too large
	is.True(strings.Contains(m.Error.Message, "too large"))
	after := rss(t, p.cmd.Process.Pid)
	is.True(after-before < 32<<20) // the daemon did not read the 64 MiB message into memory
	c := p.client()
	_, err = c.Info(tctx(t))
	is.NoErr(err) // other clients are served
}

// TestE2EStalledWatcher opens a watch with output that never reads, then runs
// jobs with much output: they finish and another client is served meanwhile.
func TestE2EStalledWatcher(t *testing.T) {
	is := is.New(t)
	p := newDaemon(t, "--max-parallel", "4")
	stalled := p.raw()
	stalled.send(`{"jsonrpc":"2.0","id":1,"method":"job.watch","params":{"output":true,"heartbeat":"100ms"}}` + "\n")
	if uc, ok := stalled.c.(*net.UnixConn); ok {
		_ = uc.SetReadBuffer(4096)
	}
	c := p.client()
	ctx := tctx(t)
	var specs []rpc.Spec
	for i := 0; i < 40; i++ {
		specs = append(specs, rpc.Spec{Steps: []rpc.Step{sh("head -c 200000 /dev/zero | tr '\\0' 'x'; echo")}})
	}
	res, err := c.Submit(ctx, rpc.SubmitParams{Jobs: specs})
	is.NoErr(err)
	for _, j := range res.Jobs {
		got, err := c.Wait(ctx, rpc.WaitParams{ID: j.ID, Timeout: rpc.Duration(60 * time.Second)})
		is.NoErr(err)
		is.Equal(got.State, rpc.StateSucceeded) // jobs finish although a watcher does not read
	}
	_, err = c.Info(ctx)
	is.NoErr(err) // and other clients are served
}

// TestE2EFramings speaks LSP framing and newline framing to the same daemon.
func TestE2EFramings(t *testing.T) {
	is := is.New(t)
	p := newDaemon(t)
	nl := p.raw()
	m := nl.call(1, "daemon.info", `{}`)
	is.True(m.Error == nil) // newline framing

	c, err := net.Dial("unix", p.socket)
	is.NoErr(err)
	defer c.Close()
	body := `{"jsonrpc":"2.0","id":"a","method":"job.submit","params":{"job":{"steps":[{"shell":{"script":"echo lsp"}}]}}}`
	fmt.Fprintf(c, "Content-Length: %d\r\nContent-Type: application/vscode-jsonrpc; charset=utf-8\r\n\r\n%s", len(body), body)
	br := bufio.NewReader(c)
	_ = c.SetReadDeadline(time.Now().Add(30 * time.Second))
	var n int
	for {
		line, err := br.ReadString('\n')
		is.NoErr(err)
		line = strings.TrimRight(line, "\r\n")
		if line == "" {
			break
		}
		if v, ok := strings.CutPrefix(strings.ToLower(line), "content-length:"); ok {
			n, _ = strconv.Atoi(strings.TrimSpace(v))
		}
	}
	is.True(n > 0) // answered with a Content-Length header
	buf := make([]byte, n)
	_, err = io.ReadFull(br, buf)
	is.NoErr(err)
	var resp wireMsg
	is.NoErr(json.Unmarshal(buf, &resp))
	is.Equal(string(resp.ID), `"a"`) // the string id comes back
	is.True(resp.Error == nil)       // the submit worked
}
