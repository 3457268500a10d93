package daemon_test

import (
	"context"
	"errors"
	"os"
	"path/filepath"
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

// leaseStore is the bbolt store with leases that expire after ttl (as a store
// on a database server has them, though it reaps nothing by itself) and with
// faults a test turns on: renewals (and joins) that fail, block or are
// refused, transitions and claims that fail with 1004.
type leaseStore struct {
	*store.Store
	ttl time.Duration

	mu sync.Mutex
	// renew is how Renew and Join answer: "" (as the store does), "fail"
	// (1004), "block" (until the call's context ends) or "refuse" (1002,
	// Renew only).
	renew string
	// applyDown, claimDown make Apply (ApplyClaim) and Claim (ClaimEarly)
	// answer 1004 while set.
	applyDown, claimDown bool
	applyFails           int // the transitions refused with 1004
	// applyHang makes Apply (ApplyClaim) hang until its context ends.
	applyHang bool
}

var _ daemon.ExpiringLeases = (*leaseStore)(nil)
var _ daemon.ApplyClaimer = (*leaseStore)(nil)

// LeaseTTL is the lease's life after a successful Join or Renew.
func (s *leaseStore) LeaseTTL() time.Duration { return s.ttl }

func (s *leaseStore) set(fn func(s *leaseStore)) {
	s.mu.Lock()
	defer s.mu.Unlock()
	fn(s)
}

var errDown = rpc.Storage(errors.New("the database is down"))

// renewFault answers a Renew or Join as the fault set says, or nil.
func (s *leaseStore) renewFault(ctx context.Context, o machine.Owner, join bool) error {
	s.mu.Lock()
	mode := s.renew
	s.mu.Unlock()
	switch mode {
	case "fail":
		return errDown
	case "block":
		<-ctx.Done()
		return rpc.Storage(ctx.Err())
	case "refuse":
		if !join {
			return rpc.Errorf(rpc.CodeBadState, "the lease of node %q, epoch %d, is gone", o.Node, o.Epoch)
		}
	}
	return nil
}

func (s *leaseStore) Join(ctx context.Context, node string, now time.Time) (machine.Owner, error) {
	if err := s.renewFault(ctx, machine.Owner{}, true); err != nil {
		return machine.Owner{}, err
	}
	return s.Store.Join(ctx, node, now)
}

func (s *leaseStore) Renew(ctx context.Context, o machine.Owner, now time.Time) ([]int64, error) {
	if err := s.renewFault(ctx, o, false); err != nil {
		return nil, err
	}
	return s.Store.Renew(ctx, o, now)
}

func (s *leaseStore) applyFault(ctx context.Context, n int) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.applyHang {
		s.mu.Unlock()
		<-ctx.Done()
		s.mu.Lock()
		return rpc.Storage(ctx.Err())
	}
	if s.applyDown {
		s.applyFails += n
		return errDown
	}
	return nil
}

func (s *leaseStore) claimFault() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.claimDown {
		return errDown
	}
	return nil
}

func (s *leaseStore) Apply(ctx context.Context, ts []rpc.Transition) ([]rpc.Event, error) {
	if err := s.applyFault(ctx, len(ts)); err != nil {
		return nil, err
	}
	return s.Store.Apply(ctx, ts)
}

func (s *leaseStore) Claim(ctx context.Context, o machine.Owner, max int, now time.Time) ([]rpc.Record, []rpc.Event, error) {
	if err := s.claimFault(); err != nil {
		return nil, nil, err
	}
	return s.Store.Claim(ctx, o, max, now)
}

func (s *leaseStore) ClaimEarly(ctx context.Context, o machine.Owner, max int, now time.Time, picked func([]rpc.Record)) ([]rpc.Record, []rpc.Event, error) {
	if err := s.claimFault(); err != nil {
		return nil, nil, err
	}
	return s.Store.ClaimEarly(ctx, o, max, now, picked)
}

func (s *leaseStore) ApplyClaim(ctx context.Context, ts []rpc.Transition, o machine.Owner, max int, now time.Time, picked func([]rpc.Record)) ([]rpc.Event, []rpc.Record, []rpc.Event, error) {
	if err := s.applyFault(ctx, len(ts)); err != nil {
		return nil, nil, nil, err
	}
	if err := s.claimFault(); err != nil {
		return nil, nil, nil, err
	}
	return s.Store.ApplyClaim(ctx, ts, o, max, now, picked)
}

// startLeased starts a daemon on a leaseStore with leases of ttl, renewed
// every tenth of it.
func startLeased(t *testing.T, ttl time.Duration, mod func(*daemon.Config)) (*harness, *leaseStore) {
	t.Helper()
	var ls *leaseStore
	h := start(t, t.TempDir(), func(c *daemon.Config) {
		ls = &leaseStore{Store: c.Store.(*store.Store), ttl: ttl}
		c.Store = ls
		c.LeaseEvery = ttl / 10
		if mod != nil {
			mod(c)
		}
	})
	<-h.d.Ready()
	return h, ls
}

// escapers is a step that starts a background shell with children of its own
// and a child in a session of its own, then waits.
const escapers = `sh -c 'sleep 30 & sleep 30' & setsid sh -c 'sleep 31; true' & sleep 32; wait`

// info reads daemon.info.
func info(t *testing.T, d *daemon.Daemon) *rpc.Info {
	t.Helper()
	in, err := d.Info(ctxT(t))
	if err != nil {
		t.Fatalf("info: %v", err)
	}
	return in
}

// lastSeq is the last stored seq.
func lastSeq(t *testing.T, h *harness) int64 {
	t.Helper()
	_, last, err := h.st.Bounds(ctxT(t))
	if err != nil {
		t.Fatalf("bounds: %v", err)
	}
	return last
}

// TestSelfFenceKillsTheJobsProcesses: a daemon whose renewals fail (here they
// hang until their timeout) kills every process of its jobs, children that
// left the step's group included, within its fence time, before its lease
// expires and anyone may rescue the jobs; it stores nothing more of them, and
// joins again with a greater epoch once the store answers.
func TestSelfFenceKillsTheJobsProcesses(t *testing.T) {
	t.Run("cgroup", func(t *testing.T) { testSelfFence(t, daemon.ContainCgroup, escapers, 5) })
	// A process group reaches no child in a session of its own unless the
	// daemon is their subreaper, which a test in one process with others is not.
	t.Run("group", func(t *testing.T) {
		testSelfFence(t, daemon.ContainGroup, `sh -c 'sleep 30 & sleep 30' & sleep 32; wait`, 4)
	})
}

func testSelfFence(t *testing.T, mode, script string, procs int) {
	is := is.New(t)
	const ttl = time.Second // fence 600ms, renewals every 100ms
	h, ls := startLeased(t, ttl, func(c *daemon.Config) { c.Containment = mode })
	if got := info(t, h.d).Containment; got != mode {
		t.Skipf("no %s containment here: %s", mode, info(t, h.d).ContainmentNote)
	}
	epoch := info(t, h.d).Epoch
	j := submit(t, h.d, rpc.Spec{Steps: []rpc.Step{shell(script), shell("touch " + filepath.Join(h.dir, "second"))}})
	eventually(t, "every process of the step runs", func() bool { return len(jobProcs(h.dir, j.ID)) >= procs })
	last := lastSeq(t, h)

	cut := time.Now()
	ls.set(func(s *leaseStore) { s.renew = "block" })
	eventually(t, "the step's processes are gone", func() bool { return len(jobProcs(h.dir, j.ID)) == 0 })
	gone := time.Since(cut)
	t.Logf("processes gone %v after the last renewal could start", gone)
	is.True(gone < ttl) // gone before the lease expires

	time.Sleep(300 * time.Millisecond) // time for a late write to show
	for _, ev := range stored(t, h, j.ID) {
		is.True(ev.Seq <= last) // nothing stored of the job after the fence
	}
	rec, err := h.st.Get(ctxT(t), j.ID)
	is.NoErr(err)
	is.Equal(rec.State, rpc.StateRunning) // left for a reaper
	is.Equal(rec.Run.Epoch, epoch)        // still under the lost epoch
	is.Equal(h.d.Stats().Running, 0)      // its slot is free
	is.Equal(info(t, h.d).Epoch, epoch)   // no join while the store hangs
	_, err = os.Stat(filepath.Join(h.dir, "second"))
	is.True(os.IsNotExist(err)) // the job went no further

	ls.set(func(s *leaseStore) { s.renew = "" })
	eventually(t, "the daemon joins again", func() bool { return info(t, h.d).Epoch > epoch })
	k := submit(t, h.d, rpc.Spec{Steps: []rpc.Step{shell("true")}})
	got := wait(t, h.d, k.ID)
	is.Equal(got.State, rpc.StateSucceeded) // claimed under the new lease and run
}

// TestRefusedRenewalRejoins: a renewal the store refuses (1002: the lease is
// gone) stops the daemon's jobs at once, with no kill grace; the daemon joins
// again with a greater epoch (daemon.info shows it) and runs new jobs under
// it, while the old job's runner stores nothing.
func TestRefusedRenewalRejoins(t *testing.T) {
	is := is.New(t)
	h, ls := startLeased(t, time.Second, func(c *daemon.Config) { c.KillGrace = 10 * time.Second })
	epoch := info(t, h.d).Epoch
	// A step that ignores SIGTERM: only a kill ends it before the grace.
	j := submit(t, h.d, rpc.Spec{Steps: []rpc.Step{shell(`trap "" TERM; ` + escapers)}})
	eventually(t, "every process of the step runs", func() bool { return len(jobProcs(h.dir, j.ID)) >= 5 })
	last := lastSeq(t, h)

	cut := time.Now()
	ls.set(func(s *leaseStore) { s.renew = "refuse" })
	eventually(t, "the step's processes are gone", func() bool { return len(jobProcs(h.dir, j.ID)) == 0 })
	t.Logf("processes gone %v after the refusals began", time.Since(cut))
	is.True(time.Since(cut) < 5*time.Second) // killed, not given the 10s grace
	ls.set(func(s *leaseStore) { s.renew = "" })

	eventually(t, "the daemon joins again", func() bool { return info(t, h.d).Epoch > epoch })
	var ids []int64
	for range 3 {
		ids = append(ids, submit(t, h.d, rpc.Spec{Steps: []rpc.Step{shell("true"), shell("true")}}).ID)
	}
	now := info(t, h.d).Epoch
	for _, id := range ids {
		is.Equal(wait(t, h.d, id).State, rpc.StateSucceeded) // run under the new lease
		rec, err := h.st.Get(ctxT(t), id)
		is.NoErr(err)
		is.Equal(rec.Run.Epoch, now) // claimed with the new epoch
	}
	for _, ev := range stored(t, h, j.ID) {
		is.True(ev.Seq <= last) // the old job's runner stored nothing more
	}
	rec, err := h.st.Get(ctxT(t), j.ID)
	is.NoErr(err)
	is.Equal(rec.State, rpc.StateRunning) // as the lost lease left it
	is.Equal(rec.Run.Epoch, epoch)
}

// TestStoreOutageCostsOnlyDelay: transitions and claims that fail with 1004
// for a second (a database restarting) while jobs end are tried again until
// stored: every job's end is stored exactly once, the event log has no gap,
// and jobs submitted meanwhile run.
func TestStoreOutageCostsOnlyDelay(t *testing.T) {
	is := is.New(t)
	h, ls := startLeased(t, time.Second, func(c *daemon.Config) { c.MaxParallel = 4 })
	g := newGate(t, h.dir, "gate")
	var ids []int64
	for range 6 {
		ids = append(ids, submit(t, h.d, rpc.Spec{Steps: []rpc.Step{shell(g.wait()), shell("true")}}).ID)
	}
	eventually(t, "four jobs run", func() bool { return h.d.Stats().Running == 4 })

	ls.set(func(s *leaseStore) { s.applyDown, s.claimDown = true, true })
	g.open(t) // the steps end while the store is down
	for range 2 {
		ids = append(ids, submit(t, h.d, rpc.Spec{Steps: []rpc.Step{shell("true")}}).ID)
	}
	time.Sleep(time.Second)
	ls.set(func(s *leaseStore) { s.applyDown, s.claimDown = false, false })
	ls.mu.Lock()
	fails := ls.applyFails
	ls.mu.Unlock()
	t.Logf("transitions refused while the store was down: %d", fails)
	is.True(fails > 0) // the outage met transitions

	for _, id := range ids {
		is.Equal(wait(t, h.d, id).State, rpc.StateSucceeded) // stored once the store is back
	}
	evs, err := h.st.Events(ctxT(t), 0, 1<<20)
	is.NoErr(err)
	finals := map[int64]int{}
	for k, ev := range evs {
		is.Equal(ev.Seq, int64(k+1)) // no gap
		if ev.Type == rpc.EventSucceeded || ev.Type == rpc.EventFailed || ev.Type == rpc.EventCancelled {
			finals[ev.Job]++
		}
	}
	for _, id := range ids {
		is.Equal(finals[id], 1) // each job's end stored exactly once
		steps := 0
		for _, ev := range stored(t, h, id) {
			if ev.Type == rpc.EventStepFinished {
				steps++
			}
		}
		rec, err := h.st.Get(ctxT(t), id)
		is.NoErr(err)
		is.Equal(steps, len(rec.Steps)) // and each step's end once
		is.True(!strings.Contains(rec.Error, "storage"))
	}
}

// TestHungStoreCannotHoldTheFence: with renewals and transitions hanging (a
// database that stopped answering), a runner waiting on its transition is let
// go by the fence: its slot is free before the lease would expire, and nothing
// of the job is stored.
func TestHungStoreCannotHoldTheFence(t *testing.T) {
	is := is.New(t)
	const ttl = time.Second
	h, ls := startLeased(t, ttl, nil)
	g := newGate(t, h.dir, "gate")
	j := submit(t, h.d, rpc.Spec{Steps: []rpc.Step{shell(g.wait()), shell("true")}})
	eventually(t, "the job runs", func() bool { return len(jobProcs(h.dir, j.ID)) > 0 })
	last := lastSeq(t, h)

	ls.set(func(s *leaseStore) { s.applyHang = true })
	g.open(t)
	eventually(t, "the step ended", func() bool { return len(jobProcs(h.dir, j.ID)) == 0 })
	cut := time.Now()
	ls.set(func(s *leaseStore) { s.renew = "block" })
	eventually(t, "the runner is let go", func() bool { return h.d.Stats().Running == 0 })
	t.Logf("runner let go %v after the last renewal could start", time.Since(cut))
	is.True(time.Since(cut) < ttl) // before the lease expires

	ls.set(func(s *leaseStore) { s.applyHang, s.renew = false, "" })
	epoch := info(t, h.d).Epoch
	k := submit(t, h.d, rpc.Spec{Steps: []rpc.Step{shell("true")}})
	is.Equal(wait(t, h.d, k.ID).State, rpc.StateSucceeded) // the daemon goes on
	is.True(info(t, h.d).Epoch >= epoch)
	for _, ev := range stored(t, h, j.ID) {
		is.True(ev.Seq <= last) // nothing stored of the job
	}
}
