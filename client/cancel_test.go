package client_test

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"io"
	"net"
	"runtime"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/matryer/is"

	"spool/client"
	"spool/rpc"
)

// heapInUse is the live heap after a full collection.
func heapInUse() uint64 {
	runtime.GC()
	runtime.GC()
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	return ms.HeapAlloc
}

// TestCancelledCallsLeaveNothing cancels 10,000 calls that a server never answers:
// each returns the context's error, sends $/cancelRequest naming it, and leaves no
// entry behind (the live heap does not grow with the number of calls). Answers
// that come after all are dropped, and the connection goes on working.
func TestCancelledCallsLeaveNothing(t *testing.T) {
	is := is.New(t)
	f := newFakeServer(t)
	c, s := f.dial()

	// The server reads requests and cancellations, in constant memory: each
	// request must be followed by the $/cancelRequest that names it.
	reqs := make(chan int64)
	var cancels, mismatches atomic.Int64
	readDone := make(chan struct{})
	go func() {
		defer close(readDone)
		r := bufio.NewReader(s.conn)
		var last int64
		for {
			line, err := r.ReadBytes('\n')
			if err != nil {
				return
			}
			var m request
			if json.Unmarshal(line, &m) != nil {
				mismatches.Add(1)
				continue
			}
			switch {
			case m.Method == rpc.MethodCancelRequest && m.ID == nil:
				var p struct{ ID int64 }
				if json.Unmarshal(m.Params, &p) != nil || p.ID != last {
					mismatches.Add(1)
				}
				cancels.Add(1)
			case m.ID != nil:
				last = *m.ID
				reqs <- *m.ID
			}
		}
	}()

	cancelOne := func() (int64, error) {
		ctx, cancel := context.WithCancel(context.Background())
		defer cancel()
		errc := make(chan error, 1)
		go func() { _, err := c.Get(ctx, rpc.GetParams{ID: 1}); errc <- err }()
		var id int64
		select {
		case id = <-reqs: // the request is on the wire and waits for its answer
		case <-time.After(hang):
			t.Fatal("no request arrived")
		}
		cancel()
		return id, recv(t, errc)
	}

	const warm, n = 1000, 10000
	for range warm {
		_, err := cancelOne()
		is.True(errors.Is(err, context.Canceled)) // a cancelled call returns the context's error
	}
	before := heapInUse()
	var ids []int64 // the first and the last id, to answer late
	for i := range n {
		id, err := cancelOne()
		if !errors.Is(err, context.Canceled) {
			t.Fatalf("call %d: %v, want context.Canceled", i, err)
		}
		if i == 0 || i == n-1 {
			ids = append(ids, id)
		}
	}
	deadline := time.Now().Add(hang)
	for cancels.Load() < warm+n && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	is.Equal(cancels.Load(), int64(warm+n)) // every cancelled call sent $/cancelRequest
	is.Equal(mismatches.Load(), int64(0))   // each naming the call just made
	after := heapInUse()
	grew := int64(after) - int64(before)
	t.Logf("live heap %d bytes before %d cancelled calls, %d after (%+d, %+.1f per call)", before, n, after, grew, float64(grew)/n)
	// A call left behind holds its request, its channel and a map entry: some
	// 400 bytes, 4 MB for 10,000. 64 bytes a call is noise (the GC, the runtime).
	is.True(grew < 64*n) // the cancelled calls left nothing behind

	// Late answers find no call, and change nothing.
	for _, id := range ids {
		s.reply(id, map[string]any{"id": 1, "state": "queued"})
		s.fail(id, rpc.CodeCancelled, "request cancelled", nil)
	}
	done := async(func() error {
		j, err := c.Get(context.Background(), rpc.GetParams{ID: 2})
		if err == nil && j.ID != 2 {
			return errors.New("got the answer of another call")
		}
		return err
	})
	id := recv(t, reqs)
	s.reply(id, map[string]any{"id": 2, "state": "queued"})
	is.NoErr(recv(t, done)) // the connection still works, answers go to their own calls
	is.NoErr(c.Close())
	<-readDone
}

// TestMessageTooLarge: a line longer than the bound ends the connection with an
// error saying so, without reading it all into memory; the calls under way fail.
func TestMessageTooLarge(t *testing.T) {
	is := is.New(t)
	f := newFakeServer(t)
	conn, err := net.Dial("unix", f.socket)
	is.NoErr(err) // connect
	c := client.NewWithLimit(conn, 4096)
	t.Cleanup(func() { c.Close() })
	var s *fakeConn
	select {
	case s = <-f.conns:
		t.Cleanup(func() { s.conn.Close() })
	case <-time.After(hang):
		t.Fatal("no connection accepted")
	}

	done := async(func() error { _, err := c.Get(context.Background(), rpc.GetParams{ID: 1}); return err })
	r := s.read()
	s.reply(*r.ID, map[string]any{"id": 1, "name": strings.Repeat("x", 4000), "state": "queued"})
	is.NoErr(recv(t, done)) // a message within the bound is read

	done = async(func() error { _, err := c.Get(context.Background(), rpc.GetParams{ID: 2}); return err })
	r = s.read()
	// More than the bound, and no newline: the client must stop reading.
	go func() {
		s.conn.SetWriteDeadline(time.Now().Add(hang))
		s.conn.Write([]byte(`{"jsonrpc":"2.0","id":` + jsonInt(*r.ID) + `,"result":"` + strings.Repeat("y", 1<<20)))
	}()
	err = recv(t, done)
	is.True(errors.Is(err, client.ErrDisconnected))      // the call fails: the connection ended
	is.True(strings.Contains(err.Error(), "4096 bytes")) // saying why
}

// TestWriteInterrupted: a call whose request cannot be written (the server reads
// nothing) returns when its context ends.
func TestWriteInterrupted(t *testing.T) {
	is := is.New(t)
	f := newFakeServer(t)
	c, s := f.dial()

	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	big := rpc.Spec{Name: "big", Env: map[string]string{"X": strings.Repeat("x", 8<<20)}}
	done := async(func() error { _, err := c.Submit(ctx, rpc.SubmitParams{Job: &big}); return err })
	// The server reads the start of the request, then nothing: the rest of 8 MiB
	// does not fit in the socket's buffers, so the write is under way, blocked.
	s.conn.SetReadDeadline(time.Now().Add(hang))
	_, err := io.ReadFull(s.r, make([]byte, 64<<10))
	is.NoErr(err) // the request started
	cancel()
	err = recv(t, done)
	is.True(errors.Is(err, context.Canceled)) // the blocked write gives way to the context
	_, err = c.Info(context.Background())
	is.True(err != nil) // a message half written ended the connection
}
