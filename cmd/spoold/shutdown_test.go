package main

import (
	"encoding/json"
	"fmt"
	"net"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/matryer/is"

	"spool/rpc"
)

// shutdownCall is one request sent while the daemon was asked to stop, and what
// came of it.
type shutdownCall struct {
	method   string
	names    []string // job.submit: the names of the jobs it submits
	answered bool
	code     int     // 0 for a result
	ids      []int64 // job.submit answered with a result: the ids, in order
}

// shutdownClient sends requests on one connection after another until the daemon
// refuses one or no longer accepts a connection, shutdownDepth requests in flight
// at a time, and records every answer.
type shutdownClient struct {
	n      int
	socket string
	acked  *atomic.Int64 // submits answered with a result, all clients together

	calls []*shutdownCall
	// refused is set once a request was answered 1006: like a real client, this
	// one then sends nothing more, and reads the answers still due.
	refused bool
	// bad lists what broke the protocol: answers that are not JSON-RPC, unknown ids.
	bad []string
}

const shutdownDepth = 4

func (c *shutdownClient) run() {
	for conn := 0; ; conn++ {
		nc, err := net.Dial("unix", c.socket)
		if err != nil {
			return // the daemon is gone
		}
		c.serveConn(nc, conn)
		nc.Close()
		if c.refused {
			return
		}
	}
}

// serveConn keeps shutdownDepth requests in flight on nc until it fails.
func (c *shutdownClient) serveConn(nc net.Conn, conn int) {
	pending := map[string]*shutdownCall{}
	defer func() {
		for _, call := range pending {
			call.answered = false // the connection ended before its answer
		}
	}()
	dec := json.NewDecoder(nc)
	seq := 0
	send := func() bool {
		seq++
		id := fmt.Sprintf("%d-%d-%d", c.n, conn, seq)
		call := &shutdownCall{}
		var params string
		switch seq % 8 {
		case 3:
			call.method = "job.get"
			params = `{"id":1}`
		case 5:
			call.method = "daemon.info"
			params = `{}`
		case 7:
			// A batch of three: all or none.
			call.method = "job.submit"
			var specs []string
			for k := range 3 {
				name := fmt.Sprintf("s%s-%d", id, k)
				call.names = append(call.names, name)
				specs = append(specs, shutdownSpec(name))
			}
			params = `{"jobs":[` + strings.Join(specs, ",") + `]}`
		default:
			call.method = "job.submit"
			name := "s" + id
			call.names = []string{name}
			params = `{"job":` + shutdownSpec(name) + `}`
		}
		msg := fmt.Sprintf(`{"jsonrpc":"2.0","id":%q,"method":%q,"params":%s}`+"\n", id, call.method, params)
		_ = nc.SetWriteDeadline(time.Now().Add(30 * time.Second))
		if _, err := nc.Write([]byte(msg)); err != nil {
			return false
		}
		c.calls = append(c.calls, call)
		pending[id] = call
		return true
	}
	for range shutdownDepth {
		if !send() {
			return
		}
	}
	for len(pending) > 0 {
		_ = nc.SetReadDeadline(time.Now().Add(60 * time.Second))
		var m wireMsg
		if err := dec.Decode(&m); err != nil {
			return
		}
		var id string
		if json.Unmarshal(m.ID, &id) != nil || pending[id] == nil {
			c.bad = append(c.bad, fmt.Sprintf("answer with an unknown id: %s", m.ID))
			return
		}
		call := pending[id]
		delete(pending, id)
		call.answered = true
		if m.Error != nil {
			call.code = m.Error.Code
			c.refused = c.refused || call.code == rpc.CodeShuttingDown
		} else if call.method == "job.submit" {
			var res rpc.SubmitResult
			if err := json.Unmarshal(m.Result, &res); err != nil {
				c.bad = append(c.bad, fmt.Sprintf("submit result %s: %v", m.Result, err))
				return
			}
			if res.Job != nil {
				call.ids = []int64{res.Job.ID}
			}
			for _, j := range res.Jobs {
				call.ids = append(call.ids, j.ID)
			}
			c.acked.Add(1)
		}
		if !c.refused && !send() {
			return
		}
	}
}

// shutdownSpec is a job that does not start before the test is over: what is
// stored is all that matters here.
func shutdownSpec(name string) string {
	return fmt.Sprintf(`{"name":%q,"not_before":"2999-01-01T00:00:00Z","steps":[{"shell":{"script":"true"}}]}`, name)
}

// TestE2EShutdownAnswers1006 stops the daemon, by daemon.shutdown and by SIGTERM,
// while many clients submit, read and wait: every request it answers is answered
// with a result or 1006 "the daemon is shutting down", never -32800 (which only
// $/cancelRequest causes); after a restart every job of a submit answered with a
// result is stored under the id it was given, and no job of a submit answered
// 1006 is.
func TestE2EShutdownAnswers1006(t *testing.T) {
	for _, how := range []string{"daemon.shutdown", "SIGTERM"} {
		t.Run(how, func(t *testing.T) {
			is := is.New(t)
			p := newDaemon(t)
			ctx := tctx(t)

			// A wait that is pending when the stop comes: the daemon abandons it.
			waiter := p.raw()
			m := waiter.call(1, "job.submit", `{"job":`+shutdownSpec("waited")+`}`)
			is.True(m.Error == nil) // the waited job is submitted
			var waited rpc.Job
			is.NoErr(json.Unmarshal(m.Result, &waited))
			waiter.send(fmt.Sprintf(`{"jsonrpc":"2.0","id":2,"method":"job.wait","params":{"id":%d}}`+"\n", waited.ID))

			const clients = 12
			var acked atomic.Int64
			cs := make([]*shutdownClient, clients)
			var wg sync.WaitGroup
			for i := range cs {
				cs[i] = &shutdownClient{n: i, socket: p.socket, acked: &acked}
				wg.Go(cs[i].run)
			}
			// Stop once submits are flowing.
			deadline := time.Now().Add(60 * time.Second)
			for acked.Load() < 200 {
				if time.Now().After(deadline) {
					t.Fatalf("only %d submits answered in 60s", acked.Load())
				}
				time.Sleep(5 * time.Millisecond)
			}
			switch how {
			case "SIGTERM":
				is.NoErr(p.cmd.Process.Signal(syscall.SIGTERM)) // stop by signal
			default:
				r := p.raw()
				r.send(`{"jsonrpc":"2.0","id":1,"method":"daemon.shutdown","params":{}}` + "\n")
				if m, err := r.recv(); err == nil {
					is.True(m.Error == nil) // daemon.shutdown is answered with {}, if at all
				}
			}
			select {
			case <-p.exited:
			case <-time.After(60 * time.Second):
				t.Fatalf("spoold did not stop:\n%s", p.logs.String())
			}
			wg.Wait()

			m, err := waiter.recv()
			is.NoErr(err)                                // the pending wait is answered
			is.True(m.Error != nil)                      // with an error
			is.Equal(m.Error.Code, rpc.CodeShuttingDown) // 1006, not -32800

			// Every answer is a result or 1006.
			codes := map[int]int{}
			unanswered := 0
			for _, c := range cs {
				for _, b := range c.bad {
					t.Errorf("client %d: %s", c.n, b)
				}
				for _, call := range c.calls {
					switch {
					case !call.answered:
						unanswered++
					default:
						codes[call.code]++
					}
				}
			}
			t.Logf("answers by code (0: result): %v; unanswered (connection closed first): %d", codes, unanswered)
			for code, n := range codes {
				if code != 0 && code != rpc.CodeShuttingDown {
					t.Errorf("%d requests answered %d; want a result or %d", n, code, rpc.CodeShuttingDown)
				}
			}

			// After a restart: acknowledged jobs are there, refused ones are not.
			p.start()
			stored := map[string]int64{}
			for id, j := range listAll(ctx, t, p.client()) {
				stored[j.Name] = id
			}
			ackedJobs, refusedJobs := 0, 0
			for _, c := range cs {
				for _, call := range c.calls {
					if call.method != "job.submit" || !call.answered {
						continue
					}
					for k, name := range call.names {
						id, ok := stored[name]
						switch call.code {
						case 0:
							ackedJobs++
							if !ok || id != call.ids[k] {
								t.Errorf("job %s was acknowledged as %d; stored: %v (id %d)", name, call.ids[k], ok, id)
							}
						case rpc.CodeShuttingDown:
							refusedJobs++
							if ok {
								t.Errorf("job %s was answered 1006 but is stored as %d", name, id)
							}
						}
					}
				}
			}
			t.Logf("acknowledged jobs: %d, all stored; refused jobs: %d, none stored", ackedJobs, refusedJobs)
			is.True(ackedJobs >= 200) // the test submitted what it meant to
		})
	}
}
