package main

import (
	"bufio"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/matryer/is"

	"spool/client"
	"spool/rpc"
	"spool/rpc/server"
)

// infoMedian is the median latency of n daemon.info calls on c.
func infoMedian(t *testing.T, c *client.Client, n int) time.Duration {
	t.Helper()
	ctx := tctx(t)
	lat := make([]time.Duration, 0, n)
	for i := 0; i < n; i++ {
		start := time.Now()
		if _, err := c.Info(ctx); err != nil {
			t.Fatalf("daemon.info: %v", err)
		}
		lat = append(lat, time.Since(start))
	}
	return median(lat)
}

// rssSampler keeps the peak RSS of a process.
type rssSampler struct {
	peak atomic.Int64
	stop chan struct{}
	done chan struct{}
}

func sampleRSS(t *testing.T, pid int) *rssSampler {
	s := &rssSampler{stop: make(chan struct{}), done: make(chan struct{})}
	s.peak.Store(rss(t, pid))
	go func() {
		defer close(s.done)
		for {
			select {
			case <-s.stop:
				return
			case <-time.After(20 * time.Millisecond):
			}
			if v := rss(t, pid); v > s.peak.Load() {
				s.peak.Store(v)
			}
		}
	}()
	return s
}

func (s *rssSampler) end() int64 {
	close(s.stop)
	<-s.done
	return s.peak.Load()
}

// firstAnswer dials, writes payload (from another goroutine, as a client that
// does not wait for its write to finish), and reads the first message back.
func firstAnswer(socket, payload string) (*wireMsg, net.Conn, error) {
	c, err := net.Dial("unix", socket)
	if err != nil {
		return nil, nil, err
	}
	go func() { _, _ = io.WriteString(c, payload) }()
	_ = c.SetReadDeadline(time.Now().Add(60 * time.Second))
	body, err := readFrame(bufio.NewReader(c))
	if err != nil {
		return nil, c, err
	}
	var m wireMsg
	if err := json.Unmarshal(body, &m); err != nil {
		return nil, c, fmt.Errorf("bad answer %q: %w", body, err)
	}
	return &m, c, nil
}

// readFrame reads one message in either framing.
func readFrame(br *bufio.Reader) ([]byte, error) {
	first, err := br.Peek(1)
	if err != nil {
		return nil, err
	}
	if first[0] != 'C' && first[0] != 'c' {
		return br.ReadBytes('\n')
	}
	n := -1
	for {
		line, err := br.ReadString('\n')
		if err != nil {
			return nil, err
		}
		line = strings.TrimRight(line, "\r\n")
		if line == "" {
			break
		}
		if v, ok := strings.CutPrefix(strings.ToLower(line), "content-length:"); ok {
			n, _ = strconv.Atoi(strings.TrimSpace(v))
		}
	}
	if n < 0 {
		return nil, errors.New("no Content-Length in the answer")
	}
	body := make([]byte, n)
	_, err = io.ReadFull(br, body)
	return body, err
}

// hostileAttack is a message sent on a connection of its own, and the error
// codes that may answer it (nil: no answer is due).
type hostileAttack struct {
	name, payload string
	codes         []int
}

func median(lat []time.Duration) time.Duration {
	slices.Sort(lat)
	return lat[len(lat)/2]
}

// TestHostileClients attacks one daemon at once with clients that send half a
// message and stall, clients that never read (a watch with output, and many
// requests), oversize messages, deep JSON nesting, and more connections than it
// serves. It checks that each gets its answer (or is closed), that the daemon's
// memory stays bounded, and that another client is still served; it logs that
// client's median latency against the idle daemon's.
func TestHostileClients(t *testing.T) {
	is := is.New(t)
	p := newDaemon(t, "--write-stall", "3s", "--max-parallel", "2")
	pid := p.cmd.Process.Pid
	measure := p.client()
	ctx := tctx(t)
	infoMedian(t, measure, 50) // warm up
	idle := infoMedian(t, measure, 200)
	rssIdle := rss(t, pid)
	sampler := sampleRSS(t, pid)
	var held []net.Conn
	defer func() {
		for _, c := range held {
			c.Close()
		}
	}()
	dial := func() net.Conn {
		c, err := net.Dial("unix", p.socket)
		is.NoErr(err) // dial
		held = append(held, c)
		return c
	}

	// Half a message, then silence: newline framing with half a megabyte of an
	// unfinished string, and LSP framing announcing a megabyte that never comes.
	const stallers = 20
	for i := 0; i < stallers; i++ {
		c := dial()
		_, err := io.WriteString(c, `{"jsonrpc":"2.0","id":1,"method":"daemon.info","params":{"x":"`+strings.Repeat("a", 512<<10))
		is.NoErr(err)
		c = dial()
		_, err = io.WriteString(c, "Content-Length: 1048000\r\n\r\n{\"jsonrpc\":\"2.0\",")
		is.NoErr(err)
	}

	// Never-readers: a watch of everything with output and heartbeats, then
	// thousands of requests whose answers are never read.
	const neverReaders = 5
	var writers sync.WaitGroup
	var silent []net.Conn
	for i := 0; i < neverReaders; i++ {
		c := dial()
		silent = append(silent, c)
		if uc, ok := c.(*net.UnixConn); ok {
			_ = uc.SetReadBuffer(4096)
		}
		writers.Go(func() {
			_ = c.SetWriteDeadline(time.Now().Add(60 * time.Second))
			_, _ = io.WriteString(c, `{"jsonrpc":"2.0","id":0,"method":"job.watch","params":{"output":true,"heartbeat":"100ms","since":0}}`+"\n")
			req := `{"jsonrpc":"2.0","id":1,"method":"job.list","params":{"limit":1000}}` + "\n"
			_, _ = io.WriteString(c, strings.Repeat(req, 5000))
		})
	}
	// Jobs with much output feed the watches that are never read.
	var specs []rpc.Spec
	for i := 0; i < 8; i++ {
		specs = append(specs, rpc.Spec{Steps: []rpc.Step{sh("for i in $(seq 20); do head -c 100000 /dev/zero | tr '\\0' 'y'; echo; echo $i/20 >&$SPOOL_PROGRESS_FD; done")}})
	}
	sub := p.client()
	res, err := sub.Submit(ctx, rpc.SubmitParams{Jobs: specs})
	is.NoErr(err) // jobs with output

	// Oversize messages and deep nesting, each on a connection of its own, over
	// and over while the latency is measured.
	deep := strings.Repeat("[", 100000) + strings.Repeat("]", 100000) + "\n"
	deepParams := `{"jsonrpc":"2.0","id":7,"method":"job.submit","params":{"job":` + strings.Repeat(`{"a":`, 50000) + "1" + strings.Repeat("}", 50000) + "}}\n"
	attacks := []hostileAttack{
		{"oversize newline", `{"jsonrpc":"2.0","id":1,"method":"job.submit","params":{"job":{"name":"` + strings.Repeat("x", 8<<20) + `"}}}` + "\n", []int{rpc.CodeInvalidRequest}},
		{"oversize LSP", "Content-Length: 999999999\r\n\r\n{}", []int{rpc.CodeInvalidRequest}},
		{"deep array", deep, []int{rpc.CodeParseError, rpc.CodeInvalidRequest}},
		{"deep params", deepParams, []int{rpc.CodeParseError, rpc.CodeInvalidParams}},
		{"deep unbalanced", strings.Repeat("[", 100000) + "\n", nil},
	}
	attack := func(a hostileAttack) {
		if a.codes == nil {
			// No answer is due until the message ends: send it, wait a
			// little, hang up.
			c, err := net.Dial("unix", p.socket)
			if err != nil {
				t.Errorf("%s: dial: %v", a.name, err)
				return
			}
			_, _ = io.WriteString(c, a.payload)
			time.Sleep(50 * time.Millisecond)
			c.Close()
			return
		}
		m, c, err := firstAnswer(p.socket, a.payload)
		if c != nil {
			c.Close()
		}
		if err != nil {
			t.Errorf("%s: no answer: %v", a.name, err)
			return
		}
		if m.Error == nil || !slices.Contains(a.codes, m.Error.Code) {
			t.Errorf("%s: answered %+v %s, want one of %v", a.name, m.Error, m.Result, a.codes)
		}
	}
	// phase sends each attack rounds times, from a goroutine per attack, while
	// another client calls daemon.info; it returns that client's latencies and
	// the daemon's peak RSS so far.
	phase := func(rounds int) ([]time.Duration, int64) {
		var attackers sync.WaitGroup
		for _, a := range attacks {
			attackers.Go(func() {
				for i := 0; i < rounds; i++ {
					attack(a)
					time.Sleep(10 * time.Millisecond)
				}
			})
		}
		done := make(chan struct{})
		go func() { attackers.Wait(); close(done) }()
		var lat []time.Duration
		for {
			select {
			case <-done:
				return lat, sampler.peak.Load()
			default:
			}
			start := time.Now()
			_, err := measure.Info(ctx)
			is.NoErr(err) // another client is served meanwhile
			lat = append(lat, time.Since(start))
		}
	}
	const rounds = 12
	lat1, peak1 := phase(rounds)
	lat2, peak2 := phase(rounds)
	if t.Failed() {
		t.FailNow()
	}
	busy := median(append(lat1, lat2...))
	t.Logf("%d oversize and deeply nested messages answered; RSS peak %d MiB after the first %d rounds, %d MiB after %d more",
		2*rounds*len(attacks), peak1>>20, rounds, peak2>>20, rounds)
	// Memory does not grow with the number of hostile messages: the second
	// phase alone sent 2 x 12 x 8 MiB of oversize messages.
	is.True(peak2-peak1 < 96<<20) // no message is kept, nor read whole

	// More connections than the daemon serves: the ones past the limit are
	// answered 1005 and closed; the held ones are served.
	const flood = 2000
	var floodConns []net.Conn
	for i := 0; i < flood; i++ {
		c := dial()
		_, err := fmt.Fprintf(c, `{"jsonrpc":"2.0","id":%d,"method":"daemon.info"}`+"\n", i)
		is.NoErr(err)
		floodConns = append(floodConns, c)
	}
	served, refused := 0, 0
	for _, c := range floodConns {
		_ = c.SetReadDeadline(time.Now().Add(60 * time.Second))
		line, err := bufio.NewReader(c).ReadBytes('\n')
		is.NoErr(err) // every connection is answered
		var m wireMsg
		is.NoErr(json.Unmarshal(line, &m))
		switch {
		case m.Error == nil:
			served++
		case m.Error.Code == rpc.CodeLimit:
			refused++
			_, err = bufio.NewReader(c).ReadBytes('\n')
			is.True(errors.Is(err, io.EOF)) // and a refused one is closed
		default:
			t.Fatalf("flood: answered %+v", m.Error)
		}
	}
	full := infoMedian(t, measure, 200)
	others := len(held) - flood + 2
	t.Logf("flood of %d connections: %d served, %d answered 1005 (the limit is %d, and %d other connections were open)",
		flood, served, refused, server.DefaultMaxConns, others)
	is.True(refused > 0)                                   // past the limit, 1005
	is.True(served+refused == flood)                       // each connection got one or the other
	is.True(served <= server.DefaultMaxConns-2-2*stallers) // the daemon never serves more than its limit
	is.True(served >= server.DefaultMaxConns-others)       // and serves up to it

	rssPeak := sampler.end()
	t.Logf("daemon.info median: idle %v, under oversize/deep/stalled/never-reading clients %v (ratio %.2f), with the connection limit reached %v (ratio %.2f)",
		idle, busy, float64(busy)/float64(idle), full, float64(full)/float64(idle))
	t.Logf("daemon RSS: idle %d MiB, peak %d MiB", rssIdle>>20, rssPeak>>20)
	// Bounded: the stalled halves (20 x 0.5 MiB, 20 LSP bodies of at most 1 MiB),
	// the never-readers' queues, per connection a read buffer and goroutines, and
	// the garbage of up to 1 MiB read of each oversize message, with the race
	// detector's shadow memory (some 4x), and the refused connections' readers;
	// nothing near the 8 MiB x 48 oversize messages or the unread answers (5 x
	// 5000 job lists). The plateau check above is the sharper one.
	is.True(rssPeak-rssIdle < 1<<30) // the daemon's memory stays bounded

	// The never-readers were closed for stalling; the daemon still works.
	writers.Wait()
	for _, c := range silent {
		// What was written before the close can still be read; then EOF.
		_ = c.SetReadDeadline(time.Now().Add(30 * time.Second))
		_, err := io.Copy(io.Discard, c)
		is.True(err == nil || errors.Is(err, syscall.ECONNRESET)) // the daemon closed the never-reading connection
	}
	for _, j := range res.Jobs {
		got, err := sub.Wait(ctx, rpc.WaitParams{ID: j.ID, Timeout: rpc.Duration(60 * time.Second)})
		is.NoErr(err)
		is.Equal(got.State, rpc.StateSucceeded) // the jobs ran although their watchers never read
	}
	_, err = measure.Info(ctx)
	is.NoErr(err) // still served
	checkNoRace(t, p)
}
