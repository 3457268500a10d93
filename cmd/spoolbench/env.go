package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"spool/client"
	"spool/rpc"
)

// bench is one run of the harness: where it works, the binaries it built, and
// what it must clean up.
type bench struct {
	opts   options
	work   string // a temporary folder for state folders, logs and files
	spool  string // the spool CLI
	spoold string
	log    io.Writer // progress lines
	seq    int       // numbers the daemons started, for their folders
}

// newBench makes the work folder and builds (or finds) the binaries.
func newBench(ctx context.Context, o options, log io.Writer) (*bench, error) {
	work, err := os.MkdirTemp(o.dir, "spoolbench-")
	if err != nil {
		return nil, fmt.Errorf("make the work folder: %w", err)
	}
	b := &bench{opts: o, work: work, log: log}
	bin := o.bin
	if bin == "" {
		bin = filepath.Join(work, "bin")
		if err := build(ctx, bin); err != nil {
			os.RemoveAll(work)
			return nil, err
		}
	}
	b.spool = filepath.Join(bin, "spool")
	b.spoold = filepath.Join(bin, "spoold")
	for _, p := range []string{b.spool, b.spoold} {
		if _, err := os.Stat(p); err != nil {
			os.RemoveAll(work)
			return nil, fmt.Errorf("find the binaries: %w", err)
		}
	}
	return b, nil
}

// close removes the work folder unless asked to keep it.
func (b *bench) close() {
	if b.opts.keep {
		fmt.Fprintf(b.log, "work folder kept: %s\n", b.work)
		return
	}
	os.RemoveAll(b.work)
}

// logf prints a progress line.
func (b *bench) logf(format string, args ...any) {
	fmt.Fprintf(b.log, "spoolbench: "+format+"\n", args...)
}

// build compiles spoold and spool, without the race detector, into dir.
func build(ctx context.Context, dir string) error {
	gobin, err := exec.LookPath("go")
	if err != nil {
		return fmt.Errorf("build: the go command is not on PATH: %w", err)
	}
	out, err := exec.CommandContext(ctx, gobin, "env", "GOMOD").Output()
	if err != nil {
		return fmt.Errorf("build: go env GOMOD: %w", err)
	}
	gomod := strings.TrimSpace(string(out))
	if gomod == "" || gomod == os.DevNull {
		return fmt.Errorf("build: run the harness inside the spool module (or give -bin)")
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return fmt.Errorf("build: %w", err)
	}
	cmd := exec.CommandContext(ctx, gobin, "build", "-o", dir+string(os.PathSeparator), "./cmd/spoold", "./cmd/spool")
	cmd.Dir = filepath.Dir(gomod)
	// The same build as make build: static binaries, no cgo. A binary with cgo
	// starts through the dynamic loader, which costs a short-lived spool a few
	// milliseconds.
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
	if out, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("build spoold and spool: %w\n%s", err, out)
	}
	return nil
}

// daemon is a spoold process that the harness started.
type daemon struct {
	b        *bench
	cmd      *exec.Cmd
	stateDir string
	sockDir  string
	socket   string
	logPath  string
	exited   chan struct{}
	waitErr  error
	perf     *exec.Cmd
}

// newState makes a fresh, empty state folder and returns its path.
func (b *bench) newState(name string) (string, error) {
	b.seq++
	dir := filepath.Join(b.work, fmt.Sprintf("%02d-%s", b.seq, name), "state")
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return "", fmt.Errorf("make a state folder: %w", err)
	}
	return dir, nil
}

// startDaemon starts spoold on stateDir with a socket in a new short folder, and
// waits until it answers daemon.info. It returns the daemon and how long it took
// from the start of the process to the first answer.
func (b *bench) startDaemon(ctx context.Context, name, stateDir string, args ...string) (*daemon, time.Duration, error) {
	sockDir, err := os.MkdirTemp("", "sp")
	if err != nil {
		return nil, 0, fmt.Errorf("make a socket folder: %w", err)
	}
	d := &daemon{
		b: b, stateDir: stateDir, sockDir: sockDir,
		socket:  filepath.Join(sockDir, "s.sock"),
		logPath: filepath.Join(filepath.Dir(stateDir), "spoold.log"),
		exited:  make(chan struct{}),
	}
	logf, err := os.OpenFile(d.logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
	if err != nil {
		os.RemoveAll(sockDir)
		return nil, 0, fmt.Errorf("open the daemon's log: %w", err)
	}
	argv := append([]string{"--state-dir", stateDir, "--socket", d.socket, "--log-level", "warn"}, args...)
	d.cmd = exec.Command(b.spoold, argv...)
	d.cmd.Stdout = logf
	d.cmd.Stderr = logf
	d.cmd.Env = append(os.Environ(), "SPOOL_SOCKET="+d.socket)
	setDeathSignal(d.cmd)
	start := time.Now()
	if err := d.cmd.Start(); err != nil {
		logf.Close()
		os.RemoveAll(sockDir)
		return nil, 0, fmt.Errorf("start spoold: %w", err)
	}
	logf.Close()
	go func() {
		d.waitErr = d.cmd.Wait()
		close(d.exited)
	}()
	if err := d.awaitReady(ctx, 60*time.Second); err != nil {
		d.stop()
		return nil, 0, fmt.Errorf("spoold (%s) did not get ready: %w; its log:\n%s", name, err, d.tailLog())
	}
	ready := time.Since(start)
	if b.opts.profile != "" {
		d.startPerf(name)
	}
	return d, ready, nil
}

// awaitReady polls daemon.info until it answers.
func (d *daemon) awaitReady(ctx context.Context, limit time.Duration) error {
	ctx, cancel := context.WithTimeout(ctx, limit)
	defer cancel()
	var last error
	for {
		select {
		case <-d.exited:
			return fmt.Errorf("spoold exited: %v", d.waitErr)
		default:
		}
		if _, err := os.Lstat(d.socket); err == nil {
			c, err := client.Dial(ctx, d.socket)
			if err == nil {
				_, err = c.Info(ctx)
				c.Close()
				if err == nil {
					return nil
				}
			}
			last = err
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("%w (last error: %v)", ctx.Err(), last)
		case <-d.exited:
		case <-time.After(500 * time.Microsecond):
		}
	}
}

// dial opens a new connection to the daemon.
func (d *daemon) dial(ctx context.Context) (*client.Client, error) {
	c, err := client.Dial(ctx, d.socket)
	if err != nil {
		return nil, fmt.Errorf("dial spoold: %w", err)
	}
	return c, nil
}

// pid is the daemon's process id.
func (d *daemon) pid() int { return d.cmd.Process.Pid }

// stop ends the daemon (SIGTERM, then SIGKILL after a while) and removes its
// socket folder.
func (d *daemon) stop() {
	d.stopPerf()
	select {
	case <-d.exited:
	default:
		d.cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-d.exited:
		case <-time.After(20 * time.Second):
			d.cmd.Process.Kill()
			<-d.exited
		}
	}
	os.RemoveAll(d.sockDir)
}

// tailLog returns the end of the daemon's log.
func (d *daemon) tailLog() string {
	b, _ := os.ReadFile(d.logPath)
	if len(b) > 4000 {
		b = b[len(b)-4000:]
	}
	return string(b)
}

// dbPath is the daemon's database file.
func (d *daemon) dbPath() string { return filepath.Join(d.stateDir, "spool.db") }

// commits reads the number of write transactions committed to the daemon's
// database so far: the txid in bbolt's meta pages, read from the file.
func (d *daemon) commits() (uint64, error) { return readTxid(d.dbPath()) }

// readTxid returns the highest transaction id of the two meta pages of a bbolt
// file. bbolt writes meta pages with write(2), so another process sees each
// commit once it returned.
func readTxid(path string) (uint64, error) {
	f, err := os.Open(path)
	if err != nil {
		return 0, fmt.Errorf("read the txid: %w", err)
	}
	defer f.Close()
	const (
		magic      = 0xED0CDAED
		metaOff    = 16 // the page header
		pageSizeAt = metaOff + 8
		txidAt     = metaOff + 48
	)
	hdr := make([]byte, 128)
	if _, err := f.ReadAt(hdr, 0); err != nil {
		return 0, fmt.Errorf("read the txid: %w", err)
	}
	if binary.LittleEndian.Uint32(hdr[metaOff:]) != magic {
		return 0, fmt.Errorf("read the txid: %s is not a bbolt file", path)
	}
	pageSize := int64(binary.LittleEndian.Uint32(hdr[pageSizeAt:]))
	best := binary.LittleEndian.Uint64(hdr[txidAt:])
	hdr2 := make([]byte, 128)
	if _, err := f.ReadAt(hdr2, pageSize); err == nil && binary.LittleEndian.Uint32(hdr2[metaOff:]) == magic {
		best = max(best, binary.LittleEndian.Uint64(hdr2[txidAt:]))
	}
	return best, nil
}

// memory is a process's resident memory, from /proc.
type memory struct {
	RSS, Anon, File int64 // bytes
}

func (m memory) String() string {
	return fmt.Sprintf("%.1f MiB (anon %.1f, file %.1f)", mib(m.RSS), mib(m.Anon), mib(m.File))
}

func mib(n int64) float64 { return float64(n) / (1 << 20) }

// readMemory reads VmRSS, RssAnon and RssFile of pid.
func readMemory(pid int) (memory, error) {
	f, err := os.Open(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return memory{}, fmt.Errorf("read memory: %w", err)
	}
	defer f.Close()
	var m memory
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		k, v, ok := strings.Cut(sc.Text(), ":")
		if !ok {
			continue
		}
		fields := strings.Fields(v)
		if len(fields) < 1 {
			continue
		}
		n, err := strconv.ParseInt(fields[0], 10, 64)
		if err != nil {
			continue
		}
		switch k {
		case "VmRSS":
			m.RSS = n << 10
		case "RssAnon":
			m.Anon = n << 10
		case "RssFile":
			m.File = n << 10
		}
	}
	if m.RSS == 0 {
		return m, errors.New("read memory: no VmRSS in /proc status")
	}
	return m, nil
}

// cpuTime reads the user+system CPU time a process used so far, from /proc.
func cpuTime(pid int) (time.Duration, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0, fmt.Errorf("read cpu time: %w", err)
	}
	// The command name may hold spaces: the fields start after its ')'.
	i := bytes.LastIndexByte(b, ')')
	if i < 0 {
		return 0, errors.New("read cpu time: bad /proc stat")
	}
	f := strings.Fields(string(b[i+1:]))
	if len(f) < 13 {
		return 0, errors.New("read cpu time: short /proc stat")
	}
	ut, _ := strconv.ParseInt(f[11], 10, 64)
	st, _ := strconv.ParseInt(f[12], 10, 64)
	return time.Duration(ut+st) * time.Second / clockTicks, nil
}

// clockTicks is USER_HZ, which is 100 on every Linux the project runs on.
const clockTicks = 100

// startPerf attaches perf record to the daemon, when -profile is given.
func (d *daemon) startPerf(name string) {
	out := filepath.Join(d.b.opts.profile, name+".perf.data")
	cmd := exec.Command("perf", "record", "-q", "-F", "999", "-g", "-p", strconv.Itoa(d.pid()), "-o", out)
	cmd.Stdout, cmd.Stderr = io.Discard, io.Discard
	if err := cmd.Start(); err != nil {
		d.b.logf("perf: %v", err)
		return
	}
	d.perf = cmd
	time.Sleep(200 * time.Millisecond) // let perf attach
}

// stopPerf ends perf record, which writes its file.
func (d *daemon) stopPerf() {
	if d.perf == nil {
		return
	}
	d.perf.Process.Signal(syscall.SIGINT)
	d.perf.Wait()
	d.perf = nil
}

// rpcSpec is a one-step exec job spec.
func execSpec(queue string, argv ...string) rpc.Spec {
	return rpc.Spec{Queue: queue, Steps: []rpc.Step{{Exec: &rpc.ExecStep{Argv: argv}}}}
}

// sleepSpec is a one-step sleep job spec.
func sleepSpec(queue string, d time.Duration) rpc.Spec {
	return rpc.Spec{Queue: queue, Steps: []rpc.Step{{Sleep: &rpc.SleepStep{Duration: rpc.Duration(d)}}}}
}
