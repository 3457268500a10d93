package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"

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

	socket string // --socket
	json   bool   // --json
	term   terminal

	conn *client.Client
}

// runner runs a command with its positional arguments.
type runner func(ctx context.Context, args []string) error

// command is one subcommand: its synopsis, and a define function that registers its
// flags on a FlagSet and returns what runs it (completion uses the flags only).
type command struct {
	name    string
	args    string // synopsis after the name
	summary string
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
	define func(a *app, fs *flag.FlagSet) runner
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

// hiddenFlag starts the usage of flags left out of help and completion.
const hiddenFlag = "\x00"

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
	}
	a.term = detectTerminal(stdout, getenv)
	code := a.main(ctx, args)
	if a.conn != nil {
		a.conn.Close()
	}
	return code
}

func (a *app) main(ctx context.Context, args []string) int {
	top := flag.NewFlagSet("spool", flag.ContinueOnError)
	top.SetOutput(io.Discard)
	a.globalFlags(top)
	help := top.Bool("help", false, "show this help")
	top.BoolVar(help, "h", false, "show this help")
	if err := top.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			a.usage(a.stdout)
			return exitOK
		}
		return a.fail(usagef("%v", err))
	}
	if *help {
		a.usage(a.stdout)
		return exitOK
	}
	rest := top.Args()
	if len(rest) == 0 {
		a.usage(a.stderr)
		return exitUsage
	}
	name, rest := rest[0], rest[1:]
	if name == "help" {
		if len(rest) > 0 {
			if cmd := findCommand(rest[0]); cmd != nil {
				fs := a.newFlagSet(cmd)
				cmd.define(a, fs)
				a.commandUsage(a.stdout, cmd, fs)
				return exitOK
			}
		}
		a.usage(a.stdout)
		return exitOK
	}
	cmd := findCommand(name)
	if cmd == nil {
		return a.fail(usagef("unknown command %q (see spool help)", name))
	}
	fs := a.newFlagSet(cmd)
	runCmd := cmd.define(a, fs)
	pos, err := parseFlags(fs, rest, cmd.strict)
	if err != nil {
		if errors.Is(err, flag.ErrHelp) {
			a.commandUsage(a.stdout, cmd, fs)
			return exitOK
		}
		return a.fail(usagef("%s: %v", cmd.name, err))
	}
	if cmd.waits {
		var stop context.CancelFunc
		ctx, stop = signal.NotifyContext(ctx, os.Interrupt, syscall.SIGTERM)
		defer stop()
	}
	return a.fail(runCmd(ctx, pos))
}

// globalFlags registers the flags every command takes.
func (a *app) globalFlags(fs *flag.FlagSet) {
	fs.StringVar(&a.socket, "socket", a.socket, "the daemon's socket `PATH` (default $SPOOL_SOCKET, else the default path)")
	fs.BoolVar(&a.json, "json", a.json, "print JSON as in the protocol")
}

func (a *app) newFlagSet(cmd *command) *flag.FlagSet {
	fs := flag.NewFlagSet(cmd.name, flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	a.globalFlags(fs)
	return fs
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
		fmt.Fprintf(a.stderr, "spool: the daemon is not running (no socket at %s); start it with: spoold  (or: systemctl --user start spoold)\n", a.socketPath())
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

// describeRPCError is an *rpc.Error for people: its message, and for -32602 the
// field and reason when the message does not say them already.
func describeRPCError(e *rpc.Error) string {
	msg := e.Error()
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

// parseFlags parses args with fs. Unless strict, flags may come after positional
// arguments too ("queue q --pause"); "--" ends the flags either way.
func parseFlags(fs *flag.FlagSet, args []string, strict bool) ([]string, error) {
	if strict {
		if err := fs.Parse(args); err != nil {
			return nil, err
		}
		return fs.Args(), nil
	}
	var pos []string
	for {
		if err := fs.Parse(args); err != nil {
			return nil, err
		}
		rest := fs.Args()
		if len(rest) == 0 {
			return pos, nil
		}
		used := len(args) - len(rest)
		if used > 0 && args[used-1] == "--" {
			return append(pos, rest...), nil
		}
		pos = append(pos, rest[0])
		args = rest[1:]
	}
}

func findCommand(name string) *command {
	cmds := commandList()
	for i := range cmds {
		if cmds[i].name == name {
			return &cmds[i]
		}
	}
	return nil
}

// usage is the help of the whole command line.
func (a *app) usage(w io.Writer) {
	var b strings.Builder
	b.WriteString(`spool: the command line of the spool job daemon

Usage: spool [--socket PATH] [--json] COMMAND [ARGS]

Commands:
`)
	for _, c := range commandList() {
		fmt.Fprintf(&b, "  %-11s %s\n", c.name, c.summary)
	}
	b.WriteString(`
Global flags (also accepted after the command):
  --socket PATH  the daemon's socket (default $SPOOL_SOCKET, else
                 $XDG_RUNTIME_DIR/spool/spoold.sock or /tmp/spool-UID/spoold.sock)
  --json         print JSON as in the protocol

Run 'spool help COMMAND' or 'spool COMMAND -h' for a command's flags.
Durations use Go syntax: 90s, 1m30s, 2h.

Exit codes:
  0  ok (for wait and watch: every job succeeded)
  1  failure, or a job did not succeed
  2  the daemon is not reachable, or a usage error
`)
	io.WriteString(w, b.String())
}

// commandUsage is the help of one command.
func (a *app) commandUsage(w io.Writer, cmd *command, fs *flag.FlagSet) {
	fmt.Fprintf(w, "Usage: %s\n\n%s\n", strings.TrimSpace("spool "+cmd.name+" "+cmd.args), cmd.summary)
	var lines []string
	fs.VisitAll(func(f *flag.Flag) {
		if strings.HasPrefix(f.Usage, hiddenFlag) {
			return
		}
		name, usage := flag.UnquoteUsage(f)
		head := "  --" + f.Name
		if len(f.Name) == 1 {
			head = "  -" + f.Name
		}
		if name != "" {
			head += " " + name
		}
		if f.DefValue != "" && f.DefValue != "false" && f.DefValue != "0" && f.DefValue != "0s" {
			usage += fmt.Sprintf(" (default %s)", f.DefValue)
		}
		lines = append(lines, fmt.Sprintf("%-24s %s", head, usage))
	})
	if len(lines) > 0 {
		fmt.Fprintf(w, "\nFlags:\n%s\n", strings.Join(lines, "\n"))
	}
	fmt.Fprintf(w, "\nExit codes: 0 ok, 1 failure or job not succeeded, 2 daemon not reachable or usage error.\n")
}
