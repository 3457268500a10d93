package main

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"strconv"
	"strings"
	"sync"
	"time"
)

// serviceManager is what systemd told spoold through its environment: where to
// send notifications (NOTIFY_SOCKET) and how often to ping the watchdog
// (WATCHDOG_USEC, for the pid in WATCHDOG_PID when set).
type serviceManager struct {
	socket   string        // NOTIFY_SOCKET: a path, or "@name" in the abstract namespace; "" when not run by systemd
	watchdog time.Duration // how often to ping: half of WATCHDOG_USEC; 0 for no watchdog
}

// readServiceManager reads NOTIFY_SOCKET, WATCHDOG_USEC and WATCHDOG_PID with
// getenv. pid is this process's id: a WATCHDOG_PID naming another process turns
// the watchdog off, as sd_watchdog_enabled does.
func readServiceManager(getenv func(string) string, pid int) serviceManager {
	sm := serviceManager{socket: getenv("NOTIFY_SOCKET")}
	usec, err := strconv.ParseUint(getenv("WATCHDOG_USEC"), 10, 64)
	if err != nil || usec == 0 {
		return sm
	}
	if p := getenv("WATCHDOG_PID"); p != "" {
		if n, err := strconv.Atoi(p); err != nil || n != pid {
			return sm
		}
	}
	sm.watchdog = time.Duration(usec) * time.Microsecond / 2
	return sm
}

// notifier sends sd_notify messages ("READY=1", "STOPPING=1", "WATCHDOG=1") as
// datagrams to the service manager's socket. The zero value of socket makes every
// send a no-op, so that spoold started by hand needs no special case.
type notifier struct {
	socket string
	log    *slog.Logger

	mu   sync.Mutex
	conn *net.UnixConn
}

func newNotifier(socket string, log *slog.Logger) *notifier {
	return &notifier{socket: socket, log: log}
}

// notify sends one message: lines of VAR=VALUE.
func (n *notifier) notify(msg string) error {
	if n.socket == "" {
		return nil
	}
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.conn == nil {
		addr, err := notifyAddr(n.socket)
		if err != nil {
			return err
		}
		conn, err := net.DialUnix("unixgram", nil, addr)
		if err != nil {
			return fmt.Errorf("connect to the notify socket %s: %w", n.socket, err)
		}
		n.conn = conn
	}
	_ = n.conn.SetWriteDeadline(time.Now().Add(5 * time.Second))
	if _, err := n.conn.Write([]byte(msg)); err != nil {
		// The manager may have gone and come back: dial again next time.
		n.conn.Close()
		n.conn = nil
		return fmt.Errorf("notify %s: %w", strings.ReplaceAll(msg, "\n", " "), err)
	}
	return nil
}

// send is notify that logs a failure instead of returning it: the service manager
// is a bystander, never a reason to stop.
func (n *notifier) send(msg string) {
	if err := n.notify(msg); err != nil {
		n.log.Warn("service manager notification failed", "err", err)
	}
}

// close releases the socket.
func (n *notifier) close() {
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.conn != nil {
		n.conn.Close()
		n.conn = nil
	}
}

// notifyAddr is the address of NOTIFY_SOCKET: an absolute path, or "@name" for the
// abstract namespace (Go's net package maps a leading '@' to the abstract
// namespace on Linux).
func notifyAddr(socket string) (*net.UnixAddr, error) {
	switch {
	case strings.HasPrefix(socket, "/"), strings.HasPrefix(socket, "@") && len(socket) > 1:
		return &net.UnixAddr{Name: socket, Net: "unixgram"}, nil
	}
	return nil, fmt.Errorf("NOTIFY_SOCKET=%q: want an absolute path or an @abstract name", socket)
}

// healthChecker is the liveness check the watchdog pings on: *daemon.Daemon's
// Health (a store read and a scheduler probe).
type healthChecker interface {
	Health(ctx context.Context) error
}

// superviseWatchdog pings the watchdog every interval while check succeeds, until
// ctx is done. A failed check skips the ping, so that a daemon whose store or
// scheduler hangs is restarted by the service manager instead of being declared
// alive by a ticker.
func superviseWatchdog(ctx context.Context, n *notifier, check healthChecker, interval time.Duration, log *slog.Logger) {
	t := time.NewTicker(interval)
	defer t.Stop()
	failing := false
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		hctx, cancel := context.WithTimeout(ctx, interval)
		err := check.Health(hctx)
		cancel()
		if ctx.Err() != nil {
			return
		}
		if err != nil {
			log.Error("health check failed: not pinging the watchdog", "err", err)
			failing = true
			continue
		}
		if failing {
			log.Info("health check passes again")
			failing = false
		}
		n.send("WATCHDOG=1")
	}
}

// unsetServiceManagerEnv removes the variables readServiceManager reads from the
// process's environment, so that no job inherits them (the daemon filters them
// from jobs too).
func unsetServiceManagerEnv() {
	for _, k := range []string{"NOTIFY_SOCKET", "WATCHDOG_USEC", "WATCHDOG_PID"} {
		os.Unsetenv(k)
	}
}

// newLogger is spoold's logger: log/slog text lines on w. Under systemd, with w
// connected to the journal (JOURNAL_STREAM set), the time is left to the journal
// and each line starts with its syslog priority ("<3>" for errors), which the
// journal reads as the entry's priority.
func newLogger(w io.Writer, level slog.Level, getenv func(string) string) *slog.Logger {
	if getenv("JOURNAL_STREAM") == "" {
		return slog.New(slog.NewTextHandler(w, &slog.HandlerOptions{Level: level}))
	}
	buf := new(bytes.Buffer)
	inner := slog.NewTextHandler(buf, &slog.HandlerOptions{Level: level, ReplaceAttr: func(groups []string, a slog.Attr) slog.Attr {
		if len(groups) == 0 && a.Key == slog.TimeKey {
			return slog.Attr{}
		}
		return a
	}})
	return slog.New(&journalHandler{mu: new(sync.Mutex), buf: buf, inner: inner, out: w})
}

// journalHandler prefixes each line of a text handler with the record's syslog
// priority. The handlers made by WithAttrs and WithGroup share the buffer and the
// lock.
type journalHandler struct {
	mu    *sync.Mutex
	buf   *bytes.Buffer
	inner slog.Handler
	out   io.Writer
}

func (h *journalHandler) Enabled(ctx context.Context, l slog.Level) bool {
	return h.inner.Enabled(ctx, l)
}

func (h *journalHandler) Handle(ctx context.Context, r slog.Record) error {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.buf.Reset()
	if err := h.inner.Handle(ctx, r); err != nil {
		return err
	}
	_, err := fmt.Fprintf(h.out, "<%d>%s", syslogPriority(r.Level), h.buf.Bytes())
	return err
}

func (h *journalHandler) WithAttrs(as []slog.Attr) slog.Handler {
	return &journalHandler{mu: h.mu, buf: h.buf, inner: h.inner.WithAttrs(as), out: h.out}
}

func (h *journalHandler) WithGroup(name string) slog.Handler {
	return &journalHandler{mu: h.mu, buf: h.buf, inner: h.inner.WithGroup(name), out: h.out}
}

// syslogPriority maps a slog level to a syslog priority: err, warning, info, debug.
func syslogPriority(l slog.Level) int {
	switch {
	case l >= slog.LevelError:
		return 3
	case l >= slog.LevelWarn:
		return 4
	case l >= slog.LevelInfo:
		return 6
	}
	return 7
}
