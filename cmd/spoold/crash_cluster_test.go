package main

import (
	"context"
	"fmt"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"spool/client"
	"spool/rpc"
	"spool/store/storetest"
)

// The cluster crash matrix: three spoold on one PostgreSQL while clients
// submit, cancel and retry through all three; each round kills -9 one daemon
// (sometimes two) at a random moment and starts it again, with its state
// folder and node name or, as a replaced host would, as a new node with a new
// folder. SPOOL_CRASH_ROUNDS, SPOOL_CRASH_JOBS and SPOOL_CRASH_SEED size and
// replay it as they do TestCrashMatrix.
//
// Every shell step appends heartbeat lines to a file of its job: the job, the
// step, the results folder (which names the state folder, so the host) and the
// pid of the spoold that started it (which names the daemon's life on that
// host), and the time. From them and the event log the end checks that no
// step ran in two places at once, that no step ran again after it succeeded,
// and that no step of a cancelled job beat after its cancelled event.

const (
	// clusterLease is the nodes' lease: short, so that a dead node's jobs are
	// rescued within the round.
	clusterLease = 2 * time.Second
	// clusterQueueTwo is a queue of limit 2, checked cluster-wide on the log.
	clusterQueueTwo = "two"
	// beatGrace is how long after an event a step's last heartbeat may still
	// be dated: the clocks of the shell and the daemon are read apart.
	beatGrace = 250 * time.Millisecond
)

// clusterSlot is one of the three places of the cluster: the daemon serving it
// now, its node name, how often it was killed and whether it is up.
type clusterSlot struct {
	p     *daemonProc
	name  string
	kills int
	up    bool
}

// clusterCrash holds one run of the cluster crash matrix.
type clusterCrash struct {
	t       *testing.T
	dsn     string
	beatDir string
	markDir string
	ledger  *crashLedger

	mu    sync.Mutex
	slots [3]clusterSlot
	hosts map[string]string // state folder -> node name, of every node that ran
	hostN int               // the number of the last replacement host
}

// nodeArgs are the flags every node runs with.
func nodeArgs() []string {
	return []string{"--max-parallel", "4", "--lease", clusterLease.String()}
}

// startSlot starts a new node in slot i, with a state folder of its own.
func (m *clusterCrash) startSlot(i int, name string) {
	p := newNode(m.t, m.dsn, name, nodeArgs()...)
	m.mu.Lock()
	defer m.mu.Unlock()
	m.slots[i] = clusterSlot{p: p, name: name, kills: m.slots[i].kills, up: true}
	m.hosts[p.state] = name
}

// hostOf names the node whose state folder holds dir ("" when none does).
func (m *clusterCrash) hostOf(dir string) string {
	m.mu.Lock()
	defer m.mu.Unlock()
	for state, name := range m.hosts {
		if strings.HasPrefix(dir, state+string(filepath.Separator)) {
			return name
		}
	}
	return ""
}

// target is a node a client talks to: its socket and how often its slot had
// been killed when it was picked.
type target struct {
	slot   int
	name   string
	socket string
	kills  int
}

// pick picks a live node at random, other than the node named not when it
// can; ok is false when none is up.
func (m *clusterCrash) pick(r *rand.Rand, not string) (target, bool) {
	m.mu.Lock()
	defer m.mu.Unlock()
	var up, other []int
	for i, s := range m.slots {
		if !s.up {
			continue
		}
		up = append(up, i)
		if s.name != not {
			other = append(other, i)
		}
	}
	if len(other) > 0 {
		up = other
	}
	if len(up) == 0 {
		return target{}, false
	}
	i := up[r.IntN(len(up))]
	s := m.slots[i]
	return target{slot: i, name: s.name, socket: s.p.socket, kills: s.kills}, true
}

// lost reports whether the node of tg was killed since it was picked: then a
// failed call through it is what a client of a dead daemon sees.
func (m *clusterCrash) lost(tg target) bool {
	m.mu.Lock()
	defer m.mu.Unlock()
	s := m.slots[tg.slot]
	return s.kills != tg.kills || !s.up
}

// call dials tg and runs op on it, within a minute. It reports whether op ran
// to an answer; a failure through a node killed meanwhile is no error.
func (m *clusterCrash) call(tg target, what string, op func(ctx context.Context, c *client.Client) error) bool {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	c, err := client.Dial(ctx, tg.socket)
	if err == nil {
		err = op(ctx, c)
		c.Close()
	}
	if err == nil {
		return true
	}
	if !m.lost(tg) {
		m.t.Errorf("%s through node %s: %v", what, tg.name, err)
	}
	return false
}

// beatLoop is shell that appends n heartbeats of step to the job's file,
// one every 50 ms.
func beatLoop(step, n int) string {
	return fmt.Sprintf(`i=0; while [ $i -lt %d ]; do echo "$SPOOL_JOB_ID %d $SPOOL_RESULTS_DIR $PPID $(date +%%s%%N)" >> "$BEATDIR/$SPOOL_JOB_ID"; sleep 0.05; i=$((i+1)); done`, n, step)
}

// spec makes a random job of one to three steps: heartbeat loops of 0.2 to
// 1 s, some failing their first attempt and retried, a short sleep; some fail
// rather than rerun when interrupted, some fail at the end. One job in four
// goes to the queue of limit 2.
func (m *clusterCrash) spec(r *rand.Rand) rpc.Spec {
	s := rpc.Spec{Queue: "default", Priority: r.IntN(3) - 1, Env: map[string]string{"BEATDIR": m.beatDir, "MARKDIR": m.markDir}}
	if r.IntN(4) == 0 {
		s.Queue = clusterQueueTwo
	}
	n := 1 + r.IntN(3)
	for i := range n {
		var st rpc.Step
		switch k := r.IntN(10); {
		case k < 6:
			st = sh(beatLoop(i, 4+r.IntN(17)))
		case k < 9:
			st = sh(fmt.Sprintf(`M="$MARKDIR/$SPOOL_JOB_ID-%d"
if [ ! -e "$M" ]; then touch "$M"; %s; exit 1; fi
%s`, i, beatLoop(i, 2), beatLoop(i, 4+r.IntN(9))))
			st.Retry = &rpc.Retry{Attempts: 3, Backoff: rpc.Duration(50 * time.Millisecond), MaxBackoff: rpc.Duration(200 * time.Millisecond)}
		default:
			st = rpc.Step{Sleep: &rpc.SleepStep{Duration: rpc.Duration(time.Duration(50+r.IntN(250)) * time.Millisecond)}}
		}
		st.Name = fmt.Sprintf("s%d", i)
		if st.Shell != nil && r.IntN(10) == 0 {
			st.OnInterrupt = rpc.OnInterruptFail
		}
		s.Steps = append(s.Steps, st)
	}
	if r.IntN(8) == 0 {
		st := sh(beatLoop(n, 2) + "; exit 3")
		st.Name = fmt.Sprintf("s%d", n)
		s.Steps = append(s.Steps, st)
	}
	return s
}

// submitter submits share jobs, single and in batches (some with a dependency
// inside the batch), each call through a random live node.
func (m *clusterCrash) submitter(r *rand.Rand, share int) {
	for sent := 0; sent < share; {
		tg, ok := m.pick(r, "")
		if !ok {
			time.Sleep(50 * time.Millisecond)
			continue
		}
		var p rpc.SubmitParams
		if r.IntN(3) == 0 {
			specs := make([]rpc.Spec, 2+r.IntN(4))
			for i := range specs {
				specs[i] = m.spec(r)
				if i > 0 && r.IntN(3) == 0 {
					specs[i].AfterIndex = []int{r.IntN(i)}
				}
			}
			p.Jobs = specs
			sent += len(specs)
		} else {
			s := m.spec(r)
			p.Job = &s
			sent++
		}
		m.call(tg, "submit", func(ctx context.Context, c *client.Client) error {
			res, err := c.Submit(ctx, p)
			if err != nil {
				return err
			}
			if res.Job != nil {
				m.ledger.ack([]rpc.Job{*res.Job})
			} else {
				m.ledger.ack(res.Jobs)
			}
			return nil
		})
		time.Sleep(time.Duration(r.IntN(40)) * time.Millisecond)
	}
}

// runnerOf names the node that last beat for job id ("" when none did).
func (m *clusterCrash) runnerOf(id int64) string {
	b, err := os.ReadFile(filepath.Join(m.beatDir, strconv.FormatInt(id, 10)))
	if err != nil {
		return ""
	}
	lines := strings.Split(strings.TrimSpace(string(b)), "\n")
	for i := len(lines) - 1; i >= 0; i-- {
		if f := strings.Fields(lines[i]); len(f) == 5 {
			return m.hostOf(f[2])
		}
	}
	return ""
}

// meddler cancels random jobs, through a node other than the one that runs
// them, and retries random jobs, until stop.
func (m *clusterCrash) meddler(r *rand.Rand, stop <-chan struct{}) {
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
		if r.IntN(3) != 0 {
			runner := m.runnerOf(id)
			tg, ok := m.pick(r, runner)
			if !ok {
				continue
			}
			m.call(tg, fmt.Sprintf("cancel %d (run by %q)", id, runner), func(ctx context.Context, c *client.Client) error {
				j, err := c.Cancel(ctx, rpc.CancelParams{ID: id, Reason: "cluster crash matrix"})
				switch {
				case err != nil && rpc.CodeOf(err) == rpc.CodeBadState:
					return nil
				case err != nil:
					return err
				case !j.Final():
					m.t.Errorf("cancel %d through %s answered a job in state %s", id, tg.name, j.State)
				case j.State != rpc.StateCancelled:
					m.t.Errorf("cancel %d through %s answered the job %s: a cancel answers the cancelled job or 1002", id, tg.name, j.State)
				default:
					m.ledger.mu.Lock()
					m.ledger.cancelled[id] = true
					if (cancelAnswer{job: j}).neverStarted() {
						m.ledger.queuedCancels[id] = true
					}
					m.ledger.mu.Unlock()
				}
				return nil
			})
			continue
		}
		tg, ok := m.pick(r, "")
		if !ok {
			continue
		}
		m.call(tg, fmt.Sprintf("retry %d", id), func(ctx context.Context, c *client.Client) error {
			j, err := c.Retry(ctx, rpc.RetryParams{ID: id})
			if err != nil && rpc.CodeOf(err) == rpc.CodeBadState {
				return nil
			}
			if err != nil {
				return err
			}
			if j.RetryOf == nil || *j.RetryOf != id {
				m.t.Errorf("retry of %d answered %+v", id, j.RetryOf)
			}
			m.ledger.ack([]rpc.Job{*j})
			return nil
		})
	}
}

// afterStart waits, for at most limit, until a step's process started on a
// live node: a step_started event, then the step's first heartbeat after it,
// which names the node. It returns that node's slot, or -1.
func (m *clusterCrash) afterStart(ctx context.Context, r *rand.Rand, limit time.Duration) int {
	ctx, cancel := context.WithTimeout(ctx, limit)
	defer cancel()
	tg, ok := m.pick(r, "")
	if !ok {
		return -1
	}
	c, err := client.Dial(ctx, tg.socket)
	if err != nil {
		return -1
	}
	defer c.Close()
	w, err := c.Watch(ctx, rpc.WatchParams{})
	if err != nil {
		return -1
	}
	defer w.Close()
	for {
		ev, err := w.Next(ctx)
		if err != nil {
			return -1
		}
		if ev.Type != rpc.EventStepStarted || ev.Step == nil {
			continue
		}
		file := filepath.Join(m.beatDir, strconv.FormatInt(ev.Job, 10))
		for range 200 {
			if slot := m.firstBeat(file, *ev.Step, ev.Time); slot >= 0 {
				return slot
			}
			select {
			case <-ctx.Done():
				return -1
			case <-time.After(time.Millisecond):
			}
		}
	}
}

// firstBeat returns the slot of the live node that wrote a heartbeat of step
// to file after since, or -1.
func (m *clusterCrash) firstBeat(file string, step int, since time.Time) int {
	b, err := os.ReadFile(file)
	if err != nil {
		return -1
	}
	for _, line := range strings.Split(string(b), "\n") {
		f := strings.Fields(line)
		if len(f) != 5 || f[1] != strconv.Itoa(step) {
			continue
		}
		ns, err := strconv.ParseInt(f[4], 10, 64)
		if err != nil || time.Unix(0, ns).Before(since) {
			continue
		}
		host := m.hostOf(f[2])
		m.mu.Lock()
		defer m.mu.Unlock()
		for i, s := range m.slots {
			if s.up && s.name == host {
				return i
			}
		}
		return -1
	}
	return -1
}

// kill kills the daemon of slot i with SIGKILL.
func (m *clusterCrash) kill(i int) {
	m.mu.Lock()
	m.slots[i].up = false
	m.slots[i].kills++
	p := m.slots[i].p
	m.mu.Unlock()
	p.kill9()
	checkNoRace(m.t, p)
}

// restart starts slot i again: the same daemon (state folder and node name),
// or, when replace, a new host: a new node name and an empty state folder.
func (m *clusterCrash) restart(i int, replace bool) string {
	if replace {
		m.mu.Lock()
		m.hostN++
		name := fmt.Sprintf("%c%d", 'a'+i, m.hostN)
		m.mu.Unlock()
		m.startSlot(i, name)
		return name
	}
	m.mu.Lock()
	p := m.slots[i].p
	m.mu.Unlock()
	p.start()
	m.mu.Lock()
	m.slots[i].up = true
	name := m.slots[i].name
	m.mu.Unlock()
	return name
}

// clients dials each live node, for the checks; close closes them.
func (m *clusterCrash) clients(ctx context.Context) (cs []*client.Client, closeAll func()) {
	m.t.Helper()
	m.mu.Lock()
	var sockets []string
	for _, s := range m.slots {
		if s.up {
			sockets = append(sockets, s.p.socket)
		}
	}
	m.mu.Unlock()
	closeAll = func() {
		for _, c := range cs {
			c.Close()
		}
	}
	for _, sock := range sockets {
		c, err := client.Dial(ctx, sock)
		if err != nil {
			closeAll()
			m.t.Fatalf("dial %s: %v", sock, err)
		}
		cs = append(cs, c)
	}
	return cs, closeAll
}

// sameLog reads the event log through every live node, checks each whole from
// 1, and checks that they agree on every seq they all hold. It returns the
// longest.
func (m *clusterCrash) sameLog(ctx context.Context) []rpc.Event {
	t := m.t
	t.Helper()
	cs, closeAll := m.clients(ctx)
	defer closeAll()
	var logs [][]rpc.Event
	for _, c := range cs {
		logs = append(logs, replayEvents(ctx, t, c))
	}
	var longest []rpc.Event
	for _, l := range logs {
		if len(l) > len(longest) {
			longest = l
		}
	}
	for n, l := range logs {
		for i := range l {
			a, _ := l[i].JSON()
			b, _ := longest[i].JSON()
			if string(a) != string(b) {
				t.Fatalf("the event log read through two nodes differs at seq %d: %s (node %d) and %s", i+1, a, n, b)
			}
		}
	}
	return longest
}

// storeCheck runs `spoold check --store` on the cluster's database.
func (m *clusterCrash) storeCheck() {
	m.t.Helper()
	out, err := exec.Command(buildBins(m.t).spoold, "check", "--store", m.dsn).CombinedOutput()
	if err != nil {
		m.t.Fatalf("spoold check --store: %v\n%s", err, out)
	}
}

// checkAcked fails the test when an acknowledged job is not stored, or a job
// a cancel answered as cancelled is not.
func (m *clusterCrash) checkAcked(jobs map[int64]rpc.Job) {
	m.ledger.mu.Lock()
	defer m.ledger.mu.Unlock()
	for id := range m.ledger.acked {
		if _, ok := jobs[id]; !ok {
			m.t.Errorf("acknowledged job %d is lost", id)
		}
	}
	for id := range m.ledger.cancelled {
		if j, ok := jobs[id]; ok && j.State != rpc.StateCancelled {
			m.t.Errorf("job %d was cancelled, and is now %s", id, j.State)
		}
	}
}

// checkReplay checks that replaying the log gives each job's state, and each
// step's state and attempt, as the nodes list them.
func checkClusterReplay(t *testing.T, evs []rpc.Event, jobs map[int64]rpc.Job) {
	t.Helper()
	replayed := storetest.Replay(evs)
	for id, j := range jobs {
		rj, ok := replayed[id]
		if !ok {
			t.Errorf("job %d is stored, and no event names it", id)
			continue
		}
		if rj.State != j.State {
			t.Errorf("job %d: the log says %s, the node %s", id, rj.State, j.State)
			continue
		}
		for i, st := range j.Steps {
			want, ok := rj.Steps[i]
			if !ok {
				want = storetest.ReplayedStep{State: rpc.StatePending}
				if rj.State.Final() {
					want.State = rpc.StateSkipped
				}
			}
			if st.State != want.State || st.Attempt != want.Attempt {
				t.Errorf("job %d step %d: the log says %s attempt %d, the node %s attempt %d", id, i, want.State, want.Attempt, st.State, st.Attempt)
			}
		}
	}
	for id, rj := range replayed {
		if _, ok := jobs[id]; !ok && id != 0 && !rj.Removed {
			t.Errorf("job %d is in the log and not stored", id)
		}
	}
}

// checkQueueLimit replays the log's starts and ends: no more than two jobs of
// the queue of limit 2 ran at once, across the cluster.
func checkQueueLimit(t *testing.T, evs []rpc.Event, jobs map[int64]rpc.Job) {
	t.Helper()
	running := map[int64]bool{}
	n := 0
	for _, ev := range evs {
		if jobs[ev.Job].Queue != clusterQueueTwo {
			continue
		}
		switch {
		case ev.Type == rpc.EventStarted:
			if running[ev.Job] {
				t.Errorf("seq %d: job %d started twice", ev.Seq, ev.Job)
				continue
			}
			running[ev.Job] = true
			if n++; n > 2 {
				t.Errorf("seq %d: %d jobs of queue %s run, its limit is 2", ev.Seq, n, clusterQueueTwo)
			}
		case ev.Type == rpc.EventInterrupted || finalEvent(ev.Type):
			if running[ev.Job] {
				running[ev.Job] = false
				n--
			}
		}
	}
}

// readClusterBeats reads every job's heartbeats; a beat's node is the host
// that ran it and the pid of the daemon's life there.
func (m *clusterCrash) readClusterBeats() []beat {
	t := m.t
	t.Helper()
	ents, err := os.ReadDir(m.beatDir)
	if err != nil {
		t.Fatalf("read the heartbeats: %v", err)
	}
	var out []beat
	for _, e := range ents {
		for _, line := range readLines(t, filepath.Join(m.beatDir, e.Name())) {
			f := strings.Fields(line)
			if len(f) != 5 {
				continue // a line cut by a kill
			}
			job, err1 := strconv.Atoi(f[0])
			step, err2 := strconv.Atoi(f[1])
			ns, err3 := strconv.ParseInt(f[4], 10, 64)
			if err1 != nil || err2 != nil || err3 != nil {
				continue
			}
			host := m.hostOf(f[2])
			if host == "" {
				t.Errorf("job %d step %d beat from %s, no node's state folder", job, step, f[2])
			}
			out = append(out, beat{job: job, step: step, node: host + "/" + f[3], at: time.Unix(0, ns)})
		}
	}
	return out
}

// checkBeats checks the heartbeats against the log: no step ran in two places
// at once, none ran again after it succeeded, and no step of a cancelled job
// beat after the job's cancelled event. It returns how many steps beat in more
// than one daemon's life: what the check of overlaps had to look at.
func checkBeats(t *testing.T, beats []beat, evs []rpc.Event) (moved int) {
	t.Helper()
	checkNoOverlap(t, beats)
	type key struct{ job, step int }
	lives := map[key]map[string]bool{}
	for _, b := range beats {
		k := key{b.job, b.step}
		if lives[k] == nil {
			lives[k] = map[string]bool{}
		}
		lives[k][b.node] = true
	}
	for _, l := range lives {
		if len(l) > 1 {
			moved++
		}
	}
	succeeded := map[key]time.Time{}
	cancelled := map[int]time.Time{}
	for _, ev := range evs {
		switch {
		case ev.Type == rpc.EventStepFinished && ev.State == rpc.StateSucceeded:
			succeeded[key{int(ev.Job), *ev.Step}] = ev.Time
		case ev.Type == rpc.EventCancelled:
			cancelled[int(ev.Job)] = ev.Time
		}
	}
	reported := map[key]bool{}
	for _, b := range beats {
		k := key{b.job, b.step}
		if reported[k] {
			continue
		}
		if at, ok := succeeded[k]; ok && b.at.After(at.Add(beatGrace)) {
			reported[k] = true
			t.Errorf("job %d step %d succeeded at %s and beat again at %s on %s", b.job, b.step, at.Format("15:04:05.000"), b.at.Format("15:04:05.000"), b.node)
		}
		if at, ok := cancelled[b.job]; ok && b.at.After(at.Add(beatGrace)) {
			reported[k] = true
			t.Errorf("job %d was cancelled at %s and its step %d beat at %s on %s", b.job, at.Format("15:04:05.000"), b.step, b.at.Format("15:04:05.000"), b.node)
		}
	}
	return moved
}

func TestCrashMatrixCluster(t *testing.T) {
	rounds := int(envInt(t, "SPOOL_CRASH_ROUNDS", 3))
	perRound := int(envInt(t, "SPOOL_CRASH_JOBS", 20))
	seed := envInt(t, "SPOOL_CRASH_SEED", time.Now().UnixNano())
	t.Logf("cluster crash matrix: %d rounds, %d jobs a round, lease %s, seed %d (replay with SPOOL_CRASH_SEED=%d)", rounds, perRound, clusterLease, seed, seed)
	rng := rand.New(rand.NewPCG(uint64(seed), 0xc1a5))
	began := time.Now()

	// The database first: the server it may start must not carry the marker
	// of this test's processes, which are all killed when it ends.
	dsn := pgServers.DB(t)
	mark := markTest(t)
	work := shortDir(t)
	m := &clusterCrash{
		t: t, dsn: dsn,
		beatDir: filepath.Join(work, "beats"), markDir: filepath.Join(work, "marks"),
		ledger: &crashLedger{acked: map[int64]bool{}, cancelled: map[int64]bool{}, queuedCancels: map[int64]bool{}},
		hosts:  map[string]string{},
	}
	for _, d := range []string{m.beatDir, m.markDir} {
		if err := os.Mkdir(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	for i, name := range []string{"a", "b", "c"} {
		m.startSlot(i, name)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Minute)
	defer cancel()
	cs, closeAll := m.clients(ctx)
	two := 2
	if _, err := cs[0].QueueSet(ctx, rpc.QueueSetParams{Name: clusterQueueTwo, Parallel: &two}); err != nil {
		t.Fatalf("queue.set: %v", err)
	}
	closeAll()

	kills, replaced := 0, 0
	for round := 1; round <= rounds; round++ {
		stop := make(chan struct{})
		var clients, meddlers sync.WaitGroup
		const submitters = 3
		for i := range submitters {
			r := rand.New(rand.NewPCG(rng.Uint64(), uint64(i)))
			clients.Go(func() { m.submitter(r, perRound/submitters+1) })
		}
		rm := rand.New(rand.NewPCG(rng.Uint64(), 10))
		meddlers.Go(func() { m.meddler(rm, stop) })

		// Kill one node, one round in four two, at a random moment: mostly
		// while the clients work, sometimes right after the last restart, and
		// one round in four 0-3 ms after a step's process started, the node
		// that runs it.
		victims := []int{rng.IntN(3)}
		if rng.IntN(4) == 0 {
			victims = append(victims, (victims[0]+1+rng.IntN(2))%3)
		}
		when := "while the clients work"
		switch k := rng.IntN(8); {
		case k < 2:
			when = "right after the restart"
			time.Sleep(time.Duration(rng.IntN(300)) * time.Millisecond)
		case k < 4:
			wait := time.Duration(300+rng.IntN(2200)) * time.Millisecond
			pause := time.Duration(rng.IntN(4)) * time.Millisecond
			if slot := m.afterStart(ctx, rng, wait); slot >= 0 {
				when = "during a start"
				if victims[0] = slot; len(victims) > 1 && victims[1] == slot {
					victims[1] = (slot + 1) % 3
				}
			}
			time.Sleep(pause)
		default:
			time.Sleep(time.Duration(300+rng.IntN(2200)) * time.Millisecond)
		}
		// Down briefly (the node rescues its own jobs when it joins again),
		// or past its lease (the others reap them).
		down := time.Duration(rng.IntN(500)) * time.Millisecond
		if rng.IntN(2) == 0 {
			down = clusterLease + time.Duration(500+rng.IntN(1500))*time.Millisecond
		}
		var what []string
		for _, v := range victims {
			m.mu.Lock()
			name := m.slots[v].name
			m.mu.Unlock()
			m.kill(v)
			kills++
			what = append(what, name)
		}
		time.Sleep(down)
		for k, v := range victims {
			replace := rng.IntN(4) == 0
			name := m.restart(v, replace)
			if replace {
				replaced++
				what[k] += " (back as new host " + name + ")"
			}
		}
		clients.Wait()
		close(stop)
		meddlers.Wait()
		if t.Failed() {
			t.FailNow()
		}

		evs := m.sameLog(ctx)
		cs, closeAll := m.clients(ctx)
		jobs := listAll(ctx, t, cs[0])
		closeAll()
		m.checkAcked(jobs)
		m.storeCheck()
		unfinished := 0
		for _, j := range jobs {
			if !j.Final() {
				unfinished++
			}
		}
		t.Logf("round %d: killed %s %s, down %s; %d jobs stored, %d unfinished, %d events; the logs agree, the store checks",
			round, strings.Join(what, " and "), when, down.Round(time.Millisecond), len(jobs), unfinished, len(evs))
		if t.Failed() {
			t.FailNow()
		}
	}

	// Drain: every job ends, as each node tells.
	cs, closeAll = m.clients(ctx)
	defer closeAll()
	for id, j := range listAll(ctx, t, cs[0]) {
		if j.Final() {
			continue
		}
		got, err := cs[int(id)%len(cs)].Wait(ctx, rpc.WaitParams{ID: id, Timeout: rpc.Duration(2 * time.Minute)})
		if err != nil {
			t.Fatalf("wait for job %d: %v", id, err)
		}
		if !got.Final() {
			t.Fatalf("job %d is still %s after 2 minutes", id, got.State)
		}
	}
	// The nodes' tailers catch up with the last final event: read the logs
	// until they stop growing.
	var evs []rpc.Event
	for i := 0; ; i++ {
		evs = m.sameLog(ctx)
		next := m.sameLog(ctx)
		if len(next) == len(evs) {
			lens := []int{}
			for _, c := range cs {
				lens = append(lens, len(replayEvents(ctx, t, c)))
			}
			if slices.Min(lens) == len(evs) {
				break
			}
		}
		if i > 100 {
			t.Fatalf("the nodes' event logs never agree in length")
		}
		time.Sleep(100 * time.Millisecond)
	}
	jobs := listAll(ctx, t, cs[0])
	for _, c := range cs[1:] {
		other := listAll(ctx, t, c)
		for id, j := range jobs {
			if o, ok := other[id]; !ok || o.State != j.State {
				t.Errorf("job %d is %s through one node and %s through another", id, j.State, o.State)
			}
		}
	}
	counts := map[rpc.State]int{}
	for _, j := range jobs {
		if !j.Final() {
			t.Errorf("job %d is left %s", j.ID, j.State)
		}
		counts[j.State]++
	}
	m.checkAcked(jobs)
	checkClusterReplay(t, evs, jobs)
	checkQueueLimit(t, evs, jobs)
	// A job cancelled before it started ran no step.
	started := map[int64]bool{}
	interrupted := 0
	for _, ev := range evs {
		switch ev.Type {
		case rpc.EventStarted, rpc.EventStepStarted:
			started[ev.Job] = true
		case rpc.EventInterrupted:
			interrupted++
		}
	}
	beats := m.readClusterBeats()
	m.ledger.mu.Lock()
	beaten := map[int64]bool{}
	for _, b := range beats {
		beaten[int64(b.job)] = true
	}
	for id := range m.ledger.queuedCancels {
		if !started[id] && beaten[id] {
			t.Errorf("job %d was cancelled while queued and never started by its events, yet its step beat", id)
		}
	}
	acked, cancels, queued := len(m.ledger.acked), len(m.ledger.cancelled), len(m.ledger.queuedCancels)
	m.ledger.mu.Unlock()
	moved := checkBeats(t, beats, evs)
	m.storeCheck()
	if l := pollProcs(goneWithin, func() []proc { return stepProcs(mark) }); len(l) > 0 {
		t.Errorf("processes of finished jobs are alive: %s", procNames(l))
	}
	m.mu.Lock()
	for _, s := range m.slots {
		checkNoRace(t, s.p)
	}
	m.mu.Unlock()
	t.Logf("cluster crash matrix done in %s: %d rounds, %d kills (%d hosts replaced), %d jobs acknowledged, %d stored (succeeded %d, failed %d, cancelled %d), %d cancels answered (%d before the job started), %d interrupted, %d events, %d heartbeats (%d steps ran in more than one daemon's life, never two at once); seed %d",
		time.Since(began).Round(time.Second), rounds, kills, replaced, acked, len(jobs), counts[rpc.StateSucceeded], counts[rpc.StateFailed], counts[rpc.StateCancelled],
		cancels, queued, interrupted, len(evs), len(beats), moved, seed)
}
