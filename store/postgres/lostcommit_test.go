package postgres_test

import (
	"bytes"
	"context"
	"encoding/json"
	"net"
	"net/url"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/matryer/is"

	"spool/rpc"
	"spool/rpc/machine"
	"spool/store/postgres"
	"spool/store/storetest"
)

// cutter is a proxy in front of the server's socket that, once armed, lets
// the next COMMIT through and then cuts that connection before its answer
// comes back: the commit lands, and its writer never hears.
type cutter struct {
	ln    net.Listener
	armed atomic.Bool
	cuts  atomic.Int32
	wg    sync.WaitGroup
}

func newCutter(t *testing.T, target string) (*cutter, string) {
	t.Helper()
	dir, err := os.MkdirTemp("", "cut")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	ln, err := net.Listen("unix", filepath.Join(dir, ".s.PGSQL.5432"))
	if err != nil {
		t.Fatal(err)
	}
	c := &cutter{ln: ln}
	c.wg.Go(func() {
		for {
			conn, err := ln.Accept()
			if err != nil {
				return
			}
			c.wg.Go(func() { c.serve(conn, target) })
		}
	})
	t.Cleanup(func() { ln.Close(); c.wg.Wait() })
	return c, dir
}

func (c *cutter) serve(client net.Conn, target string) {
	defer client.Close()
	server, err := net.Dial("unix", target)
	if err != nil {
		return
	}
	defer server.Close()
	var cutting atomic.Bool
	done := make(chan struct{})
	go func() {
		defer close(done)
		defer client.Close() // the server hung up: so does the proxy
		buf := make([]byte, 64<<10)
		for {
			n, err := server.Read(buf)
			if n > 0 && !cutting.Load() {
				if _, werr := client.Write(buf[:n]); werr != nil {
					return
				}
			}
			if err != nil {
				return
			}
		}
	}()
	buf := make([]byte, 64<<10)
	for {
		n, err := client.Read(buf)
		if n > 0 {
			cut := c.armed.Load() && bytes.Contains(bytes.ToLower(buf[:n]), []byte("commit")) && c.armed.CompareAndSwap(true, false)
			if cut {
				cutting.Store(true) // the answer will not come back
			}
			if _, werr := server.Write(buf[:n]); werr != nil {
				return
			}
			if cut {
				time.Sleep(100 * time.Millisecond) // the server commits
				c.cuts.Add(1)
				client.Close()
				server.Close()
				<-done
				return
			}
		}
		if err != nil {
			return
		}
	}
}

// TestLostCommitAnswer loses the answer of a transition's commit: the store
// finds the commit landed and says so, so the runner neither retries a
// stored transition (refused, or its events stored twice) nor gives up on
// its job.
func TestLostCommitAnswer(t *testing.T) {
	is := is.New(t)
	ctx := context.Background()
	dsn := servers.DB(t)
	u, err := url.Parse(dsn)
	is.NoErr(err)
	host := u.Query().Get("host")
	cut, dir := newCutter(t, filepath.Join(host, ".s.PGSQL.5432"))
	q := u.Query()
	q.Set("host", dir)
	u.RawQuery = q.Encode()
	proxied := strings.ReplaceAll(u.String(), "%2F", "/")
	s, err := postgres.Open(ctx, proxied, postgres.Options{LeaseTTL: 5 * time.Second, Poll: time.Hour})
	is.NoErr(err)
	defer s.Close()

	o, err := s.Join(ctx, "a", time.Now())
	is.NoErr(err)
	_, _, err = s.Submit(ctx, []rpc.NewJob{storetest.NewJob("job", storetest.Spec("x"), time.Now())})
	is.NoErr(err)
	recs, _, err := s.Claim(ctx, o, 1, time.Now())
	is.NoErr(err)
	is.Equal(len(recs), 1)
	_, last, err := s.Bounds(ctx)
	is.NoErr(err)

	cut.armed.Store(true)
	evs, err := s.Apply(ctx, []rpc.Transition{succeed(recs[0], o)})
	is.Equal(cut.cuts.Load(), int32(1)) // the commit's answer was lost
	is.NoErr(err)                       // yet the store found it stored
	is.True(len(evs) > 0)
	is.Equal(evs[0].Seq, last+1) // with its events' seqs

	rec, err := s.Get(ctx, recs[0].ID)
	is.NoErr(err)
	is.Equal(rec.State, rpc.StateSucceeded) // stored once
	all, err := s.Events(ctx, 0, 0)
	is.NoErr(err)
	is.Equal(all[len(all)-1].Seq, evs[len(evs)-1].Seq) // and its events once
}

// succeed is owner o's transition that ends rec's only step in success.
func succeed(rec rpc.Record, o machine.Owner) rpc.Transition {
	rec.Steps = slices.Clone(rec.Steps)
	evs := machine.StepSucceeded(&rec, rec.CurrentStep, machine.Outcome{KeepResult: true, Result: json.RawMessage(`"ok"`)}, time.Now())
	return rpc.Transition{Record: rec, From: rpc.StateRunning, Events: evs, Epoch: o.Epoch}
}
