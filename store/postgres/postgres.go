// Package postgres is a daemon.Store on PostgreSQL, for several spoold sharing
// one database: claims with FOR UPDATE SKIP LOCKED, leases that expire on the
// database's clock, every write of a running job fenced by its owner's epoch,
// and one gap-free event seq for the whole cluster, numbered by a counter row
// whose lock orders the commits.
//
// A job is a row: the columns Claim, Reap, Renew and List select on, and the
// record and spec as JSON. The store's logic (dependents failed or released,
// hooks, queue limits) runs in Go within each call's transaction, on the
// records it locked, using the pure transitions of rpc/machine.
package postgres

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"

	"spool/rpc"
)

// SchemaVersion is the version of the tables this package reads and writes;
// Open creates them, migrates an older version and refuses a newer one.
const SchemaVersion = 1

// channel is the LISTEN/NOTIFY channel writers ping after a commit.
const channel = "spool_changed"

// Options tune a Store.
type Options struct {
	// LeaseTTL is how long a lease lasts after a Join or Renew (default 10 s).
	LeaseTTL time.Duration
	// Poll is how often the store signals Changed without a notification, for
	// the notifications lost while the listening connection was down
	// (default 500 ms).
	Poll time.Duration
	// Log receives the store's own troubles (the listener reconnecting); nil
	// discards them.
	Log *slog.Logger
	// Clock is the time the store stamps on what it decides on its own (nil:
	// time.Now).
	Clock func() time.Time
}

// Store is a daemon.Store on a PostgreSQL database.
type Store struct {
	pool *pgxpool.Pool
	opts Options
	id   string
	// self is this handle's random name, the payload of its notifications:
	// the listener skips its own, which committed signalled already.
	self    string
	changed chan struct{}
	notify  chan struct{}
	// cancelNote asks the notifier for a cancel's notification; cancels
	// is CancelRequested.
	cancelNote, cancels chan struct{}
	// liveOut and liveIn carry live events to and from the other daemons
	// (live.go).
	liveOut, liveIn chan rpc.Event
	log             *slog.Logger

	cancel context.CancelFunc
	wg     sync.WaitGroup

	mu     sync.Mutex
	queues map[string]bool // queues known to have a row

	commits atomic.Uint64

	// The group commit of Submit and Apply (group.go).
	gmu    sync.Mutex
	gqueue []*gop
	gbusy  bool
}

// Open connects to the database named by dsn (a PostgreSQL URL or key=value
// string), creates or migrates the schema, and starts the listener that feeds
// Changed.
func Open(ctx context.Context, dsn string, opts Options) (*Store, error) {
	if opts.LeaseTTL <= 0 {
		opts.LeaseTTL = 10 * time.Second
	}
	if opts.Poll <= 0 {
		opts.Poll = 500 * time.Millisecond
	}
	if opts.Log == nil {
		opts.Log = slog.New(slog.DiscardHandler)
	}
	if opts.Clock == nil {
		opts.Clock = time.Now
	}
	cfg, err := pgxpool.ParseConfig(dsn)
	if err != nil {
		return nil, fmt.Errorf("postgres: parse %q: %w", redact(dsn), err)
	}
	if cfg.MaxConns < 8 {
		cfg.MaxConns = 8
	}
	pool, err := pgxpool.NewWithConfig(ctx, cfg)
	if err != nil {
		return nil, fmt.Errorf("postgres: connect: %w", err)
	}
	var self [8]byte
	if _, err := rand.Read(self[:]); err != nil {
		pool.Close()
		return nil, fmt.Errorf("postgres: name the handle: %w", err)
	}
	s := &Store{pool: pool, opts: opts, log: opts.Log, self: hex.EncodeToString(self[:]), changed: make(chan struct{}, 1), notify: make(chan struct{}, 1), cancelNote: make(chan struct{}, 1), cancels: make(chan struct{}, 1),
		liveOut: make(chan rpc.Event, 256), liveIn: make(chan rpc.Event, 1024), queues: map[string]bool{}}
	if err := s.migrate(ctx); err != nil {
		pool.Close()
		return nil, err
	}
	// Listening before Open returns, every commit of another daemon from
	// then on is signalled.
	lcfg := cfg.ConnConfig.Copy()
	conn, err := listenConn(ctx, lcfg)
	if err != nil {
		pool.Close()
		return nil, fmt.Errorf("postgres: %w", err)
	}
	lctx, cancel := context.WithCancel(context.Background())
	s.cancel = cancel
	s.wg.Add(3)
	go func() { defer s.wg.Done(); s.listen(lctx, lcfg, conn) }()
	go func() { defer s.wg.Done(); s.notifier(lctx) }()
	go func() { defer s.wg.Done(); s.relay(lctx) }()
	return s, nil
}

// redact hides a password in a connection string, for errors.
func redact(dsn string) string {
	if i := strings.Index(dsn, "password="); i >= 0 {
		return dsn[:i] + "password=..."
	}
	return dsn
}

// Close stops the listener and closes the connections.
func (s *Store) Close() error {
	s.cancel()
	s.wg.Wait()
	s.pool.Close()
	return nil
}

// Commits counts the transactions this handle committed.
func (s *Store) Commits() uint64 { return s.commits.Load() }

// StoreID is the random id made with the database.
func (s *Store) StoreID() string { return s.id }

// LeaseTTL is how long a lease lasts after a successful Join or Renew.
func (s *Store) LeaseTTL() time.Duration { return s.opts.LeaseTTL }

// Changed receives, lossily, after each commit of this or another daemon that
// stored events or changed what Claim would give, and every Options.Poll.
func (s *Store) Changed() <-chan struct{} { return s.changed }

// signal wakes Changed's reader without blocking.
func (s *Store) signal() {
	select {
	case s.changed <- struct{}{}:
	default:
	}
}

// committed tells this daemon at once, and the others through NOTIFY, that a
// commit changed something.
func (s *Store) committed() {
	s.signal()
	select {
	case s.notify <- struct{}{}:
	default:
	}
}

// cancelStored tells every daemon (this one too) that a cancel request was
// stored for a running job, which its owner may run: CancelRequested fires,
// and the owner renews at once to learn it.
func (s *Store) cancelStored() {
	select {
	case s.cancelNote <- struct{}{}:
	default:
	}
}

// CancelRequested receives, lossily, when a daemon stored a cancel request
// for a running job: the daemon renews its lease then, which returns its
// jobs' requests, rather than at its next renewal.
func (s *Store) CancelRequested() <-chan struct{} { return s.cancels }

// cancelPrefix starts the payload of a cancel's notification.
const cancelPrefix = "cancel:"

// notifier sends one NOTIFY per burst of commits, in a transaction of its
// own: NOTIFY takes a database-wide lock at commit, so it stays out of the
// transactions that hold the counter row.
func (s *Store) notifier(ctx context.Context) {
	for {
		payload := s.self
		select {
		case <-ctx.Done():
			return
		case <-s.notify:
		case <-s.cancelNote:
			payload = cancelPrefix + s.self
		}
		nctx, cancel := context.WithTimeout(ctx, 5*time.Second)
		_, err := s.pool.Exec(nctx, "SELECT pg_notify($1, $2)", channel, payload)
		cancel()
		if err != nil && ctx.Err() == nil {
			s.log.Warn("postgres: notify the other daemons", "err", err)
		}
	}
}

// listen holds one connection of its own (LISTEN cannot use the pool's),
// conn first, and turns notifications into Changed; it reconnects when the
// connection fails,
// signalling once since notifications may have been lost meanwhile, and
// signals every Poll besides.
func (s *Store) listen(ctx context.Context, cfg *pgx.ConnConfig, conn *pgx.Conn) {
	poll := time.NewTicker(s.opts.Poll)
	defer poll.Stop()
	got := make(chan struct{}, 1)
	var wg sync.WaitGroup
	defer wg.Wait()
	wg.Add(1)
	go func() {
		defer wg.Done()
		backoff := 50 * time.Millisecond
		for ctx.Err() == nil {
			err := s.listenOnce(ctx, cfg, got, conn)
			conn = nil
			if ctx.Err() != nil {
				return
			}
			s.log.Warn("postgres: listener lost its connection, reconnecting", "err", err, "in", backoff)
			select {
			case <-ctx.Done():
				return
			case <-time.After(backoff):
			}
			backoff = min(2*backoff, 2*time.Second)
		}
	}()
	for {
		select {
		case <-ctx.Done():
			return
		case <-got:
		case <-poll.C:
		}
		s.signal()
	}
}

// listenConn connects and listens on the channel.
func listenConn(ctx context.Context, cfg *pgx.ConnConfig) (*pgx.Conn, error) {
	conn, err := pgx.ConnectConfig(ctx, cfg)
	if err != nil {
		return nil, fmt.Errorf("connect the listener: %w", err)
	}
	if _, err := conn.Exec(ctx, "LISTEN "+channel+"; LISTEN "+liveChannel); err != nil {
		_ = conn.Close(context.Background())
		return nil, fmt.Errorf("listen: %w", err)
	}
	return conn, nil
}

// listenOnce forwards the notifications of other handles until the
// connection fails: on conn, the one Open made, or else on a new connection,
// after signalling once for what was committed while the listener was away.
func (s *Store) listenOnce(ctx context.Context, cfg *pgx.ConnConfig, got chan struct{}, conn *pgx.Conn) error {
	if conn == nil {
		var err error
		if conn, err = listenConn(ctx, cfg); err != nil {
			return err
		}
		select {
		case got <- struct{}{}:
		default:
		}
	}
	defer conn.Close(context.Background())
	for {
		n, err := conn.WaitForNotification(ctx)
		if err != nil {
			return err
		}
		if n.Channel == liveChannel {
			s.received(n.Payload)
			continue
		}
		if strings.HasPrefix(n.Payload, cancelPrefix) {
			select {
			case s.cancels <- struct{}{}:
			default:
			}
			continue
		}
		if n.Payload == s.self {
			continue
		}
		select {
		case got <- struct{}{}:
		default:
		}
	}
}

// migrate creates the tables, or checks the version of those there, under an
// advisory lock so that daemons starting together do it once.
func (s *Store) migrate(ctx context.Context) error {
	err := s.tx(ctx, func(tx pgx.Tx) error {
		if _, err := tx.Exec(ctx, "SELECT pg_advisory_xact_lock(7345001)"); err != nil {
			return err
		}
		var exists bool
		if err := tx.QueryRow(ctx, "SELECT to_regclass('spool_meta') IS NOT NULL").Scan(&exists); err != nil {
			return err
		}
		if !exists {
			var b [16]byte
			if _, err := rand.Read(b[:]); err != nil {
				return err
			}
			if _, err := tx.Exec(ctx, schema); err != nil {
				return fmt.Errorf("create the tables: %w", err)
			}
			if _, err := tx.Exec(ctx, "INSERT INTO spool_meta (one, version, store_id) VALUES (true, $1, $2)", SchemaVersion, hex.EncodeToString(b[:])); err != nil {
				return err
			}
			// Job ids and epochs have a row of their own: a submit takes it
			// in the middle of its transaction, and the event counter's
			// row must be held only for the commit.
			if _, err := tx.Exec(ctx, "INSERT INTO spool_counters (one) VALUES (true)"); err != nil {
				return err
			}
		}
		var version int
		if err := tx.QueryRow(ctx, "SELECT version, store_id FROM spool_meta").Scan(&version, &s.id); err != nil {
			return fmt.Errorf("read the schema version: %w", err)
		}
		if version > SchemaVersion {
			return fmt.Errorf("the database has schema version %d, newer than this spoold's %d: run a newer spoold", version, SchemaVersion)
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("postgres: schema: %w", err)
	}
	return nil
}

// schema is version 1 of the tables.
const schema = `
CREATE TABLE spool_meta (
	one boolean PRIMARY KEY CHECK (one),
	version int NOT NULL,
	store_id text NOT NULL,
	last_seq bigint NOT NULL DEFAULT 0
);
CREATE TABLE spool_counters (
	one boolean PRIMARY KEY CHECK (one),
	last_job bigint NOT NULL DEFAULT 0,
	last_epoch bigint NOT NULL DEFAULT 0
);
CREATE TABLE spool_jobs (
	id bigint PRIMARY KEY,
	state text NOT NULL,
	queue text NOT NULL,
	priority int NOT NULL,
	key text UNIQUE,
	finished_at timestamptz,
	epoch bigint NOT NULL DEFAULT 0,
	claimable boolean NOT NULL DEFAULT false,
	not_before timestamptz,
	cancel_pending boolean NOT NULL DEFAULT false,
	rec bytea NOT NULL,
	spec bytea NOT NULL,
	env_key bytea
);
CREATE TABLE spool_envs (
	key bytea PRIMARY KEY,
	env bytea NOT NULL,
	refs bigint NOT NULL
);
CREATE INDEX spool_jobs_claim ON spool_jobs (priority DESC, id) WHERE claimable;
CREATE INDEX spool_jobs_timer ON spool_jobs (not_before) WHERE claimable AND not_before IS NOT NULL;
CREATE INDEX spool_jobs_state ON spool_jobs (state, id);
CREATE INDEX spool_jobs_live ON spool_jobs (queue, state) WHERE state IN ('queued', 'running');
CREATE INDEX spool_jobs_owner ON spool_jobs (epoch) WHERE state = 'running';
CREATE TABLE spool_deps (
	dep bigint NOT NULL,
	job bigint NOT NULL,
	PRIMARY KEY (dep, job)
);
CREATE TABLE spool_events (
	seq bigint PRIMARY KEY,
	at timestamptz NOT NULL,
	body bytea NOT NULL
);
CREATE TABLE spool_queues (
	name text PRIMARY KEY,
	settings bytea
);
CREATE TABLE spool_templates (
	name text PRIMARY KEY,
	body bytea NOT NULL
);
CREATE TABLE spool_schedules (
	name text PRIMARY KEY,
	body bytea NOT NULL
);
CREATE TABLE spool_leases (
	epoch bigint PRIMARY KEY,
	node text NOT NULL,
	expires timestamptz NOT NULL
);
CREATE TABLE spool_logs (
	job bigint NOT NULL,
	step int NOT NULL,
	stream smallint NOT NULL,
	off bigint NOT NULL,
	data bytea NOT NULL,
	PRIMARY KEY (job, step, stream, off)
);
`

// tx runs fn in a transaction and commits it, again from the start when
// PostgreSQL says the transaction lost a race it may win next time (a
// deadlock, a serialization failure, a key inserted meanwhile). An error that
// is not an *rpc.Error becomes a storage error (1004).
func (s *Store) tx(ctx context.Context, fn func(tx pgx.Tx) error) error {
	var err error
	for try := 0; ; try++ {
		err = s.once(ctx, fn)
		if err == nil || try >= 20 || !retryable(err) || ctx.Err() != nil {
			break
		}
		time.Sleep(time.Duration(try+1) * time.Millisecond)
	}
	if err == nil {
		s.commits.Add(1)
		return nil
	}
	var re *rpc.Error
	if errors.As(err, &re) {
		return re
	}
	return rpc.Storage(err)
}

// trackedTx is a transaction that knows its writer, so that a commit whose
// answer was lost can be checked for what the writer stored.
type trackedTx struct {
	pgx.Tx
	w *writer
}

// once runs fn in one transaction and commits it. When the commit's answer
// is lost with the connection (the database restarted, the network broke),
// the commit may have landed or not: a transaction that stored events is
// looked for, by its first event, on a new connection, and reported stored
// when it is there. Without that check a writer would retry a transition
// already stored, and be refused (or store its events twice).
func (s *Store) once(ctx context.Context, fn func(tx pgx.Tx) error) error {
	ptx, err := s.pool.Begin(ctx)
	if err != nil {
		return fmt.Errorf("begin: %w", err)
	}
	tx := &trackedTx{Tx: ptx}
	if err := fn(tx); err != nil {
		_ = ptx.Rollback(context.WithoutCancel(ctx))
		return err
	}
	err = ptx.Commit(ctx)
	if err == nil {
		return nil
	}
	var pe *pgconn.PgError
	if errors.As(err, &pe) || pgconn.SafeToRetry(err) {
		return err // refused by the server, or never sent: not stored
	}
	w := tx.w
	if w == nil || len(w.evs) == 0 || w.evs[0].Seq == 0 {
		return fmt.Errorf("commit (its outcome is unknown: the connection was lost): %w", err)
	}
	landed, cerr := s.landed(ctx, w)
	if cerr != nil {
		return fmt.Errorf("commit (its outcome is unknown: the connection was lost, and checking failed: %v): %w", cerr, err)
	}
	if landed {
		s.log.Warn("postgres: a commit's answer was lost, but it was stored", "seq", w.evs[0].Seq)
		return nil
	}
	return err
}

// landed reports whether the transaction of writer w was stored: whether its
// first event is in the log, as w stored it. It tries for up to 30 s, while
// the database comes back.
func (s *Store) landed(ctx context.Context, w *writer) (bool, error) {
	e := w.evs[0]
	e.Seq = 0
	want, err := json.Marshal(&e)
	if err != nil {
		return false, err
	}
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 30*time.Second)
	defer cancel()
	for wait := 50 * time.Millisecond; ; wait = min(2*wait, time.Second) {
		var body []byte
		err := s.pool.QueryRow(ctx, "SELECT body FROM spool_events WHERE seq = $1", w.evs[0].Seq).Scan(&body)
		if err == nil {
			return bytes.Equal(body, want), nil
		}
		if err == pgx.ErrNoRows {
			return false, nil
		}
		select {
		case <-ctx.Done():
			return false, err
		case <-time.After(wait):
		}
	}
}

// retryable reports whether err is a race PostgreSQL lost for the
// transaction, which a new try may win.
func retryable(err error) bool {
	var pe *pgconn.PgError
	if !errors.As(err, &pe) {
		return false
	}
	switch pe.Code {
	case "40001", "40P01", "23505":
		return true
	}
	return false
}
