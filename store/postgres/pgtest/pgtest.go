// Package pgtest starts a throwaway PostgreSQL server for tests: initdb in a
// fresh temporary folder, the server on a Unix socket in that folder (no TCP),
// and a new empty database per test.
//
// Tests of a package share one server through a Pool that their TestMain
// holds; a test that needs a server of its own (to restart it, say) calls
// Start. When the process runs as root, as CI does, initdb and the server run
// as the postgres user (initdb refuses root), else as the current user.
package pgtest

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net/url"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/jackc/pgx/v5"
)

// Superuser is the name of the server's superuser, the user of every DSN.
const Superuser = "spool"

// templateDB is the database each new database is copied from, made once.
const templateDB = "spool_template"

// maxSocketPath is the longest path of a Unix socket (sun_path, less its NUL).
const maxSocketPath = 107

// socketName is the socket's file name in Dir for the server's port, 5432.
const socketName = ".s.PGSQL.5432"

// Options configure a server.
type Options struct {
	// Fsync keeps fsync on. Off (the default) is fine for tests and much
	// faster; a benchmark wants it on.
	Fsync bool
	// MaxConnections is the server's max_connections; 0 means 200.
	MaxConnections int
}

// Server is a PostgreSQL server started for tests, on a Unix socket in a
// temporary folder.
type Server struct {
	bin  string              // the folder of initdb, pg_ctl and postgres
	dir  string              // the temporary folder: socket, data, log
	cred *syscall.Credential // whom the commands run as; nil: the current user
	opts Options

	mu       sync.Mutex // serializes NewDB, Restart and Stop
	template bool       // templateDB exists
	next     int        // the number of the last database made by NewDB
	stopped  bool
	stopErr  error
	lastLog  string // the log, kept when Stop removes the folder
}

// Start runs initdb and starts the server; it returns an error (never skips)
// so callers decide. When it fails midway it stops what it started and
// removes the folder.
func Start(ctx context.Context, opts Options) (*Server, error) {
	if opts.MaxConnections <= 0 {
		opts.MaxConnections = 200
	}
	bin, err := binDir()
	if err != nil {
		return nil, err
	}
	cred, err := credential()
	if err != nil {
		return nil, err
	}
	dir, err := tempDir(cred)
	if err != nil {
		return nil, err
	}
	s := &Server{bin: bin, dir: dir, cred: cred, opts: opts}
	if err := s.init(ctx); err != nil {
		_ = s.Stop()
		return nil, err
	}
	return s, nil
}

// init runs initdb and starts the server.
func (s *Server) init(ctx context.Context) error {
	err := s.run(ctx, "initdb", "-D", s.dataDir(), "-U", Superuser, "--auth=trust",
		"--no-sync", "-E", "UTF8", "--locale=C.UTF-8")
	if err != nil {
		return err
	}
	return s.pgCtl(ctx, "start")
}

// Dir is the folder holding the socket (the host part of a DSN).
func (s *Server) Dir() string { return s.dir }

// DSN is a connection string for database db as the superuser spool, e.g.
// "postgres:///db?host=DIR&user=spool" (URL form, so it works with pgx and as
// a spoold --store value).
func (s *Server) DSN(db string) string {
	u := url.URL{Scheme: "postgres", Path: "/" + db}
	// A slash is fine in a query; leaving it unescaped keeps the DSN readable.
	host := strings.ReplaceAll(url.QueryEscape(s.dir), "%2F", "/")
	u.RawQuery = "host=" + host + "&user=" + url.QueryEscape(Superuser)
	return u.String()
}

// NewDB creates a new empty database with a unique name (from a template
// database made once) and returns its DSN.
func (s *Server) NewDB(ctx context.Context) (string, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.stopped {
		return "", errors.New("new database: the server is stopped")
	}
	conn, err := pgx.Connect(ctx, s.DSN("postgres"))
	if err != nil {
		return "", fmt.Errorf("new database: connect: %w%s", err, s.logTail())
	}
	defer func() { _ = conn.Close(context.WithoutCancel(ctx)) }()
	if !s.template {
		q := "CREATE DATABASE " + pgx.Identifier{templateDB}.Sanitize() + " TEMPLATE template0"
		if _, err := conn.Exec(ctx, q); err != nil {
			return "", fmt.Errorf("new database: create the template: %w", err)
		}
		s.template = true
	}
	s.next++
	name := "spool_" + strconv.Itoa(s.next)
	q := "CREATE DATABASE " + pgx.Identifier{name}.Sanitize() + " TEMPLATE " + pgx.Identifier{templateDB}.Sanitize()
	if _, err := conn.Exec(ctx, q); err != nil {
		return "", fmt.Errorf("new database %s: %w", name, err)
	}
	return s.DSN(name), nil
}

// Restart restarts the server: pg_ctl restart -m immediate (a crash of the
// server) when immediate, else -m fast. The socket and data stay.
func (s *Server) Restart(ctx context.Context, immediate bool) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.stopped {
		return errors.New("restart: the server is stopped")
	}
	mode := "fast"
	if immediate {
		mode = "immediate"
	}
	return s.pgCtl(ctx, "restart", "-m", mode)
}

// Stop stops the server (-m immediate) and removes the folder. Safe to call
// twice: the second call returns what the first did.
func (s *Server) Stop() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.stopped {
		return s.stopErr
	}
	s.stopped = true
	// Stop must not hang on a wedged server, and has no caller's context.
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	var errs []error
	if _, err := os.Stat(s.pidFile()); err == nil {
		if err := s.run(ctx, "pg_ctl", "stop", "-D", s.dataDir(), "-m", "immediate", "-w"); err != nil {
			// pg_ctl could not stop it: kill the postmaster; its children
			// exit when they see it gone.
			if kerr := s.kill(); kerr != nil {
				errs = append(errs, err, kerr)
			}
		}
	}
	s.lastLog = s.readLog()
	if err := os.RemoveAll(s.dir); err != nil {
		errs = append(errs, fmt.Errorf("stop the test server: remove its folder: %w", err))
	}
	s.stopErr = errors.Join(errs...)
	return s.stopErr
}

// Log returns the server's log (for test failure messages).
func (s *Server) Log() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.stopped {
		return s.lastLog
	}
	return s.readLog()
}

// kill sends SIGKILL to the postmaster named in its pid file.
func (s *Server) kill() error {
	b, err := os.ReadFile(s.pidFile())
	if err != nil {
		return fmt.Errorf("kill the test server: %w", err)
	}
	line, _, _ := strings.Cut(string(b), "\n")
	pid, err := strconv.Atoi(strings.TrimSpace(line))
	if err != nil || pid <= 0 {
		return fmt.Errorf("kill the test server: bad pid file %q", line)
	}
	if err := syscall.Kill(pid, syscall.SIGKILL); err != nil && !errors.Is(err, syscall.ESRCH) {
		return fmt.Errorf("kill the test server (pid %d): %w", pid, err)
	}
	return nil
}

// pgCtl runs pg_ctl start or restart (action, then extra arguments) and waits
// until the server accepts connections.
func (s *Server) pgCtl(ctx context.Context, action string, extra ...string) error {
	fsync := "off"
	if s.opts.Fsync {
		fsync = "on"
	}
	serverOpts := fmt.Sprintf("-k %s -p 5432 -c listen_addresses='' -c fsync=%s -c max_connections=%d",
		s.dir, fsync, s.opts.MaxConnections)
	args := append([]string{action, "-D", s.dataDir(), "-l", s.logFile(), "-w", "-t", "60", "-o", serverOpts}, extra...)
	err := s.run(ctx, "pg_ctl", args...)
	if err != nil {
		return fmt.Errorf("%w%s", err, s.logTail())
	}
	return nil
}

// run runs a command of PostgreSQL's (name is a file of s.bin) as the server's
// user, in its folder. The error names the command and ends with the last
// lines of its output.
func (s *Server) run(ctx context.Context, name string, args ...string) error {
	cmd := exec.CommandContext(ctx, filepath.Join(s.bin, name), args...)
	cmd.Dir = s.dir
	cmd.Env = environ(s.dir)
	var out bytes.Buffer
	cmd.Stdout = &out
	cmd.Stderr = &out
	// pg_ctl's server writes to the log, not to this pipe; if it ever held
	// the pipe open, Wait would still return.
	cmd.WaitDelay = 5 * time.Second
	if s.cred != nil {
		cmd.SysProcAttr = &syscall.SysProcAttr{Credential: s.cred}
	}
	if err := cmd.Run(); err != nil {
		return fmt.Errorf("%s %s: %w%s", name, strings.Join(args, " "), err,
			tail("output", out.String()))
	}
	return nil
}

func (s *Server) dataDir() string { return filepath.Join(s.dir, "data") }
func (s *Server) logFile() string { return filepath.Join(s.dir, "pg.log") }
func (s *Server) pidFile() string { return filepath.Join(s.dataDir(), "postmaster.pid") }

// readLog reads the server's log; "" when there is none.
func (s *Server) readLog() string {
	b, err := os.ReadFile(s.logFile())
	if err != nil {
		return ""
	}
	return string(b)
}

// logTail is the last lines of the server's log, for an error message.
func (s *Server) logTail() string { return tail("server log", s.readLog()) }

// tail formats the last lines of text, labelled, to end an error message;
// "" when text is empty.
func tail(label, text string) string {
	const n = 20
	lines := strings.Split(strings.TrimRight(text, "\n"), "\n")
	if len(lines) == 1 && lines[0] == "" {
		return ""
	}
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return "\n" + label + ":\n\t" + strings.Join(lines, "\n\t")
}

// environ is the environment of the server's commands: this process's, less
// the PG* variables that would point them elsewhere, with HOME set to dir
// (the server's user may have no home of its own to read).
func environ(dir string) []string {
	var env []string
	for _, kv := range os.Environ() {
		if strings.HasPrefix(kv, "PG") || strings.HasPrefix(kv, "HOME=") {
			continue
		}
		env = append(env, kv)
	}
	return append(env, "HOME="+dir)
}

// binDir finds the folder of initdb and pg_ctl: pg_config --bindir, else
// PostgreSQL 15's folder in Debian's layout, else initdb's folder on PATH.
func binDir() (string, error) {
	if out, err := exec.Command("pg_config", "--bindir").Output(); err == nil {
		dir := strings.TrimSpace(string(out))
		if isFile(filepath.Join(dir, "initdb")) && isFile(filepath.Join(dir, "pg_ctl")) {
			return dir, nil
		}
	}
	const debian = "/usr/lib/postgresql/15/bin"
	if isFile(filepath.Join(debian, "initdb")) {
		return debian, nil
	}
	path, err := exec.LookPath("initdb")
	if err != nil {
		return "", fmt.Errorf("find PostgreSQL: no pg_config, no %s, no initdb on PATH: %w", debian, err)
	}
	if resolved, err := filepath.EvalSymlinks(path); err == nil {
		path = resolved
	}
	return filepath.Dir(path), nil
}

// isFile reports whether path names an existing file.
func isFile(path string) bool {
	fi, err := os.Stat(path)
	return err == nil && fi.Mode().IsRegular()
}

// credential is whom the server's commands run as: nil (this process's user)
// unless this process is root, which initdb refuses; then the postgres user,
// else nobody.
func credential() (*syscall.Credential, error) {
	if os.Geteuid() != 0 {
		return nil, nil
	}
	var u *user.User
	var err error
	for _, name := range []string{"postgres", "nobody"} {
		if u, err = user.Lookup(name); err == nil {
			break
		}
	}
	if err != nil {
		return nil, fmt.Errorf("find a user to run PostgreSQL as (not root): %w", err)
	}
	uid, err := strconv.ParseUint(u.Uid, 10, 32)
	if err != nil {
		return nil, fmt.Errorf("user %s: uid %q: %w", u.Username, u.Uid, err)
	}
	gid, err := strconv.ParseUint(u.Gid, 10, 32)
	if err != nil {
		return nil, fmt.Errorf("user %s: gid %q: %w", u.Username, u.Gid, err)
	}
	cred := &syscall.Credential{Uid: uint32(uid), Gid: uint32(gid)}
	ids, err := u.GroupIds()
	if err != nil {
		return nil, fmt.Errorf("user %s: groups: %w", u.Username, err)
	}
	for _, id := range ids {
		g, err := strconv.ParseUint(id, 10, 32)
		if err != nil {
			return nil, fmt.Errorf("user %s: group %q: %w", u.Username, id, err)
		}
		cred.Groups = append(cred.Groups, uint32(g))
	}
	return cred, nil
}

// tempDir makes the server's folder: fresh (a server left by a killed run is
// in a folder of its own), short enough for the socket's path, readable by
// everyone and owned by cred's user when cred is set. It tries the system's
// temporary folder, then /tmp when that is too long a path or not reachable by
// the server's user.
func tempDir(cred *syscall.Credential) (string, error) {
	parents := []string{os.TempDir()}
	if parents[0] != "/tmp" {
		parents = append(parents, "/tmp")
	}
	var err error
	for _, parent := range parents {
		// The folder's name adds "spool-pg-" and about ten digits.
		if len(parent)+len("/spool-pg-0123456789/")+len(socketName) > maxSocketPath {
			err = fmt.Errorf("make the test server's folder: %s is too long a path for a socket", parent)
			continue
		}
		if cred != nil && !searchable(parent) {
			err = fmt.Errorf("make the test server's folder: %s is not reachable by uid %d", parent, cred.Uid)
			continue
		}
		var dir string
		if dir, err = os.MkdirTemp(parent, "spool-pg-"); err != nil {
			err = fmt.Errorf("make the test server's folder: %w", err)
			continue
		}
		if err = os.Chmod(dir, 0o755); err == nil && cred != nil {
			err = os.Chown(dir, int(cred.Uid), int(cred.Gid))
		}
		if err != nil {
			_ = os.RemoveAll(dir)
			return "", fmt.Errorf("make the test server's folder: %w", err)
		}
		return dir, nil
	}
	return "", err
}

// searchable reports whether every folder from / to dir lets others through
// (the server's user is another than this process's).
func searchable(dir string) bool {
	dir, err := filepath.Abs(dir)
	if err != nil {
		return false
	}
	for {
		fi, err := os.Stat(dir)
		if err != nil || fi.Mode().Perm()&0o001 == 0 {
			return false
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			return true
		}
		dir = parent
	}
}
