package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"github.com/spf13/cobra"
	"github.com/spf13/pflag"

	"spool/client"
	"spool/rpc"
)

// Exit codes.
const (
	exitOK      = 0 // the command did what was asked; the jobs it waited for succeeded
	exitFailure = 1 // an error, or a job that did not succeed
	exitUsage   = 2 // the daemon is not reachable, or the command line is wrong
)

// app is one run of the command line: its streams, its environment and the
// connection it makes on demand.
type app struct {
	stdin   io.Reader
	stdout  io.Writer
	stderr  io.Writer
	getenv  func(string) string
	environ func() []string
	getwd   func() (string, error)
	now     func() time.Time

	socket string   // --socket
	json   bool     // --json
	args   []string // the command line, for error messages
	term   terminal
	root   *cobra.Command

	conn *client.Client
}

// runner runs a command with its positional arguments.
type runner func(ctx context.Context, args []string) error

// command is one subcommand: its synopsis, help and examples, and a define function
// that registers its flags on a FlagSet and returns what runs it.
type command struct {
	name    string
	args    string // synopsis after the name
	summary string
	long    string // the help's text, when more than the summary
	example string // examples for --help
	// complete, when set, completes the positional arguments.
	complete func(a *app) cobra.CompletionFunc
	// ids: the positional arguments are job ids (for completion).
	ids bool
	// strict: flags end at the first argument that is not one (submit's command);
	// otherwise flags and arguments may mix.
	strict bool
	// waits: the command can wait for long (for jobs, events or input), so an
	// interrupt (SIGINT, SIGTERM) ends its wait and it finishes as it would;
	// the others are one exchange with the daemon, which an interrupt simply
	// ends. Catching signals costs a short-lived Go process a locked thread and
	// several thread switches (about 2 ms of CPU here), so only these pay for it.
	waits  bool
	define func(a *app, fs *pflag.FlagSet) runner
}

// usageError is a mistake on the command line (exit 2).
type usageError struct{ msg string }

func (e *usageError) Error() string { return e.msg }

func usagef(format string, args ...any) error {
	return &usageError{msg: fmt.Sprintf(format, args...)}
}

// exitError ends the run with a code and nothing more to say (it was said).
type exitError struct{ code int }

func (e *exitError) Error() string { return fmt.Sprintf("exit status %d", e.code) }

// unreachableError is a failure to connect to the daemon (exit 2).
type unreachableError struct{ err error }

func (e *unreachableError) Error() string { return e.err.Error() }
func (e *unreachableError) Unwrap() error { return e.err }

// run is the whole command line: it parses args, runs the command and returns the
// exit code. main passes the process's streams and os.Getenv; tests pass their own.
func run(ctx context.Context, args []string, stdin io.Reader, stdout, stderr io.Writer, getenv func(string) string) int {
	a := &app{
		stdin:   stdin,
		stdout:  stdout,
		stderr:  stderr,
		getenv:  getenv,
		environ: os.Environ,
		getwd:   os.Getwd,
		now:     time.Now,
		args:    args,
	}
	a.term = detectTerminal(stdout, getenv)
	code := a.main(ctx, args)
	if a.conn != nil {
		a.conn.Close()
	}
	return code
}

func (a *app) main(ctx context.Context, args []string) int {
	root := a.rootCommand(args)
	root.SetArgs(args)
	return a.fail(root.ExecuteContext(ctx))
}

// fail turns a command's error into output on stderr and an exit code.
func (a *app) fail(err error) int {
	if err == nil {
		return exitOK
	}
	var ue *usageError
	var ee *exitError
	var re *rpc.Error
	switch {
	case errors.As(err, &ee):
		return ee.code
	case errors.As(err, &ue):
		fmt.Fprintf(a.stderr, "spool: %s\n", ue.msg)
		return exitUsage
	case errors.Is(err, client.ErrNotRunning):
		if errors.Is(err, syscall.ECONNREFUSED) {
			fmt.Fprintf(a.stderr, "spool: the daemon is not running (the socket %s is stale: nothing listens on it); start it with: %s\n", a.socketPath(), a.startHint())
		} else {
			fmt.Fprintf(a.stderr, "spool: the daemon is not running (no socket at %s); start it with: %s\n", a.socketPath(), a.startHint())
		}
		return exitUsage
	case errors.As(err, new(*unreachableError)):
		fmt.Fprintf(a.stderr, "spool: cannot reach the daemon: %v\n", err)
		return exitUsage
	case errors.As(err, &re):
		fmt.Fprintf(a.stderr, "spool: %s\n", describeRPCError(re))
		return exitFailure
	case errors.Is(err, context.Canceled):
		return exitFailure // interrupted: nothing to add
	}
	fmt.Fprintf(a.stderr, "spool: %v\n", err)
	return exitFailure
}

// startHint says how to start the daemon: in a checkout of spool, with make run
// or bin/spoold; elsewhere spoold or systemd. A --socket given is passed on.
func (a *app) startHint() string {
	inCheckout := false
	if wd, err := a.getwd(); err == nil {
		if _, err := os.Stat(filepath.Join(wd, "cmd", "spoold", "main.go")); err == nil {
			inCheckout = true
		}
	}
	switch {
	case inCheckout && a.socket != "":
		return "make build && bin/spoold --socket " + a.socket
	case inCheckout:
		return "make run  (or: bin/spoold)"
	case a.socket != "":
		return "spoold --socket " + a.socket
	}
	return "spoold  (or: systemctl --user start spoold)"
}

// describeRPCError is an *rpc.Error for people: its message, and for -32602 the
// field and reason when the message does not say them already.
func describeRPCError(e *rpc.Error) string {
	msg := e.Error()
	if e.Code == rpc.CodeBadState && e.Data != nil && e.Data.ID != 0 && e.Data.State.Final() {
		// "job 30 is succeeded: ..." reads "job 30 succeeded: ...".
		msg = strings.Replace(msg, fmt.Sprintf("job %d is %s", e.Data.ID, e.Data.State), fmt.Sprintf("job %d %s", e.Data.ID, e.Data.State), 1)
	}
	if e.Code == rpc.CodeInvalidParams && e.Data != nil && e.Data.Field != "" && !strings.Contains(msg, e.Data.Field) {
		msg += " (" + e.Data.Field + ")"
	}
	return msg
}

// socketPath is the socket the commands dial.
func (a *app) socketPath() string {
	return rpc.ClientSocketPath(a.socket, a.getenv)
}

// client dials the daemon once per run.
// result prints v as JSON with --json, or as human prints it otherwise.
func (a *app) result(v any, human func()) error {
	if a.json {
		return a.printJSON(v)
	}
	human()
	return nil
}

func (a *app) client(ctx context.Context) (*client.Client, error) {
	if a.conn != nil {
		return a.conn, nil
	}
	c, err := client.Dial(ctx, a.socketPath())
	if err != nil {
		return nil, &unreachableError{err: err}
	}
	a.conn = c
	return c, nil
}

// printJSON writes v as one JSON document.
func (a *app) printJSON(v any) error {
	enc := json.NewEncoder(a.stdout)
	enc.SetEscapeHTML(false)
	enc.SetIndent("", "  ")
	if err := enc.Encode(v); err != nil {
		return fmt.Errorf("write JSON: %w", err)
	}
	return nil
}

// printJSONLine writes v as one line of JSON.
func (a *app) printJSONLine(v any) error {
	enc := json.NewEncoder(a.stdout)
	enc.SetEscapeHTML(false)
	if err := enc.Encode(v); err != nil {
		return fmt.Errorf("write JSON: %w", err)
	}
	return nil
}

func (a *app) printf(format string, args ...any) {
	fmt.Fprintf(a.stdout, format, args...)
}
