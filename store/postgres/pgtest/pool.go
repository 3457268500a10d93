package pgtest

import (
	"context"
	"errors"
	"fmt"
	"os"
	"sync"
	"testing"
	"time"
)

// RequireEnv is the environment variable that, set to 1, turns a server that
// cannot start from a skip into a failure. CI sets it: there the PostgreSQL
// tests must never skip.
const RequireEnv = "SPOOL_REQUIRE_POSTGRES"

// startTimeout bounds the start of a Pool's server (initdb and pg_ctl start).
const startTimeout = 2 * time.Minute

// Pool shares one server among the tests of a package: a TestMain makes one
// with NewPool, tests call DB(t) or Server(t), and TestMain calls Close after
// m.Run.
type Pool struct {
	opts Options

	mu      sync.Mutex
	started bool    // the start was tried (once only)
	closed  bool    // Close was called: no start any more
	srv     *Server // the server, when it started
	err     error   // why it did not
}

// NewPool returns a pool whose server, started on first use, has opts.
func NewPool(opts Options) *Pool {
	return &Pool{opts: opts}
}

// DB returns the DSN of a new database on the shared server, starting it on
// first use. When the server cannot start it calls t.Skip with the reason —
// unless the environment variable SPOOL_REQUIRE_POSTGRES=1 is set (CI sets
// it), then t.Fatal. A database that cannot be made fails the test.
func (p *Pool) DB(t testing.TB) string {
	t.Helper()
	srv := p.Server(t)
	dsn, err := srv.NewDB(t.Context())
	if err != nil {
		t.Fatalf("pgtest: %v", err)
	}
	return dsn
}

// Server returns the shared server, starting it on first use, skipping or
// failing as DB does.
func (p *Pool) Server(t testing.TB) *Server {
	t.Helper()
	srv, err := p.server()
	if err != nil {
		if os.Getenv(RequireEnv) == "1" {
			t.Fatalf("pgtest: no PostgreSQL server (%s=1): %v", RequireEnv, err)
		}
		t.Skipf("pgtest: no PostgreSQL server (set %s=1 to fail instead): %v", RequireEnv, err)
	}
	return srv
}

// server starts the server on the first call and returns it, or why it could
// not start, on every call.
func (p *Pool) server() (*Server, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.closed {
		return nil, errors.New("the pool is closed")
	}
	if !p.started {
		p.started = true
		ctx, cancel := context.WithTimeout(context.Background(), startTimeout)
		defer cancel()
		p.srv, p.err = Start(ctx, p.opts)
		if p.err != nil {
			p.err = fmt.Errorf("start the shared server: %w", p.err)
		}
	}
	return p.srv, p.err
}

// Close stops the shared server, if it started, and removes its folder. A
// TestMain calls it after m.Run; later calls of DB and Server skip or fail.
// It reports a failure to stop on standard error, as a TestMain has no test
// to fail.
func (p *Pool) Close() {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.closed = true
	if p.srv == nil {
		return
	}
	if err := p.srv.Stop(); err != nil {
		fmt.Fprintf(os.Stderr, "pgtest: stop the shared server: %v\n", err)
	}
	p.srv = nil
}
