package main

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"spool/client"
	"spool/rpc"
	"spool/store/postgres/pgtest"
)

// pgServers is the PostgreSQL server the cluster tests share; each test gets
// a database of its own.
var pgServers *pgtest.Pool

// newNode starts a spoold of a cluster on the database dsn, named node.
func newNode(t *testing.T, dsn, node string, args ...string) *daemonProc {
	t.Helper()
	return newDaemon(t, append([]string{"--store", dsn, "--node", node}, args...)...)
}

// collector keeps every stored event a watcher gets.
type collector struct {
	mu  sync.Mutex
	evs []rpc.Event
	err error
}

// collect watches everything from seq since on c until ctx ends.
func collect(ctx context.Context, t *testing.T, c *client.Client, since int64) *collector {
	t.Helper()
	w, err := c.Watch(ctx, rpc.WatchParams{Since: rpc.Since(since)})
	if err != nil {
		t.Fatalf("watch: %v", err)
	}
	col := &collector{}
	go func() {
		for {
			ev, err := w.Next(ctx)
			if err != nil {
				col.mu.Lock()
				col.err = err
				col.mu.Unlock()
				return
			}
			if ev.Seq == 0 {
				continue
			}
			col.mu.Lock()
			col.evs = append(col.evs, *ev)
			col.mu.Unlock()
		}
	}()
	return col
}

// upTo waits until the collector holds the events up to seq last.
func (col *collector) upTo(t *testing.T, last int64, within time.Duration) []rpc.Event {
	t.Helper()
	deadline := time.Now().Add(within)
	for {
		col.mu.Lock()
		n := len(col.evs)
		var top int64
		if n > 0 {
			top = col.evs[n-1].Seq
		}
		evs := slices.Clone(col.evs)
		err := col.err
		col.mu.Unlock()
		if top >= last {
			return evs
		}
		if err != nil || time.Now().After(deadline) {
			t.Fatalf("watcher stopped at seq %d of %d: %v", top, last, err)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// beat is one heartbeat line a step wrote: job, step, the node whose state
// folder it ran from, and when.
type beat struct {
	job, step int
	node      string
	at        time.Time
}

// beatScript is a step that writes a heartbeat to file every 50 ms, n times.
func beatScript(file string, step, n int) string {
	return fmt.Sprintf(`i=0; while [ $i -lt %d ]; do echo "$SPOOL_JOB_ID %d $SPOOL_RESULTS_DIR $(date +%%s%%N)" >> %s; sleep 0.05; i=$((i+1)); done`, n, step, file)
}

// readBeats reads the heartbeats of file; the node is the name of the state
// folder's parent (one per daemon).
func readBeats(t *testing.T, file string, nodeOf func(dir string) string) []beat {
	t.Helper()
	var out []beat
	for _, line := range readLines(t, file) {
		f := strings.Fields(line)
		if len(f) != 4 {
			continue // a line cut by a kill
		}
		job, _ := strconv.Atoi(f[0])
		step, _ := strconv.Atoi(f[1])
		ns, _ := strconv.ParseInt(f[3], 10, 64)
		out = append(out, beat{job: job, step: step, node: nodeOf(f[2]), at: time.Unix(0, ns)})
	}
	return out
}

// checkNoOverlap fails when a step of a job beat on two nodes at times that
// overlap: it ran on two hosts at once.
func checkNoOverlap(t *testing.T, beats []beat) {
	t.Helper()
	type key struct{ job, step int }
	type span struct{ from, to time.Time }
	spans := map[key]map[string]*span{}
	for _, b := range beats {
		k := key{b.job, b.step}
		if spans[k] == nil {
			spans[k] = map[string]*span{}
		}
		s := spans[k][b.node]
		if s == nil {
			spans[k][b.node] = &span{b.at, b.at}
			continue
		}
		if b.at.Before(s.from) {
			s.from = b.at
		}
		if b.at.After(s.to) {
			s.to = b.at
		}
	}
	for k, byNode := range spans {
		var nodes []string
		for n := range byNode {
			nodes = append(nodes, n)
		}
		sort.Strings(nodes)
		for i := range nodes {
			for j := i + 1; j < len(nodes); j++ {
				a, b := byNode[nodes[i]], byNode[nodes[j]]
				if a.from.Before(b.to) && b.from.Before(a.to) {
					t.Errorf("job %d step %d ran on %s (%s to %s) and %s (%s to %s) at once", k.job, k.step,
						nodes[i], a.from.Format("15:04:05.000"), a.to.Format("15:04:05.000"), nodes[j], b.from.Format("15:04:05.000"), b.to.Format("15:04:05.000"))
				}
			}
		}
	}
}

// TestClusterE2E runs three spoold on one PostgreSQL: jobs submitted through
// all three run on any, watchers on all three see the same stream 1..N, and a
// kill -9 of a daemon running jobs has each of them rescued by another within
// the lease plus a reaping, resumed at its first unfinished step, never on two
// hosts at once.
func TestClusterE2E(t *testing.T) {
	dsn := pgServers.DB(t)
	const lease = 4 * time.Second
	nodes := []*daemonProc{}
	for _, name := range []string{"a", "b", "c"} {
		nodes = append(nodes, newNode(t, dsn, name, "--max-parallel", "4", "--lease", lease.String()))
	}
	nodeOf := func(dir string) string {
		for i, p := range nodes {
			if strings.HasPrefix(dir, p.state+string(filepath.Separator)) {
				return []string{"a", "b", "c"}[i]
			}
		}
		return "?" + dir
	}
	ctx := tctx(t)
	clients := []*client.Client{nodes[0].client(), nodes[1].client(), nodes[2].client()}
	watchers := []*collector{collect(ctx, t, nodes[0].client(), 0), collect(ctx, t, nodes[1].client(), 0), collect(ctx, t, nodes[2].client(), 0)}

	dir := shortDir(t)
	beats := filepath.Join(dir, "beats")
	// Each job: a step of 2 s, then a step of 0.5 s, both beating.
	var ids []int64
	for i := range 24 {
		spec := rpc.Spec{Name: fmt.Sprintf("job%d", i), Steps: []rpc.Step{
			{Name: "long", Shell: &rpc.ShellStep{Script: beatScript(beats, 0, 40)}},
			{Name: "short", Shell: &rpc.ShellStep{Script: beatScript(beats, 1, 10)}},
		}}
		res, err := clients[i%3].Submit(ctx, rpc.SubmitParams{Job: &spec})
		if err != nil {
			t.Fatalf("submit through node %d: %v", i%3, err)
		}
		ids = append(ids, res.Job.ID)
	}

	// Kill a while its jobs run their first step.
	deadline := time.Now().Add(30 * time.Second)
	for {
		n := 0
		for _, b := range readBeats(t, beats, nodeOf) {
			if b.node == "a" {
				n++
			}
		}
		if n >= 8 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("node a ran nothing")
		}
		time.Sleep(20 * time.Millisecond)
	}
	killed := time.Now()
	nodes[0].kill9()
	seenA := watchers[0]
	seenA.mu.Lock()
	lastA := int64(0)
	if len(seenA.evs) > 0 {
		lastA = seenA.evs[len(seenA.evs)-1].Seq
	}
	seenA.mu.Unlock()

	// Every job ends, succeeded, as the two others say, and names where it
	// ran last.
	nodeOfJob := map[int64]string{}
	for _, id := range ids {
		j, err := clients[1].Wait(ctx, rpc.WaitParams{ID: id, Timeout: rpc.Duration(60 * time.Second)})
		if err != nil {
			t.Fatalf("wait for job %d: %v", id, err)
		}
		if j.State != rpc.StateSucceeded {
			t.Errorf("job %d ended %s: %s", id, j.State, j.Error)
		}
		if !slices.Contains([]string{"a", "b", "c"}, j.Node) {
			t.Errorf("job %d names node %q", id, j.Node)
		}
		nodeOfJob[id] = j.Node
	}
	var last int64
	// The stream as the two survivors saw it: the same, whole, from 1.
	evsB := watchers[1].upTo(t, 1, 10*time.Second)
	for _, ev := range evsB {
		last = max(last, ev.Seq)
	}
	time.Sleep(500 * time.Millisecond)
	evsB = watchers[1].upTo(t, last, 10*time.Second)
	last = evsB[len(evsB)-1].Seq
	evsC := watchers[2].upTo(t, last, 10*time.Second)
	for i, ev := range evsB {
		if ev.Seq != int64(i+1) {
			t.Fatalf("node b: event %d has seq %d: a gap or a repeat", i, ev.Seq)
		}
		if i >= len(evsC) || evsC[i].Seq != ev.Seq || evsC[i].Type != ev.Type || evsC[i].Job != ev.Job {
			t.Fatalf("nodes b and c differ at seq %d", ev.Seq)
		}
	}
	// A watcher of the dead node resumes on another where it stopped.
	resumed := collect(ctx, t, nodes[2].client(), lastA)
	evsR := resumed.upTo(t, last, 10*time.Second)
	if len(evsR) == 0 || evsR[0].Seq != lastA+1 || evsR[len(evsR)-1].Seq != last {
		t.Fatalf("resumed from %d: got %d events", lastA, len(evsR))
	}

	// Rescue: the jobs node a ran were interrupted, then run by b or c.
	var rescued []int64
	var slowest time.Duration
	for _, ev := range evsB {
		if ev.Type == rpc.EventInterrupted && ev.Time.After(killed) {
			rescued = append(rescued, ev.Job)
			slowest = max(slowest, ev.Time.Sub(killed))
		}
	}
	if len(rescued) == 0 {
		t.Fatalf("no job was rescued from node a")
	}
	for _, id := range rescued {
		if nodeOfJob[id] == "a" {
			t.Errorf("job %d was rescued from a, yet names a as where it ran last", id)
		}
	}
	t.Logf("%d jobs rescued from node a, the last interrupted %s after its kill (lease %s)", len(rescued), slowest.Round(time.Millisecond), lease)
	if slowest > lease+5*time.Second {
		t.Errorf("rescue took %s, more than the lease %s and a reaping", slowest, lease)
	}
	all := readBeats(t, beats, nodeOf)
	checkNoOverlap(t, all)
	// A step that finished before the kill does not run again.
	finished := map[[2]int]bool{}
	for _, ev := range evsB {
		if ev.Type == rpc.EventStepFinished && ev.State == rpc.StateSucceeded && ev.Time.Before(killed) {
			finished[[2]int{int(ev.Job), *ev.Step}] = true
		}
	}
	for _, b := range all {
		if finished[[2]int{b.job, b.step}] && b.at.After(killed.Add(time.Second)) {
			t.Errorf("job %d step %d finished before the kill and ran again after it (on %s)", b.job, b.step, b.node)
		}
	}
	// Cancel through one daemon stops a job another runs.
	spec := rpc.Spec{Name: "stop me", Steps: []rpc.Step{{Shell: &rpc.ShellStep{Script: beatScript(beats, 0, 600)}}}}
	res, err := clients[1].Submit(ctx, rpc.SubmitParams{Job: &spec})
	if err != nil {
		t.Fatal(err)
	}
	waitRunning(t, clients[2], res.Job.ID)
	asked := time.Now()
	if _, err := clients[2].Cancel(ctx, rpc.CancelParams{ID: res.Job.ID, Reason: "enough"}); err != nil {
		t.Fatalf("cancel: %v", err)
	}
	t.Logf("a cancel through one daemon of a job another runs answered in %s", time.Since(asked).Round(time.Millisecond))
	j, err := clients[1].Wait(ctx, rpc.WaitParams{ID: res.Job.ID, Timeout: rpc.Duration(20 * time.Second)})
	if err != nil || j.State != rpc.StateCancelled {
		t.Fatalf("cancelled job: %v %v", j, err)
	}
	if !t.Failed() {
		os.Remove(beats)
	}
}

// TestClusterPausedDaemonFenced stops a daemon (SIGSTOP) past its lease while
// it runs jobs: another rescues them; once continued, the paused daemon's
// late writes are refused, its processes are gone at once, and it goes on
// with a new lease.
func TestClusterPausedDaemonFenced(t *testing.T) {
	dsn := pgServers.DB(t)
	const lease = 3 * time.Second
	a := newNode(t, dsn, "a", "--max-parallel", "2", "--lease", lease.String())
	ctx := tctx(t)
	ca := a.client()
	dir := shortDir(t)
	beats := filepath.Join(dir, "beats")
	var ids []int64
	for i := range 2 {
		spec := rpc.Spec{Name: fmt.Sprintf("long%d", i), Steps: []rpc.Step{{Shell: &rpc.ShellStep{Script: beatScript(beats, 0, 160)}}}}
		res, err := ca.Submit(ctx, rpc.SubmitParams{Job: &spec})
		if err != nil {
			t.Fatal(err)
		}
		ids = append(ids, res.Job.ID)
		waitRunning(t, ca, res.Job.ID)
	}
	b := newNode(t, dsn, "b", "--max-parallel", "2", "--lease", lease.String())
	nodeOf := func(d string) string {
		switch {
		case strings.HasPrefix(d, a.state+"/"):
			return "a"
		case strings.HasPrefix(d, b.state+"/"):
			return "b"
		}
		return "?"
	}
	cb := b.client()
	if err := a.cmd.Process.Signal(syscall.SIGSTOP); err != nil {
		t.Fatal(err)
	}
	stopped := time.Now()
	// b takes both jobs over once a's lease is gone.
	deadline := time.Now().Add(lease + 10*time.Second)
	for {
		onB := map[int]bool{}
		for _, bt := range readBeats(t, beats, nodeOf) {
			if bt.node == "b" {
				onB[bt.job] = true
			}
		}
		if len(onB) == 2 {
			break
		}
		if time.Now().After(deadline) {
			_ = a.cmd.Process.Signal(syscall.SIGCONT)
			t.Fatalf("b did not take the jobs of the paused a over")
		}
		time.Sleep(50 * time.Millisecond)
	}
	t.Logf("b took over %s after a stopped (lease %s)", time.Since(stopped).Round(time.Millisecond), lease)
	if err := a.cmd.Process.Signal(syscall.SIGCONT); err != nil {
		t.Fatal(err)
	}
	resumed := time.Now()
	// a learns at its next renewal that its lease is gone and kills its
	// processes: none of its beats come after that.
	time.Sleep(lease)
	var lastA time.Time
	for _, bt := range readBeats(t, beats, nodeOf) {
		if bt.node == "a" && bt.at.After(lastA) {
			lastA = bt.at
		}
	}
	if lastA.After(resumed.Add(lease / 2)) {
		t.Errorf("a's processes still beat %s after it was continued", lastA.Sub(resumed).Round(time.Millisecond))
	}
	// Each job ends once, as b ran it: a's late writes were refused.
	for _, id := range ids {
		j, err := cb.Wait(ctx, rpc.WaitParams{ID: id, Timeout: rpc.Duration(30 * time.Second)})
		if err != nil || j.State != rpc.StateSucceeded {
			t.Fatalf("job %d: %v %v", id, j, err)
		}
	}
	evs := replayEvents(ctx, t, cb)
	ends := map[int64]int{}
	for _, ev := range evs {
		if ev.Type == rpc.EventStepFinished || ev.Type == rpc.EventSucceeded {
			ends[ev.Job]++
		}
	}
	for _, id := range ids {
		if ends[id] != 2 {
			t.Errorf("job %d has %d step_finished and succeeded events, want one each", id, ends[id])
		}
	}
	// a goes on with a new lease: with b gone, a job submitted to a runs.
	b.stop()
	spec := rpc.Spec{Name: "after", Steps: []rpc.Step{{Shell: &rpc.ShellStep{Script: "true"}}}}
	res, err := ca.Submit(ctx, rpc.SubmitParams{Job: &spec})
	if err != nil {
		t.Fatalf("submit to a after its pause: %v", err)
	}
	j, err := ca.Wait(ctx, rpc.WaitParams{ID: res.Job.ID, Timeout: rpc.Duration(30 * time.Second)})
	if err != nil || j.State != rpc.StateSucceeded {
		t.Fatalf("job after the pause: %v %v", j, err)
	}
}

// TestClusterDatabaseRestart crashes the database (pg_ctl restart -m
// immediate) while two daemons run jobs and clients submit: the daemons
// reconnect, every acknowledged job ends, and the watchers of both see the
// same whole stream, missing nothing.
func TestClusterDatabaseRestart(t *testing.T) {
	ctx := tctx(t)
	srv, err := pgtest.Start(ctx, pgtest.Options{})
	if err != nil {
		if os.Getenv(pgtest.RequireEnv) == "1" {
			t.Fatalf("start PostgreSQL: %v", err)
		}
		t.Skipf("no PostgreSQL: %v", err)
	}
	t.Cleanup(func() { _ = srv.Stop() })
	dsn, err := srv.NewDB(ctx)
	if err != nil {
		t.Fatal(err)
	}
	a := newNode(t, dsn, "a", "--max-parallel", "4")
	b := newNode(t, dsn, "b", "--max-parallel", "4")
	clients := []*client.Client{a.client(), b.client()}
	watchers := []*collector{collect(ctx, t, a.client(), 0), collect(ctx, t, b.client(), 0)}

	var mu sync.Mutex
	var ids []int64
	stop := make(chan struct{})
	var wg sync.WaitGroup
	for k := range 2 {
		wg.Go(func() {
			for i := 0; ; i++ {
				select {
				case <-stop:
					return
				default:
				}
				spec := rpc.Spec{Name: fmt.Sprintf("c%d-%d", k, i), Steps: []rpc.Step{
					{Shell: &rpc.ShellStep{Script: "sleep 0.2"}},
					{Sleep: &rpc.SleepStep{Duration: rpc.Duration(100 * time.Millisecond)}},
				}}
				res, err := clients[k].Submit(ctx, rpc.SubmitParams{Job: &spec})
				if err != nil {
					if protoErr(err) != nil && protoErr(err).Code == rpc.CodeStorage {
						time.Sleep(50 * time.Millisecond)
						continue // not stored: the client may try again
					}
					t.Errorf("submit: %v", err)
					return
				}
				mu.Lock()
				ids = append(ids, res.Job.ID)
				mu.Unlock()
				time.Sleep(30 * time.Millisecond)
			}
		})
	}
	time.Sleep(1500 * time.Millisecond)
	if err := srv.Restart(ctx, true); err != nil {
		t.Fatalf("restart the database: %v", err)
	}
	time.Sleep(2 * time.Second)
	close(stop)
	wg.Wait()
	mu.Lock()
	all := slices.Clone(ids)
	mu.Unlock()
	for _, id := range all {
		j, err := clients[1].Wait(ctx, rpc.WaitParams{ID: id, Timeout: rpc.Duration(60 * time.Second)})
		if err != nil {
			t.Fatalf("wait for job %d: %v", id, err)
		}
		if j.State != rpc.StateSucceeded {
			t.Errorf("job %d ended %s: %s", id, j.State, j.Error)
		}
	}
	info, err := clients[0].Info(ctx)
	if err != nil {
		t.Fatal(err)
	}
	last := info.LastSeq
	ea := watchers[0].upTo(t, last, 20*time.Second)
	eb := watchers[1].upTo(t, last, 20*time.Second)
	for i := range last {
		if ea[i].Seq != i+1 || eb[i].Seq != i+1 || ea[i].Type != eb[i].Type || ea[i].Job != eb[i].Job {
			t.Fatalf("the watchers differ or skip at seq %d", i+1)
		}
	}
	t.Logf("%d jobs acknowledged across the restart, %d events seen alike by both watchers", len(all), last)
}

// TestClusterAnyDaemon: what one daemon is told holds on the others. A
// queue limit set through one holds across both; a template put through one
// runs through the other; a job failed through one is retried, removed and
// pruned through the other.
func TestClusterAnyDaemon(t *testing.T) {
	dsn := pgServers.DB(t)
	a := newNode(t, dsn, "a", "--max-parallel", "4")
	b := newNode(t, dsn, "b", "--max-parallel", "4")
	ctx := tctx(t)
	ca, cb := a.client(), b.client()

	one := 1
	if _, err := ca.QueueSet(ctx, rpc.QueueSetParams{Name: "single", Parallel: &one}); err != nil {
		t.Fatal(err)
	}
	var ids []int64
	for i := range 6 {
		c := ca
		if i%2 == 1 {
			c = cb
		}
		spec := rpc.Spec{Name: fmt.Sprint("one-at-a-time ", i), Queue: "single", Steps: []rpc.Step{{Shell: &rpc.ShellStep{Script: "sleep 0.2"}}}}
		res, err := c.Submit(ctx, rpc.SubmitParams{Job: &spec})
		if err != nil {
			t.Fatal(err)
		}
		ids = append(ids, res.Job.ID)
	}
	nodes := map[string]bool{}
	for _, id := range ids {
		j, err := cb.Wait(ctx, rpc.WaitParams{ID: id, Timeout: rpc.Duration(60 * time.Second)})
		if err != nil || j.State != rpc.StateSucceeded {
			t.Fatalf("job %d: %v %v", id, j, err)
		}
		nodes[j.Node] = true
	}
	running := 0
	for _, ev := range replayEvents(ctx, t, ca) {
		if !slices.Contains(ids, ev.Job) {
			continue
		}
		switch ev.Type {
		case rpc.EventStarted:
			running++
			if running > 1 {
				t.Fatalf("seq %d: two jobs of a queue limited to 1 ran at once", ev.Seq)
			}
		case rpc.EventSucceeded, rpc.EventFailed, rpc.EventCancelled, rpc.EventInterrupted:
			running--
		}
	}
	t.Logf("the limited queue's jobs ran on %d daemons, one at a time", len(nodes))
	qs, err := cb.QueueList(ctx)
	if err != nil {
		t.Fatal(err)
	}
	for _, q := range qs.Queues {
		if q.Name == "single" && (q.Parallel == nil || *q.Parallel != 1) {
			t.Fatalf("daemon b sees queue single as %+v", q)
		}
	}

	if _, err := ca.TemplatePut(ctx, rpc.TemplatePutParams{Name: "greet", Spec: json.RawMessage(`{"steps":[{"shell":{"script":"echo hello $SPOOL_PARAM_WHO"}}]}`),
		Params: map[string]rpc.TemplateParam{"who": {Required: true}}}); err != nil {
		t.Fatal(err)
	}
	j, err := cb.TemplateRun(ctx, rpc.TemplateRunParams{Name: "greet", Params: map[string]string{"who": "cluster"}})
	if err != nil {
		t.Fatalf("run through b a template put through a: %v", err)
	}
	if j, err = ca.Wait(ctx, rpc.WaitParams{ID: j.ID, Timeout: rpc.Duration(30 * time.Second)}); err != nil || j.State != rpc.StateSucceeded {
		t.Fatalf("template job: %v %v", j, err)
	}
	logs, err := ca.Logs(ctx, rpc.LogsParams{ID: j.ID})
	if err != nil || logs.Data != "hello cluster\n" {
		t.Fatalf("the template job's log through a: %+v %v", logs, err)
	}
	for name, c := range map[string]*client.Client{"a": ca, "b": cb} {
		got, err := c.Get(ctx, rpc.GetParams{ID: j.ID})
		if err != nil {
			t.Fatal(err)
		}
		if tail := got.Steps[0].OutputTail; tail == nil || *tail != "hello cluster\n" {
			t.Fatalf("the output tail through %s (the job ran on %s): %v", name, got.Node, tail)
		}
	}

	spec := rpc.Spec{Name: "fails", Steps: []rpc.Step{{Shell: &rpc.ShellStep{Script: "exit 3"}}}}
	res, err := ca.Submit(ctx, rpc.SubmitParams{Job: &spec})
	if err != nil {
		t.Fatal(err)
	}
	if j, err = cb.Wait(ctx, rpc.WaitParams{ID: res.Job.ID, Timeout: rpc.Duration(30 * time.Second)}); err != nil || j.State != rpc.StateFailed {
		t.Fatalf("failing job: %v %v", j, err)
	}
	retry, err := cb.Retry(ctx, rpc.RetryParams{ID: res.Job.ID})
	if err != nil || retry.RetryOf == nil || *retry.RetryOf != res.Job.ID {
		t.Fatalf("retry through b: %v %v", retry, err)
	}
	if _, err = ca.Wait(ctx, rpc.WaitParams{ID: retry.ID, Timeout: rpc.Duration(30 * time.Second)}); err != nil {
		t.Fatal(err)
	}
	rm, err := cb.Remove(ctx, rpc.RemoveParams{IDs: []int64{res.Job.ID}})
	if err != nil || rm.Removed != 1 {
		t.Fatalf("remove through b: %v %v", rm, err)
	}
	if _, err := ca.Get(ctx, rpc.GetParams{ID: res.Job.ID}); protoErr(err) == nil || protoErr(err).Code != rpc.CodeNotFound {
		t.Fatalf("a still has the job b removed: %v", err)
	}
	pr, err := ca.Prune(ctx, rpc.PruneParams{States: []rpc.State{rpc.StateFailed}})
	if err != nil || pr.Removed != 1 {
		t.Fatalf("prune through a (the retry failed too): %v %v", pr, err)
	}
}

// TestClusterLiveProgress: a watcher of one daemon sees the progress of a
// step another daemon runs, relayed live through the database.
func TestClusterLiveProgress(t *testing.T) {
	dsn := pgServers.DB(t)
	a := newNode(t, dsn, "a", "--max-parallel", "2")
	ctx := tctx(t)
	ca := a.client()
	spec := rpc.Spec{Name: "counting", Steps: []rpc.Step{{Shell: &rpc.ShellStep{Script: `for i in 1 2 3 4 5 6 7 8; do echo "$i/8 counting" >&$SPOOL_PROGRESS_FD; sleep 0.3; done`}}}}
	res, err := ca.Submit(ctx, rpc.SubmitParams{Job: &spec})
	if err != nil {
		t.Fatal(err)
	}
	waitRunning(t, ca, res.Job.ID)
	b := newNode(t, dsn, "b", "--max-parallel", "2")
	w, err := b.client().Watch(ctx, rpc.WatchParams{Jobs: []int64{res.Job.ID}})
	if err != nil {
		t.Fatal(err)
	}
	defer w.Close()
	var progress []string
	for {
		ev, err := w.Next(ctx)
		if err != nil {
			t.Fatalf("watch through b: %v (progress seen: %v)", err, progress)
		}
		if ev.Type == rpc.EventProgress && ev.Progress != nil {
			progress = append(progress, ev.Progress.Message)
		}
		if ev.Type == rpc.EventSucceeded || ev.Type == rpc.EventFailed {
			break
		}
	}
	if len(progress) < 3 {
		t.Fatalf("a watcher of b saw %d progress events of a step a ran: %v", len(progress), progress)
	}
	t.Logf("a watcher of b saw %d progress events of a step a ran", len(progress))
}

// TestClusterRescuedJobKeepsResults: a job whose second step is rescued on
// another daemon finds there, in SPOOL_RESULTS_DIR, the result of its first
// step, which ran on the daemon that died.
func TestClusterRescuedJobKeepsResults(t *testing.T) {
	dsn := pgServers.DB(t)
	const lease = 3 * time.Second
	a := newNode(t, dsn, "a", "--lease", lease.String())
	ctx := tctx(t)
	dir := shortDir(t)
	seen := filepath.Join(dir, "seen")
	spec := rpc.Spec{Name: "two steps", Steps: []rpc.Step{
		{Name: "first", Shell: &rpc.ShellStep{Script: "echo hello from the first step"}},
		{Name: "second", Shell: &rpc.ShellStep{Script: fmt.Sprintf(`set -e; r=$(cat "$SPOOL_RESULTS_DIR/first"); echo "$r" >> %s; sleep 4`, seen)}},
	}}
	res, err := a.client().Submit(ctx, rpc.SubmitParams{Job: &spec})
	if err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(20 * time.Second)
	for {
		if b, err := os.ReadFile(seen); err == nil && len(b) > 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("the second step did not start on a")
		}
		time.Sleep(20 * time.Millisecond)
	}
	b := newNode(t, dsn, "b", "--lease", lease.String())
	a.kill9()
	j, err := b.client().Wait(ctx, rpc.WaitParams{ID: res.Job.ID, Timeout: rpc.Duration(30 * time.Second)})
	if err != nil {
		t.Fatal(err)
	}
	if j.State != rpc.StateSucceeded || j.Node != "b" {
		t.Fatalf("the rescued job ended %s on %q: %s", j.State, j.Node, j.Error)
	}
	lines := readLines(t, seen)
	if len(lines) != 2 || lines[0] != lines[1] || lines[0] == "" {
		t.Fatalf("the second step read %q on a, then on b", lines)
	}
}
