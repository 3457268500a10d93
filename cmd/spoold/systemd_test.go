package main

import (
	"context"
	"errors"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/matryer/is"

	"spool/client"
	"spool/rpc"
)

// notifyListener is a service manager's notify socket made by a test: a unixgram
// socket whose datagrams are the messages spoold sends.
type notifyListener struct {
	t    *testing.T
	conn *net.UnixConn
	path string
}

func listenNotify(t *testing.T, path string) *notifyListener {
	t.Helper()
	conn, err := net.ListenUnixgram("unixgram", &net.UnixAddr{Name: path, Net: "unixgram"})
	if err != nil {
		t.Fatalf("listen on the notify socket: %v", err)
	}
	t.Cleanup(func() { conn.Close() })
	return &notifyListener{t: t, conn: conn, path: path}
}

// next returns the next message, or fails the test after a generous wait.
func (n *notifyListener) next() string {
	n.t.Helper()
	buf := make([]byte, 4096)
	_ = n.conn.SetReadDeadline(time.Now().Add(60 * time.Second))
	k, _, err := n.conn.ReadFromUnix(buf)
	if err != nil {
		n.t.Fatalf("read the notify socket: %v", err)
	}
	return string(buf[:k])
}

// until reads messages until one holds the line want, and returns those before it.
func (n *notifyListener) until(want string) []string {
	n.t.Helper()
	var before []string
	for {
		m := n.next()
		for _, line := range strings.Split(m, "\n") {
			if line == want {
				return before
			}
		}
		before = append(before, m)
	}
}

// TestSystemdSocketActivation starts spoold the way systemd does, with the real
// systemd-socket-activate: the socket exists before spoold runs, the first
// connection starts it, it serves the socket it was handed, tells the notify
// socket READY=1, pings the watchdog, keeps the manager's variables from its jobs,
// and says STOPPING=1 on SIGTERM.
func TestSystemdSocketActivation(t *testing.T) {
	activate, err := exec.LookPath("systemd-socket-activate")
	if err != nil {
		t.Skip("systemd-socket-activate is not installed (Debian: apt-get install systemd)")
	}
	is := is.New(t)
	b := buildBins(t)
	dir := shortDir(t)
	socket := filepath.Join(dir, "s.sock")
	state := filepath.Join(dir, "state")
	n := listenNotify(t, filepath.Join(dir, "n.sock"))

	cmd := exec.Command(activate, "-l", socket, "--fdname=spoold.sock",
		"-E", "NOTIFY_SOCKET="+n.path, "-E", "WATCHDOG_USEC=200000",
		b.spoold, "--state-dir", state, "--socket", filepath.Join(dir, "unused.sock"), "--log-level", "debug")
	logs := &syncBuffer{}
	cmd.Stdout, cmd.Stderr = logs, logs
	cmd.WaitDelay = 10 * time.Second
	is.NoErr(cmd.Start()) // systemd-socket-activate starts
	var waitErr error
	exited := make(chan struct{})
	go func() { waitErr = cmd.Wait(); close(exited) }()
	t.Cleanup(func() {
		select {
		case <-exited:
		default:
			_ = cmd.Process.Kill()
			<-exited
		}
		if t.Failed() {
			t.Logf("output:\n%s", logs.String())
		}
	})

	// The socket is there before spoold is.
	for i := 0; ; i++ {
		if _, err := os.Stat(socket); err == nil {
			break
		}
		if i > 3000 {
			t.Fatalf("systemd-socket-activate made no socket:\n%s", logs.String())
		}
		time.Sleep(10 * time.Millisecond)
	}
	_, err = os.Stat(filepath.Join(state, "spool.db"))
	is.True(errors.Is(err, os.ErrNotExist)) // no database yet: spoold waits for the first connection

	// The first connection starts spoold, which serves it.
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	c, err := client.Dial(ctx, socket)
	is.NoErr(err) // the handed socket takes the connection
	defer c.Close()
	info, err := c.Info(ctx)
	is.NoErr(err)                       // and spoold answers on it
	is.Equal(info.Socket, socket)       // it knows the socket it was handed
	is.Equal(info.PID, cmd.Process.Pid) // it is the process systemd-socket-activate became
	_, err = os.Stat(filepath.Join(dir, "unused.sock"))
	is.True(errors.Is(err, os.ErrNotExist)) // --socket is not used under socket activation

	before := n.until("READY=1")
	is.Equal(len(before), 0) // READY=1 is the first thing the manager hears
	_, err = os.Stat(filepath.Join(state, "spool.db"))
	is.NoErr(err) // by then the database is open

	n.until("WATCHDOG=1")
	n.until("WATCHDOG=1") // the watchdog is pinged again and again

	spec := rpc.Spec{Steps: []rpc.Step{{Shell: &rpc.ShellStep{Script: "env"}}}}
	res, err := c.Submit(ctx, rpc.SubmitParams{Job: &spec})
	is.NoErr(err)
	j, err := c.Wait(ctx, rpc.WaitParams{ID: res.Job.ID})
	is.NoErr(err)
	is.Equal(j.State, rpc.StateSucceeded) // a job runs
	env := string(j.Result)
	for _, k := range []string{"NOTIFY_SOCKET", "WATCHDOG_USEC", "WATCHDOG_PID", "LISTEN_FDS", "LISTEN_PID", "LISTEN_FDNAMES"} {
		is.True(!strings.Contains(env, k+"=")) // the service manager's variables stay out of jobs
	}
	is.True(strings.Contains(env, "SPOOL_JOB_ID=")) // while the job's own are there

	is.NoErr(cmd.Process.Signal(syscall.SIGTERM))
	n.until("STOPPING=1") // SIGTERM: the manager hears that spoold stops
	select {
	case <-exited:
		is.NoErr(waitErr) // a clean exit
	case <-time.After(60 * time.Second):
		t.Fatalf("spoold did not exit after SIGTERM")
	}
	_, err = os.Stat(socket)
	is.NoErr(err) // the socket is systemd's: spoold leaves it in place
	is.True(strings.Contains(logs.String(), "spoold starting"))
}

// TestSystemdNoWatchdogForOtherPID starts spoold with a WATCHDOG_PID that is not
// its own: it says READY=1 but never pings the watchdog.
func TestSystemdNoWatchdogForOtherPID(t *testing.T) {
	is := is.New(t)
	b := buildBins(t)
	dir := shortDir(t)
	n := listenNotify(t, filepath.Join(dir, "n.sock"))
	p := &daemonProc{t: t, bins: b, state: filepath.Join(dir, "state"), socket: filepath.Join(dir, "run", "s.sock")}
	t.Setenv("NOTIFY_SOCKET", n.path)
	t.Setenv("WATCHDOG_USEC", "100000")
	t.Setenv("WATCHDOG_PID", "1")
	p.start()
	t.Cleanup(p.kill)
	n.until("READY=1")
	c := p.client()
	ctx := tctx(t)
	spec := rpc.Spec{Steps: []rpc.Step{{Sleep: &rpc.SleepStep{Duration: rpc.Duration(time.Second)}}}}
	res, err := c.Submit(ctx, rpc.SubmitParams{Job: &spec})
	is.NoErr(err)
	_, err = c.Wait(ctx, rpc.WaitParams{ID: res.Job.ID}) // ten watchdog intervals pass meanwhile
	is.NoErr(err)
	p.stop()
	msgs := n.until("STOPPING=1")
	for _, m := range msgs {
		is.True(!strings.Contains(m, "WATCHDOG=1")) // no pings for a watchdog meant for another process
	}
}

// TestMakeInstall runs make install twice: into a prefix of the test's own, where
// the installed units must pass systemd-analyze verify, and with DESTDIR, where
// ExecStart must name the path without DESTDIR.
func TestMakeInstall(t *testing.T) {
	if testing.Short() {
		t.Skip("builds the binaries; skipped with -short")
	}
	if _, err := exec.LookPath("make"); err != nil {
		t.Skip("make is not installed")
	}
	is := is.New(t)
	root, err := filepath.Abs(filepath.Join("..", ".."))
	is.NoErr(err)
	tmp := t.TempDir()
	bin := filepath.Join(tmp, "bin")
	// HOME changes for make; Go's caches stay where they are.
	goEnv, err := exec.Command("go", "env", "GOCACHE", "GOMODCACHE", "GOPATH").Output()
	is.NoErr(err)
	caches := strings.Fields(string(goEnv))
	is.Equal(len(caches), 3) // go env names its caches
	make := func(args ...string) {
		t.Helper()
		cmd := exec.Command("make", append([]string{"-C", root, "install", "BIN=" + bin}, args...)...)
		cmd.Env = append(os.Environ(), "HOME="+filepath.Join(tmp, "home"), "XDG_CONFIG_HOME=",
			"GOCACHE="+caches[0], "GOMODCACHE="+caches[1], "GOPATH="+caches[2])
		if out, err := cmd.CombinedOutput(); err != nil {
			t.Fatalf("make install %v: %v\n%s", args, err, out)
		}
	}

	prefix, units := filepath.Join(tmp, "prefix"), filepath.Join(tmp, "units")
	make("PREFIX="+prefix, "UNITDIR="+units)
	for _, f := range []string{"bin/spoold", "bin/spool", "share/bash-completion/completions/spool",
		"share/zsh/site-functions/_spool", "share/fish/vendor_completions.d/spool.fish"} {
		_, err := os.Stat(filepath.Join(prefix, f))
		is.NoErr(err) // installed under the prefix
	}
	service, err := os.ReadFile(filepath.Join(units, "spoold.service"))
	is.NoErr(err)
	is.True(strings.Contains(string(service), "\nExecStart="+filepath.Join(prefix, "bin", "spoold")+"\n")) // ExecStart names the installed binary
	socket, err := os.ReadFile(filepath.Join(units, "spoold.socket"))
	is.NoErr(err)
	is.True(strings.Contains(string(socket), "ListenStream=%t/spool/spoold.sock")) // the socket at spoold's default path
	if analyze, err := exec.LookPath("systemd-analyze"); err == nil {
		runtimeDir := shortDir(t)
		cmd := exec.Command(analyze, "--user", "verify", filepath.Join(units, "spoold.socket"), filepath.Join(units, "spoold.service"))
		cmd.Env = append(os.Environ(), "XDG_RUNTIME_DIR="+runtimeDir)
		out, err := cmd.CombinedOutput()
		if err != nil {
			t.Fatalf("systemd-analyze --user verify: %v\n%s", err, out)
		}
		is.Equal(strings.TrimSpace(string(out)), "") // the units verify without a warning
	} else {
		t.Log("systemd-analyze is not installed: the units were not verified")
	}

	// The default prefix is ~/.local and the units go to ~/.config/systemd/user;
	// DESTDIR goes before every path but not into ExecStart.
	dest := filepath.Join(tmp, "dest")
	make("DESTDIR="+dest, "--old-file=build") // the binaries of the first run will do
	home := filepath.Join(tmp, "home")
	_, err = os.Stat(filepath.Join(dest, home, ".local", "bin", "spoold"))
	is.NoErr(err) // the binary under DESTDIR
	service, err = os.ReadFile(filepath.Join(dest, home, ".config", "systemd", "user", "spoold.service"))
	is.NoErr(err)                                                                                                  // the unit under DESTDIR
	is.True(strings.Contains(string(service), "\nExecStart="+filepath.Join(home, ".local", "bin", "spoold")+"\n")) // ExecStart without DESTDIR
}
