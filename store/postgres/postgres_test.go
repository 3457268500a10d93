package postgres_test

import (
	"context"
	"os"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"spool/daemon"
	"spool/store/postgres"
	"spool/store/postgres/pgtest"
	"spool/store/storetest"
)

var _ daemon.Store = (*postgres.Store)(nil)

// servers is the PostgreSQL server the tests of the package share; each store
// gets a database of its own.
var servers *pgtest.Pool

func TestMain(m *testing.M) {
	servers = pgtest.NewPool(pgtest.Options{})
	code := m.Run()
	servers.Close()
	os.Exit(code)
}

// open opens a store on dsn with a short lease, closed when t ends.
func open(t *testing.T, dsn string) *postgres.Store {
	t.Helper()
	s, err := postgres.Open(context.Background(), dsn, postgres.Options{LeaseTTL: 5 * time.Second, Poll: 50 * time.Millisecond})
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
