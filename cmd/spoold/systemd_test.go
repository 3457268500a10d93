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
