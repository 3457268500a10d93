package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"maps"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/matryer/is"

	"spool/client"
	"spool/rpc"
)

// The crash matrix: rounds of SIGKILL at a random moment while clients submit
// (single jobs and batches), jobs run, are cancelled and retried; after each
// restart the invariants of the protocol are checked. SPOOL_CRASH_ROUNDS and
// SPOOL_CRASH_JOBS (jobs submitted per round) size it; SPOOL_CRASH_SEED replays
// the random choices of a run (the timing of the kills is the machine's).
//
// Some rounds kill the daemon during starts: a few milliseconds after a step
// started. /proc is sampled all along: every process a step runs after taking
// its lock carries RUN (the attempt's identity) in its environment, so that two
// attempts of one step alive at once are seen even when the first one's main
// process is gone and only a background child of it lives on.

const (
	crashQueueOrdered = "ord" // parallel 1: the start order is checked
	crashQueueTwo     = "two" // parallel 2
)

func envInt(t *testing.T, name string, def int64) int64 {
	t.Helper()
	v := os.Getenv(name)
	if v == "" {
		return def
	}
	n, err := strconv.ParseInt(v, 10, 64)
	if err != nil {
		t.Fatalf("%s=%q: %v", name, v, err)
	}
	return n
}

// lockScript wraps body in a lock that no two attempts of a step can hold at
// once. The lock is a symlink (made atomically, failing when it exists) naming
// the holder's pid and start time; a rerun after a crash finds the lock of the
// killed attempt and takes it over only when that process is gone. Anything else
// is a double run: it is written to $FAILFLAG, and the step fails loudly.
// Each attempt appends its job's id to $RUNS, and exports RUN, its identity,
// to every process it starts.
func lockScript(body string) string {
	return `L="$LOCKDIR/$SPOOL_JOB_ID-$SPOOL_STEP"
me="$$:$(cut -d' ' -f22 /proc/$$/stat)"
export RUN="$me"
echo "$SPOOL_JOB_ID" >> "$RUNS"
double() { echo "DOUBLE RUN: $1" >&2; echo "$L: $1" >> "$FAILFLAG"; exit 99; }
if ! ln -s "$me" "$L" 2>/dev/null; then
  old=$(readlink "$L"); pid=${old%%:*}; st=${old#*:}
  if [ -r "/proc/$pid/stat" ] && [ "$(cut -d' ' -f3 "/proc/$pid/stat")" != Z ] && [ "$(cut -d' ' -f22 "/proc/$pid/stat")" = "$st" ]; then
    double "held by live $old, I am $me"
  fi
  rm -f "$L"
  ln -s "$me" "$L" 2>/dev/null || double "taken over by another rerun, I am $me"
fi
release() { [ "$(readlink "$L")" = "$me" ] || double "lost the lock to $(readlink "$L"), I am $me"; rm -f "$L"; }
` + body
}

// crashLedger is what the clients were told: acknowledged jobs, and cancels
// answered with a cancelled job.
type crashLedger struct {
	mu        sync.Mutex
	acked     map[int64]bool
	ids       []int64 // acknowledged jobs outside the ordered queue, for cancels and retries
	cancelled map[int64]bool
	submitted int
	// queuedCancels are cancels answered with a job that never started.
	queuedCancels map[int64]bool
	// badCancels are cancels answered with a job that had ended otherwise
	// (the protocol says 1002).
	badCancels []string
}

func (l *crashLedger) ack(jobs []rpc.Job) {
	l.mu.Lock()
	defer l.mu.Unlock()
	for _, j := range jobs {
		l.acked[j.ID] = true
		l.submitted++
		if j.Queue != crashQueueOrdered {
			l.ids = append(l.ids, j.ID)
		}
	}
}

func (l *crashLedger) pick(r *rand.Rand) int64 {
	l.mu.Lock()
	defer l.mu.Unlock()
	if len(l.ids) == 0 {
		return 0
	}
	return l.ids[r.IntN(len(l.ids))]
}

// crashMatrix holds one run's setup.
type crashMatrix struct {
	t        *testing.T
	p        *daemonProc
	mark     string // the marker of this test's processes (markTest)
	lockDir  string
	markDir  string
	failFlag string
	runs     string // the ids of the jobs whose steps ran, one a line
	ledger   *crashLedger
	jobs     int
}

func (m *crashMatrix) env() map[string]string {
	return map[string]string{"LOCKDIR": m.lockDir, "MARKDIR": m.markDir, "FAILFLAG": m.failFlag, "RUNS": m.runs}
}

// spec makes a random job: one to three steps of locked shell work, a flaky
// step that succeeds on its second attempt, a sleep step; some fail at the end,
// some fail rather than rerun when interrupted.
func (m *crashMatrix) spec(r *rand.Rand, queue string) rpc.Spec {
	s := rpc.Spec{Queue: queue, Priority: r.IntN(4) - 1, Env: m.env()}
	if queue == crashQueueOrdered {
		s.Steps = []rpc.Step{sh(lockScript(fmt.Sprintf("sleep 0.%02d\nrelease", 5+r.IntN(15))))}
		return s
	}
	n := 1 + r.IntN(3)
	for i := 0; i < n; i++ {
		var st rpc.Step
		switch k := r.IntN(20); {
		case k < 2:
			// A background child that outlives a restart of the daemon unless
			// the daemon stops it; the rounds that kill during starts aim at
			// the starts of these steps, by their name.
			st = sh(lockScript("sleep 2 & wait\nrelease"))
			st.Name = fmt.Sprintf("bg%d", i)
		case k < 12:
			st = sh(lockScript(fmt.Sprintf("sleep 0.%02d\nrelease", 5+r.IntN(30))))
		case k < 16:
			st = sh(lockScript(`M="$MARKDIR/$SPOOL_JOB_ID-$SPOOL_STEP"
if [ ! -e "$M" ]; then touch "$M"; release; exit 1; fi
sleep 0.05
release`))
			st.Retry = &rpc.Retry{Attempts: 3, Backoff: rpc.Duration(50 * time.Millisecond), MaxBackoff: rpc.Duration(200 * time.Millisecond)}
		default:
			st = rpc.Step{Sleep: &rpc.SleepStep{Duration: rpc.Duration(time.Duration(50+r.IntN(250)) * time.Millisecond)}}
		}
		if st.Shell != nil && r.IntN(10) == 0 {
			st.OnInterrupt = rpc.OnInterruptFail
		}
		s.Steps = append(s.Steps, st)
	}
	if r.IntN(8) == 0 {
		s.Steps = append(s.Steps, sh(lockScript("release\nexit 3")))
	}
	return s
}

// crashed reports whether err is what a client sees of a killed daemon.
func crashed(killed *atomic.Bool, err error) bool {
	return killed.Load() && err != nil
}

// submitter submits single jobs and batches (some with dependencies inside the
// batch) until it has submitted its share or the daemon is killed.
func (m *crashMatrix) submitter(r *rand.Rand, killed *atomic.Bool, share int) {
	c, err := client.Dial(context.Background(), m.p.socket)
	if err != nil {
		if !killed.Load() {
			m.t.Errorf("dial: %v", err)
		}
		return
	}
	defer c.Close()
	ctx := context.Background()
	for sent := 0; sent < share; {
		queue := []string{"default", crashQueueTwo}[r.IntN(2)]
		var res *rpc.SubmitResult
		if r.IntN(3) == 0 {
			n := 2 + r.IntN(4)
			specs := make([]rpc.Spec, n)
			for i := range specs {
				specs[i] = m.spec(r, queue)
				if i > 0 && r.IntN(3) == 0 {
					specs[i].AfterIndex = []int{r.IntN(i)}
				}
			}
			res, err = c.Submit(ctx, rpc.SubmitParams{Jobs: specs})
			sent += n
		} else {
			s := m.spec(r, queue)
			res, err = c.Submit(ctx, rpc.SubmitParams{Job: &s})
			sent++
		}
		if crashed(killed, err) {
			return
		}
		if err != nil {
			m.t.Errorf("submit: %v", err)
			return
		}
		if res.Job != nil {
			m.ledger.ack([]rpc.Job{*res.Job})
		} else {
			m.ledger.ack(res.Jobs)
		}
		time.Sleep(time.Duration(r.IntN(40)) * time.Millisecond)
	}
}

// orderedSubmitter adds a batch of jobs of mixed priorities to the ordered
// queue while it is paused, then resumes it: every job of that queue is then
// known to the scheduler before it picks one.
func (m *crashMatrix) orderedSubmitter(r *rand.Rand, killed *atomic.Bool) {
	c, err := client.Dial(context.Background(), m.p.socket)
	if err != nil {
		if !killed.Load() {
			m.t.Errorf("dial: %v", err)
		}
		return
	}
	defer c.Close()
	ctx := context.Background()
	paused, resumed := true, false
	if _, err := c.QueueSet(ctx, rpc.QueueSetParams{Name: crashQueueOrdered, Paused: &paused}); err != nil {
		if !crashed(killed, err) {
			m.t.Errorf("pause: %v", err)
		}
		return
	}
	// A start picked just before the pause is stored by now.
	time.Sleep(200 * time.Millisecond)
	specs := make([]rpc.Spec, 3+r.IntN(4))
	for i := range specs {
		specs[i] = m.spec(r, crashQueueOrdered)
	}
	res, err := c.Submit(ctx, rpc.SubmitParams{Jobs: specs})
	if crashed(killed, err) {
		return
	}
	if err != nil {
		m.t.Errorf("submit: %v", err)
		return
	}
	m.ledger.ack(res.Jobs)
	if _, err := c.QueueSet(ctx, rpc.QueueSetParams{Name: crashQueueOrdered, Paused: &resumed}); err != nil && !crashed(killed, err) {
		m.t.Errorf("resume: %v", err)
	}
}

// meddler cancels and retries random jobs until the daemon is killed.
func (m *crashMatrix) meddler(r *rand.Rand, killed *atomic.Bool, stop <-chan struct{}) {
	c, err := client.Dial(context.Background(), m.p.socket)
	if err != nil {
		if !killed.Load() {
			m.t.Errorf("dial: %v", err)
		}
		return
	}
	defer c.Close()
	ctx := context.Background()
	for {
		select {
		case <-stop:
			return
		case <-time.After(time.Duration(50+r.IntN(200)) * time.Millisecond):
		}
		id := m.ledger.pick(r)
		if id == 0 {
			continue
		}
		if r.IntN(2) == 0 {
			j, err := c.Cancel(ctx, rpc.CancelParams{ID: id, Reason: "crash matrix"})
			if crashed(killed, err) {
				return
			}
			if err != nil && rpc.CodeOf(err) != rpc.CodeBadState {
				m.t.Errorf("cancel %d: %v", id, err)
				return
			}
			switch {
			case err != nil:
			case !j.Final():
				m.t.Errorf("cancel %d answered a job in state %s", id, j.State)
			case j.State != rpc.StateCancelled:
				// A cancel that loses the race with the job's end answers 1002.
				m.ledger.mu.Lock()
				m.ledger.badCancels = append(m.ledger.badCancels, fmt.Sprintf("cancel %d answered the job %s", id, j.State))
				m.ledger.mu.Unlock()
			default:
				m.ledger.mu.Lock()
				m.ledger.cancelled[id] = true
				if (cancelAnswer{job: j}).neverStarted() {
					m.ledger.queuedCancels[id] = true
				}
				m.ledger.mu.Unlock()
			}
			continue
		}
		j, err := c.Retry(ctx, rpc.RetryParams{ID: id})
		if crashed(killed, err) {
			return
		}
		if err != nil && rpc.CodeOf(err) != rpc.CodeBadState {
			m.t.Errorf("retry %d: %v", id, err)
			return
		}
		if err == nil {
			if j.RetryOf == nil || *j.RetryOf != id {
				m.t.Errorf("retry of %d answered %+v", id, j.RetryOf)
			}
			m.ledger.ack([]rpc.Job{*j})
		}
	}
}

// listAll lists every job, oldest first.
func listAll(ctx context.Context, t *testing.T, c *client.Client) map[int64]rpc.Job {
	t.Helper()
	jobs := map[int64]rpc.Job{}
	p := rpc.ListParams{Limit: 1000, Order: "asc"}
	for {
		res, err := c.List(ctx, p)
		if err != nil {
			t.Fatalf("list: %v", err)
		}
		for _, j := range res.Jobs {
			jobs[j.ID] = j
		}
		if res.NextCursor == nil {
			return jobs
		}
		p.Cursor = res.NextCursor
	}
}

func finalEvent(typ string) bool {
	return typ == rpc.EventSucceeded || typ == rpc.EventFailed || typ == rpc.EventCancelled
}

// check verifies the invariants against the running daemon. It reads the event
// log from seq 0, lists the jobs after the log's snapshot, then follows the live
// log until every job listed as final has shown its final event.
func (m *crashMatrix) check(ctx context.Context, quiet bool) (jobs map[int64]rpc.Job, events, interrupted int) {
	t := m.t
	t.Helper()
	is := is.New(t)
	c := m.p.client()
	defer c.Close()
	w, err := c.Watch(ctx, rpc.WatchParams{Since: rpc.Since(0)})
	is.NoErr(err) // watch from the start of the log
	defer w.Close()
	snap := w.Result().Seq

	var evs []rpc.Event
	finals := map[int64][]string{}
	read := func() {
		ev, err := w.Next(ctx)
		if errors.Is(err, io.EOF) {
			t.Fatalf("the watch ended")
		}
		is.NoErr(err) // reading the event log
		if ev.Seq == 0 {
			return // live events that are not stored
		}
		if ev.Seq != int64(len(evs))+1 {
			t.Fatalf("event seq %d follows %d: a gap or a repeat", ev.Seq, len(evs))
		}
		evs = append(evs, *ev)
		if finalEvent(ev.Type) {
			finals[ev.Job] = append(finals[ev.Job], ev.Type)
			if len(finals[ev.Job]) > 1 {
				t.Fatalf("job %d has final events %v", ev.Job, finals[ev.Job])
			}
		}
	}
	for int64(len(evs)) < snap {
		read()
	}
	jobs = listAll(ctx, t, c)
	m.ledger.mu.Lock()
	for id := range m.ledger.acked {
		if _, ok := jobs[id]; !ok {
			t.Errorf("acknowledged job %d is lost", id)
		}
	}
	for id := range m.ledger.cancelled {
		if jobs[id].State != rpc.StateCancelled {
			t.Errorf("job %d was cancelled, and is now %s", id, jobs[id].State)
		}
	}
	for _, b := range m.ledger.badCancels {
		t.Errorf("%s: a cancel answers the cancelled job or 1002", b)
	}
	m.ledger.badCancels = nil
	queuedCancels := maps.Clone(m.ledger.queuedCancels)
	m.ledger.mu.Unlock()
	for id, fs := range finals {
		if j, ok := jobs[id]; !ok || string(j.State) != fs[0] {
			t.Errorf("job %d had its %s event but is %s", id, fs[0], j.State)
		}
	}
	for _, j := range jobs {
		for j.Final() && len(finals[j.ID]) == 0 {
			read()
		}
		if j.Final() && finals[j.ID][0] != string(j.State) {
			t.Errorf("job %d is %s with a %s event", j.ID, j.State, finals[j.ID][0])
		}
	}
	submitted, started := map[int64]bool{}, map[int64]bool{}
	for _, ev := range evs {
		switch ev.Type {
		case rpc.EventSubmitted:
			submitted[ev.Job] = true
		case rpc.EventInterrupted:
			interrupted++
		case rpc.EventStarted, rpc.EventStepStarted:
			started[ev.Job] = true
		}
	}
	// A job cancelled while queued, that by its events never started, ran
	// no process.
	ran := map[string]bool{}
	for _, l := range readLines(t, m.runs) {
		ran[l] = true
	}
	for id := range queuedCancels {
		if !started[id] && ran[strconv.FormatInt(id, 10)] {
			t.Errorf("job %d was cancelled while queued and never started by its events, yet its step ran", id)
		}
	}
	for id := range jobs {
		if !submitted[id] {
			t.Errorf("job %d has no submitted event", id)
		}
	}
	if b, err := os.ReadFile(m.failFlag); err == nil {
		t.Fatalf("a step ran twice at once:\n%s", b)
	}
	m.checkOrder(evs, jobs)
	if !quiet {
		t.Logf("checked %d jobs, %d events", len(jobs), len(evs))
	}
	return jobs, len(evs), interrupted
}

// checkOrder replays the log of the ordered queue (parallel 1, batches added
// only while it is paused, no cancels): each start, first or after an
// interruption, is of the queued job with the highest priority, then lowest id.
func (m *crashMatrix) checkOrder(evs []rpc.Event, jobs map[int64]rpc.Job) {
	queued := map[int64]bool{}
	for _, ev := range evs {
		j, ok := jobs[ev.Job]
		if !ok || j.Queue != crashQueueOrdered {
			continue
		}
		switch {
		case ev.Type == rpc.EventSubmitted, ev.Type == rpc.EventInterrupted:
			queued[ev.Job] = true
		case ev.Type == rpc.EventStarted:
			if !queued[ev.Job] {
				m.t.Errorf("job %d of queue %s started (seq %d) while not queued", ev.Job, crashQueueOrdered, ev.Seq)
			}
			for id := range queued {
				o := jobs[id]
				if o.Priority > j.Priority || o.Priority == j.Priority && id < j.ID {
					m.t.Errorf("queue %s: job %d (priority %d) started at seq %d before queued job %d (priority %d)",
						crashQueueOrdered, j.ID, j.Priority, ev.Seq, id, o.Priority)
				}
			}
			delete(queued, ev.Job)
		case finalEvent(ev.Type):
			delete(queued, ev.Job)
		}
	}
}

// offlineCheck runs `spoold check` on the state folder of the stopped daemon.
func (m *crashMatrix) offlineCheck() {
	out, err := exec.Command(m.p.bins.spoold, "check", "--state-dir", m.p.state).CombinedOutput()
	if err != nil {
		m.t.Fatalf("spoold check after a crash: %v\n%s", err, out)
	}
}

func TestCrashMatrix(t *testing.T) {
	is := is.New(t)
	rounds := int(envInt(t, "SPOOL_CRASH_ROUNDS", 3))
	perRound := int(envInt(t, "SPOOL_CRASH_JOBS", 20))
	seed := envInt(t, "SPOOL_CRASH_SEED", time.Now().UnixNano())
	t.Logf("crash matrix: %d rounds, %d jobs a round, seed %d (replay with SPOOL_CRASH_SEED=%d)", rounds, perRound, seed, seed)
	rng := rand.New(rand.NewPCG(uint64(seed), 0x5b001))

	mark := markTest(t)
	p := newDaemon(t, "--max-parallel", "4")
	work := shortDir(t)
	m := &crashMatrix{
		t: t, p: p, jobs: perRound, mark: mark,
		lockDir: filepath.Join(work, "locks"), markDir: filepath.Join(work, "marks"), failFlag: filepath.Join(work, "DOUBLE-RUN"),
		runs:   filepath.Join(work, "runs"),
		ledger: &crashLedger{acked: map[int64]bool{}, cancelled: map[int64]bool{}, queuedCancels: map[int64]bool{}},
	}
	// Two attempts of one step alive at once, by the RUN each exports.
	sampler := startSampler(t, mark, func(pr proc) string { return pr.env["RUN"] })
	is.NoErr(os.Mkdir(m.lockDir, 0o755))
	is.NoErr(os.Mkdir(m.markDir, 0o755))
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Minute)
	defer cancel()
	c := p.client()
	one, two := 1, 2
	_, err := c.QueueSet(ctx, rpc.QueueSetParams{Name: crashQueueOrdered, Parallel: &one})
	is.NoErr(err) // the ordered queue runs one job at a time
	_, err = c.QueueSet(ctx, rpc.QueueSetParams{Name: crashQueueTwo, Parallel: &two})
	is.NoErr(err)
	c.Close()

	unfinished := 0
	for round := 0; round < rounds; round++ {
		var killed atomic.Bool
		stop := make(chan struct{})
		var wg sync.WaitGroup
		const submitters = 3
		for i := 0; i < submitters; i++ {
			r := rand.New(rand.NewPCG(rng.Uint64(), uint64(i)))
			wg.Go(func() { m.submitter(r, &killed, perRound/submitters+1) })
		}
		ro := rand.New(rand.NewPCG(rng.Uint64(), 10))
		wg.Go(func() { m.orderedSubmitter(ro, &killed) })
		rm := rand.New(rand.NewPCG(rng.Uint64(), 11))
		wg.Go(func() { m.meddler(rm, &killed, stop) })

		// Mostly while the clients work; one round in five right after the
		// restart, while the daemon may still be recovering; one in three
		// during starts, 0-5 ms after a step started.
		when := "while the clients work"
		switch k := rng.IntN(15); {
		case k < 3:
			when = "right after the restart"
			time.Sleep(time.Duration(rng.IntN(300)) * time.Millisecond)
		case k < 8:
			when = "during starts"
			m.afterStepStarted(ctx, 1+rng.IntN(2), time.Duration(300+rng.IntN(2200))*time.Millisecond)
			time.Sleep(time.Duration(rng.IntN(4)) * time.Millisecond)
		default:
			time.Sleep(time.Duration(300+rng.IntN(2200)) * time.Millisecond)
		}
		killed.Store(true)
		p.kill9()
		before := stepProcs(mark)
		close(stop)
		wg.Wait()
		if t.Failed() {
			t.FailNow()
		}
		m.offlineCheck()
		checkNoRace(t, p)
		p.start()
		// Every process of the killed daemon's steps is stopped after the
		// restart, whether its step runs again or not.
		left := pollProcs(goneWithin+2*time.Second, func() []proc {
			var l []proc
			for _, q := range stepProcs(mark) {
				if slices.ContainsFunc(before, func(b proc) bool { return b.key() == q.key() }) {
					l = append(l, q)
				}
			}
			return l
		})
		if len(left) > 0 {
			t.Errorf("round %d: processes from before the kill are alive after the restart: %s", round+1, procNames(left))
		}
		jobs, _, _ := m.check(ctx, true)
		running := 0
		for _, j := range jobs {
			if !j.Final() {
				running++
			}
		}
		unfinished += running
		t.Logf("round %d: killed %s with %d jobs stored, %d unfinished, %d step processes alive; invariants hold after the restart",
			round+1, when, len(jobs), running, len(before))
		if t.Failed() {
			t.FailNow()
		}
	}

	// Drain: resume the ordered queue, wait for every job, check once more.
	c = p.client()
	resumed := false
	_, err = c.QueueSet(ctx, rpc.QueueSetParams{Name: crashQueueOrdered, Paused: &resumed})
	is.NoErr(err)
	for id, j := range listAll(ctx, t, c) {
		if j.Final() {
			continue
		}
		got, err := c.Wait(ctx, rpc.WaitParams{ID: id, Timeout: rpc.Duration(5 * time.Minute)})
		is.NoErr(err)        // wait for the job
		is.True(got.Final()) // every job ends
	}
	jobs, events, interrupted := m.check(ctx, true)
	counts := map[rpc.State]int{}
	for _, j := range jobs {
		is.True(j.Final()) // nothing is left unfinished
		counts[j.State]++
	}
	m.ledger.mu.Lock()
	acked, cancels, queued := len(m.ledger.acked), len(m.ledger.cancelled), len(m.ledger.queuedCancels)
	m.ledger.mu.Unlock()
	samples := sampler.end(t)
	if l := pollProcs(goneWithin+2*time.Second, func() []proc { return stepProcs(mark) }); len(l) > 0 {
		t.Errorf("processes of finished jobs are alive: %s", procNames(l))
	}
	t.Logf("%d cancels answered with the cancelled job, %d of them before it started; %d samples of /proc", cancels, queued, samples)
	states := []string{}
	for _, s := range []rpc.State{rpc.StateSucceeded, rpc.StateFailed, rpc.StateCancelled} {
		states = append(states, fmt.Sprintf("%s %d", s, counts[s]))
	}
	slices.Sort(states)
	checkNoRace(t, p)
	t.Logf("crash matrix done: %d rounds, %d jobs acknowledged, %d stored (%s), %d found running at a restart (interrupted), %d unfinished at the kills (summed over the rounds), %d events; seed %d",
		rounds, acked, len(jobs), strings.Join(states, ", "), interrupted, unfinished, events, seed)
}

// afterStepStarted returns after the n-th start of a step with a background
// child (named bg<index>) the event log shows from now on, or after at most
// limit.
func (m *crashMatrix) afterStepStarted(ctx context.Context, n int, limit time.Duration) {
	ctx, cancel := context.WithTimeout(ctx, limit)
	defer cancel()
	c, err := client.Dial(ctx, m.p.socket)
	if err != nil {
		return
	}
	defer c.Close()
	w, err := c.Watch(ctx, rpc.WatchParams{})
	if err != nil {
		return
	}
	defer w.Close()
	for n > 0 {
		ev, err := w.Next(ctx)
		if err != nil {
			<-ctx.Done()
			return
		}
		if ev.Type == rpc.EventStepStarted && strings.HasPrefix(ev.StepName, "bg") {
			n--
		}
	}
}

// checkNoRace fails the test when the daemon (built with -race) reported a data
// race in its log.
func checkNoRace(t *testing.T, p *daemonProc) {
	t.Helper()
	if _, report, ok := strings.Cut(p.logs.String(), "WARNING: DATA RACE"); ok {
		report, _, _ = strings.Cut(report, "==================")
		t.Errorf("the daemon reported a data race:%s", report)
	}
}
