package daemon_test

import (
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/matryer/is"

	"spool/daemon"
	"spool/rpc"
)

func queueNamed(t *testing.T, d *daemon.Daemon, name string) rpc.Queue {
	t.Helper()
	res, err := d.QueueList(ctxT(t))
	if err != nil {
		t.Fatalf("queue.list: %v", err)
	}
	for _, q := range res.Queues {
		if q.Name == name {
			return q
		}
	}
	t.Fatalf("no queue %q", name)
	return rpc.Queue{}
}

func setQueue(t *testing.T, d *daemon.Daemon, p rpc.QueueSetParams) rpc.Queue {
	t.Helper()
	q, err := d.QueueSet(ctxT(t), p)
	if err != nil {
		t.Fatalf("queue.set: %v", err)
	}
	return *q
}

func ptr[T any](v T) *T { return &v }

func TestParallelOneQueueNeverRunsTwoAtOnce(t *testing.T) {
	is := is.New(t)
	dir := t.TempDir()
	h := start(t, dir, func(c *daemon.Config) { c.MaxParallel = 8 })
	q := setQueue(t, h.d, rpc.QueueSetParams{Name: "serial", Parallel: ptr(1)})
	is.Equal(*q.Parallel, 1) // the limit is set

	// Two jobs of another queue hold their slots until the gate opens: the serial
	// jobs must run one by one meanwhile although the global limit has room.
	g := newGate(t, dir, "free")
	var free []int64
	for range 2 {
		free = append(free, submit(t, h.d, rpc.Spec{Queue: "free", Steps: []rpc.Step{shell(g.wait())}}).ID)
	}
	lock := filepath.Join(dir, "lockdir")
	log := filepath.Join(dir, "serial.log")
	script := `mkdir ` + lock + ` || { echo "two serial jobs at once" >&2; exit 1; }
echo "$SPOOL_JOB_ID start" >> ` + log + `; sleep 0.05; echo "$SPOOL_JOB_ID end" >> ` + log + `; rmdir ` + lock
	var serial []int64
	for range 6 {
		serial = append(serial, submit(t, h.d, rpc.Spec{Queue: "serial", Steps: []rpc.Step{shell(script)}}).ID)
	}
	eventually(t, "both free jobs run", func() bool { return queueNamed(t, h.d, "free").Running == 2 })
	for _, id := range serial {
		for !get(t, h.d, id).Final() {
			is.True(queueNamed(t, h.d, "serial").Running <= 1) // never two at once
			is.Equal(queueNamed(t, h.d, "free").Running, 2)    // while the other queue runs
			time.Sleep(5 * time.Millisecond)
		}
	}
	for _, id := range serial {
		j := wait(t, h.d, id)
		is.Equal(j.State, rpc.StateSucceeded) // no job found the lock taken
	}
	b, err := os.ReadFile(log)
	is.NoErr(err)
	lines := strings.Split(strings.TrimSpace(string(b)), "\n")
	is.Equal(len(lines), 12) // a start and an end per job
	for k := 0; k < len(lines); k += 2 {
		id := strings.Fields(lines[k])[0]
		is.Equal(lines[k], id+" start") // each start
		is.Equal(lines[k+1], id+" end") // is followed by its own end
	}
	is.Equal(strings.Fields(lines[0])[0], itoa(serial[0])) // in id order
	g.open(t)
	for _, id := range free {
		is.Equal(wait(t, h.d, id).State, rpc.StateSucceeded) // the other queue finished too
	}
}

func TestPausedQueueHoldsJobsAcrossARestart(t *testing.T) {
	is := is.New(t)
	dir := t.TempDir()
	h := start(t, dir, nil)
	q := setQueue(t, h.d, rpc.QueueSetParams{Name: "held", Paused: ptr(true), Parallel: ptr(2)})
	is.True(q.Paused) // paused
	j := submit(t, h.d, rpc.Spec{Queue: "held", Steps: []rpc.Step{shell("echo ran")}})
	other := submit(t, h.d, rpc.Spec{Steps: []rpc.Step{shell("true")}})
	is.Equal(wait(t, h.d, other.ID).State, rpc.StateSucceeded) // other queues run
	g := get(t, h.d, j.ID)
	is.Equal(g.State, rpc.StateQueued) // the paused queue holds its job
	is.Equal(*g.Waiting, "paused")     // and says why
	q = queueNamed(t, h.d, "held")
	is.Equal(q.Queued, 1) // counted as queued

	h.shutdown()
	h2 := start(t, dir, nil)
	q = queueNamed(t, h2.d, "held")
	is.True(q.Paused)        // the pause was stored
	is.Equal(*q.Parallel, 2) // so was the limit
	is.Equal(q.Queued, 1)    // and the job is still there
	g = get(t, h2.d, j.ID)
	is.Equal(g.State, rpc.StateQueued) // not started by the restart
	is.Equal(*g.Waiting, "paused")

	q = setQueue(t, h2.d, rpc.QueueSetParams{Name: "held", Paused: ptr(false)})
	is.True(!q.Paused)       // resumed
	is.Equal(*q.Parallel, 2) // a field left out is kept
	j2 := wait(t, h2.d, j.ID)
	is.Equal(j2.State, rpc.StateSucceeded) // the job ran once resumed
	q = setQueue(t, h2.d, rpc.QueueSetParams{Name: "held", Parallel: ptr(0)})
	is.True(q.Parallel == nil) // 0 removes the queue's limit

	_, err := h2.d.QueueSet(ctxT(t), rpc.QueueSetParams{Name: "Bad Name"})
	is.Equal(rpc.CodeOf(err), rpc.CodeInvalidParams) // queue names are checked
}

func TestNotBeforeWithAFakeClock(t *testing.T) {
	is := is.New(t)
	dir := t.TempDir()
	clock := &offsetClock{}
	mod := func(c *daemon.Config) { c.Clock = clock }
	h := start(t, dir, mod)
	at := clock.Now().Add(time.Hour)
	late := submit(t, h.d, rpc.Spec{NotBefore: &at, Steps: []rpc.Step{shell("true")}})
	at2 := clock.Now().Add(3 * time.Hour)
	later := submit(t, h.d, rpc.Spec{NotBefore: &at2, Steps: []rpc.Step{shell("true")}})
	now := submit(t, h.d, rpc.Spec{Steps: []rpc.Step{shell("true")}})
	is.Equal(wait(t, h.d, now.ID).State, rpc.StateSucceeded) // a job without not_before runs
	g := get(t, h.d, late.ID)
	is.Equal(g.State, rpc.StateQueued) // the delayed one waits
	is.Equal(*g.Waiting, "not_before") // and says why
	is.True(g.NotBefore.Equal(at))     // until its time

	// A restart neither loses the timers nor fires them early.
	h.shutdown()
	clock.Advance(30 * time.Minute)
	h = start(t, dir, mod)
	h.d.Wake()
	time.Sleep(100 * time.Millisecond)
	g = get(t, h.d, late.ID)
	is.Equal(g.State, rpc.StateQueued) // half an hour early: still waiting
	is.Equal(*g.Waiting, "not_before")

	// The clock jumps past the first time: it starts, the second still waits.
	clock.Advance(31 * time.Minute)
	h.d.Wake()
	j := wait(t, h.d, late.ID)
	is.Equal(j.State, rpc.StateSucceeded)                  // it ran once its time came
	is.True(!j.StartedAt.Before(at))                       // not before
	is.Equal(get(t, h.d, later.ID).State, rpc.StateQueued) // the later one still waits

	// Its time passes while the daemon is down: it starts at the next start.
	h.shutdown()
	clock.Advance(3 * time.Hour)
	h = start(t, dir, mod)
	j = wait(t, h.d, later.ID)
	is.Equal(j.State, rpc.StateSucceeded) // a timer that fell due while down fires at start
}

func TestNotBeforeWithTheRealClock(t *testing.T) {
	is := is.New(t)
	h := start(t, t.TempDir(), nil)
	at := time.Now().Add(300 * time.Millisecond)
	j := submit(t, h.d, rpc.Spec{NotBefore: &at, Steps: []rpc.Step{shell("true")}})
	is.Equal(*get(t, h.d, j.ID).Waiting, "not_before") // waits
	j = wait(t, h.d, j.ID)
	is.Equal(j.State, rpc.StateSucceeded) // the timer woke the scheduler
	is.True(!j.StartedAt.Before(at))      // at its time, not before
}

func TestDependencies(t *testing.T) {
	is := is.New(t)
	dir := t.TempDir()
	h := start(t, dir, nil)

	t.Run("cancel of the first fails the chain", func(t *testing.T) {
		is := is.New(t)
		g := newGate(t, dir, "never")
		res, err := h.d.Submit(ctxT(t), rpc.SubmitParams{Jobs: []rpc.Spec{
			{Steps: []rpc.Step{shell(g.wait())}},
			{AfterIndex: []int{0}, Steps: []rpc.Step{shell("true")}},
			{AfterIndex: []int{1}, Steps: []rpc.Step{shell("true")}},
		}})
		is.NoErr(err)
		a, b, c := res.Jobs[0].ID, res.Jobs[1].ID, res.Jobs[2].ID
		is.Equal(*get(t, h.d, b).Waiting, "after") // waits for its dependency
		is.Equal(*get(t, h.d, c).Waiting, "after")
		eventually(t, "the first runs", func() bool { return get(t, h.d, a).State == rpc.StateRunning })
		j, err := h.d.Cancel(ctxT(t), rpc.CancelParams{ID: a})
		is.NoErr(err)
		is.Equal(j.State, rpc.StateCancelled) // the first is cancelled
		jb, jc := wait(t, h.d, b), wait(t, h.d, c)
		is.Equal(jb.State, rpc.StateFailed)                 // its dependent fails
		is.Equal(jb.Error, "dependency "+itoa(a)+" failed") // naming it
		is.Equal(jc.State, rpc.StateFailed)                 // and so on down the chain
		is.Equal(jc.Error, "dependency "+itoa(b)+" failed")
		is.True(jc.Steps[0].StartedAt == nil) // without running
	})

	t.Run("a queued dependency cancelled", func(t *testing.T) {
		is := is.New(t)
		setQueue(t, h.d, rpc.QueueSetParams{Name: "stopped", Paused: ptr(true)})
		a := submit(t, h.d, rpc.Spec{Queue: "stopped", Steps: []rpc.Step{shell("true")}})
		b := submit(t, h.d, rpc.Spec{After: []int64{a.ID}, Steps: []rpc.Step{shell("true")}})
		_, err := h.d.Cancel(ctxT(t), rpc.CancelParams{ID: a.ID})
		is.NoErr(err)
		jb := wait(t, h.d, b.ID)
		is.Equal(jb.State, rpc.StateFailed)                    // failed with it
		is.Equal(jb.Error, "dependency "+itoa(a.ID)+" failed") // naming it
	})

	t.Run("on an already failed job", func(t *testing.T) {
		is := is.New(t)
		a := wait(t, h.d, submit(t, h.d, rpc.Spec{Steps: []rpc.Step{shell("exit 1")}}).ID)
		is.Equal(a.State, rpc.StateFailed)
		b := submit(t, h.d, rpc.Spec{After: []int64{a.ID}, Steps: []rpc.Step{shell("true")}})
		jb := wait(t, h.d, b.ID)
		is.Equal(jb.State, rpc.StateFailed)                    // fails at once
		is.Equal(jb.Error, "dependency "+itoa(a.ID)+" failed") // naming it
		is.True(jb.Steps[0].StartedAt == nil)                  // without running
	})

	t.Run("on an already succeeded job", func(t *testing.T) {
		is := is.New(t)
		a := wait(t, h.d, submit(t, h.d, rpc.Spec{Steps: []rpc.Step{shell("true")}}).ID)
		b := submit(t, h.d, rpc.Spec{After: []int64{a.ID}, Steps: []rpc.Step{shell("echo ran")}})
		jb := wait(t, h.d, b.ID)
		is.Equal(jb.State, rpc.StateSucceeded) // runs
		is.Equal(string(jb.Result), `"ran"`)
	})

	t.Run("waits across a restart", func(t *testing.T) {
		is := is.New(t)
		g := newGate(t, dir, "dep-restart")
		a := submit(t, h.d, rpc.Spec{Steps: []rpc.Step{shell(g.wait())}})
		b := submit(t, h.d, rpc.Spec{After: []int64{a.ID}, Steps: []rpc.Step{shell("true")}})
		eventually(t, "the first runs", func() bool { return get(t, h.d, a.ID).State == rpc.StateRunning })
		h.shutdown()
		h = start(t, dir, nil)
		is.Equal(*get(t, h.d, b.ID).Waiting, "after") // still waiting after the restart
		g.open(t)
		is.Equal(wait(t, h.d, b.ID).State, rpc.StateSucceeded) // then runs
	})
}

func TestRetryRemovePrune(t *testing.T) {
	is := is.New(t)
	dir := t.TempDir()
	clock := &offsetClock{}
	h := start(t, dir, func(c *daemon.Config) { c.Clock = clock })

	t.Run("retry", func(t *testing.T) {
		is := is.New(t)
		spec := rpc.Spec{Name: "again", Labels: map[string]string{"k": "v"}, Steps: []rpc.Step{shell("echo $SPOOL_JOB_ID; exit 1")}}
		a := wait(t, h.d, submit(t, h.d, spec).ID)
		is.Equal(a.State, rpc.StateFailed)
		r, err := h.d.Retry(ctxT(t), rpc.RetryParams{ID: a.ID})
		is.NoErr(err)
		is.True(r.ID > a.ID)       // a new job
		is.Equal(*r.RetryOf, a.ID) // naming the one it retries
		is.Equal(r.Name, "again")  // with the stored spec
		is.Equal(r.Labels["k"], "v")
		rj := wait(t, h.d, r.ID)
		is.Equal(rj.Spec.Steps[0].Shell.Script, a.Spec.Steps[0].Shell.Script) // the same steps
		is.Equal(get(t, h.d, a.ID).State, rpc.StateFailed)                    // the old one is untouched

		g := newGate(t, dir, "retry-running")
		running := submit(t, h.d, rpc.Spec{Steps: []rpc.Step{shell(g.wait())}})
		_, err = h.d.Retry(ctxT(t), rpc.RetryParams{ID: running.ID})
		is.Equal(rpc.CodeOf(err), rpc.CodeBadState) // only a final job can be retried
		g.open(t)
		wait(t, h.d, running.ID)
		_, err = h.d.Retry(ctxT(t), rpc.RetryParams{ID: 99999})
		is.Equal(rpc.CodeOf(err), rpc.CodeNotFound) // unknown id
	})

	t.Run("remove", func(t *testing.T) {
		is := is.New(t)
		g := newGate(t, dir, "remove")
		done := wait(t, h.d, submit(t, h.d, rpc.Spec{Steps: []rpc.Step{shell("echo logged")}}).ID)
		logDir := filepath.Join(dir, "logs", itoa(done.ID))
		_, err := os.Stat(logDir)
		is.NoErr(err) // it has a log
		busy := submit(t, h.d, rpc.Spec{Steps: []rpc.Step{shell(g.wait())}})
		needed := wait(t, h.d, submit(t, h.d, rpc.Spec{Steps: []rpc.Step{shell("true")}}).ID)
		dependent := submit(t, h.d, rpc.Spec{After: []int64{busy.ID, needed.ID}, Steps: []rpc.Step{shell("true")}})

		_, err = h.d.Remove(ctxT(t), rpc.RemoveParams{IDs: []int64{done.ID, busy.ID}})
		is.Equal(rpc.CodeOf(err), rpc.CodeBadState) // a job that is not final cannot be removed
		is.Equal(errData(err).ID, busy.ID)          // naming it
		is.True(errData(err).State != "")           // with its state
		_, err = h.d.Get(ctxT(t), rpc.GetParams{ID: done.ID})
		is.NoErr(err) // all or none: the final one is still there

		_, err = h.d.Remove(ctxT(t), rpc.RemoveParams{IDs: []int64{needed.ID}})
		is.Equal(rpc.CodeOf(err), rpc.CodeBadState)            // needed by an unfinished job
		is.Equal(errData(err).NeededBy, []int64{dependent.ID}) // which is named

		res, err := h.d.Remove(ctxT(t), rpc.RemoveParams{IDs: []int64{done.ID, 424242}})
		is.NoErr(err)
		is.Equal(res.Removed, 1) // unknown ids are ignored
		_, err = h.d.Get(ctxT(t), rpc.GetParams{ID: done.ID})
		is.Equal(rpc.CodeOf(err), rpc.CodeNotFound) // gone
		_, err = os.Stat(logDir)
		is.True(os.IsNotExist(err))                                       // with its logs
		is.Equal(len(ofType(stored(t, h, done.ID), rpc.EventRemoved)), 1) // a removed event was stored

		g.open(t)
		is.Equal(wait(t, h.d, dependent.ID).State, rpc.StateSucceeded)
		res, err = h.d.Remove(ctxT(t), rpc.RemoveParams{IDs: []int64{needed.ID}})
		is.NoErr(err)
		is.Equal(res.Removed, 1) // once its dependent is final it can go
	})

	t.Run("prune", func(t *testing.T) {
		is := is.New(t)
		old := wait(t, h.d, submit(t, h.d, rpc.Spec{Steps: []rpc.Step{shell("true")}}).ID)
		oldFailed := wait(t, h.d, submit(t, h.d, rpc.Spec{Steps: []rpc.Step{shell("exit 1")}}).ID)
		oldNeeded := wait(t, h.d, submit(t, h.d, rpc.Spec{Steps: []rpc.Step{shell("true")}}).ID)
		setQueue(t, h.d, rpc.QueueSetParams{Name: "parked", Paused: ptr(true)})
		parked := submit(t, h.d, rpc.Spec{Queue: "parked", After: []int64{oldNeeded.ID}, Steps: []rpc.Step{shell("true")}})
		clock.Advance(48 * time.Hour)
		fresh := wait(t, h.d, submit(t, h.d, rpc.Spec{Steps: []rpc.Step{shell("true")}}).ID)

		_, err := h.d.Prune(ctxT(t), rpc.PruneParams{})
		is.Equal(rpc.CodeOf(err), rpc.CodeInvalidParams) // states or older_than is required
		_, err = h.d.Prune(ctxT(t), rpc.PruneParams{States: []rpc.State{rpc.StateRunning}})
		is.Equal(rpc.CodeOf(err), rpc.CodeInvalidParams) // only final states

		res, err := h.d.Prune(ctxT(t), rpc.PruneParams{States: []rpc.State{rpc.StateFailed}, OlderThan: dur(24 * time.Hour)})
		is.NoErr(err)
		is.True(res.Removed >= 1) // the old failed jobs
		_, err = h.d.Get(ctxT(t), rpc.GetParams{ID: oldFailed.ID})
		is.Equal(rpc.CodeOf(err), rpc.CodeNotFound) // are gone
		_, err = h.d.Get(ctxT(t), rpc.GetParams{ID: old.ID})
		is.NoErr(err) // a succeeded one was not asked for

		_, err = h.d.Prune(ctxT(t), rpc.PruneParams{OlderThan: dur(24 * time.Hour)})
		is.NoErr(err)
		_, err = h.d.Get(ctxT(t), rpc.GetParams{ID: old.ID})
		is.Equal(rpc.CodeOf(err), rpc.CodeNotFound) // old enough: gone
		_, err = h.d.Get(ctxT(t), rpc.GetParams{ID: fresh.ID})
		is.NoErr(err) // too young: kept
		_, err = h.d.Get(ctxT(t), rpc.GetParams{ID: oldNeeded.ID})
		is.NoErr(err) // needed by an unfinished job: kept
		_, err = os.Stat(filepath.Join(dir, "logs", itoa(old.ID)))
		is.True(os.IsNotExist(err)) // logs went with the job

		_, err = h.d.Cancel(ctxT(t), rpc.CancelParams{ID: parked.ID})
		is.NoErr(err)
		_, err = h.d.Prune(ctxT(t), rpc.PruneParams{States: []rpc.State{rpc.StateSucceeded}})
		is.NoErr(err)
		_, err = h.d.Get(ctxT(t), rpc.GetParams{ID: oldNeeded.ID})
		is.Equal(rpc.CodeOf(err), rpc.CodeNotFound) // no longer needed: pruned
	})
}

func TestIdempotencyKey(t *testing.T) {
	is := is.New(t)
	h := start(t, t.TempDir(), nil)
	spec := rpc.Spec{Key: "build-1", Steps: []rpc.Step{shell("echo once")}}
	a := submit(t, h.d, spec)
	b := submit(t, h.d, spec)
	is.Equal(b.ID, a.ID)               // the same job
	is.Equal(*b.Key, "build-1")        // with its key
	is.Equal(spec.Steps[0].Name, "")   // the caller's spec is not changed by the submit
	is.Equal(spec.Steps[0].Result, "") // (defaults are filled in on a copy)
	info, err := h.d.Info(ctxT(t))
	is.NoErr(err)
	is.Equal(info.Counts[rpc.StateQueued]+info.Counts[rpc.StateRunning]+info.Counts[rpc.StateSucceeded], 1) // no second job
	wait(t, h.d, a.ID)
	c := submit(t, h.d, spec)
	is.Equal(c.ID, a.ID) // also once it is final
	evs := stored(t, h, a.ID)
	is.Equal(len(ofType(evs, rpc.EventSubmitted)), 1) // no new submitted event

	other := spec
	other.Steps = []rpc.Step{shell("echo twice")}
	_, err = h.d.Submit(ctxT(t), rpc.SubmitParams{Job: &other})
	is.Equal(rpc.CodeOf(err), rpc.CodeKeyConflict) // a different spec with the same key
	is.Equal(errData(err).Key, "build-1")          // names the key
	is.Equal(errData(err).ID, a.ID)                // and the job that has it

	// Concurrent submits with one key make one job.
	spec2 := rpc.Spec{Key: "race", Steps: []rpc.Step{shell("true")}}
	ids := make([]int64, 8)
	var wg sync.WaitGroup
	for k := range ids {
		wg.Add(1)
		go func() {
			defer wg.Done()
			res, err := h.d.Submit(ctxT(t), rpc.SubmitParams{Job: &spec2})
			if err == nil {
				ids[k] = res.Job.ID
			}
		}()
	}
	wg.Wait()
	for _, id := range ids {
		is.Equal(id, ids[0]) // every caller got the same job
	}
	is.Equal(wait(t, h.d, ids[0]).State, rpc.StateSucceeded) // which ran once
}

func TestRetentionAndEventTrimWithAFakeClock(t *testing.T) {
	is := is.New(t)
	clock := &offsetClock{}
	h := start(t, t.TempDir(), func(c *daemon.Config) {
		c.Clock = clock
		c.Retain = 7 * 24 * time.Hour
		c.EventRetention = 30 * 24 * time.Hour
	})
	old := wait(t, h.d, submit(t, h.d, rpc.Spec{Steps: []rpc.Step{shell("true")}}).ID)
	oldNeeded := wait(t, h.d, submit(t, h.d, rpc.Spec{Steps: []rpc.Step{shell("true")}}).ID)
	setQueue(t, h.d, rpc.QueueSetParams{Name: "parked", Paused: ptr(true)})
	parked := submit(t, h.d, rpc.Spec{Queue: "parked", After: []int64{oldNeeded.ID}, Steps: []rpc.Step{shell("true")}})
	clock.Advance(6 * 24 * time.Hour)
	young := wait(t, h.d, submit(t, h.d, rpc.Spec{Steps: []rpc.Step{shell("true")}}).ID)
	h.d.Housekeep(ctxT(t))
	_, err := h.d.Get(ctxT(t), rpc.GetParams{ID: old.ID})
	is.NoErr(err) // six days old: kept

	clock.Advance(2 * 24 * time.Hour)
	h.d.Housekeep(ctxT(t))
	_, err = h.d.Get(ctxT(t), rpc.GetParams{ID: old.ID})
	is.Equal(rpc.CodeOf(err), rpc.CodeNotFound) // eight days old: removed
	_, err = h.d.Get(ctxT(t), rpc.GetParams{ID: young.ID})
	is.NoErr(err) // two days old: kept
	_, err = h.d.Get(ctxT(t), rpc.GetParams{ID: oldNeeded.ID})
	is.NoErr(err) // needed by a queued job: kept
	is.Equal(get(t, h.d, parked.ID).State, rpc.StateQueued)

	info, err := h.d.Info(ctxT(t))
	is.NoErr(err)
	is.Equal(info.OldestSeq, int64(1)) // no event is 30 days old yet
	clock.Advance(31 * 24 * time.Hour)
	h.d.Housekeep(ctxT(t))
	info2, err := h.d.Info(ctxT(t))
	is.NoErr(err)
	is.True(info2.OldestSeq > 1)           // old events were trimmed from the oldest end
	is.True(info2.LastSeq >= info.LastSeq) // the newest stay
	_, err = h.d.Watch(ctxT(t), rpc.WatchParams{Since: rpc.Since(0)})
	is.Equal(rpc.CodeOf(err), rpc.CodeSinceOutside) // since below the log answers 1007
	w, err := h.d.Watch(ctxT(t), rpc.WatchParams{Since: rpc.Since(info2.OldestSeq - 1)})
	is.NoErr(err) // from the oldest stored event on is fine
	_ = w.Close()
}

func TestPriorityAcrossQueuesAndTheGlobalLimit(t *testing.T) {
	is := is.New(t)
	dir := t.TempDir()
	h := start(t, dir, func(c *daemon.Config) { c.MaxParallel = 1 })
	out := filepath.Join(dir, "order")
	g := newGate(t, dir, "blocker")
	blocker := submit(t, h.d, rpc.Spec{Steps: []rpc.Step{shell(g.wait())}})
	eventually(t, "the blocker runs", func() bool { return get(t, h.d, blocker.ID).State == rpc.StateRunning })
	var ids []int64
	for _, s := range []struct {
		queue string
		prio  int
	}{{"a", 0}, {"b", 5}, {"a", 5}, {"c", 1}, {"b", 0}} {
		j := submit(t, h.d, rpc.Spec{Queue: s.queue, Priority: s.prio, Steps: []rpc.Step{shell(`echo $SPOOL_JOB_ID >> ` + out)}})
		ids = append(ids, j.ID)
		is.Equal(*j.Waiting, "capacity") // the one global slot is taken
	}
	g.open(t)
	for _, id := range ids {
		wait(t, h.d, id)
	}
	b, err := os.ReadFile(out)
	is.NoErr(err)
	want := strings.Join([]string{itoa(ids[1]), itoa(ids[2]), itoa(ids[3]), itoa(ids[0]), itoa(ids[4])}, "\n") + "\n"
	is.Equal(string(b), want) // priority first, across queues, then id
}

func TestCancelRightAfterSubmitKeepsTheCountsRight(t *testing.T) {
	is := is.New(t)
	h := start(t, t.TempDir(), func(c *daemon.Config) { c.MaxParallel = 2 })
	// Each cancel races the scheduler's pick of the job it cancels.
	for range 30 {
		j := submit(t, h.d, rpc.Spec{Steps: []rpc.Step{{Exec: &rpc.ExecStep{Argv: []string{"true"}}}, shell("true")}})
		c, err := h.d.Cancel(ctxT(t), rpc.CancelParams{ID: j.ID})
		if err != nil {
			is.Equal(rpc.CodeOf(err), rpc.CodeBadState) // or it was over already
			continue
		}
		is.True(c.Final()) // answered once final
	}
	q := queueNamed(t, h.d, "default")
	is.Equal(q.Queued, 0)  // nothing is left counted as queued
	is.Equal(q.Running, 0) // nor as running
	var ids []int64
	for range 4 {
		ids = append(ids, submit(t, h.d, rpc.Spec{Steps: []rpc.Step{shell("true")}}).ID)
	}
	for _, id := range ids {
		is.Equal(wait(t, h.d, id).State, rpc.StateSucceeded) // later jobs still run
	}
	q = queueNamed(t, h.d, "default")
	is.Equal(q.Queued+q.Running, 0) // and the counts end at zero
}
