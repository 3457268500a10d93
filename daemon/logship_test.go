package daemon_test

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/matryer/is"

	"spool/daemon"
	"spool/rpc"
	"spool/rpc/machine"
	"spool/store"
)

// logKey names a log in memLogs.
type logKey struct {
	job    int64
	step   int
	stream string
}

// memLogs keeps logs in memory as a LogStore does, for a daemon on a bbolt
// store: as if other daemons shared it. It keeps what survives a daemon's
// restart (shared by the stores of one test).
type memLogs struct {
	mu   sync.Mutex
	logs map[logKey][]byte
	// fail makes appends fail, as a database out of reach does.
	fail bool
	// atFinal is the size of each job's merged log of its last step when the
	// transition that made the job final was stored.
	atFinal map[int64]int
}

func newMemLogs() *memLogs {
	return &memLogs{logs: map[logKey][]byte{}, atFinal: map[int64]int{}}
}

func (m *memLogs) setFail(fail bool) {
	m.mu.Lock()
	m.fail = fail
	m.mu.Unlock()
}

// get is a copy of a log.
func (m *memLogs) get(job int64, step int, stream string) string {
	m.mu.Lock()
	defer m.mu.Unlock()
	return string(m.logs[logKey{job, step, stream}])
}

// logStore is a bbolt store with memLogs' logs.
type logStore struct {
	*store.Store
	m *memLogs
}

var _ daemon.LogStore = logStore{}

func (s logStore) AppendLog(ctx context.Context, job int64, step int, stream string, off int64, data []byte) error {
	s.m.mu.Lock()
	defer s.m.mu.Unlock()
	if s.m.fail {
		return rpc.Storage(errors.New("the database is out of reach"))
	}
	k := logKey{job, step, stream}
	have := int64(len(s.m.logs[k]))
	switch {
	case off > have:
		return rpc.Storage(fmt.Errorf("a gap at %d: the log holds %d", off, have))
	case off == have:
		s.m.logs[k] = append(s.m.logs[k], data...)
	}
	return nil
}

func (s logStore) ReadLog(ctx context.Context, job int64, step int, stream string, off int64, limit int) ([]byte, int64, error) {
	s.m.mu.Lock()
	defer s.m.mu.Unlock()
	l := s.m.logs[logKey{job, step, stream}]
	if off >= int64(len(l)) {
		return []byte{}, int64(len(l)), nil
	}
	end := min(off+int64(limit), int64(len(l)))
	return append([]byte{}, l[off:end]...), int64(len(l)), nil
}

// noteFinals records the stored log's size of each job a transition makes final.
func (s logStore) noteFinals(ts []rpc.Transition) {
	s.m.mu.Lock()
	defer s.m.mu.Unlock()
	for _, t := range ts {
		if r := t.Record; r.State.Final() {
			s.m.atFinal[r.ID] = len(s.m.logs[logKey{r.ID, r.CurrentStep, rpc.StreamAll}])
		}
	}
}

func (s logStore) Apply(ctx context.Context, ts []rpc.Transition) ([]rpc.Event, error) {
	s.noteFinals(ts)
	return s.Store.Apply(ctx, ts)
}

func (s logStore) ApplyClaim(ctx context.Context, ts []rpc.Transition, o machine.Owner, max int, now time.Time, picked func([]rpc.Record)) ([]rpc.Event, []rpc.Record, []rpc.Event, error) {
	s.noteFinals(ts)
	return s.Store.ApplyClaim(ctx, ts, o, max, now, picked)
}

// startShipping starts a daemon in dir whose store keeps logs in m.
func startShipping(t *testing.T, dir string, m *memLogs) *harness {
	return start(t, dir, func(c *daemon.Config) {
		c.Store = logStore{Store: c.Store.(*store.Store), m: m}
	})
}

// readAll reads a whole log through job.logs, as a client does.
func readAll(t *testing.T, d *daemon.Daemon, id int64, stream string) (string, bool) {
	t.Helper()
	var b strings.Builder
	off := int64(0)
	for {
		res, err := d.Logs(ctxT(t), rpc.LogsParams{ID: id, Offset: off, Stream: stream, Limit: 100})
		if err != nil {
			t.Fatalf("logs: %v", err)
		}
		b.WriteString(res.Data)
		if res.Offset == off {
			return b.String(), res.EOF
		}
		off = res.Offset
	}
}

// TestLogsShipped: a step's logs, merged and stderr, reach the store while it
// runs and whole before its end is stored; job.logs answers from the store,
// at the same offsets, on a host that has no file of them.
func TestLogsShipped(t *testing.T) {
	is := is.New(t)
	dir := t.TempDir()
	m := newMemLogs()
	h := startShipping(t, dir, m)
	j := submit(t, h.d, rpc.Spec{Steps: []rpc.Step{shell(`i=1; while [ $i -le 25 ]; do echo "line $i"; echo "err $i" >&2; i=$((i+1)); sleep 0.06; done`)}})
	eventually(t, "some of the log is in the store while the step runs", func() bool {
		return strings.Contains(m.get(j.ID, 0, rpc.StreamAll), "line 1\n")
	})
	is.Equal(get(t, h.d, j.ID).State, rpc.StateRunning) // shipped live, not only at the end
	j = wait(t, h.d, j.ID)
	is.Equal(j.State, rpc.StateSucceeded)

	local, err := os.ReadFile(filepath.Join(dir, "logs", strconv.FormatInt(j.ID, 10), "0.log"))
	is.NoErr(err)
	localErr, err := os.ReadFile(filepath.Join(dir, "logs", strconv.FormatInt(j.ID, 10), "0.stderr.log"))
	is.NoErr(err)
	is.True(strings.Contains(string(local), "line 25\nerr 25\n") || strings.Contains(string(local), "err 25\nline 25\n"))
	is.Equal(m.get(j.ID, 0, rpc.StreamAll), string(local))       // the store holds the file
	is.Equal(m.get(j.ID, 0, rpc.StreamStderr), string(localErr)) // and the stderr log
	m.mu.Lock()
	is.Equal(m.atFinal[j.ID], len(local)) // all of it before the job was final
	m.mu.Unlock()

	// A host with no file of the log reads the store's copy.
	fromFile, eof := readAll(t, h.d, j.ID, rpc.StreamAll)
	is.True(eof)
	is.NoErr(os.RemoveAll(filepath.Join(dir, "logs", strconv.FormatInt(j.ID, 10))))
	fromStore, eof := readAll(t, h.d, j.ID, rpc.StreamAll)
	is.True(eof) // the step is over and all was read
	is.Equal(fromStore, fromFile)
	errs, _ := readAll(t, h.d, j.ID, rpc.StreamStderr)
	is.Equal(errs, string(localErr))
	res, err := h.d.Logs(ctxT(t), rpc.LogsParams{ID: j.ID, Lines: 2})
	is.NoErr(err)
	is.True(strings.HasSuffix(res.Data, "25\n")) // tail -n 2
	is.Equal(strings.Count(res.Data, "\n"), 2)
	is.Equal(res.Offset, int64(len(local)))
	is.True(res.EOF)
	res, err = h.d.Logs(ctxT(t), rpc.LogsParams{ID: j.ID, Offset: 7, Limit: 5})
	is.NoErr(err)
	is.Equal(res.Data, string(local[7:12])) // the same offsets
	is.Equal(res.Offset, int64(12))
	is.True(!res.EOF)

	// A file shorter than the store's copy, of a step that does not run here
	// (it went on elsewhere): the store's copy is read.
	logDir := filepath.Join(dir, "logs", strconv.FormatInt(j.ID, 10))
	is.NoErr(os.MkdirAll(logDir, 0o700))
	is.NoErr(os.WriteFile(filepath.Join(logDir, "0.log"), local[:10], 0o600))
	again, eof := readAll(t, h.d, j.ID, rpc.StreamAll)
	is.True(eof)
	is.Equal(again, string(local))
}

// TestLogShippingFailsOpen: a store that takes no log fails no step, and
// delays its end by the bounded wait at most; once it takes logs again, the
// shipper sends what it missed.
func TestLogShippingFailsOpen(t *testing.T) {
	is := is.New(t)
	m := newMemLogs()
	h := startShipping(t, t.TempDir(), m)
	m.setFail(true)
	began := time.Now()
	j := wait(t, h.d, submit(t, h.d, rpc.Spec{Steps: []rpc.Step{shell("echo lost")}}).ID)
	took := time.Since(began)
	is.Equal(j.State, rpc.StateSucceeded) // the step does not fail
	is.True(took < 8*time.Second)         // it waited a bounded time
	is.Equal(m.get(j.ID, 0, rpc.StreamAll), "")

	// The store fails for a while as a step runs, then comes back.
	j = submit(t, h.d, rpc.Spec{Steps: []rpc.Step{shell(`for i in 1 2 3 4 5 6 7 8 9 10; do echo "line $i"; sleep 0.2; done`)}})
	time.Sleep(1500 * time.Millisecond)
	is.Equal(m.get(j.ID, 0, rpc.StreamAll), "") // nothing got through
	m.setFail(false)
	j = wait(t, h.d, j.ID)
	is.Equal(j.State, rpc.StateSucceeded)
	want := ""
	for i := 1; i <= 10; i++ {
		want += fmt.Sprintf("line %d\n", i)
	}
	is.Equal(m.get(j.ID, 0, rpc.StreamAll), want) // whole, in order, once
}

// TestLogGoesOnAfterARescue: a step resumed on a host that has no file of its
// log (a rescue) goes on from where the shipped log ended: the new host's
// file starts with what the store holds, and the offsets agree everywhere.
func TestLogGoesOnAfterARescue(t *testing.T) {
	is := is.New(t)
	dir := t.TempDir()
	m := newMemLogs()
	h := startShipping(t, dir, m)
	g := newGate(t, t.TempDir(), "gate")
	j := submit(t, h.d, rpc.Spec{Steps: []rpc.Step{shell("echo before; echo oops >&2; " + g.wait() + "; echo after")}})
	eventually(t, "the first lines are shipped", func() bool {
		return m.get(j.ID, 0, rpc.StreamAll) != "" && m.get(j.ID, 0, rpc.StreamStderr) != ""
	})
	h.shutdown() // the daemon stops while the step runs: the step is resumed at the next start
	shipped := m.get(j.ID, 0, rpc.StreamAll)
	// The next daemon runs on a host with no file of the log.
	is.NoErr(os.RemoveAll(filepath.Join(dir, "logs")))
	g.open(t)
	h = startShipping(t, dir, m)
	j = wait(t, h.d, j.ID)
	is.Equal(j.State, rpc.StateSucceeded)

	local, err := os.ReadFile(filepath.Join(dir, "logs", strconv.FormatInt(j.ID, 10), "0.log"))
	is.NoErr(err)
	is.True(strings.HasPrefix(string(local), shipped))                         // the file goes on from the shipped log
	is.True(strings.Contains(string(local[len(shipped):]), "attempt 1 again")) // with the resumed attempt's marker
	for _, line := range []string{"before\n", "oops\n", "after\n"} {
		is.True(strings.Contains(string(local[len(shipped):]), line)) // and its output (two pipes: in any order)
	}
	is.Equal(m.get(j.ID, 0, rpc.StreamAll), string(local))                                        // the store has the same bytes
	is.True(strings.HasPrefix(m.get(j.ID, 0, rpc.StreamStderr), "oops\n[spool: attempt 1 again")) // stderr too
	is.True(strings.HasSuffix(m.get(j.ID, 0, rpc.StreamStderr), "oops\n"))
}
