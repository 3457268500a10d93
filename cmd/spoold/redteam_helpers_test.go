package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"spool/client"
	"spool/rpc"
)

// The red-team tests find the processes of their jobs through /proc: every
// daemon a test starts carries a marker in its environment, which every process
// of every step inherits (with SPOOL_JOB_ID and SPOOL_STEP), so that a test sees
// its own processes, and only those, also the ones that escaped their group.

// redteamMarkVar names the marker variable.
const redteamMarkVar = "SPOOL_REDTEAM_MARK"

// markTest puts a marker unique to this test into the environment that the
// daemons it starts inherit, and kills whatever process still carries it when
// the test ends, passed or failed. Call it before newDaemon.
func markTest(t *testing.T) string {
	t.Helper()
	buildBins(t) // the build's processes do not carry the marker
	mark := fmt.Sprintf("%s.%d.%d", strings.ReplaceAll(t.Name(), "/", "."), os.Getpid(), time.Now().UnixNano())
	t.Setenv(redteamMarkVar, mark)
	t.Cleanup(func() { killMarked(t, mark) })
	return mark
}

// proc is one process seen in /proc.
type proc struct {
	pid, ppid int
	state     byte
	start     uint64 // start time, clock ticks after boot
	comm      string
	env       map[string]string
}

// id names the process for people.
func (p proc) String() string {
	return fmt.Sprintf("%d(%s %c job %s step %s)", p.pid, p.comm, p.state, p.env["SPOOL_JOB_ID"], p.env["SPOOL_STEP"])
}

// procKey names a process across time: a pid with its start time.
type procKey struct {
	pid   int
	start uint64
}

func (p proc) key() procKey { return procKey{p.pid, p.start} }

// readStat reads the state, parent and start time of pid.
func readStat(pid int) (p proc, ok bool) {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return p, false
	}
	open, end := bytes.IndexByte(b, '('), bytes.LastIndexByte(b, ')')
	if open < 0 || end < open {
		return p, false
	}
	f := strings.Fields(string(b[end+1:]))
	if len(f) < 20 {
		return p, false
	}
	p.pid = pid
	p.comm = string(b[open+1 : end])
	p.state = f[0][0]
	p.ppid, _ = strconv.Atoi(f[1])
	p.start, _ = strconv.ParseUint(f[19], 10, 64)
	return p, true
}

// readEnviron reads the environment pid started with (empty for a zombie).
func readEnviron(pid int) map[string]string {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/environ")
	if err != nil {
		return nil
	}
	env := map[string]string{}
	for _, kv := range bytes.Split(b, []byte{0}) {
		if k, v, ok := strings.Cut(string(kv), "="); ok {
			env[k] = v
		}
	}
	return env
}

// markedProcs lists the live processes that carry mark, the test process aside.
func markedProcs(mark string) []proc {
	ents, err := os.ReadDir("/proc")
	if err != nil {
		return nil
	}
	self := os.Getpid()
	var out []proc
	for _, e := range ents {
		pid, err := strconv.Atoi(e.Name())
		if err != nil || pid == self {
			continue
		}
		env := readEnviron(pid)
		if env[redteamMarkVar] != mark {
			continue
		}
		p, ok := readStat(pid)
		if !ok || p.state == 'Z' || p.state == 'X' {
			continue
		}
		p.env = env
		out = append(out, p)
	}
	return out
}

// jobProcs lists the live processes of the steps of job id (spoold aside: it
// carries no SPOOL_JOB_ID).
func jobProcs(mark string, id int64) []proc {
	want := strconv.FormatInt(id, 10)
	var out []proc
	for _, p := range markedProcs(mark) {
		if p.env["SPOOL_JOB_ID"] == want {
			out = append(out, p)
		}
	}
	return out
}

// stepProcs lists the live processes of any step.
func stepProcs(mark string) []proc {
	var out []proc
	for _, p := range markedProcs(mark) {
		if p.env["SPOOL_JOB_ID"] != "" {
			out = append(out, p)
		}
	}
	return out
}

// killMarked kills every process that carries mark. Each is opened as a pidfd
// and its marker read again before the signal, so that a pid reused meanwhile by
// another process is never signalled.
func killMarked(t *testing.T, mark string) {
	t.Helper()
	var killed []string
	for round := 0; round < 50; round++ {
		ps := markedProcs(mark)
		if len(ps) == 0 {
			break
		}
		for _, p := range ps {
			fd, err := unix.PidfdOpen(p.pid, 0)
			if err != nil {
				continue
			}
			if readEnviron(p.pid)[redteamMarkVar] == mark {
				if unix.PidfdSendSignal(fd, unix.SIGKILL, nil, 0) == nil && round == 0 {
					killed = append(killed, p.String())
				}
			}
			unix.Close(fd)
		}
		time.Sleep(20 * time.Millisecond)
	}
	if len(killed) > 0 {
		t.Logf("cleanup killed %d processes of this test left alive: %s", len(killed), strings.Join(killed, ", "))
	}
}

// zombieChildren lists the children of pid that are zombies.
func zombieChildren(pid int) []proc {
	tasks, _ := filepath.Glob("/proc/" + strconv.Itoa(pid) + "/task/*/children")
	var out []proc
	for _, f := range tasks {
		b, err := os.ReadFile(f)
		if err != nil {
			continue
		}
		for _, s := range strings.Fields(string(b)) {
			c, err := strconv.Atoi(s)
			if err != nil {
				continue
			}
			if p, ok := readStat(c); ok && p.state == 'Z' {
				out = append(out, p)
			}
		}
	}
	return out
}

// pollProcs polls list until it returns nothing or until the deadline; it
// returns what was left at the deadline.
func pollProcs(within time.Duration, list func() []proc) []proc {
	deadline := time.Now().Add(within)
	for {
		left := list()
		if len(left) == 0 || time.Now().After(deadline) {
			return left
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// procNames formats processes for a failure message.
func procNames(ps []proc) string {
	s := make([]string, len(ps))
	for i, p := range ps {
		s[i] = p.String()
	}
	return strings.Join(s, ", ")
}

// goneWithin is how long the processes of a stopped step may live: the kill
// grace of the red-team daemons (1s) plus a margin for a loaded machine.
const goneWithin = 1*time.Second + 20*time.Second

// checkNoZombies fails the test when a child of the daemon stays a zombie.
func checkNoZombies(t *testing.T, p *daemonProc) {
	t.Helper()
	if z := pollProcs(goneWithin, func() []proc { return zombieChildren(p.cmd.Process.Pid) }); len(z) > 0 {
		t.Errorf("zombie children of spoold that were never reaped: %s", procNames(z))
	}
}

// containmentModes runs fn in a subtest for each mode: "default" (no
// --containment flag: whatever the daemon picks), then "cgroup" and "group". A
// mode the daemon does not know, or refuses on this machine, is skipped with
// the daemon's reason. fn gets the flags that select the mode.
func containmentModes(t *testing.T, modes []string, fn func(t *testing.T, mode string, flags []string)) {
	for _, mode := range modes {
		t.Run(mode, func(t *testing.T) {
			var flags []string
			if mode != "default" {
				flags = []string{"--containment", mode}
				if why := containmentRefused(t, flags); why != "" {
					t.Skipf("containment %s is not available: %s", mode, why)
				}
			}
			fn(t, mode, flags)
		})
	}
}

// containmentRefused starts a throwaway daemon with flags and returns why it
// would not start ("" when it did).
func containmentRefused(t *testing.T, flags []string) string {
	t.Helper()
	b := buildBins(t)
	dir := shortDir(t)
	socket := filepath.Join(dir, "run", "s.sock")
	cmd := exec.Command(b.spoold, append([]string{"--socket", socket, "--state-dir", filepath.Join(dir, "state")}, flags...)...)
	var out syncBuffer
	cmd.Stdout, cmd.Stderr = &out, &out
	cmd.Env = append(os.Environ(), "HOME="+dir)
	if err := cmd.Start(); err != nil {
		t.Fatalf("start spoold: %v", err)
	}
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	deadline := time.Now().Add(30 * time.Second)
	for time.Now().Before(deadline) {
		select {
		case err := <-exited:
			line, _, _ := strings.Cut(strings.TrimSpace(out.String()), "\n")
			return fmt.Sprintf("spoold %s exited at start (%v): %s", strings.Join(flags, " "), err, line)
		default:
		}
		if c, err := client.Dial(context.Background(), socket); err == nil {
			_, ierr := c.Info(context.Background())
			c.Close()
			if ierr == nil {
				_ = cmd.Process.Signal(syscall.SIGTERM)
				<-exited
				return ""
			}
		}
		time.Sleep(20 * time.Millisecond)
	}
	_ = cmd.Process.Kill()
	<-exited
	t.Fatalf("spoold %s neither started nor exited:\n%s", strings.Join(flags, " "), out.String())
	return ""
}

// infoContainment is daemon.info's "containment", read from the wire so that the
// test builds before rpc.Info has the field ("" when the daemon does not say).
// The daemon answers on its socket while its engine still starts and says ""
// until it has picked the containment (TestRedTeamInfoContainmentAtStart pins
// that down): this asks again for a while rather than fail every test that
// starts a daemon on it.
func infoContainment(t *testing.T, p *daemonProc) string {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	conn := p.raw()
	for id := 1; ; id++ {
		m := conn.call(id, "daemon.info", `{}`)
		if m.Error != nil {
			t.Fatalf("daemon.info: %v", m.Error)
		}
		var info struct {
			Containment string `json:"containment"`
		}
		if err := json.Unmarshal(m.Result, &info); err != nil {
			t.Fatalf("daemon.info: %v", err)
		}
		if info.Containment != "" || time.Now().After(deadline) {
			return info.Containment
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// redteamDaemon marks the test and starts a daemon with a kill grace of 1s and
// the containment flags; in a named mode daemon.info must say that mode.
func redteamDaemon(t *testing.T, mode string, flags []string, args ...string) (*daemonProc, string) {
	t.Helper()
	mark := markTest(t)
	p := newDaemon(t, append(append([]string{"--kill-grace", "1s"}, flags...), args...)...)
	if mode != "default" {
		if got := infoContainment(t, p); got != mode {
			t.Fatalf("started with --containment %s, daemon.info says containment %q", mode, got)
		}
	}
	return p, mark
}

// rounds is SPOOL_CRASH_ROUNDS (set by `make crash`), or def.
func rounds(t *testing.T, def int) int {
	t.Helper()
	return int(envInt(t, "SPOOL_CRASH_ROUNDS", int64(def)))
}

// protoErr is the protocol error the daemon answered, or nil when err is none
// (a lost connection, a client-side failure).
func protoErr(err error) *rpc.Error {
	var e *rpc.Error
	if errors.As(err, &e) {
		return e
	}
	return nil
}

// readLines reads a file of lines (none when it does not exist).
func readLines(t *testing.T, path string) []string {
	t.Helper()
	b, err := os.ReadFile(path)
	if errors.Is(err, os.ErrNotExist) {
		return nil
	}
	if err != nil {
		t.Fatalf("read %s: %v", path, err)
	}
	var out []string
	for _, l := range strings.Split(string(b), "\n") {
		if l = strings.TrimSpace(l); l != "" {
			out = append(out, l)
		}
	}
	return out
}

// appendLine appends one line to path with a single write (O_APPEND: lines of
// concurrent writers do not interleave).
func appendLine(path, line string) error {
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_APPEND|os.O_CREATE, 0o644)
	if err != nil {
		return err
	}
	_, err = f.WriteString(line + "\n")
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	return err
}

// replayEvents reads the stored event log from seq 0 to the watch's snapshot,
// failing the test on a gap or a repeat, and returns it.
func replayEvents(ctx context.Context, t *testing.T, c *client.Client) []rpc.Event {
	t.Helper()
	w, err := c.Watch(ctx, rpc.WatchParams{Since: rpc.Since(0)})
	if err != nil {
		t.Fatalf("watch since 0: %v", err)
	}
	defer w.Close()
	var evs []rpc.Event
	for int64(len(evs)) < w.Result().Seq {
		ev, err := w.Next(ctx)
		if err != nil {
			t.Fatalf("replay the event log after seq %d of %d: %v", len(evs), w.Result().Seq, err)
		}
		if ev.Seq == 0 {
			continue
		}
		if ev.Seq != int64(len(evs))+1 {
			t.Fatalf("event seq %d follows %d: a gap or a repeat", ev.Seq, len(evs))
		}
		evs = append(evs, *ev)
	}
	return evs
}

// waitFinal waits until every job in ids is final and returns them.
func waitFinal(ctx context.Context, t *testing.T, c *client.Client, ids []int64) map[int64]*rpc.Job {
	t.Helper()
	out := map[int64]*rpc.Job{}
	for _, id := range ids {
		j, err := c.Wait(ctx, rpc.WaitParams{ID: id, Timeout: rpc.Duration(2 * time.Minute)})
		if err != nil {
			t.Fatalf("wait for job %d: %v", id, err)
		}
		if !j.Final() {
			t.Fatalf("job %d is still %s after 2 minutes", id, j.State)
		}
		out[id] = j
	}
	return out
}

// violations collects the findings of concurrent checkers.
type violations struct {
	mu   sync.Mutex
	list []string
}

func (v *violations) add(format string, args ...any) {
	v.mu.Lock()
	defer v.mu.Unlock()
	if len(v.list) < 200 {
		v.list = append(v.list, fmt.Sprintf(format, args...))
	}
}

// report fails the test with every finding.
func (v *violations) report(t *testing.T, what string) {
	t.Helper()
	v.mu.Lock()
	defer v.mu.Unlock()
	if len(v.list) > 0 {
		slices.Sort(v.list)
		t.Errorf("%s: %d findings:\n%s", what, len(v.list), strings.Join(v.list, "\n"))
	}
}

// runSampler polls /proc for the processes of steps while it runs, and groups
// them by step (job id and step name) and by run: runOf names the run a process
// belongs to ("" to leave it out). Two runs of one step alive in one sample is
// a double run.
type runSampler struct {
	mark     string
	runOf    func(proc) string
	v        violations
	stop     chan struct{}
	done     chan struct{}
	stopOnce sync.Once
	samples  atomic.Int64
	seen     map[string]bool // double runs already reported
}

// startSampler starts sampling until end, or until the test ends.
func startSampler(t *testing.T, mark string, runOf func(proc) string) *runSampler {
	s := &runSampler{mark: mark, runOf: runOf, stop: make(chan struct{}), done: make(chan struct{}), seen: map[string]bool{}}
	go func() {
		defer close(s.done)
		for {
			select {
			case <-s.stop:
				return
			default:
			}
			s.sample()
			time.Sleep(2 * time.Millisecond)
		}
	}()
	t.Cleanup(s.halt)
	return s
}

func (s *runSampler) halt() {
	s.stopOnce.Do(func() { close(s.stop) })
	<-s.done
}

func (s *runSampler) sample() {
	s.samples.Add(1)
	runs := map[string]map[string][]proc{}
	for _, p := range stepProcs(s.mark) {
		run := s.runOf(p)
		if run == "" {
			continue
		}
		step := "job " + p.env["SPOOL_JOB_ID"] + " step " + p.env["SPOOL_STEP"]
		if runs[step] == nil {
			runs[step] = map[string][]proc{}
		}
		runs[step][run] = append(runs[step][run], p)
	}
	for step, rs := range runs {
		if len(rs) < 2 {
			continue
		}
		names := slices.Sorted(maps.Keys(rs))
		key := step + ": " + strings.Join(names, " ")
		if s.seen[key] {
			continue
		}
		s.seen[key] = true
		var desc []string
		for _, n := range names {
			desc = append(desc, fmt.Sprintf("run %s: %s", n, procNames(rs[n])))
		}
		s.v.add("%s ran twice at once: %s", step, strings.Join(desc, "; "))
	}
}

// check fails the test with the double runs seen since the last check.
func (s *runSampler) check(t *testing.T) {
	t.Helper()
	s.v.report(t, "no step may run twice at once")
	s.v.mu.Lock()
	s.v.list = nil
	s.v.mu.Unlock()
}

// end stops the sampler, checks, and returns how many samples it took.
func (s *runSampler) end(t *testing.T) int64 {
	t.Helper()
	s.halt()
	s.check(t)
	return s.samples.Load()
}

// longCtx is a context for a test of n rounds of up to a minute each.
func longCtx(t *testing.T, n int) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second+time.Duration(n)*time.Minute)
	t.Cleanup(cancel)
	return ctx
}

// jsonString decodes a JSON string value ("" for null or anything else).
func jsonString(raw json.RawMessage) string {
	var s string
	_ = json.Unmarshal(raw, &s)
	return s
}

// cmdline is the command line of pid, its arguments joined by spaces.
func cmdline(pid int) string {
	b, _ := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/cmdline")
	return strings.TrimSpace(strings.ReplaceAll(string(b), "\x00", " "))
}
