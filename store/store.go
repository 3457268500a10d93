// Package store keeps spool's jobs, their indexes, the event log, queues and
// templates in a bbolt database. *Store implements daemon.Store: every mutating call
// is one durable transaction, and calls that arrive together share one commit.
//
// It imports rpc for the types it keeps, rpc/codec to read them back,
// rpc/machine for the transitions it makes itself (claims, cancels, reaping,
// the failure of dependents), and bbolt; only cmd/spoold and tests import it.
package store

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"runtime/debug"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"go.etcd.io/bbolt"
	berrors "go.etcd.io/bbolt/errors"

	"spool/rpc"
	"spool/rpc/codec"
)

// schemaVersion is the version of the database layout this package writes. Version
// 2 added bEnvs and bEnvRefs (each environment stored once); Open upgrades a
// version 1 database by adding them, leaving its specs as they are. Version 3
// added bReady, bTimers, bQueueCounts, bCancels and the epoch counter (the store
// decides what runs); Open builds them from the records of an older database.
// Version 4 added bSchedules; Open adds it, empty, to an older database.
const schemaVersion = 4

// Bounds of one group commit: the requests drained into one transaction.
const (
	maxBatchOps    = 256
	maxBatchWeight = 8 << 20 // an estimate of the bytes written
)

// ErrLocked means that another process holds the database: Open gave up waiting
// for its file lock.
var ErrLocked = errors.New("database is locked by another process")

// Options tune Open.
type Options struct {
	// Timeout is how long Open waits for the file lock before it fails with an
	// error wrapping ErrLocked; 0 means one second.
	Timeout time.Duration
	// NoSync skips fsync at commit: for tests and benchmarks only.
	NoSync bool
	// Clock is the time for what a call is not told the time of (Get's
	// waiting reasons); nil means time.Now.
	Clock func() time.Time
}

// Store is spool's bbolt store. Its mutating calls share commits: the first call
// that finds no commit under way commits on its own goroutine, taking with it
// whatever waits, and calls that arrive meanwhile wait to share the next one
// (group commit).
type Store struct {
	db      *bbolt.DB
	storeID string

	quit    chan struct{}
	once    sync.Once
	commits atomic.Uint64
	clock   func() time.Time
	// changed is signalled, lossily, after a commit that stored events or
	// changed what Claim would give (daemon.Store's Changed).
	changed chan struct{}

	// liveMu guards live: the epochs joined since Open, by epoch, with their
	// node. They are the leases of this boot; every other epoch is gone.
	liveMu sync.Mutex
	live   map[int64]string
	// dec decodes the stored JSON in one pass (codec.Decoder.Lenient): a
	// transition reads its job's record, watchers catching up read events.
	dec *codec.Decoder

	// mu guards the fields below it.
	mu sync.Mutex
	// leading is set while a call commits (it is the leader); calls that come
	// meanwhile wait in queue.
	leading bool
	// stopping is set by Close: calls are refused from then on.
	stopping bool
	queue    []*op
	// last is the number of calls in the previous commit.
	last int
	// gathering is set while the leader waits for gatherWant calls; the call
	// that brings the queue to that many nudges it, so the leader wakes once per
	// commit rather than once per call.
	gathering  bool
	gatherWant int
	gatherWait time.Duration // the longest a leader gathers: defaultGatherWait
	nudge      chan struct{}
	// inflight counts the leaders at work, for Close to wait for.
	inflight sync.WaitGroup
}

// op is one mutating call waiting for its commit.
type op struct {
	ctx context.Context
	// apply does the call's work in tx. It does every check before its first
	// write, and returns an *rpc.Error only from the checks (having written
	// nothing); any other error fails the transaction. It may run more than once
	// (when another call of its transaction fails), so it must set its results
	// afresh each time.
	apply func(b *txb) error
	// changed is set by apply when the call stored events or changed what
	// Claim would give: its commit signals Changed.
	changed bool
	weight  int
	// urgent says a caller waits on this call to start work (a claim): its
	// commit does not wait to gather more calls.
	urgent bool
	// applied, if set, is called once every call of the transaction has been
	// applied and before the commit: what apply chose is then final unless the
	// commit fails, which the call's error then says.
	applied func()
	err     error
	// done is closed when the call is answered (err is set).
	done chan struct{}
	// lead is closed when the waiting call becomes the leader.
	lead chan struct{}
}

// Open opens (or creates) the database at path. A new file is made with mode 0600
// and a missing folder with mode 0700, whatever the umask. It fails with an error
// wrapping ErrLocked when another process holds the database for opts.Timeout,
// and refuses a database of a newer schema or one that is not spool's.
func Open(path string, opts Options) (*Store, error) {
	if opts.Timeout <= 0 {
		opts.Timeout = time.Second
	}
	dir := filepath.Dir(path)
	if _, err := os.Stat(dir); errors.Is(err, fs.ErrNotExist) {
		if err := os.MkdirAll(dir, 0o700); err != nil {
			return nil, fmt.Errorf("open store: create folder: %w", err)
		}
		if err := os.Chmod(dir, 0o700); err != nil {
			return nil, fmt.Errorf("open store: chmod folder: %w", err)
		}
	}
	_, statErr := os.Stat(path)
	created := errors.Is(statErr, fs.ErrNotExist)
	if !created {
		if err := preflight(path, opts.Timeout); errors.Is(err, ErrLocked) {
			return nil, fmt.Errorf("open store %s: %w", path, ErrLocked)
		} else if err != nil {
			return nil, fmt.Errorf("open store %s: %w", path, err)
		}
		if err := reserve(path, opts.NoSync); err != nil {
			return nil, fmt.Errorf("open store %s: %w", path, err)
		}
	}

	// The map starts at the reserved size: a new file is grown to it just below,
	// and an existing one was grown above, so the map never reaches past the
	// file's end.
	db, err := openBolt(path, &bbolt.Options{Timeout: opts.Timeout, NoSync: opts.NoSync, InitialMmapSize: reservedSize})
	if errors.Is(err, berrors.ErrTimeout) {
		return nil, fmt.Errorf("open store %s: %w", path, ErrLocked)
	}
	if err != nil {
		return nil, fmt.Errorf("open store %s: %w", path, err)
	}
	if created {
		if err := os.Chmod(path, 0o600); err != nil {
			db.Close()
			return nil, fmt.Errorf("open store: chmod %s: %w", path, err)
		}
	}
	clock := opts.Clock
	if clock == nil {
		clock = time.Now
	}
	s := &Store{db: db, quit: make(chan struct{}), nudge: make(chan struct{}, 1), gatherWait: defaultGatherWait, last: 1, dec: codec.NewDecoder(),
		clock: clock, changed: make(chan struct{}, 1), live: make(map[int64]string)}
	if err := guard(s.setup); err != nil {
		db.Close()
		return nil, fmt.Errorf("open store %s: %w", path, err)
	}
	if created {
		if err := reserve(path, opts.NoSync); err != nil {
			db.Close()
			return nil, fmt.Errorf("open store %s: %w", path, err)
		}
	}
	return s, nil
}

// reservedSize is the size a database file is given when it is smaller, as a
// hole that takes no disk space until pages are written into it. bbolt maps the
// whole file, so a young database neither remaps (copying out every node its
// write transaction holds) nor grows and fsyncs its file each time it doubles;
// past this size bbolt grows the file in steps of the same size itself.
const reservedSize = 16 << 20

// reserve grows the file at path to reservedSize when it is smaller, and syncs
// the new size unless noSync. Pages past bbolt's high-water mark are free space
// to it, so the data is untouched.
func reserve(path string, noSync bool) error {
	f, err := os.OpenFile(path, os.O_RDWR, 0)
	if err != nil {
		return fmt.Errorf("reserve space: %w", err)
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return fmt.Errorf("reserve space: %w", err)
	}
	if fi.Size() >= reservedSize {
		return nil
	}
	if err := f.Truncate(reservedSize); err != nil {
		return fmt.Errorf("reserve space: %w", err)
	}
	if !noSync {
		if err := f.Sync(); err != nil {
			return fmt.Errorf("reserve space: sync: %w", err)
		}
	}
	return nil
}

// openBolt is bbolt.Open with a damaged file's faults and panics turned into
// errors.
func openBolt(path string, o *bbolt.Options) (db *bbolt.DB, err error) {
	err = guard(func() error {
		var e error
		db, e = bbolt.Open(path, 0o600, o)
		return e
	})
	return db, err
}

// guard runs fn, turning a panic, or a memory fault on a damaged database's
// mapped pages, into an error.
func guard(fn func() error) (err error) {
	defer debug.SetPanicOnFault(debug.SetPanicOnFault(true))
	defer func() {
		if r := recover(); r != nil {
			err = fmt.Errorf("damaged database: %v", r)
		}
	}()
	return fn()
}

// checkLayout checks that tx is a spool database of a schema this package knows,
// and returns its version.
func checkLayout(tx *bbolt.Tx) (int, error) {
	meta := tx.Bucket([]byte(bMeta))
	if meta == nil {
		return 0, errors.New("not a spool database: no meta bucket")
	}
	raw := meta.Get([]byte(metaVersion))
	v, err := strconv.Atoi(string(raw))
	if err != nil || v < 1 {
		return 0, fmt.Errorf("not a spool database: bad schema version %q", raw)
	}
	if v > schemaVersion {
		return 0, fmt.Errorf("database schema version %d is newer than this program supports (%d): use a newer spoold", v, schemaVersion)
	}
	for _, name := range bucketsOf(v) {
		if tx.Bucket([]byte(name)) == nil {
			return 0, fmt.Errorf("damaged database: bucket %q is missing", name)
		}
	}
	return v, nil
}

// upgrade brings a database of an older schema to schemaVersion in one
// transaction. From 1, it adds the buckets of environments (specs stored before
// keep their env inline and are read as they are). From 2, it adds the
// scheduling buckets, builds them from the unfinished jobs (see buildSched), at
// time now, and drops the queue index and the unfinished set, which bReady and
// bByState's ranges replace.
//
// From 3, it adds the schedules' bucket, empty.
func (s *Store) upgrade(tx *bbolt.Tx, from int, now time.Time) error {
	if from >= 3 {
		if _, err := tx.CreateBucketIfNotExists([]byte(bSchedules)); err != nil {
			return fmt.Errorf("create bucket %s: %w", bSchedules, err)
		}
		return tx.Bucket([]byte(bMeta)).Put([]byte(metaVersion), []byte(strconv.Itoa(schemaVersion)))
	}
	for _, name := range []string{bEnvs, bEnvRefs, bReady, bTimers, bQueueCounts, bCancels, bSchedules} {
		if _, err := tx.CreateBucketIfNotExists([]byte(name)); err != nil {
			return fmt.Errorf("create bucket %s: %w", name, err)
		}
	}
	b, err := buckets(tx)
	if err != nil {
		return err
	}
	b.dec = s.dec
	if err := buildSched(b, now); err != nil {
		return err
	}
	for _, name := range []string{bQueueIndex, bUnfinished} {
		if err := tx.DeleteBucket([]byte(name)); err != nil && !errors.Is(err, berrors.ErrBucketNotFound) {
			return fmt.Errorf("delete bucket %s: %w", name, err)
		}
	}
	if err := b.meta.Put([]byte(metaVersion), []byte(strconv.Itoa(schemaVersion))); err != nil {
		return fmt.Errorf("set schema version: %w", err)
	}
	return nil
}

// setup checks the schema of an existing database, or lays out a new one.
func (s *Store) setup() error {
	fresh, version := false, 0
	err := s.db.View(func(tx *bbolt.Tx) error {
		meta := tx.Bucket([]byte(bMeta))
		if meta == nil {
			var others []string
			if err := tx.ForEach(func(name []byte, _ *bbolt.Bucket) error {
				others = append(others, string(name))
				return nil
			}); err != nil {
				return err
			}
			if len(others) > 0 {
				return fmt.Errorf("not a spool database: no %q bucket but %q", bMeta, others)
			}
			fresh = true
			return nil
		}
		v, err := checkLayout(tx)
		if err != nil {
			return err
		}
		version = v
		id := meta.Get([]byte(metaStoreID))
		if len(id) == 0 {
			return fmt.Errorf("damaged database: no store id")
		}
		s.storeID = string(id)
		return nil
	})
	if err != nil {
		return err
	}
	if !fresh {
		if version < schemaVersion {
			if err := s.db.Update(func(tx *bbolt.Tx) error { return s.upgrade(tx, version, s.clock()) }); err != nil {
				return fmt.Errorf("upgrade database from schema version %d: %w", version, err)
			}
		}
		return nil
	}
	var raw [16]byte
	if _, err := rand.Read(raw[:]); err != nil {
		return fmt.Errorf("make store id: %w", err)
	}
	id := hex.EncodeToString(raw[:])
	err = s.db.Update(func(tx *bbolt.Tx) error {
		for _, name := range bucketNames() {
			if _, err := tx.CreateBucket([]byte(name)); err != nil {
				return fmt.Errorf("create bucket %s: %w", name, err)
			}
		}
		meta := tx.Bucket([]byte(bMeta))
		if err := meta.Put([]byte(metaVersion), []byte(strconv.Itoa(schemaVersion))); err != nil {
			return err
		}
		if err := meta.Put([]byte(metaStoreID), []byte(id)); err != nil {
			return err
		}
		for _, st := range jobStates() {
			if err := meta.Put(countKey(st), itob(0)); err != nil {
				return err
			}
		}
		return meta.Put([]byte(metaEpoch), itob(0))
	})
	if err != nil {
		return fmt.Errorf("create database: %w", err)
	}
	s.storeID = id
	return nil
}

// Close waits for the commits under way and for the calls already waiting for
// one, and closes the database. Calls made after Close fail with 1006.
func (s *Store) Close() error {
	var err error
	s.once.Do(func() {
		s.mu.Lock()
		s.stopping = true
		s.mu.Unlock()
		close(s.quit)
		s.inflight.Wait()
		if e := s.db.Close(); e != nil {
			err = fmt.Errorf("close store: %w", e)
		}
	})
	return err
}

// StoreID is the random id made with the database.
func (s *Store) StoreID() string { return s.storeID }

// Commits is the number of write transactions committed since Open: with group
// commit, fewer than the mutating calls made at the same time.
func (s *Store) Commits() uint64 { return s.commits.Load() }

// closed reports whether Close was called.
func (s *Store) closed() bool {
	select {
	case <-s.quit:
		return true
	default:
		return false
	}
}

// do applies o in a shared commit and returns its answer. The first call that
// finds no commit under way leads: it commits on its own goroutine, so a lone call
// waits for no other goroutine. Calls that come while it commits wait in the
// queue; the leader commits them too, until its own call is answered, and then
// hands the lead to the first call still waiting. A call whose ctx ends before its
// transaction begins is not applied.
func (s *Store) do(ctx context.Context, o *op) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	o.ctx = ctx
	o.done = make(chan struct{})
	s.mu.Lock()
	if s.stopping {
		s.mu.Unlock()
		return rpc.ShuttingDown()
	}
	s.queue = append(s.queue, o)
	if s.leading {
		o.lead = make(chan struct{})
		if s.gathering && (len(s.queue) >= s.gatherWant || o.urgent) {
			s.gathering = false
			select {
			case s.nudge <- struct{}{}:
			default:
			}
		}
		s.mu.Unlock()
		select {
		case <-o.done:
			return o.err
		case <-o.lead:
		}
		s.lead(o, false)
		return o.err
	}
	s.leading = true
	s.inflight.Add(1)
	s.mu.Unlock()
	s.lead(o, true)
	return o.err
}

// lead commits the queue, in batches, until self is answered; then it hands the
// lead to the first call still waiting, or gives it up when none waits. fresh
// says that self found no commit under way.
func (s *Store) lead(self *op, fresh bool) {
	for {
		s.mu.Lock()
		s.gather(fresh)
		fresh = false
		batch, weight := s.queue, 0
		for i, o := range s.queue {
			weight += o.weight
			if i+1 >= maxBatchOps || weight >= maxBatchWeight {
				batch = s.queue[:i+1]
				break
			}
		}
		// A new array: batch keeps the old one while calls queue meanwhile.
		s.queue = append([]*op(nil), s.queue[len(batch):]...)
		s.last = len(batch)
		s.mu.Unlock()

		s.commit(batch)

		select {
		case <-self.done:
		default:
			continue // self was left for the next batch
		}
		s.mu.Lock()
		if len(s.queue) == 0 {
			s.leading = false
			s.mu.Unlock()
			s.inflight.Done()
			return
		}
		next := s.queue[0]
		s.mu.Unlock()
		close(next.lead)
		return
	}
}

// gather waits, with s.mu held, up to s.gatherWait for more calls when the previous
// commit was shared: its callers are likely on their way back and should share
// this one too. It waits for as many calls as that commit had, plus, when the lead
// was handed over (fresh is false), the calls that came while it was committed,
// which are other callers: so concurrent callers gather into one commit rather
// than alternate between two. A lone caller (last == 1) never waits.
func (s *Store) gather(fresh bool) {
	want := s.last
	if !fresh {
		want += len(s.queue)
	}
	want = min(want, maxBatchOps)
	if s.last <= 1 || len(s.queue) >= want || s.stopping || s.urgent() {
		return
	}
	timer := time.NewTimer(s.gatherWait)
	defer timer.Stop()
	for len(s.queue) < want && !s.stopping {
		select {
		case <-s.nudge: // a stale nudge only costs one more look
		default:
		}
		s.gathering, s.gatherWant = true, want
		s.mu.Unlock()
		select {
		case <-s.nudge:
		case <-timer.C:
			s.mu.Lock()
			s.gathering = false
			return
		case <-s.quit:
		}
		s.mu.Lock()
		s.gathering = false
		if s.urgent() {
			return
		}
	}
}

// urgent reports whether a queued call must not wait to gather; s.mu held.
func (s *Store) urgent() bool {
	for _, o := range s.queue {
		if o.urgent {
			return true
		}
	}
	return false
}

// defaultGatherWait is the longest a commit waits for the callers of the previous
// one.
const defaultGatherWait = 500 * time.Microsecond

// errRollback ends a transaction in which no call wrote anything.
var errRollback = errors.New("nothing to commit")

// commit applies batch in one transaction and answers each call. A call that
// fails its own checks gets its error and wrote nothing. A call that fails while
// writing is answered 1004 and the others are applied again without it. If the
// commit fails, every call gets 1004 and nothing was applied.
func (s *Store) commit(batch []*op) {
	pending := batch[:0]
	for _, o := range batch {
		if err := o.ctx.Err(); err != nil {
			o.err = err
			close(o.done)
			continue
		}
		pending = append(pending, o)
	}
	for len(pending) > 0 {
		failed := -1
		err := s.update(pending, func(tx *bbolt.Tx) error {
			b, err := buckets(tx)
			if err != nil {
				return err
			}
			b.dec = s.dec
			wrote := false
			for i, o := range pending {
				o.changed = false
				o.err = safeApply(o, b)
				if errors.Is(o.err, errNoWrite) {
					o.err = nil
					continue
				}
				if o.err == nil {
					wrote = true
					continue
				}
				var re *rpc.Error
				if !errors.As(o.err, &re) {
					failed = i
					return o.err
				}
			}
			if !wrote {
				return errRollback
			}
			return nil
		})
		switch {
		case err == nil:
			s.commits.Add(1)
			for _, o := range pending {
				if o.changed && o.err == nil {
					s.signal()
					break
				}
			}
		case errors.Is(err, errRollback):
		case failed >= 0:
			o := pending[failed]
			o.err = rpc.Storage(err)
			close(o.done)
			pending = append(pending[:failed:failed], pending[failed+1:]...)
			continue
		default:
			for _, o := range pending {
				o.err = rpc.Storage(err)
			}
		}
		for _, o := range pending {
			close(o.done)
		}
		return
	}
}

// update is bbolt's DB.Update, which it follows, with one step more: once fn
// has applied every call, the calls that asked to be told (op.applied) are
// told, before the commit.
func (s *Store) update(calls []*op, fn func(tx *bbolt.Tx) error) (err error) {
	tx, err := s.db.Begin(true)
	if err != nil {
		return err
	}
	defer func() {
		if tx.DB() != nil {
			_ = tx.Rollback()
		}
	}()
	if err := fn(tx); err != nil {
		return err
	}
	for _, o := range calls {
		if o.applied != nil && o.err == nil {
			o.applied()
		}
	}
	return tx.Commit()
}

// signal tells whoever waits on Changed, without blocking.
func (s *Store) signal() {
	select {
	case s.changed <- struct{}{}:
	default:
	}
}

// Changed receives, lossily (a buffer of one), after each commit that stored
// events or changed what Claim would give.
func (s *Store) Changed() <-chan struct{} { return s.changed }

// safeApply runs o.apply, turning a panic into an error that fails the
// transaction.
func safeApply(o *op, b *txb) (err error) {
	defer func() {
		if r := recover(); r != nil {
			err = fmt.Errorf("panic in store: %v\n%s", r, debug.Stack())
		}
	}()
	return o.apply(b)
}

// view runs fn in a read transaction, converting failures to 1004.
func (s *Store) view(ctx context.Context, fn func(b *txb) error) error {
	return s.viewWith(ctx, buckets, fn)
}

// viewWith runs fn in a read transaction on the buckets that open opens,
// converting failures to 1004.
func (s *Store) viewWith(ctx context.Context, open func(tx *bbolt.Tx) (*txb, error), fn func(b *txb) error) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	if s.closed() {
		return rpc.ShuttingDown()
	}
	err := s.db.View(func(tx *bbolt.Tx) error {
		b, err := open(tx)
		if err != nil {
			return err
		}
		b.dec = s.dec
		return fn(b)
	})
	return storageErr(err)
}

// storageErr returns err when it is nil, an *rpc.Error or a context's end, and
// 1004 otherwise.
func storageErr(err error) error {
	var re *rpc.Error
	if err == nil || errors.As(err, &re) || errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded) {
		return err
	}
	return rpc.Storage(err)
}
