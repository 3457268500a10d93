package postgres_test

import (
	"context"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"spool/daemon"
	"spool/rpc"
	"spool/store/postgres"
	"spool/store/postgres/pgtest"
	"spool/store/storetest"
)

var (
	_ daemon.Store          = (*postgres.Store)(nil)
	_ daemon.ExpiringLeases = (*postgres.Store)(nil)
	_ storetest.EnvCounter  = (*postgres.Store)(nil)
	_ storetest.Checker     = (*postgres.Store)(nil)
)

// servers is the PostgreSQL server the tests of the package share; each store
// gets a database of its own.
var servers *pgtest.Pool

func TestMain(m *testing.M) {
	servers = pgtest.NewPool(pgtest.Options{})
	code := m.Run()
	servers.Close()
	os.Exit(code)
}

// open opens a store on dsn with a short lease, closed when t ends. Its poll
// is an hour: Changed answers to commits only, as the suite expects (LISTEN
// brings the other handles'); TestChangedPoll checks the poll.
func open(t *testing.T, dsn string) *postgres.Store {
	t.Helper()
	return openPoll(t, dsn, time.Hour)
}

// openPoll opens a store on dsn with a lease longer than any case and poll as its
// Options.Poll, closed when t ends.
func openPoll(t *testing.T, dsn string, poll time.Duration) *postgres.Store {
	t.Helper()
	s, err := postgres.Open(context.Background(), dsn, postgres.Options{LeaseTTL: time.Minute, Poll: poll})
	if err != nil {
		t.Fatalf("open: %v", err)
	}
	t.Cleanup(func() { _ = s.Close() })
	return s
}

// TestStore runs the conformance suite of daemon.Store. Reopen is the next
// boot of a daemon, or one that lost its lease: the store is opened again on
// the same database and the old leases have expired.
func TestStore(t *testing.T) {
	dsns := map[daemon.Store]string{}
	storetest.RunWith(t, storetest.Harness{
		Open: func(t *testing.T) daemon.Store {
			dsn := servers.DB(t)
			s := open(t, dsn)
			dsns[s] = dsn
			return s
		},
		Peer: func(t *testing.T, s daemon.Store) daemon.Store {
			return open(t, dsns[s])
		},
		Reopen: func(t *testing.T, old daemon.Store) daemon.Store {
			dsn := dsns[old]
			_ = old.(*postgres.Store).Close()
			expireLeases(t, dsn)
			s := open(t, dsn)
			dsns[s] = dsn
			return s
		},
	})
}

// expireLeases ends every lease of the database, as time would.
func expireLeases(t *testing.T, dsn string) {
	t.Helper()
	ctx := context.Background()
	conn, err := pgx.Connect(ctx, dsn)
	if err != nil {
		t.Fatalf("connect: %v", err)
	}
	defer conn.Close(ctx)
	if _, err := conn.Exec(ctx, "UPDATE spool_leases SET expires = now() - interval '1 second'"); err != nil {
		t.Fatalf("expire leases: %v", err)
	}
}

// changedWithin reports whether s signals Changed within d.
func changedWithin(s *postgres.Store, d time.Duration) bool {
	select {
	case <-s.Changed():
		return true
	case <-time.After(d):
		return false
	}
}

// drainChanged takes a signal Changed holds, if any.
func drainChanged(s *postgres.Store) {
	select {
	case <-s.Changed():
	default:
	}
}

// TestChangedPoll checks that Changed signals every Options.Poll without a
// commit, for the notifications a listener down may have missed.
func TestChangedPoll(t *testing.T) {
	s := openPoll(t, servers.DB(t), 50*time.Millisecond)
	drainChanged(s)
	for i := range 3 {
		if !changedWithin(s, 2*time.Second) {
			t.Fatalf("poll %d: Changed did not signal", i)
		}
	}
}

// TestChangedNotify checks that a commit of one handle signals Changed on
// another on the same database, through LISTEN (the poll is an hour), and
// that a handle's own commit signals it once, not again by its echo.
func TestChangedNotify(t *testing.T) {
	dsn := servers.DB(t)
	a, b := open(t, dsn), open(t, dsn)
	ctx := context.Background()
	drainChanged(a)
	drainChanged(b)
	_, _, err := a.Submit(ctx, []rpc.NewJob{storetest.NewJob("jobs[0]", storetest.Spec("x"), time.Now())})
	if err != nil {
		t.Fatalf("submit: %v", err)
	}
	if !changedWithin(a, time.Second) {
		t.Fatal("the handle that committed was not signalled")
	}
	if !changedWithin(b, 5*time.Second) {
		t.Fatal("the other handle was not signalled")
	}
	if changedWithin(a, 500*time.Millisecond) {
		t.Fatal("the handle that committed was signalled again by its own notification")
	}
}

// TestSchemaVersion: Open makes the tables once, opens them again, and
// refuses a database whose schema is newer than the binary, changing nothing.
func TestSchemaVersion(t *testing.T) {
	ctx := context.Background()
	dsn := servers.DB(t)
	s := open(t, dsn)
	id := s.StoreID()
	_ = s.Close()
	again := open(t, dsn)
	if again.StoreID() != id {
		t.Fatalf("store id %q, then %q: the tables were made again", id, again.StoreID())
	}
	_ = again.Close()
	conn, err := pgx.Connect(ctx, dsn)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(ctx)
	if _, err := conn.Exec(ctx, "UPDATE spool_meta SET version = $1", postgres.SchemaVersion+1); err != nil {
		t.Fatal(err)
	}
	_, err = postgres.Open(ctx, dsn, postgres.Options{})
	if err == nil || !strings.Contains(err.Error(), "newer than this spoold") {
		t.Fatalf("open of a newer schema: %v", err)
	}
}
