package store

import (
	"context"
	"errors"
	"path/filepath"
	"testing"

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
