// Command spoold is spool's daemon: it keeps the job queue in a bbolt database in
// the state folder, runs jobs, and serves the protocol on a Unix socket.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"os/signal"
	"path/filepath"
	"runtime"
	"runtime/debug"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/oklog/run"

	"spool/daemon"
	"spool/rpc"
	"spool/rpc/server"
	"spool/rpc/unixsock"
	"spool/store"
	"spool/store/postgres"
)

func main() {
	os.Exit(realMain(os.Args[1:], os.Stdout, os.Stderr, os.Getenv))
}

// options are spoold's flags.
type options struct {
	socket         string
	stateDir       string
	maxParallel    int
	killGrace      time.Duration
	containment    string
	node           string
	store          string
	lease          time.Duration
	maxMessage     int64
	eventRetention time.Duration
	retain         time.Duration
	maxLog         int64
	stderrLog      bool
	writeStall     time.Duration
	logLevel       slog.Level
	showVersion    bool
	version        string
	// The HTTP face (off when httpAddr is empty).
	httpAddr      string
	httpTLSCert   string
	httpTLSKey    string
	httpTokenFile string
}

func parseFlags(args []string, stderr io.Writer, getenv func(string) string) (*options, error) {
	fs := flag.NewFlagSet("spoold", flag.ContinueOnError)
	// The flag package prints a parse error and the whole usage; realMain prints
	// the error once, and the usage only for --help.
	fs.SetOutput(io.Discard)
	o := &options{}
	var maxMessage, maxLog, logLevel, eventRetention, retain string
	fs.StringVar(&o.socket, "socket", "", "socket path (default $XDG_RUNTIME_DIR/spool/spoold.sock)")
	fs.StringVar(&o.stateDir, "state-dir", "", "state folder (default $XDG_STATE_HOME/spool)")
	fs.IntVar(&o.maxParallel, "max-parallel", runtime.NumCPU(), "jobs running at once, all queues together")
	fs.DurationVar(&o.killGrace, "kill-grace", 10*time.Second, "time between SIGTERM and SIGKILL when a step is stopped")
	fs.StringVar(&o.containment, "containment", "auto", "how a step's processes are kept together: auto (a cgroup per step where a writable cgroup v2 subtree exists, else process groups), cgroup (required), group")
	fs.StringVar(&o.node, "node", "", "this daemon's name in its store (default the host name)")
	fs.DurationVar(&o.lease, "lease", 10*time.Second, "with --store postgres://...: how long this daemon's lease lasts unless renewed (renewed every fifth of it); its jobs are rescued by the others this long after it dies")
	fs.StringVar(&o.store, "store", "", "where jobs are kept: empty for the bbolt file in the state folder, or a PostgreSQL URL (postgres://...) that several spoold share")
	fs.StringVar(&maxMessage, "max-message", "1MiB", "largest protocol message accepted")
	fs.StringVar(&eventRetention, "event-retention", "30d", "keep stored events this long (0: forever)")
	fs.StringVar(&retain, "retain", "0", "remove final jobs this long after they finished (0: never)")
	fs.StringVar(&maxLog, "max-log", "64MiB", "largest log kept per step")
	fs.BoolVar(&o.stderrLog, "stderr-log", true, "keep each step's stderr, alone, in a log of its own too (spool logs --stderr); a file more per step that writes on stderr")
	fs.DurationVar(&o.writeStall, "write-stall", 60*time.Second, "close a connection whose writes are blocked this long")
	fs.StringVar(&logLevel, "log-level", "info", "debug, info, warn or error")
	fs.BoolVar(&o.showVersion, "version", false, "print the version and exit")
	fs.StringVar(&o.httpAddr, "http", "", "serve the HTTP API, dashboard and metrics on this address (host:port; off when empty); other than loopback it needs --http-tls-cert, --http-tls-key and --http-token-file")
	fs.StringVar(&o.httpTLSCert, "http-tls-cert", "", "TLS certificate file (PEM) for --http")
	fs.StringVar(&o.httpTLSKey, "http-tls-key", "", "TLS key file (PEM) for --http")
	fs.StringVar(&o.httpTokenFile, "http-token-file", "", "bearer tokens for --http, one a line: TOKEN, \"write TOKEN\" or \"read TOKEN\" (mode 0600; default on loopback: <state-dir>/http-token, made when missing)")
	fs.Usage = func() {}
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			fs.SetOutput(stderr)
			fmt.Fprintf(stderr, "usage: spoold [flags]\n       spoold check [--state-dir DIR | --store URL]\n       spoold compact [--state-dir DIR]\n       spoold version\n\nflags:\n")
			fs.PrintDefaults()
		}
		if name, ok := strings.CutPrefix(err.Error(), "flag provided but not defined: -"); ok {
			return nil, fmt.Errorf("unknown flag %s", typedFlag(args, name))
		}
		return nil, err
	}
	if o.showVersion {
		return o, nil
	}
	if fs.NArg() > 0 {
		return nil, fmt.Errorf("unexpected argument %q", fs.Arg(0))
	}
	var err error
	if o.maxMessage, err = parseSize(maxMessage); err != nil || o.maxMessage < 1024 {
		return nil, fmt.Errorf("--max-message: want a size of at least 1KiB such as 1MiB, got %q", maxMessage)
	}
	if o.maxLog, err = parseSize(maxLog); err != nil || o.maxLog < 1024 {
		return nil, fmt.Errorf("--max-log: want a size of at least 1KiB such as 64MiB, got %q", maxLog)
	}
	if o.eventRetention, err = parseDays(eventRetention); err != nil {
		return nil, fmt.Errorf("--event-retention: %w", err)
	}
	if o.retain, err = parseDays(retain); err != nil {
		return nil, fmt.Errorf("--retain: %w", err)
	}
	if err := o.logLevel.UnmarshalText([]byte(logLevel)); err != nil {
		return nil, fmt.Errorf("--log-level: want debug, info, warn or error, got %q", logLevel)
	}
	if o.maxParallel < 1 {
		return nil, fmt.Errorf("--max-parallel: must be at least 1")
	}
	if o.killGrace <= 0 {
		return nil, fmt.Errorf("--kill-grace: must be positive")
	}
	switch o.containment {
	case daemon.ContainAuto, daemon.ContainCgroup, daemon.ContainGroup:
	default:
		return nil, fmt.Errorf("--containment: want auto, cgroup or group, got %q", o.containment)
	}
	if err := checkHTTPFlags(o); err != nil {
		return nil, err
	}
	if o.lease < time.Second {
		return nil, fmt.Errorf("--lease: must be at least 1s, got %s", o.lease)
	}
	if o.store != "" && !isPostgresURL(o.store) {
		return nil, fmt.Errorf("--store: want a PostgreSQL URL such as postgres:///spool?host=/run/postgresql, got %q (leave it out for the bbolt file in the state folder)", o.store)
	}
	if o.socket == "" {
		o.socket = rpc.DefaultSocketPath(getenv)
	}
	if o.stateDir == "" {
		if o.stateDir, err = rpc.DefaultStateDir(getenv); err != nil {
			return nil, err
		}
	}
	if o.stateDir, err = filepath.Abs(o.stateDir); err != nil {
		return nil, fmt.Errorf("--state-dir: %w", err)
	}
	return o, nil
}

// typedFlag is the flag called name as it was typed in args ("--nope" or
// "-nope"), for an error that quotes it.
func typedFlag(args []string, name string) string {
	for _, a := range args {
		if a == "--" {
			break
		}
		f, _, _ := strings.Cut(a, "=")
		if strings.TrimLeft(f, "-") == name && strings.HasPrefix(f, "-") {
			return f
		}
	}
	return "--" + name
}

// parseSize reads "1048576", "64KiB", "1MiB", "2GiB" (or KB/MB/GB, also binary).
func parseSize(s string) (int64, error) {
	s = strings.TrimSpace(s)
	mult := int64(1)
	for _, u := range []struct {
		suffix string
		m      int64
	}{{"KiB", 1 << 10}, {"MiB", 1 << 20}, {"GiB", 1 << 30}, {"KB", 1 << 10}, {"MB", 1 << 20}, {"GB", 1 << 30}, {"K", 1 << 10}, {"M", 1 << 20}, {"G", 1 << 30}, {"B", 1}} {
		if strings.HasSuffix(s, u.suffix) {
			s, mult = strings.TrimSuffix(s, u.suffix), u.m
			break
		}
	}
	n, err := strconv.ParseInt(strings.TrimSpace(s), 10, 64)
	if err != nil || n < 0 {
		return 0, fmt.Errorf("invalid size %q", s)
	}
	return n * mult, nil
}

// parseDays reads a Go duration, also with a "d" suffix for days ("30d", "7d").
func parseDays(s string) (time.Duration, error) {
	if s == "0" {
		return 0, nil
	}
	if d, ok := strings.CutSuffix(s, "d"); ok {
		n, err := strconv.Atoi(d)
		if err != nil || n < 0 {
			return 0, fmt.Errorf("invalid duration %q", s)
		}
		return time.Duration(n) * 24 * time.Hour, nil
	}
	d, err := time.ParseDuration(s)
	if err != nil || d < 0 {
		return 0, fmt.Errorf("invalid duration %q", s)
	}
	return d, nil
}

func realMain(args []string, stdout, stderr io.Writer, getenv func(string) string) int {
	if len(args) > 0 && (args[0] == "check" || args[0] == "compact") {
		return offline(args[0], args[1:], stderr, getenv)
	}
	if len(args) > 0 && args[0] == "version" {
		if len(args) > 1 {
			fmt.Fprintf(stderr, "spoold: version takes no arguments, got %q\n", args[1])
			return 2
		}
		printVersion(stdout)
		return 0
	}
	o, err := parseFlags(args, stderr, getenv)
	if errors.Is(err, flag.ErrHelp) {
		return 0
	}
	if err != nil {
		fmt.Fprintf(stderr, "spoold: %v (spoold --help lists the flags)\n", err)
		return 2
	}
	if o.showVersion {
		printVersion(stdout)
		return 0
	}
	o.version = rpc.BuildVersion()
	log := newLogger(stderr, o.logLevel, getenv)
	if getenv("GOGC") == "" {
		// Each collection has a fixed cost (waking the collector's workers on
		// every core), and each page of new heap a fault, both dear on a virtual
		// machine: collecting at 3x the small live heap spends less CPU per job
		// than 2x (fewer collections) or 5x (more memory touched).
		debug.SetGCPercent(gcPercent)
	}
	sm := readServiceManager(getenv, os.Getpid())
	unsetServiceManagerEnv()
	if err := serve(o, sm, log); err != nil {
		// Once, as the last line: under journald with the error priority (the
		// prefix its stream reads, as the logger's lines have), else plain.
		prefix := ""
		if getenv("JOURNAL_STREAM") != "" {
			prefix = "<3>"
		}
		fmt.Fprintf(stderr, "%sspoold: %v\n", prefix, err)
		return 1
	}
	return 0
}

// printVersion prints what `spoold version` and `spoold --version` print, in the
// form of `spool version`'s lines.
func printVersion(w io.Writer) {
	fmt.Fprintf(w, "spoold %s (protocol %d)\n", rpc.BuildVersion(), rpc.ProtocolVersion)
}

// gcPercent is the collector's target unless GOGC says otherwise.
const gcPercent = 200

// openStore opens the database in the state folder, failing fast with the pid of
// the daemon that holds it.
func openStore(stateDir string) (*store.Store, error) {
	if err := os.MkdirAll(stateDir, 0o700); err != nil {
		return nil, fmt.Errorf("create state folder: %w", err)
	}
	if err := os.Chmod(stateDir, 0o700); err != nil {
		return nil, fmt.Errorf("chmod state folder: %w", err)
	}
	st, err := store.Open(filepath.Join(stateDir, "spool.db"), store.Options{Timeout: 500 * time.Millisecond})
	if errors.Is(err, store.ErrLocked) {
		pid := "unknown"
		if b, rerr := os.ReadFile(filepath.Join(stateDir, "spoold.pid")); rerr == nil {
			pid = strings.TrimSpace(string(b))
		}
		return nil, fmt.Errorf("another spoold (pid %s) is using the state folder %s", pid, stateDir)
	}
	if err != nil {
		return nil, fmt.Errorf("open the database: %w", err)
	}
	return st, nil
}

func serve(o *options, sm serviceManager, log *slog.Logger) error {
	st, err := openAnyStore(o, log)
	if err != nil {
		return err
	}
	defer st.Close()
	pidFile := filepath.Join(o.stateDir, "spoold.pid")
	if err := os.WriteFile(pidFile, []byte(strconv.Itoa(os.Getpid())+"\n"), 0o600); err != nil {
		return fmt.Errorf("write pid file: %w", err)
	}
	defer os.Remove(pidFile)

	// The socket: handed over by systemd, or ours (the database lock is held, so
	// an old socket can be cleared safely).
	listeners, err := unixsock.SystemdListeners()
	if err != nil {
		return fmt.Errorf("socket activation: %w", err)
	}
	var ln net.Listener
	socket := o.socket
	if len(listeners) > 0 {
		ln = listeners[0]
		for _, extra := range listeners[1:] {
			extra.Close()
		}
		socket = ln.Addr().String()
	} else {
		if ln, err = unixsock.Listen(o.socket); err != nil {
			return fmt.Errorf("listen on %s: %w", o.socket, err)
		}
	}

	// The HTTP face: its tokens, certificate and listener are checked before the
	// daemon starts, so that a mistake stops spoold at once and says why.
	var web *httpFace
	var dstore daemon.Store = st
	if o.httpAddr != "" {
		if web, err = newHTTPFace(o, st.Commits, log); err != nil {
			ln.Close()
			return err
		}
		defer web.ln.Close()
		dstore = daemon.TimeCommits(st, web.metrics.ObserveCommit)
	}

	d, err := daemon.New(daemon.Config{
		Store: dstore, StateDir: o.stateDir, Socket: socket, Version: o.version,
		MaxParallel: o.maxParallel, KillGrace: o.killGrace, MaxLog: o.maxLog, NoStderrLog: !o.stderrLog, Subreaper: true, Containment: o.containment, Node: o.node,
		EventRetention: eventRetention(o.eventRetention), Retain: o.retain, Log: log,
		LeaseEvery: o.lease / 5, StoreKind: storeKind(o),
	})
	if err != nil {
		ln.Close()
		return err
	}
	srv := server.New(server.Config{
		Service: d, MaxMessage: o.maxMessage, WriteStall: o.writeStall, Logger: log, CheckPeer: true,
	})
	log.Info("spoold starting", "version", o.version, "pid", os.Getpid(), "socket", socket, "state_dir", o.stateDir)

	if web != nil {
		if err := web.serveDaemon(d, o); err != nil {
			ln.Close()
			return err
		}
	}

	notify := newNotifier(sm.socket, log)
	defer notify.close()
	stopping := sync.OnceFunc(func() { notify.send("STOPPING=1") })

	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	var g run.Group
	{
		// The engine: recovery, scheduling, runners.
		dctx, dcancel := context.WithCancel(ctx)
		g.Add(func() error {
			return d.Run(dctx)
		}, func(error) {
			dcancel()
		})
	}
	{
		// The socket server.
		sctx, scancel := context.WithCancel(ctx)
		g.Add(func() error {
			return srv.Serve(sctx, ln)
		}, func(error) {
			scancel()
			ln.Close()
		})
	}
	if web != nil {
		// The HTTP face and the metrics' follower of the event log.
		hctx, hcancel := context.WithCancel(ctx)
		g.Add(func() error {
			return web.run(hctx)
		}, func(error) {
			hcancel()
		})
	}
	{
		// The service manager: READY=1 once the database is open, the socket
		// listens and recovery is over; then watchdog pings while the store and the
		// scheduler answer; STOPPING=1 as soon as the stop begins.
		nctx, ncancel := context.WithCancel(ctx)
		g.Add(func() error {
			select {
			case <-d.Ready():
			case <-nctx.Done():
				return nil
			}
			notify.send("READY=1\nSTATUS=serving on " + socket)
			if sm.watchdog > 0 {
				superviseWatchdog(nctx, notify, d, sm.watchdog, log)
			}
			<-nctx.Done()
			return nil
		}, func(error) {
			stopping()
			ncancel()
		})
	}
	{
		// Signals and daemon.shutdown.
		sig := make(chan os.Signal, 1)
		signal.Notify(sig, syscall.SIGTERM, syscall.SIGINT)
		stop := make(chan struct{})
		g.Add(func() error {
			defer signal.Stop(sig)
			select {
			case s := <-sig:
				log.Info("signal received, stopping", "signal", s.String())
			case <-d.Stopped():
				// daemon.shutdown: let the engine finish (drain) before the socket goes.
				stopping()
				select {
				case <-d.Done():
				case <-stop:
				}
			case <-stop:
			}
			return nil
		}, func(error) {
			close(stop)
		})
	}
	return g.Run()
}

func eventRetention(d time.Duration) time.Duration {
	if d == 0 {
		return -1 // keep forever
	}
	return d
}

// offline runs the commands that work on a stopped daemon's database.
func offline(cmd string, args []string, stderr io.Writer, getenv func(string) string) int {
	fs := flag.NewFlagSet("spoold "+cmd, flag.ContinueOnError)
	fs.SetOutput(stderr)
	stateDir := fs.String("state-dir", "", "state folder (default $XDG_STATE_HOME/spool)")
	storeURL := fs.String("store", "", "check this PostgreSQL database (postgres://...) instead of the state folder's bbolt file")
	if err := fs.Parse(args); err != nil {
		return 2
	}
	if *storeURL != "" {
		if cmd != "check" || !isPostgresURL(*storeURL) {
			fmt.Fprintf(stderr, "spoold %s: --store: want a PostgreSQL URL (postgres://...), and only check takes it\n", cmd)
			return 2
		}
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
		defer cancel()
		st, err := postgres.Open(ctx, *storeURL, postgres.Options{})
		if err != nil {
			fmt.Fprintf(stderr, "spoold check: %v\n", err)
			return 1
		}
		defer st.Close()
		if err := st.Check(ctx); err != nil {
			fmt.Fprintf(stderr, "spoold check: %v\n", err)
			return 1
		}
		fmt.Fprintf(stderr, "spoold check: the PostgreSQL store is consistent\n")
		return 0
	}
	dir := *stateDir
	if dir == "" {
		var err error
		if dir, err = rpc.DefaultStateDir(getenv); err != nil {
			fmt.Fprintf(stderr, "spoold %s: %v\n", cmd, err)
			return 2
		}
	}
	path := filepath.Join(dir, "spool.db")
	if _, err := os.Stat(path); err != nil {
		fmt.Fprintf(stderr, "spoold %s: no database at %s\n", cmd, path)
		return 1
	}
	switch cmd {
	case "check":
		st, err := openStore(dir)
		if err != nil {
			fmt.Fprintf(stderr, "spoold check: %v\n", err)
			return 1
		}
		defer st.Close()
		if err := st.Check(context.Background()); err != nil {
			fmt.Fprintf(stderr, "spoold check: %v\n", err)
			return 1
		}
		fmt.Fprintf(stderr, "spoold check: %s is consistent\n", path)
		return 0
	case "compact":
		if err := store.Compact(path, store.Options{Timeout: 500 * time.Millisecond}); err != nil {
			if errors.Is(err, store.ErrLocked) {
				fmt.Fprintf(stderr, "spoold compact: a running spoold holds %s: stop it first\n", path)
				return 1
			}
			fmt.Fprintf(stderr, "spoold compact: %v\n", err)
			return 1
		}
		fmt.Fprintf(stderr, "spoold compact: %s compacted\n", path)
		return 0
	}
	return 2
}
