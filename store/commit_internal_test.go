package store

import (
	"context"
	"errors"
	"fmt"
	"path/filepath"
	"runtime"
	"sync"
	"testing"
	"time"

	"github.com/matryer/is"

	"spool/rpc"
)

// putQueueOp is an op that stores queue name, then fails with fail when set.
func putQueueOp(ctx context.Context, name string, fail error) *op {
	return &op{ctx: ctx, done: make(chan struct{}), apply: func(b *txb) error {
		if errors.As(fail, new(*rpc.Error)) {
			return fail // a failed check writes nothing
		}
		if err := b.queues.Put([]byte(name), []byte(`{"name":"`+name+`"}`)); err != nil {
			return err
		}
		return fail
	}}
}

func TestCommitIsolatesFailures(t *testing.T) {
	is := is.New(t)
	ctx := context.Background()
	s, err := Open(filepath.Join(t.TempDir(), "spool.db"), Options{})
	is.NoErr(err) // opens
	defer s.Close()

	cancelled, cancel := context.WithCancel(ctx)
	cancel()
	ok1 := putQueueOp(ctx, "ok1", nil)
	checkFails := putQueueOp(ctx, "check", rpc.NoTemplate("x"))
	writeFails := putQueueOp(ctx, "write", errors.New("disk on fire"))
	late := putQueueOp(cancelled, "late", nil)
	ok2 := putQueueOp(ctx, "ok2", nil)
	before := s.Commits()
	s.commit([]*op{ok1, checkFails, writeFails, late, ok2})
	for _, o := range []*op{ok1, checkFails, writeFails, late, ok2} {
		<-o.done // every call is answered
	}
	is.NoErr(ok1.err)                                        // the good calls are applied
	is.NoErr(ok2.err)                                        // the good calls are applied
	is.Equal(rpc.CodeOf(checkFails.err), rpc.CodeNoTemplate) // a failed check gets its own error
	is.Equal(rpc.CodeOf(writeFails.err), rpc.CodeStorage)    // a failed write gets 1004
	is.True(errors.Is(late.err, context.Canceled))           // a call whose context ended is not applied
	is.Equal(s.Commits()-before, uint64(1))                  // the rest share one commit

	qs, err := s.Queues(ctx)
	is.NoErr(err) // readable
	var names []string
	for _, q := range qs {
		names = append(names, q.Name)
	}
	is.Equal(names, []string{"ok1", "ok2"}) // only the good calls' writes are stored
	is.NoErr(s.Check(ctx))                  // consistent
}

func TestCommitNothingWritten(t *testing.T) {
	is := is.New(t)
	s, err := Open(filepath.Join(t.TempDir(), "spool.db"), Options{})
	is.NoErr(err) // opens
	defer s.Close()
	before := s.Commits()
	o := putQueueOp(context.Background(), "x", rpc.NotFound(1))
	s.commit([]*op{o})
	<-o.done
	is.Equal(rpc.CodeOf(o.err), rpc.CodeNotFound) // the call's own error
	is.Equal(s.Commits(), before)                 // and no commit for nothing
}

func TestCloseWaitsForWaitingCalls(t *testing.T) {
	is := is.New(t)
	ctx := context.Background()
	path := filepath.Join(t.TempDir(), "spool.db")
	s, err := Open(path, Options{})
	is.NoErr(err) // opens

	const workers, each = 8, 20
	var mu sync.Mutex
	stored := map[string]bool{}
	var wg sync.WaitGroup
	for w := range workers {
		wg.Go(func() {
			for i := range each {
				name := fmt.Sprintf("q%d-%d", w, i)
				err := s.do(ctx, putQueueOp(ctx, name, nil))
				if err != nil {
					if rpc.CodeOf(err) != rpc.CodeShuttingDown {
						t.Errorf("submit %s: %v, want refused only because of Close", name, err)
					}
					return
				}
				mu.Lock()
				stored[name] = true
				mu.Unlock()
			}
		})
	}
	for s.Commits() < 3 {
		_, err := s.Queues(ctx)
		is.NoErr(err) // readable while others write
	}
	is.NoErr(s.Close()) // closes while calls are under way
	wg.Wait()

	s, err = Open(path, Options{})
	is.NoErr(err) // reopens
	defer s.Close()
	qs, err := s.Queues(ctx)
	is.NoErr(err) // readable
	got := map[string]bool{}
	for _, q := range qs {
		got[q.Name] = true
	}
	for name := range stored {
		is.True(got[name]) // every call answered without error was committed before Close returned
	}
}

// TestGatherWaitsForThePreviousCallers: after a commit shared by three calls, the
// next leader waits until three calls are queued again, and no longer.
func TestGatherWaitsForThePreviousCallers(t *testing.T) {
	is := is.New(t)
	ctx := context.Background()
	s, err := Open(filepath.Join(t.TempDir(), "spool.db"), Options{})
	is.NoErr(err) // opens
	defer s.Close()
	s.gatherWait = time.Hour // only the third call can end the wait

	s.mu.Lock()
	s.leading, s.last = true, 3 // a commit of three calls is under way
	s.mu.Unlock()
	var answered sync.WaitGroup
	join := func(name string) {
		answered.Go(func() {
			if err := s.do(ctx, putQueueOp(ctx, name, nil)); err != nil {
				t.Errorf("%s: %v", name, err)
			}
		})
	}
	queued := func(n int) {
		for {
			s.mu.Lock()
			l := len(s.queue)
			s.mu.Unlock()
			if l >= n {
				return
			}
			runtime.Gosched()
		}
	}
	join("q1")
	queued(1)

	gathered := make(chan []*op)
	go func() {
		s.mu.Lock()
		s.gather(true)
		batch := s.queue
		s.queue = nil
		s.mu.Unlock()
		gathered <- batch
	}()
	join("q2")
	queued(2)
	for range 100 {
		runtime.Gosched()
	}
	select {
	case <-gathered:
		t.Fatal("the leader stopped gathering with two of three calls")
	default:
	}
	join("q3")
	batch := <-gathered
	is.Equal(len(batch), 3) // the third call ends the wait

	s.commit(batch) // answers them
	answered.Wait()
	s.mu.Lock()
	s.leading = false
	s.mu.Unlock()
	qs, err := s.Queues(ctx)
	is.NoErr(err)
	is.Equal(len(qs), 3) // all three stored
}
