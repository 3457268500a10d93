package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/signal"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/spf13/cobra"
	"github.com/spf13/pflag"

	"spool/rpc"
)

// rootLong is the top of spool --help.
const rootLong = `spool: the command line of the spool job daemon.

Global flags (--socket, --json) are accepted before or after the command.
The socket defaults to $SPOOL_SOCKET, else $XDG_RUNTIME_DIR/spool/spoold.sock,
else /tmp/spool-UID/spoold.sock.
Durations are a number with a unit: 90s, 2m, 1h30m.`

// exitCodesHelp ends every help page.
const exitCodesHelp = `
Exit codes:
  0  ok (for wait and watch: every job succeeded)
  1  failure, or a job did not succeed
  2  the daemon is not reachable, or a usage error
`

// rootCommand builds the command tree: a cobra command per entry of commandList,
// with its flags, help, examples and shell completion. When args name a command,
// only that one is built (the others are needed only for help, completion and
// suggestions): building all of them costs a short-lived process about 0.2 ms.
func (a *app) rootCommand(args []string) *cobra.Command {
	root := &cobra.Command{
		Use:           "spool",
		Short:         "the command line of the spool job daemon",
		Long:          rootLong,
		SilenceErrors: true,
		SilenceUsage:  true,
		// Arguments left at the root are an unknown command: said here, with the
		// nearest command, rather than in cobra's words.
		Args: cobra.ArbitraryArgs,
		RunE: func(cc *cobra.Command, args []string) error {
			if len(args) == 0 {
				fmt.Fprintf(a.stderr, "spool: no command given\n\n")
				cc.SetOut(a.stderr)
				_ = cc.Usage()
				return &exitError{code: exitUsage}
			}
			return unknownCommand(cc, args[0])
		},
		CompletionOptions: cobra.CompletionOptions{DisableDefaultCmd: true},
		// sumbit -> submit is two edits.
		SuggestionsMinimumDistance: 3,
	}
	a.root = root
	root.SetIn(a.stdin)
	root.SetOut(a.stdout)
	root.SetErr(a.stderr)
	root.SetUsageTemplate(root.UsageTemplate() + exitCodesHelp)
	root.SetFlagErrorFunc(a.flagError)
	pf := root.PersistentFlags()
	pf.StringVar(&a.socket, "socket", "", "the daemon's socket `PATH` (default $SPOOL_SOCKET, else the default path)")
	pf.BoolVar(&a.json, "json", false, "print JSON as in the protocol")
	_ = root.RegisterFlagCompletionFunc("socket", func(*cobra.Command, []string, string) ([]string, cobra.ShellCompDirective) {
		return nil, cobra.ShellCompDirectiveDefault
	})
	root.SetHelpCommand(&cobra.Command{
		Use:   "help [COMMAND]",
		Short: "help about a command",
		Args:  cobra.ArbitraryArgs,
		ValidArgsFunction: func(cc *cobra.Command, args []string, _ string) ([]string, cobra.ShellCompDirective) {
			if len(args) > 0 {
				return nil, cobra.ShellCompDirectiveNoFileComp
			}
			var names []string
			for _, c := range cc.Root().Commands() {
				if c.IsAvailableCommand() {
					names = append(names, c.Name()+"\t"+c.Short)
				}
			}
			return names, cobra.ShellCompDirectiveNoFileComp
		},
		RunE: func(cc *cobra.Command, args []string) error {
			target := cc.Root()
			if len(args) > 0 {
				c, _, err := target.Find(args)
				if err != nil || c == target {
					return unknownCommand(target, args[0])
				}
				target = c
			}
			target.InitDefaultHelpFlag() // as --help shows it
			return target.Help()
		},
	})
	only := commandName(args)
	cmds := commandList()
	if !slices.ContainsFunc(cmds, func(c command) bool { return c.name == only && c.name != "completion" }) {
		only = ""
	}
	for _, c := range cmds {
		if only == "" || c.name == only {
			root.AddCommand(a.cobraCommand(c))
		}
	}
	return root
}

// commandName is the first argument that is not a global flag or its value: the
// command's name, or "".
func commandName(args []string) string {
	for i := 0; i < len(args); i++ {
		arg := args[i]
		switch {
		case arg == "--":
			return ""
		case arg == "--socket":
			i++
		case strings.HasPrefix(arg, "-"):
		default:
			return arg
		}
	}
	return ""
}

// unknownCommand is the usage error for a command name that is not one, with the
// nearest commands.
func unknownCommand(root *cobra.Command, name string) error {
	msg := fmt.Sprintf("unknown command %q", name)
	if s := root.SuggestionsFor(name); len(s) > 0 {
		msg += "; did you mean " + strings.Join(s, " or ") + "?"
	}
	return usagef("%s (spool --help lists the commands)", msg)
}

// cobraCommand makes the cobra command of c: its flags come from c.define, which
// returns what runs it.
func (a *app) cobraCommand(c command) *cobra.Command {
	cc := &cobra.Command{
		Use:     strings.TrimSpace(c.name + " " + c.args),
		Short:   c.summary,
		Long:    c.long,
		Example: c.example,
		Args:    cobra.ArbitraryArgs,
	}
	if cc.Long == "" {
		cc.Long = c.summary
	}
	fs := cc.Flags()
	if c.strict {
		fs.SetInterspersed(false)
	}
	run := c.define(a, fs)
	cc.RunE = func(cc *cobra.Command, args []string) error {
		ctx := cc.Context()
		if c.waits {
			var stop context.CancelFunc
			ctx, stop = signal.NotifyContext(ctx, os.Interrupt, syscall.SIGTERM)
			defer stop()
		}
		return run(ctx, args)
	}
	if c.ids {
		cc.ValidArgsFunction = a.completeIDs
	}
	if c.complete != nil {
		cc.ValidArgsFunction = c.complete(a)
	}
	a.flagCompletions(cc)
	return cc
}

// flagCompletions registers what the values of well-known flags complete to.
func (a *app) flagCompletions(cc *cobra.Command) {
	fs := cc.Flags()
	if fs.Lookup("state") != nil {
		_ = cc.RegisterFlagCompletionFunc("state", cobra.FixedCompletions(
			[]string{"queued", "running", "succeeded", "failed", "cancelled"}, cobra.ShellCompDirectiveNoFileComp))
	}
	if fs.Lookup("after") != nil {
		_ = cc.RegisterFlagCompletionFunc("after", func(cc *cobra.Command, _ []string, s string) ([]string, cobra.ShellCompDirective) {
			return a.completeIDs(cc, nil, s)
		})
	}
	if fs.Lookup("queue") != nil {
		_ = cc.RegisterFlagCompletionFunc("queue", a.completeQueues)
	}
	for _, name := range []string{"name", "key", "label", "env", "reason", "priority", "retry", "timeout", "older-than", "limit", "parallel", "not-before", "delay", "at", "lines"} {
		if fs.Lookup(name) != nil {
			_ = cc.RegisterFlagCompletionFunc(name, cobra.NoFileCompletions)
		}
	}
	a.scheduleFlagCompletions(cc)
	a.hookFlagCompletions(cc)
}

// flagError turns pflag's errors into usage errors that quote the flag as typed,
// say what is wrong with its value, and suggest the nearest flag.
func (a *app) flagError(cc *cobra.Command, err error) error {
	where, help := "", "(spool --help lists the flags)"
	if cc.HasParent() {
		where = cc.Name() + ": "
		help = fmt.Sprintf("(spool %s --help lists the flags)", cc.Name())
	}
	if typed, long := a.singleDashLong(cc); typed != "" {
		return usagef("%s%s: a long flag takes two dashes; did you mean --%s?", where, typed, long)
	}
	var notExist *pflag.NotExistError
	var invalid *pflag.InvalidValueError
	var required *pflag.ValueRequiredError
	switch {
	case errors.As(err, &notExist):
		if short := notExist.GetSpecifiedShortnames(); short != "" {
			return usagef("%sunknown flag -%s %s", where, notExist.GetSpecifiedName(), help)
		}
		name := notExist.GetSpecifiedName()
		msg := fmt.Sprintf("%sunknown flag --%s", where, name)
		if near := nearestFlag(cc.Flags(), name); near != "" {
			msg += "; did you mean --" + near + "?"
		}
		return usagef("%s %s", msg, help)
	case errors.As(err, &invalid):
		cause := errors.Unwrap(invalid)
		if cause == nil || !strings.Contains(cause.Error(), strconv.Quote(invalid.GetValue())) {
			return usagef("%s%s: %q: %v", where, flagSpelling(invalid.GetFlag()), invalid.GetValue(), cause)
		}
		return usagef("%s%s: %v", where, flagSpelling(invalid.GetFlag()), cause)
	case errors.As(err, &required):
		f := required.GetFlag()
		name, _ := pflag.UnquoteUsage(f)
		return usagef("%s%s needs a value (%s)", where, flagSpelling(f), name)
	}
	return usagef("%s%v %s", where, err, help)
}

// flagSpelling is the flag as people write it: --timeout, or -t/--timeout.
func flagSpelling(f *pflag.Flag) string {
	if f.Shorthand != "" {
		return "-" + f.Shorthand + "/--" + f.Name
	}
	return "--" + f.Name
}

// singleDashLong finds, among the arguments before "--", a long flag written with
// one dash (-retry, as Go's flag package allows): pflag reads it as short flags.
func (a *app) singleDashLong(cc *cobra.Command) (typed, long string) {
	for _, arg := range a.args {
		if arg == "--" {
			break
		}
		if len(arg) < 3 || arg[0] != '-' || arg[1] == '-' {
			continue
		}
		name, _, _ := strings.Cut(arg[1:], "=")
		if f := cc.Flags().Lookup(name); f != nil {
			return arg, f.Name
		}
		if near := nearestFlag(cc.Flags(), name); near != "" {
			return arg, near
		}
	}
	return "", ""
}

// nearestFlag is the visible flag whose name is nearest to name, or "": at most
// two edits away, or sharing its first four letters (--retries: --retry).
func nearestFlag(fs *pflag.FlagSet, name string) string {
	best, bestD := "", -1
	fs.VisitAll(func(f *pflag.Flag) {
		if f.Hidden || len(f.Name) < 2 {
			return
		}
		d := editDistance(name, f.Name)
		if d > 2 && commonPrefix(name, f.Name) < min(4, len(f.Name)) {
			return
		}
		if bestD < 0 || d < bestD || (d == bestD && f.Name < best) {
			best, bestD = f.Name, d
		}
	})
	return best
}

// commonPrefix is how many leading bytes a and b share.
func commonPrefix(a, b string) int {
	n := 0
	for n < len(a) && n < len(b) && a[n] == b[n] {
		n++
	}
	return n
}

// editDistance is the Levenshtein distance between a and b.
func editDistance(a, b string) int {
	prev := make([]int, len(b)+1)
	cur := make([]int, len(b)+1)
	for j := range prev {
		prev[j] = j
	}
	for i := 1; i <= len(a); i++ {
		cur[0] = i
		for j := 1; j <= len(b); j++ {
			cost := 1
			if a[i-1] == b[j-1] {
				cost = 0
			}
			cur[j] = min(prev[j]+1, cur[j-1]+1, prev[j-1]+cost)
		}
		prev, cur = cur, prev
	}
	return prev[len(b)]
}

// durationFlag is a duration flag whose errors say the syntax.
type durationFlag struct{ d *time.Duration }

func (f durationFlag) String() string {
	if f.d == nil || *f.d == 0 {
		return "0"
	}
	return f.d.String()
}

func (f durationFlag) Set(s string) error {
	d, err := time.ParseDuration(strings.TrimSpace(s))
	if err != nil {
		return fmt.Errorf("%q is not a duration: write a number with a unit, e.g. 90s, 2m, 1h30m", s)
	}
	*f.d = d
	return nil
}

func (f durationFlag) Type() string { return "duration" }

// durationVarP registers a duration flag whose errors say the syntax.
func durationVarP(fs *pflag.FlagSet, p *time.Duration, name, short, usage string) {
	fs.VarP(durationFlag{d: p}, name, short, usage)
}

// completeIDs offers the ids of the daemon's jobs (the newest 1000), in numeric
// order, each with its state and title.
func (a *app) completeIDs(cc *cobra.Command, _ []string, _ string) ([]string, cobra.ShellCompDirective) {
	ctx, cancel := context.WithTimeout(cc.Context(), 3*time.Second)
	defer cancel()
	c, err := a.client(ctx)
	if err != nil {
		return nil, cobra.ShellCompDirectiveNoFileComp
	}
	r, err := c.List(ctx, rpc.ListParams{Limit: 1000, Order: "desc"})
	if err != nil {
		return nil, cobra.ShellCompDirectiveNoFileComp
	}
	jobs := r.Jobs
	slices.SortFunc(jobs, func(x, y rpc.Job) int { return int(x.ID - y.ID) })
	out := make([]string, 0, len(jobs))
	for i := range jobs {
		j := &jobs[i]
		desc := string(j.State)
		if j.Name != "" {
			desc += " " + oneLine(j.Name)
		}
		out = append(out, strconv.FormatInt(j.ID, 10)+"\t"+desc)
	}
	return out, cobra.ShellCompDirectiveNoFileComp | cobra.ShellCompDirectiveKeepOrder
}

// completeQueues offers the daemon's queue names.
func (a *app) completeQueues(cc *cobra.Command, _ []string, _ string) ([]string, cobra.ShellCompDirective) {
	ctx, cancel := context.WithTimeout(cc.Context(), 3*time.Second)
	defer cancel()
	c, err := a.client(ctx)
	if err != nil {
		return nil, cobra.ShellCompDirectiveNoFileComp
	}
	r, err := c.QueueList(ctx)
	if err != nil {
		return nil, cobra.ShellCompDirectiveNoFileComp
	}
	var out []string
	for _, q := range r.Queues {
		out = append(out, q.Name)
	}
	return out, cobra.ShellCompDirectiveNoFileComp
}

// completeTemplates offers the daemon's template names.
func (a *app) completeTemplates(cc *cobra.Command) []string {
	ctx, cancel := context.WithTimeout(cc.Context(), 3*time.Second)
	defer cancel()
	c, err := a.client(ctx)
	if err != nil {
		return nil
	}
	r, err := c.TemplateList(ctx)
	if err != nil {
		return nil
	}
	var out []string
	for _, t := range r.Templates {
		out = append(out, t.Name)
	}
	return out
}

// writeCompletion writes the completion script of shell, generated by cobra: it
// asks `spool __complete` for commands, flags and job ids.
func writeCompletion(root *cobra.Command, shell string, w io.Writer) error {
	switch shell {
	case "bash":
		return root.GenBashCompletionV2(w, true)
	case "zsh":
		return root.GenZshCompletion(w)
	case "fish":
		return root.GenFishCompletion(w, true)
	case "powershell":
		return root.GenPowerShellCompletionWithDesc(w)
	}
	return usagef("completion: unknown shell %q (bash, zsh, fish, powershell)", shell)
}
