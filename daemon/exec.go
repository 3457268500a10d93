package daemon

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"spool/rpc"
)

// execute runs one attempt of step i and reports how it ended. start stores the
// step's start: a process step calls it once its process runs, with what reaches
// its processes (sp); other steps before they begin. A failure to store ends the
// attempt with storeErr. exited, if not nil, is called once a process step's main
// process is gone.
func (d *Daemon) execute(ctx context.Context, js *jobState, rec *rpc.Record, i int, sp *stepProcs, start func([]rpc.Proc) error, exited func()) outcome {
	spec := rec.Spec.Steps[i]
	// The attempt's logs reach the store, all of them before it returns
	// (logship.go).
	if sh := d.shipLogs(ctx, rec, i); sh != nil {
		defer sh.finish()
	}
	live := &liveState{d: d, job: rec.ID, step: i}
	d.mu.Lock()
	js.live = live
	d.mu.Unlock()
	defer func() {
		live.flush()
		d.mu.Lock()
		js.live = nil
		d.mu.Unlock()
	}()
	switch {
	case spec.Exec != nil:
		e := spec.Exec
		return d.runProcess(ctx, rec, i, e.Argv, e.Dir, e.Env, e.Stdin, live, sp, start, exited)
	case spec.Shell != nil:
		sh := spec.Shell
		return d.runProcess(ctx, rec, i, []string{"/bin/sh", "-c", sh.Script}, sh.Dir, sh.Env, sh.Stdin, live, sp, start, exited)
	}
	if err := start(nil); err != nil {
		return outcome{storeErr: err}
	}
	switch {
	case spec.Sleep != nil:
		return d.runSleep(ctx, js, rec, i, live)
	case spec.HTTP != nil:
		return d.runHTTP(ctx, rec, i, live)
	}
	return outcome{err: "step has no kind"}
}

// logWriter appends a step's output to its log file, up to a cap, and passes each
// chunk to the watchers. The file (and the job's log folder) is made at the first
// write: a step that prints nothing leaves no log, which reads as an empty one.
type logWriter struct {
	mu      sync.Mutex
	d       *Daemon
	id      int64
	step    int
	f       *os.File
	err     error // the log cannot be written: output is lost
	size    int64
	max     int64
	dropped int64
	live    *liveState
	path    string // the file: the merged log, or the stderr log
	prefix  []byte // written before the first bytes, then dropped
}

func (d *Daemon) newLog(id int64, step int, live *liveState) *logWriter {
	return &logWriter{d: d, id: id, step: step, max: d.cfg.MaxLog, live: live, path: d.logPath(id, step)}
}

// open opens the log for appending, making its folder if need be; w.mu held.
func (w *logWriter) open() error {
	path := w.path
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_APPEND, 0o600)
	if errors.Is(err, fs.ErrNotExist) {
		if err := os.MkdirAll(w.d.jobLogDir(w.id), 0o700); err != nil {
			return fmt.Errorf("create log folder: %w", err)
		}
		f, err = os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_APPEND, 0o600)
	}
	if err != nil {
		return fmt.Errorf("open step log: %w", err)
	}
	fi, err := f.Stat()
	if err != nil {
		f.Close()
		return fmt.Errorf("stat step log: %w", err)
	}
	w.f, w.size = f, fi.Size()
	return nil
}

// fail records that the log cannot be written; w.mu held.
func (w *logWriter) fail(err error) {
	w.err = err
	w.d.log.Error("the rest of a step's output is lost", "id", w.id, "step", w.step, "err", err)
}

// Write appends p to the log. Output that cannot be written is dropped, never
// refused: the process must not block on a pipe that nobody reads.
func (w *logWriter) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.prefix != nil && len(p) > 0 {
		prefix := w.prefix
		w.prefix = nil
		w.write(prefix)
	}
	w.write(p)
	return len(p), nil
}

// write appends p to the log, up to the cap; w.mu held.
func (w *logWriter) write(p []byte) {
	if w.err != nil {
		return
	}
	if w.size >= w.max {
		w.dropped += int64(len(p))
		return
	}
	if w.f == nil {
		if err := w.open(); err != nil {
			w.fail(err)
			return
		}
	}
	if room := w.max - w.size; int64(len(p)) > room {
		w.dropped += int64(len(p)) - room
		p = p[:room]
	}
	off := w.size
	m, err := w.f.Write(p)
	w.size += int64(m)
	if m > 0 && w.live != nil {
		w.live.output(off, p[:m])
	}
	if err != nil {
		w.fail(fmt.Errorf("write step log: %w", err))
	}
}

// Close writes the marker of dropped output, if any, and closes the file.
func (w *logWriter) Close() error {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.f == nil {
		return nil
	}
	if w.dropped > 0 {
		marker := []byte(fmt.Sprintf("\n[spool: log limit of %d bytes reached, %d bytes dropped]\n", w.max, w.dropped))
		off := w.size
		m, _ := w.f.Write(marker)
		w.size += int64(m)
		if m > 0 && w.live != nil {
			w.live.output(off, marker[:m])
		}
	}
	return w.f.Close()
}

// tailBuffer keeps the last max bytes written to it.
type tailBuffer struct {
	mu        sync.Mutex
	buf       []byte
	max       int
	truncated bool
}

func (t *tailBuffer) Write(p []byte) (int, error) {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.buf = append(t.buf, p...)
	if len(t.buf) > t.max {
		t.truncated = true
		t.buf = append(t.buf[:0], t.buf[len(t.buf)-t.max:]...)
	}
	return len(p), nil
}

func (t *tailBuffer) String() (string, bool) {
	t.mu.Lock()
	defer t.mu.Unlock()
	return string(t.buf), t.truncated
}

// baseEnv is the environment every process starts from: the daemon's, without the
// variables that systemd meant for the daemon alone, each name once (the last
// value wins, in the place of the first).
func baseEnv(environ []string) []string {
	at := map[string]int{}
	var env []string
	for _, kv := range environ {
		k, _, ok := strings.Cut(kv, "=")
		if !ok || k == "LISTEN_PID" || k == "LISTEN_FDS" || k == "LISTEN_FDNAMES" || k == "NOTIFY_SOCKET" || k == "WATCHDOG_USEC" || k == "WATCHDOG_PID" {
			continue
		}
		if i, seen := at[k]; seen {
			env[i] = kv
			continue
		}
		at[k] = len(env)
		env = append(env, kv)
	}
	return env
}

// stepEnv is the environment of a process of step i: the base environment, then
// the job's env, the step's env, the template's parameters and spool's variables,
// a later one replacing an earlier one of the same name in its place.
func (d *Daemon) stepEnv(rec *rpc.Record, i int, stepEnv map[string]string) []string {
	var order []string
	vars := map[string]string{}
	set := func(k, v string) {
		if _, ok := vars[k]; !ok {
			order = append(order, k)
		}
		vars[k] = v
	}
	for k, v := range rec.Spec.Env {
		set(k, v)
	}
	for k, v := range stepEnv {
		set(k, v)
	}
	if rec.Template != nil {
		for k, v := range rec.Template.Params {
			set("SPOOL_PARAM_"+strings.ToUpper(k), v)
		}
	}
	set("SPOOL_JOB_ID", strconv.FormatInt(rec.ID, 10))
	set("SPOOL_STEP", rec.Spec.Steps[i].Name)
	set("SPOOL_PROGRESS_FD", "3")
	set("SPOOL_RESULTS_DIR", d.jobResultDir(rec.ID))
	env := make([]string, 0, len(d.env)+len(order))
	for _, kv := range d.env {
		k, _, _ := strings.Cut(kv, "=")
		if v, ok := vars[k]; ok {
			env = append(env, k+"="+v)
			delete(vars, k)
			continue
		}
		env = append(env, kv)
	}
	for _, k := range order {
		if v, ok := vars[k]; ok {
			env = append(env, k+"="+v)
		}
	}
	return env
}

// pathOf is the PATH of env, or the default one.
func pathOf(env []string) string {
	path := ""
	for _, kv := range env {
		if v, ok := strings.CutPrefix(kv, "PATH="); ok {
			path = v
		}
	}
	if path == "" {
		path = "/usr/local/bin:/usr/bin:/bin"
	}
	return path
}

// searchPath finds argv0 in the folders of path, as a shell would.
func searchPath(argv0, path, dir string) (string, error) {
	if strings.Contains(argv0, "/") {
		p := argv0
		if !filepath.IsAbs(p) {
			p = filepath.Join(dir, p)
		}
		return p, nil
	}
	for _, p := range filepath.SplitList(path) {
		if p == "" {
			p = "."
		}
		if !filepath.IsAbs(p) {
			p = filepath.Join(dir, p)
		}
		f := filepath.Join(p, argv0)
		if executable(f) {
			return f, nil
		}
	}
	return "", fmt.Errorf("%s: executable file not found in PATH", argv0)
}

func executable(f string) bool {
	fi, err := os.Stat(f)
	return err == nil && !fi.IsDir() && fi.Mode()&0o111 != 0
}

// pathCache remembers for a short while where lookPath found a command: jobs that
// run the same command in a burst look at its file once each, not at every folder
// of a long PATH before it. A command found is looked for again, in every folder,
// once the entry is older than pathCacheFor or the file is gone.
type pathCache struct {
	mu sync.Mutex
	m  map[pathKey]pathHit
}

type pathKey struct{ argv0, path, dir string }

type pathHit struct {
	file string
	at   time.Time
}

const (
	pathCacheFor  = time.Second
	pathCacheSize = 256
)

// lookPath finds argv0 in the PATH of env, as a shell would.
func (c *pathCache) lookPath(argv0 string, env []string, dir string) (string, error) {
	if strings.Contains(argv0, "/") {
		return searchPath(argv0, "", dir)
	}
	k := pathKey{argv0, pathOf(env), dir}
	now := time.Now()
	c.mu.Lock()
	hit, ok := c.m[k]
	c.mu.Unlock()
	if ok && now.Sub(hit.at) < pathCacheFor && executable(hit.file) {
		return hit.file, nil
	}
	f, err := searchPath(k.argv0, k.path, k.dir)
	c.mu.Lock()
	if err != nil {
		delete(c.m, k)
	} else {
		if c.m == nil || len(c.m) >= pathCacheSize {
			c.m = map[pathKey]pathHit{}
		}
		c.m[k] = pathHit{file: f, at: now}
	}
	c.mu.Unlock()
	return f, err
}

// runProcess runs argv in a process group of its own (and in the step's cgroup,
// where there is one), output to the step's log, progress lines from fd 3, until
// it exits or ctx ends (then every process of the step gets SIGTERM, and SIGKILL
// after the kill grace). What the main process leaves behind is stopped the same
// way once it exits.
func (d *Daemon) runProcess(ctx context.Context, rec *rpc.Record, i int, argv []string, dir string, env map[string]string, stdin string, live *liveState, sp *stepProcs, start func([]rpc.Proc) error, exited func()) outcome {
	if dir == "" {
		dir = rec.Spec.Dir
	}
	if dir == "" {
		dir = d.cfg.Home
	}
	if err := checkDir(dir); err != nil {
		return outcome{err: err.Error()}
	}
	penv := d.stepEnv(rec, i, env)
	path, err := d.paths.lookPath(argv[0], penv, dir)
	if err != nil {
		return outcome{err: err.Error()}
	}
	// The results of the job's finished steps, for its later steps; a folder of
	// the job's own, which no other job sees.
	if err := d.folders.make(d.jobResultDir(rec.ID)); err != nil {
		return outcome{err: err.Error()}
	}
	if err := d.restoreResults(rec, i); err != nil {
		return outcome{err: err.Error()}
	}
	if err := ctx.Err(); err != nil {
		// Stopped between its stored start and its process: none is started.
		return outcome{err: causeText(ctx), stopped: context.Cause(ctx)}
	}
	logw := d.newLog(rec.ID, i, live)
	defer logw.Close()
	marker := ""
	switch {
	case sp.again:
		marker = fmt.Sprintf("[spool: attempt %d again: the daemon stopped while it ran]\n", rec.Steps[i].Attempt)
	case rec.Steps[i].Attempt > 1:
		marker = fmt.Sprintf("[spool: attempt %d]\n", rec.Steps[i].Attempt)
	}
	if marker != "" {
		io.WriteString(logw, marker)
	}
	// Stderr also goes, alone, to a log of its own (made at its first byte),
	// written before the merged log: when a watcher sees a chunk of output, the
	// stderr log already holds what of it came from stderr.
	var errw io.Writer = logw
	if !d.cfg.NoStderrLog {
		stderrLog := d.newStderrLog(rec.ID, i, marker)
		defer stderrLog.Close()
		errw = io.MultiWriter(stderrLog, logw)
	}

	var fds [6]*os.File // stdout, stderr and progress: read end, write end
	for k := 0; k < len(fds); k += 2 {
		r, w, err := pipe()
		if err != nil {
			closeAll(fds[:k]...)
			return outcome{err: fmt.Sprintf("make pipes: %v", err)}
		}
		fds[k], fds[k+1] = r, w
	}
	outR, outW, errR, errW, progR, progW := fds[0], fds[1], fds[2], fds[3], fds[4], fds[5]
	cmd := &exec.Cmd{
		Path:       path,
		Args:       argv,
		Dir:        dir,
		Env:        penv,
		Stdout:     outW,
		Stderr:     errW,
		ExtraFiles: []*os.File{progW},
		WaitDelay:  d.cfg.KillGrace,
	}
	if stdin != "" {
		cmd.Stdin = strings.NewReader(stdin)
	}
	cgfd := -1
	if sp.cgroup != "" {
		if cgfd, err = openCgroup(sp.cgroup); err != nil {
			closeAll(fds[:]...)
			return outcome{err: err.Error()}
		}
	}
	proc, wait, err := d.spawn.start(cmd, cgfd)
	if cgfd >= 0 {
		closeFD(cgfd)
	}
	closeAll(outW, errW, progW)
	if err != nil {
		closeAll(outR, errR, progR)
		if derr := checkDir(dir); derr != nil {
			return outcome{err: derr.Error()}
		}
		return outcome{err: fmt.Sprintf("start %s: %v", argv[0], err)}
	}
	proc.Step = i
	proc.Cgroup = sp.cgroup
	sp.pgid = proc.PGID

	result := &tailBuffer{max: maxResult}
	// Each reader says when it is done: the step ends once all three are.
	drained := make(chan struct{}, 3)
	go func() { _, _ = io.Copy(io.MultiWriter(logw, result), outR); drained <- struct{}{} }()
	go func() { _, _ = io.Copy(errw, errR); drained <- struct{}{} }()
	go func() { readProgress(progR, live); drained <- struct{}{} }()

	// The process runs: store the step's start with what reaches its processes
	// (its cgroup; its group, pid and start time), so that a daemon that starts
	// after a crash can find and kill what is left of it. The commit and the
	// process run side by side.
	startDone := make(chan error, 1)
	go func() { startDone <- start([]rpc.Proc{proc}) }()
	waited := make(chan error, 1)
	go func() { waited <- wait() }()
	var werr, recErr error
	var stopped error
	exitedNow := false
	for !exitedNow {
		select {
		case recErr = <-startDone:
			startDone = nil
			if recErr != nil {
				d.log.Error("store process", "id", rec.ID, "err", recErr)
				d.signalStep(sp, syscall.SIGKILL)
			}
		case werr = <-waited:
			exitedNow = true
		case <-ctx.Done():
			stopped = context.Cause(ctx)
			werr = d.stopProcs(sp, waited, d.killGrace(stopped))
			exitedNow = true
		}
	}
	if exited != nil {
		exited()
	}
	if startDone != nil {
		recErr = <-startDone
	}
	// The main process is gone: the rest of the step's processes get SIGTERM,
	// then SIGKILL (at once when the job's lease is lost, even later).
	reaped := d.stopStepProcs(sp, d.killGrace(context.Cause(ctx)), sp.hurry)
	// The readers end at the pipes' end, once no process holds them.
	t := time.NewTimer(200 * time.Millisecond)
	for left := 3; left > 0; left-- {
		select {
		case <-drained:
		case <-t.C:
			// A process left behind still holds the pipes: stop reading.
			closeAll(outR, errR, progR)
			<-drained
		}
	}
	t.Stop()
	closeAll(outR, errR, progR)

	out := outcome{stopped: stopped, reaped: reaped}
	if recErr != nil {
		out.storeErr = fmt.Errorf("store the started process: %w", recErr)
		return out
	}
	ps := cmd.ProcessState
	if ps != nil {
		if ws, ok := ps.Sys().(syscall.WaitStatus); ok && ws.Signaled() {
			name := signalName(ws.Signal())
			out.signal = &name
			out.err = "killed by " + name
		} else if ps.Exited() {
			code := ps.ExitCode()
			out.exitCode = &code
			if code != 0 {
				out.err = fmt.Sprintf("exit status %d", code)
			}
		}
	} else if werr != nil {
		out.err = werr.Error()
	}
	if out.exitCode != nil && *out.exitCode == 0 && out.signal == nil {
		text, trunc := result.String()
		res, t, err := makeResult(rec.Spec.Steps[i].Result, text, trunc)
		if err != nil {
			out.err = err.Error()
			return out
		}
		out.ok, out.result, out.resultText, out.truncated = true, res, t, trunc
	}
	return out
}

// checkDir says, naming the folder, why a step cannot run in dir.
func checkDir(dir string) error {
	fi, err := os.Stat(dir)
	switch {
	case errors.Is(err, fs.ErrNotExist):
		return fmt.Errorf("working folder %s does not exist", dir)
	case err != nil:
		return fmt.Errorf("working folder %s: %v", dir, err)
	case !fi.IsDir():
		return fmt.Errorf("working folder %s is not a folder", dir)
	}
	return nil
}

// openDevNull opens the null device once for the daemon's life, blocking and
// outside the poller, so that each process takes it as stdin with no system call
// of its own (os/exec would open it anew for each).
func openDevNull() (*os.File, error) {
	fd, err := syscall.Open(os.DevNull, syscall.O_RDONLY|syscall.O_CLOEXEC, 0)
	if err != nil {
		return nil, fmt.Errorf("open %s: %w", os.DevNull, err)
	}
	return os.NewFile(uintptr(fd), os.DevNull), nil
}

func closeFD(fd int) { _ = syscall.Close(fd) }

func closeAll(files ...*os.File) {
	for _, f := range files {
		if f != nil {
			f.Close()
		}
	}
}

// stopProcs stops a step on cancel, timeout or the daemon's stop: SIGTERM to
// every process of the step, SIGKILL to those left after grace (at once when
// grace is 0). It returns the main process's wait result once no process of the
// step is left, so that the outcome is told only when the step is over.
func (d *Daemon) stopProcs(sp *stepProcs, waited <-chan error, grace time.Duration) error {
	d.endPause(sp) // a paused step is let go first, to get its SIGTERM
	deadline := time.Now().Add(grace)
	var err error
	if grace <= 0 {
		d.signalStep(sp, syscall.SIGKILL)
		err = <-waited
	} else {
		d.signalStep(sp, syscall.SIGTERM)
		t := time.NewTimer(grace)
		select {
		case err = <-waited:
		case <-t.C:
			d.signalStep(sp, syscall.SIGKILL)
			err = <-waited
		}
		t.Stop()
	}
	d.endStepProcs(sp, deadline, nil)
	return err
}

// killGrace is the time a step's processes get between SIGTERM and SIGKILL
// when stopped for cause: none when the daemon's lease is lost (another
// daemon may start the step again soon), Config.KillGrace otherwise.
func (d *Daemon) killGrace(cause error) time.Duration {
	if errors.Is(cause, errLeaseLost) {
		return 0
	}
	return d.cfg.KillGrace
}

func killGroup(pgid int, sig syscall.Signal) {
	if pgid > 1 {
		_ = syscall.Kill(-pgid, sig)
	}
}

// groupAlive reports whether a process group has a member that is not a zombie:
// a zombie has finished, whether or not its parent has reaped it yet.
func groupAlive(pgid int) bool {
	if pgid <= 1 {
		return false
	}
	err := syscall.Kill(-pgid, 0)
	if err != nil && !errors.Is(err, syscall.EPERM) {
		return false
	}
	return groupHasLiving(pgid)
}

func signalName(s syscall.Signal) string {
	switch s {
	case syscall.SIGKILL:
		return "SIGKILL"
	case syscall.SIGTERM:
		return "SIGTERM"
	case syscall.SIGINT:
		return "SIGINT"
	case syscall.SIGHUP:
		return "SIGHUP"
	case syscall.SIGQUIT:
		return "SIGQUIT"
	case syscall.SIGSEGV:
		return "SIGSEGV"
	case syscall.SIGABRT:
		return "SIGABRT"
	case syscall.SIGPIPE:
		return "SIGPIPE"
	case syscall.SIGBUS:
		return "SIGBUS"
	case syscall.SIGFPE:
		return "SIGFPE"
	case syscall.SIGILL:
		return "SIGILL"
	case syscall.SIGUSR1:
		return "SIGUSR1"
	case syscall.SIGUSR2:
		return "SIGUSR2"
	case syscall.SIGALRM:
		return "SIGALRM"
	}
	return fmt.Sprintf("signal %d", int(s))
}

// readProgress reads progress lines until EOF. Lines longer than 4 KiB and lines
// that do not parse are ignored.
func readProgress(r io.Reader, live *liveState) {
	br := bufio.NewReaderSize(r, 4096)
	for {
		line, err := br.ReadSlice('\n')
		if errors.Is(err, bufio.ErrBufferFull) {
			// Too long: skip to the end of this line.
			for errors.Is(err, bufio.ErrBufferFull) {
				_, err = br.ReadSlice('\n')
			}
			if err != nil {
				return
			}
			continue
		}
		if len(line) > 0 && (err == nil || errors.Is(err, io.EOF)) {
			if p, ok := ParseProgress(string(line)); ok {
				live.setProgress(p)
			}
		}
		if err != nil {
			return
		}
	}
}

// ParseProgress parses one progress line: "<done>/<total> [message]",
// "<percent>% [message]" or "- message".
func ParseProgress(line string) (rpc.Progress, bool) {
	line = strings.TrimRight(line, "\r\n")
	if !utf8Valid(line) {
		return rpc.Progress{}, false
	}
	head, msg, _ := strings.Cut(line, " ")
	msg = strings.TrimSpace(msg)
	var p rpc.Progress
	switch {
	case head == "-":
		if msg == "" {
			return p, false
		}
		p.Message = msg
	case strings.HasSuffix(head, "%"):
		v, err := strconv.ParseFloat(strings.TrimSuffix(head, "%"), 64)
		if err != nil || v < 0 || v > 100 || v != v {
			return p, false
		}
		p.Percent = &v
		p.Message = msg
	case strings.Contains(head, "/"):
		a, b, _ := strings.Cut(head, "/")
		done, err1 := strconv.ParseInt(a, 10, 64)
		total, err2 := strconv.ParseInt(b, 10, 64)
		if err1 != nil || err2 != nil || done < 0 || total <= 0 {
			return p, false
		}
		p.Done, p.Total = &done, &total
		pct := float64(done) / float64(total) * 100
		if pct > 100 {
			pct = 100
		}
		p.Percent = &pct
		p.Message = msg
	default:
		return p, false
	}
	// At most 1 KiB, cut on a character boundary; a cut can end in
	// white space, which is trimmed again.
	p.Message = strings.TrimSpace(truncateText(p.Message, 1024))
	return p, true
}

func utf8Valid(s string) bool {
	return strings.ToValidUTF8(s, "\uFFFD") == s
}
