package main

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/spf13/pflag"

	"spool/rpc"
)

// The commands that change queued jobs: edit, hold, release.

// editCommands are the commands of this file, for commandList.
func editCommands() []command {
	return []command{
		{name: "edit", args: "ID [--priority N] [--queue Q] [--label k=v|k-]... [--not-before TIME|--delay D] [--after ID,...]", summary: "change a queued job", ids: true, define: defineEdit,
			long: "Change a queued job: its priority (higher first), its queue, its labels (k=v sets\n" +
				"one, k- removes it; the others are kept), when it may start (--not-before TIME or\n" +
				"--delay D from now; --not-before none clears it) and the jobs it waits for (--after\n" +
				"replaces the list; --after none clears it). A running or final job cannot be edited.",
			example: "  spool edit 7 --priority 10\n  spool edit 7 --queue builds --label team=web --label old-\n" +
				"  spool edit 7 --delay 30m\n  spool edit 7 --after 5,6"},
		{name: "hold", args: "ID...", summary: "hold queued jobs: they do not start until released", ids: true, define: defineHold,
			example: "  spool hold 7 8"},
		{name: "release", args: "ID...", summary: "release held jobs", ids: true, define: defineRelease,
			example: "  spool release 7 8"},
	}
}

// labelEditsFlag is --label k=v (set) or k- (remove), many times.
type labelEditsFlag struct{ m map[string]*string }

func (f *labelEditsFlag) String() string {
	if f == nil || len(f.m) == 0 {
		return ""
	}
	var parts []string
	for k, v := range f.m {
		if v == nil {
			parts = append(parts, k+"-")
		} else {
			parts = append(parts, k+"="+*v)
		}
	}
	sort.Strings(parts)
	return strings.Join(parts, ",")
}

func (f *labelEditsFlag) Type() string { return "label" }

func (f *labelEditsFlag) Set(s string) error {
	if f.m == nil {
		f.m = map[string]*string{}
	}
	if k, v, ok := strings.Cut(s, "="); ok && k != "" {
		f.m[k] = &v
		return nil
	}
	if k, ok := strings.CutSuffix(s, "-"); ok && k != "" && !strings.Contains(k, "=") {
		f.m[k] = nil
		return nil
	}
	return fmt.Errorf("%q is neither key=value (set) nor key- (remove)", s)
}

// afterEditFlag is --after ID,... (the new list, repeatable) or none.
type afterEditFlag struct {
	set bool
	ids []int64
}

func (f *afterEditFlag) String() string {
	parts := make([]string, len(f.ids))
	for i, id := range f.ids {
		parts[i] = strconv.FormatInt(id, 10)
	}
	return strings.Join(parts, ",")
}

func (f *afterEditFlag) Type() string { return "ids" }

func (f *afterEditFlag) Set(s string) error {
	f.set = true
	if s == "none" {
		return nil
	}
	for _, part := range strings.Split(s, ",") {
		id, err := parseID(part)
		if err != nil {
			return fmt.Errorf("%v (job ids separated by commas, or none)", err)
		}
		if !slices.Contains(f.ids, id) {
			f.ids = append(f.ids, id)
		}
	}
	return nil
}

// timeFlag is --not-before: a time, or none.
type timeFlag struct {
	set  bool
	t    *time.Time
	now  func() time.Time
	text string
}

func (f *timeFlag) String() string { return f.text }

func (f *timeFlag) Type() string { return "time" }

func (f *timeFlag) Set(s string) error {
	f.set, f.text = true, s
	if s == "none" {
		f.t = nil
		return nil
	}
	t, err := parseWhen(s, f.now())
	if err != nil {
		return err
	}
	f.t = &t
	return nil
}

// parseWhen reads a time: RFC 3339, a local date and time ("2026-12-01 14:30",
// "2026-12-01T14:30"), or a local time of day ("14:30", the next one to come).
func parseWhen(s string, now time.Time) (time.Time, error) {
	if t, err := time.Parse(time.RFC3339Nano, s); err == nil {
		return t, nil
	}
	for _, layout := range []string{"2006-01-02 15:04", "2006-01-02T15:04", "2006-01-02 15:04:05", "2006-01-02T15:04:05"} {
		if t, err := time.ParseInLocation(layout, s, time.Local); err == nil {
			return t, nil
		}
	}
	for _, layout := range []string{"15:04", "15:04:05"} {
		if c, err := time.ParseInLocation(layout, s, time.Local); err == nil {
			local := now.In(time.Local)
			t := time.Date(local.Year(), local.Month(), local.Day(), c.Hour(), c.Minute(), c.Second(), 0, time.Local)
			if !t.After(local) {
				t = t.AddDate(0, 0, 1)
			}
			return t, nil
		}
	}
	return time.Time{}, fmt.Errorf("%q is not a time (2026-12-01T14:30:00Z, \"2026-12-01 14:30\", 14:30) or none", s)
}

// editFlags names the flag of each field of job.edit, for the daemon's errors.
var editFlags = map[string]string{"priority": "--priority", "queue": "--queue", "labels": "--label", "not_before": "--not-before", "after": "--after"}

// flagOfField turns the daemon's -32602 about a field of job.edit into an error
// that names the flag too.
func flagOfField(err error) error {
	var re *rpc.Error
	if !errors.As(err, &re) || re.Code != rpc.CodeInvalidParams || re.Data == nil {
		return err
	}
	field := re.Data.Field
	if i := strings.IndexAny(field, ".["); i > 0 {
		field = field[:i]
	}
	if flag, ok := editFlags[field]; ok {
		return fmt.Errorf("%s: %s", flag, describeRPCError(re))
	}
	return err
}

func defineEdit(a *app, fs *pflag.FlagSet) runner {
	var labels labelEditsFlag
	var after afterEditFlag
	notBefore := timeFlag{now: time.Now}
	priority := fs.IntP("priority", "p", 0, "the new priority `N` (higher first)")
	queue := fs.StringP("queue", "q", "", "move the job to `QUEUE`")
	fs.VarP(&labels, "label", "l", "set a label `k=v`, or remove one with k- (repeatable)")
	fs.Var(&notBefore, "not-before", "do not start before `TIME` (RFC 3339, \"2026-12-01 14:30\", 14:30), or none")
	delay := fs.Duration("delay", 0, "do not start before `D` from now (90s, 10m, 2h)")
	fs.VarP(&after, "after", "a", "run after the jobs `ID,...` succeeded, instead of the ones now (none: no dependency)")
	return func(ctx context.Context, args []string) error {
		id, c, err := a.oneJob(ctx, "edit", args)
		if err != nil {
			return err
		}
		p := rpc.EditParams{ID: id, Labels: labels.m}
		if fs.Changed("priority") {
			p.Priority = priority
		}
		if fs.Changed("queue") {
			if !rpc.ValidQueueName(*queue) {
				return usagef("edit: --queue: %q is not a queue name ([a-z0-9._-], 1 to 64)", *queue)
			}
			p.Queue = queue
		}
		switch {
		case notBefore.set && fs.Changed("delay"):
			return usagef("edit: --not-before and --delay both say when: give one")
		case notBefore.set:
			p.NotBefore = rpc.OptionalTime{Set: true, Time: notBefore.t}
		case fs.Changed("delay"):
			if *delay <= 0 {
				return usagef("edit: --delay: %s: must be positive", *delay)
			}
			t := time.Now().Add(*delay).UTC()
			p.NotBefore = rpc.OptionalTime{Set: true, Time: &t}
		}
		if after.set {
			ids := after.ids
			if ids == nil {
				ids = []int64{}
			}
			p.After = &ids
		}
		if !p.Changes() {
			return usagef("edit: nothing to change: give --priority, --queue, --label, --not-before, --delay or --after")
		}
		j, err := c.Edit(ctx, p)
		if err != nil {
			return flagOfField(err)
		}
		return a.result(j, func() { a.printQueued(j) })
	}
}

// printQueued writes one line about a queued job: what decides when it runs.
func (a *app) printQueued(j *rpc.Job) {
	line := fmt.Sprintf("%d %s", j.ID, a.term.paint(stateStyle(j.State), string(j.State)))
	if j.Waiting != nil {
		line += " (" + *j.Waiting + ")"
	}
	line += fmt.Sprintf("  queue %s  priority %d", j.Queue, j.Priority)
	if len(j.After) > 0 {
		parts := make([]string, len(j.After))
		for i, id := range j.After {
			parts[i] = strconv.FormatInt(id, 10)
		}
		line += "  after " + strings.Join(parts, ",")
	}
	if j.NotBefore != nil {
		line += "  not before " + j.NotBefore.Local().Format("2006-01-02 15:04:05")
	}
	if len(j.Labels) > 0 {
		keys := make([]string, 0, len(j.Labels))
		for k := range j.Labels {
			keys = append(keys, k)
		}
		sort.Strings(keys)
		for i, k := range keys {
			keys[i] = k + "=" + j.Labels[k]
		}
		line += "  labels " + strings.Join(keys, ",")
	}
	a.printf("%s\n", line)
}

func defineHold(a *app, fs *pflag.FlagSet) runner {
	return holdOrRelease(a, "hold", func(ctx context.Context, id int64) (*rpc.Job, error) {
		c, err := a.client(ctx)
		if err != nil {
			return nil, err
		}
		return c.Hold(ctx, rpc.HoldParams{ID: id})
	})
}

func defineRelease(a *app, fs *pflag.FlagSet) runner {
	return holdOrRelease(a, "release", func(ctx context.Context, id int64) (*rpc.Job, error) {
		c, err := a.client(ctx)
		if err != nil {
			return nil, err
		}
		return c.Release(ctx, rpc.HoldParams{ID: id})
	})
}

// holdOrRelease runs do on each job named, in order; a job it fails for is
// named on stderr and the exit code is 1.
func holdOrRelease(a *app, name string, do func(context.Context, int64) (*rpc.Job, error)) runner {
	return func(ctx context.Context, args []string) error {
		if len(args) == 0 {
			return usagef("%s takes at least one job id", name)
		}
		ids, err := parseIDs(args)
		if err != nil {
			return err
		}
		if _, err := a.client(ctx); err != nil {
			return err
		}
		var done []*rpc.Job
		failed := false
		for _, id := range ids {
			j, err := do(ctx, id)
			if err != nil {
				var re *rpc.Error
				if !errors.As(err, &re) {
					return err
				}
				a.fail(err) // the daemon's message names the job
				failed = true
				continue
			}
			done = append(done, j)
			if !a.json {
				a.printQueued(j)
			}
		}
		if a.json && len(done) > 0 {
			if err := a.printJobs(done, len(ids) > 1); err != nil {
				return err
			}
		}
		if failed {
			return &exitError{code: exitFailure}
		}
		return nil
	}
}
