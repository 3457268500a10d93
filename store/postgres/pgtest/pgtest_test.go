package pgtest_test

import (
	"context"
	"errors"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"

	"spool/store/postgres/pgtest"
)

// TestMain closes the shared server of the package's tests.
func TestMain(m *testing.M) {
	pool = pgtest.NewPool(pgtest.Options{})
	code := m.Run()
	pool.Close()
	os.Exit(code)
}

// pool is the package's shared server, set by TestMain.
var pool *pgtest.Pool

// start starts a server of the test's own, skipping as a Pool does when it
// cannot start, and stops it when the test ends.
func start(t *testing.T) *pgtest.Server {
	t.Helper()
	srv, err := pgtest.Start(t.Context(), pgtest.Options{})
	if err != nil {
		if os.Getenv(pgtest.RequireEnv) == "1" {
			t.Fatal(err)
		}
		t.Skip(err)
	}
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("server log:\n%s", srv.Log())
		}
		if err := srv.Stop(); err != nil {
			t.Errorf("stop: %v", err)
		}
	})
	return srv
}

// connect connects to dsn and closes the connection when the test ends.
func connect(t *testing.T, dsn string) *pgx.Conn {
	t.Helper()
	conn, err := pgx.Connect(t.Context(), dsn)
	if err != nil {
		t.Fatalf("connect to %s: %v", dsn, err)
	}
	t.Cleanup(func() { _ = conn.Close(context.Background()) })
	return conn
}

// selectOne runs SELECT 1 on conn.
func selectOne(t *testing.T, conn *pgx.Conn) {
	t.Helper()
	var one int
	if err := conn.QueryRow(t.Context(), "SELECT 1").Scan(&one); err != nil || one != 1 {
		t.Fatalf("SELECT 1: %d, %v", one, err)
	}
}

// TestServer starts a server, makes two databases that do not share tables,
// survives a crash of the server, and stops it.
func TestServer(t *testing.T) {
	t0 := time.Now()
	srv := start(t)
	t.Logf("start: %v", time.Since(t0))
	if n := len(srv.Dir() + "/.s.PGSQL.5432"); n > 107 {
		t.Errorf("socket path of %d bytes", n)
	}
	if _, err := os.Stat(srv.Dir() + "/.s.PGSQL.5432"); err != nil {
		t.Errorf("no socket in Dir: %v", err)
	}

	t0 = time.Now()
	dsnA, err := srv.NewDB(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("first NewDB (with the template): %v", time.Since(t0))
	t0 = time.Now()
	dsnB, err := srv.NewDB(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("second NewDB: %v", time.Since(t0))
	if dsnA == dsnB {
		t.Fatalf("two databases, one DSN: %s", dsnA)
	}
	if !strings.HasPrefix(dsnA, "postgres:///") || !strings.Contains(dsnA, "host="+srv.Dir()) {
		t.Errorf("DSN %s: not postgres:///db?host=%s...", dsnA, srv.Dir())
	}

	a, b := connect(t, dsnA), connect(t, dsnB)
	selectOne(t, a)
	selectOne(t, b)
	if _, err := a.Exec(t.Context(), "CREATE TABLE only_in_a (id bigint PRIMARY KEY)"); err != nil {
		t.Fatal(err)
	}
	if _, err := a.Exec(t.Context(), "INSERT INTO only_in_a VALUES (1)"); err != nil {
		t.Fatal(err)
	}
	_, err = b.Exec(t.Context(), "SELECT * FROM only_in_a")
	var pgErr *pgconn.PgError
	if !errors.As(err, &pgErr) || pgErr.Code != "42P01" { // undefined_table
		t.Fatalf("the table of one database is in the other: %v", err)
	}

	// A crash of the server: connections break, the committed row stays.
	if err := srv.Restart(t.Context(), true); err != nil {
		t.Fatal(err)
	}
	if err := a.Ping(t.Context()); err == nil {
		t.Error("a connection survived a crash of the server")
	}
	a = connect(t, dsnA)
	var n int
	if err := a.QueryRow(t.Context(), "SELECT count(*) FROM only_in_a").Scan(&n); err != nil || n != 1 {
		t.Fatalf("after the crash: %d rows, %v", n, err)
	}
	if err := srv.Restart(t.Context(), false); err != nil {
		t.Fatal(err)
	}
	selectOne(t, connect(t, dsnB))
	if _, err := srv.NewDB(t.Context()); err != nil {
		t.Fatalf("NewDB after restarts: %v", err)
	}
	if !strings.Contains(srv.Log(), "database system is ready to accept connections") {
		t.Errorf("log without the server's start:\n%s", srv.Log())
	}

	dir := srv.Dir()
	if err := srv.Stop(); err != nil {
		t.Fatal(err)
	}
	if err := srv.Stop(); err != nil {
		t.Fatalf("second stop: %v", err)
	}
	if _, err := os.Stat(dir); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("folder left after Stop: %v", err)
	}
	if _, err := srv.NewDB(t.Context()); err == nil {
		t.Error("NewDB on a stopped server")
	}
	if srv.Log() == "" {
		t.Error("no log after Stop")
	}
}

// TestPool gives each test a database of its own on one server.
func TestPool(t *testing.T) {
	dsns := map[string]bool{}
	for range 3 {
		dsn := pool.DB(t)
		if dsns[dsn] {
			t.Fatalf("DSN %s twice", dsn)
		}
		dsns[dsn] = true
		selectOne(t, connect(t, dsn))
	}
	if first := pool.Server(t); pool.Server(t) != first {
		t.Error("two servers in one pool")
	}
}

// TestPoolParallel makes databases from parallel tests.
func TestPoolParallel(t *testing.T) {
	for i := range 4 {
		t.Run(string(rune('a'+i)), func(t *testing.T) {
			t.Parallel()
			selectOne(t, connect(t, pool.DB(t)))
		})
	}
}
