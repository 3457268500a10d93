package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/matryer/is"
)

func TestReadServiceManager(t *testing.T) {
	env := func(m map[string]string) func(string) string {
		return func(k string) string { return m[k] }
	}
	for _, tc := range []struct {
		name     string
		env      map[string]string
		socket   string
		watchdog time.Duration
	}{
		{"not under systemd", nil, "", 0},
		{"notify only", map[string]string{"NOTIFY_SOCKET": "/run/n"}, "/run/n", 0},
		{"watchdog", map[string]string{"NOTIFY_SOCKET": "@n", "WATCHDOG_USEC": "30000000"}, "@n", 15 * time.Second},
		{"watchdog for us", map[string]string{"WATCHDOG_USEC": "1000000", "WATCHDOG_PID": "42"}, "", 500 * time.Millisecond},
		{"watchdog for another process", map[string]string{"WATCHDOG_USEC": "1000000", "WATCHDOG_PID": "43"}, "", 0},
		{"watchdog off", map[string]string{"WATCHDOG_USEC": "0"}, "", 0},
		{"watchdog garbage", map[string]string{"WATCHDOG_USEC": "soon"}, "", 0},
	} {
		t.Run(tc.name, func(t *testing.T) {
			is := is.New(t)
			sm := readServiceManager(env(tc.env), 42)
			is.Equal(sm.socket, tc.socket)     // NOTIFY_SOCKET as given
			is.Equal(sm.watchdog, tc.watchdog) // half of WATCHDOG_USEC, for our pid only
		})
	}
}

func TestNotifyAddr(t *testing.T) {
	is := is.New(t)
	_, err := notifyAddr("/run/user/1000/systemd/notify")
	is.NoErr(err) // a path
	_, err = notifyAddr("@/org/freedesktop/systemd1/notify/123")
	is.NoErr(err) // an abstract name
	_, err = notifyAddr("relative")
	is.True(err != nil) // neither
	_, err = notifyAddr("@")
	is.True(err != nil) // an empty abstract name
}

func recvNotify(t *testing.T, c *net.UnixConn) string {
	t.Helper()
	buf := make([]byte, 4096)
	_ = c.SetReadDeadline(time.Now().Add(30 * time.Second))
	n, _, err := c.ReadFromUnix(buf)
	if err != nil {
		t.Fatalf("read the notify socket: %v", err)
	}
	return string(buf[:n])
}

func TestNotifierPathAndAbstract(t *testing.T) {
	is := is.New(t)
	log := slog.New(slog.DiscardHandler)

	path := filepath.Join(shortDir(t), "n.sock")
	l, err := net.ListenUnixgram("unixgram", &net.UnixAddr{Name: path, Net: "unixgram"})
	is.NoErr(err)
	defer l.Close()
	n := newNotifier(path, log)
	defer n.close()
	is.NoErr(n.notify("READY=1\nSTATUS=serving")) // to a path
	is.Equal(recvNotify(t, l), "READY=1\nSTATUS=serving")

	if runtime.GOOS != "linux" {
		return
	}
	name := fmt.Sprintf("@spool-test-%d-%d", os.Getpid(), time.Now().UnixNano())
	al, err := net.ListenUnixgram("unixgram", &net.UnixAddr{Name: name, Net: "unixgram"})
	is.NoErr(err)
	defer al.Close()
	an := newNotifier(name, log)
	defer an.close()
	is.NoErr(an.notify("WATCHDOG=1")) // to an abstract name
	is.Equal(recvNotify(t, al), "WATCHDOG=1")

	none := newNotifier("", log)
	is.NoErr(none.notify("READY=1")) // without NOTIFY_SOCKET nothing is sent, and that is fine
}

// flakyHealth is a health check whose answer the test sets.
type flakyHealth struct {
	fail  atomic.Bool
	calls atomic.Int64
}

func (f *flakyHealth) Health(ctx context.Context) error {
	f.calls.Add(1)
	if f.fail.Load() {
		return errors.New("store: I/O error")
	}
	return nil
}

// TestWatchdogFollowsHealth checks that pings follow the health check: none while
// it fails, again once it passes.
func TestWatchdogFollowsHealth(t *testing.T) {
	is := is.New(t)
	path := filepath.Join(shortDir(t), "n.sock")
	l, err := net.ListenUnixgram("unixgram", &net.UnixAddr{Name: path, Net: "unixgram"})
	is.NoErr(err)
	defer l.Close()
	n := newNotifier(path, slog.New(slog.DiscardHandler))
	defer n.close()

	h := &flakyHealth{}
	h.fail.Store(true)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		superviseWatchdog(ctx, n, h, 10*time.Millisecond, slog.New(slog.DiscardHandler))
	}()
	for h.calls.Load() < 5 {
		time.Sleep(5 * time.Millisecond)
	}
	_ = l.SetReadDeadline(time.Now())
	_, _, err = l.ReadFromUnix(make([]byte, 64))
	is.True(errors.Is(err, os.ErrDeadlineExceeded)) // five failed checks, no ping
	h.fail.Store(false)
	is.Equal(recvNotify(t, l), "WATCHDOG=1") // a passing check pings
	cancel()
	<-done // and the supervisor ends with its context
}

// TestJournalLogger checks the log lines under the journal: a syslog priority in
// front, no time of their own; and the plain lines elsewhere.
func TestJournalLogger(t *testing.T) {
	is := is.New(t)
	var b strings.Builder
	journal := func(k string) string {
		if k == "JOURNAL_STREAM" {
			return "8:12345"
		}
		return ""
	}
	log := newLogger(&b, slog.LevelDebug, journal)
	log.With("job", 7).Error("job final", "state", "failed")
	log.WithGroup("conn").Warn("refused", "uid", 1001)
	log.Info("spoold starting")
	log.Debug("detail")
	lines := strings.Split(strings.TrimSuffix(b.String(), "\n"), "\n")
	is.Equal(len(lines), 4)                                                 // one line per record
	is.Equal(lines[0], `<3>level=ERROR msg="job final" job=7 state=failed`) // errors are priority 3, attributes kept
	is.Equal(lines[1], `<4>level=WARN msg=refused conn.uid=1001`)           // warnings 4, groups kept
	is.Equal(lines[2], `<6>level=INFO msg="spoold starting"`)               // info 6
	is.Equal(lines[3], `<7>level=DEBUG msg=detail`)                         // debug 7

	b.Reset()
	newLogger(&b, slog.LevelInfo, func(string) string { return "" }).Info("spoold starting")
	is.True(strings.HasPrefix(b.String(), "time=")) // on a terminal or a file, lines carry their time
}
