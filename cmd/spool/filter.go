package main

// The filter that status, wait, retry and cancel share: terms on the command
// line, each one condition, all of which a job must meet.
//
//	state=failed          in one of the states (comma separated)
//	queue=build           in queue build
//	label:team=infra      with label team=infra (repeatable)
//	name=nightly-*        a name the glob matches (*, ?, [a-z])
//	age<2h  age>1d        submitted less (more) than D ago: 90s, 15m, 2h, 3d
//
// A command reads its arguments as job ids when each is a number, else as a
// filter; it takes one or the other, never both. The filter becomes the
// protocol's rpc.Filter, which the daemon validates and matches.

import (
	"context"
	"fmt"
	"os"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/spf13/cobra"
	"golang.org/x/sys/unix"

	"spool/client"
	"spool/rpc"
)

// filterHelp is what each command's help says of the filter.
const filterHelp = "FILTER is one or more terms, all of which a job must meet:\n" +
	"  state=failed[,cancelled]  queue=NAME  label:KEY=VALUE  name=GLOB  age<D  age>D\n" +
	"(D like 90s, 15m, 2h, 3d; GLOB with *, ? and [a-z]). Quote terms with < > * for the shell."

// isFilter reports whether args are filter terms rather than job ids: one of
// them is not a number.
func isFilter(args []string) bool {
	for _, s := range args {
		if _, err := strconv.ParseInt(s, 10, 64); err != nil {
			return true
		}
	}
	return false
}

// parseFilter reads filter terms into f (which may already hold flags'
// values; a condition given twice is an error).
func parseFilter(args []string, f *rpc.Filter) error {
	for _, s := range args {
		if _, err := strconv.ParseInt(s, 10, 64); err == nil {
			return usagef("%q is a job id: give job ids or a filter, not both", s)
		}
		if rest, ok := strings.CutPrefix(s, "age<"); ok {
			d, err := parseAge(s, rest)
			if err != nil {
				return err
			}
			if f.NewerThan != 0 {
				return usagef("filter %q: age< given twice", s)
			}
			f.NewerThan = rpc.Duration(d)
			continue
		}
		if rest, ok := strings.CutPrefix(s, "age>"); ok {
			d, err := parseAge(s, rest)
			if err != nil {
				return err
			}
			if f.OlderThan != 0 {
				return usagef("filter %q: age> given twice", s)
			}
			f.OlderThan = rpc.Duration(d)
			continue
		}
		if rest, ok := strings.CutPrefix(s, "label:"); ok {
			k, v, ok := strings.Cut(rest, "=")
			if !ok || k == "" {
				return usagef("filter %q: write a label as label:KEY=VALUE", s)
			}
			if f.Labels == nil {
				f.Labels = map[string]string{}
			}
			if old, dup := f.Labels[k]; dup && old != v {
				return usagef("filter %q: label %s given twice", s, k)
			}
			f.Labels[k] = v
			continue
		}
		key, val, ok := strings.Cut(s, "=")
		if !ok {
			return usagef("filter %q: not a term; use state=, queue=, label:KEY=VALUE, name=, age<D or age>D", s)
		}
		if val == "" {
			return usagef("filter %q: give a value after %s=", s, key)
		}
		switch key {
		case "state":
			if len(f.State) > 0 {
				return usagef("filter %q: state given twice; list the states in one term, comma separated", s)
			}
			for _, st := range strings.Split(val, ",") {
				switch rpc.State(st) {
				case rpc.StateQueued, rpc.StateRunning, rpc.StateSucceeded, rpc.StateFailed, rpc.StateCancelled:
					f.State = append(f.State, rpc.State(st))
				default:
					return usagef("filter %q: unknown state %q; use queued, running, succeeded, failed or cancelled", s, st)
				}
			}
		case "queue":
			if f.Queue != "" && f.Queue != val {
				return usagef("filter %q: queue given twice", s)
			}
			if !rpc.ValidQueueName(val) {
				return usagef("filter %q: a queue name matches [a-z0-9._-]{1,64}", s)
			}
			f.Queue = val
		case "name":
			if f.Name != "" {
				return usagef("filter %q: name given twice", s)
			}
			f.Name = val
		case "label":
			return usagef("filter %q: write a label as label:KEY=VALUE", s)
		default:
			return usagef("filter %q: unknown term %q; use state=, queue=, label:KEY=VALUE, name=, age<D or age>D", s, key)
		}
	}
	if err := f.Validate(""); err != nil {
		return usagef("filter: %s", rpcReason(err))
	}
	return nil
}

// rpcReason is an rpc error's field and reason, for a usage message.
func rpcReason(err error) string {
	if re, ok := err.(*rpc.Error); ok && re.Data != nil {
		return re.Data.Field + ": " + re.Data.Reason
	}
	return err.Error()
}

// parseAge reads an age: a Go duration, or a whole number of days (3d).
func parseAge(term, s string) (time.Duration, error) {
	if n, ok := strings.CutSuffix(s, "d"); ok {
		if days, err := strconv.Atoi(n); err == nil && days > 0 && days < 100000 {
			return time.Duration(days) * 24 * time.Hour, nil
		}
	}
	d, err := time.ParseDuration(s)
	if err != nil || d <= 0 {
		return 0, usagef("filter %q: an age is a positive duration like 90s, 15m, 2h or 3d", term)
	}
	return d, nil
}

// printSummary writes what a jobs.wait or jobs.cancel answered, and says
// whether every job succeeded and is final.
func (a *app) printSummary(verb string, r *rpc.JobsResult) bool {
	ok := r.Done && len(r.NotSucceeded) == 0
	if a.json {
		_ = a.printJSON(r)
		return ok
	}
	if r.Jobs == 0 {
		fmt.Fprintf(a.stderr, "no jobs match\n")
		return true
	}
	var parts []string
	for _, st := range []rpc.State{rpc.StateSucceeded, rpc.StateFailed, rpc.StateCancelled, rpc.StateRunning, rpc.StateQueued} {
		if n := r.Counts[st]; n > 0 {
			parts = append(parts, fmt.Sprintf("%d %s", n, a.term.paint(stateStyle(st), string(st))))
		}
	}
	a.printf("%s %d %s: %s\n", verb, r.Jobs, plural(r.Jobs, "job", "jobs"), strings.Join(parts, ", "))
	switch {
	case r.Cancelled != nil:
		if len(r.Cancelled) > 0 {
			a.printf("cancelled: %s\n", joinIDs(r.Cancelled))
		}
		return r.Done
	case len(r.NotSucceeded) > 0:
		a.printf("not succeeded: %s\n", joinIDs(r.NotSucceeded))
	}
	if !r.Done {
		fmt.Fprintf(a.stderr, "spool: timed out before every job was final\n")
	}
	return ok
}

func plural(n int, one, many string) string {
	if n == 1 {
		return one
	}
	return many
}

func joinIDs(ids []int64) string {
	s := make([]string, len(ids))
	for i, id := range ids {
		s[i] = strconv.FormatInt(id, 10)
	}
	return strings.Join(s, " ")
}

// waitFilter waits with jobs.wait for the unfinished jobs the filter selects.
func (a *app) waitFilter(ctx context.Context, f rpc.Filter, timeout time.Duration) error {
	c, err := a.client(ctx)
	if err != nil {
		return err
	}
	r, err := c.JobsWait(ctx, rpc.JobsWaitParams{Filter: f, Timeout: rpc.Duration(timeout)})
	if err != nil {
		if ctx.Err() != nil { // interrupted: the jobs go on
			fmt.Fprintf(a.stderr, "spool: stopped waiting; the jobs go on\n")
			return &exitError{code: exitFailure}
		}
		return err
	}
	if !a.printSummary("waited for", r) {
		return &exitError{code: exitFailure}
	}
	return nil
}

// retryFilter retries with jobs.retry the failed or cancelled jobs the
// filter selects, and prints the new ids one a line.
func (a *app) retryFilter(ctx context.Context, f rpc.Filter) error {
	c, err := a.client(ctx)
	if err != nil {
		return err
	}
	r, err := c.JobsRetry(ctx, rpc.JobsRetryParams{Filter: f})
	if err != nil {
		return err
	}
	return a.result(r, func() {
		if len(r.IDs) == 0 && len(r.Skipped) == 0 {
			fmt.Fprintf(a.stderr, "no jobs match\n")
		}
		if len(r.Skipped) > 0 {
			fmt.Fprintf(a.stderr, "retried before, so not again: %s\n", abbrevIDs(r.Skipped))
		}
		for i, id := range r.IDs {
			a.printf("%d\t(retry of %d)\n", id, r.RetryOf[i])
		}
	})
}

// cancelFilter cancels with jobs.cancel the unfinished jobs the filter
// selects. More than one job is cancelled only when the user says so: --yes,
// or "y" at the prompt on a terminal. The call's limit is the number of jobs
// the user agreed to, so that jobs submitted meanwhile make it fail rather
// than be cancelled unseen.
func (a *app) cancelFilter(ctx context.Context, f rpc.Filter, reason string, yes bool) error {
	c, err := a.client(ctx)
	if err != nil {
		return err
	}
	ids, err := previewIDs(ctx, c, f, rpc.CancelStates)
	if err != nil {
		return err
	}
	if len(ids) == 0 {
		return a.result(&rpc.JobsResult{Counts: map[rpc.State]int{}, NotSucceeded: []int64{}, Done: true, Cancelled: []int64{}}, func() {
			fmt.Fprintf(a.stderr, "no jobs match\n")
		})
	}
	if len(ids) > 1 && !yes {
		if !a.stdinIsTerminal() {
			return usagef("%d jobs match (%s); add --yes to cancel them all", len(ids), abbrevIDs(ids))
		}
		fmt.Fprintf(a.stderr, "cancel %d jobs (%s)? [y/N] ", len(ids), abbrevIDs(ids))
		var answer string
		_, _ = fmt.Fscanln(a.stdin, &answer)
		if ans := strings.ToLower(strings.TrimSpace(answer)); ans != "y" && ans != "yes" {
			fmt.Fprintf(a.stderr, "nothing cancelled\n")
			return &exitError{code: exitFailure}
		}
	}
	r, err := c.JobsCancel(ctx, rpc.JobsCancelParams{Filter: f, Reason: reason, Limit: len(ids)})
	if err != nil {
		if re, ok := err.(*rpc.Error); ok && re.Data != nil && re.Data.Field == "limit" {
			return usagef("more jobs match than the %d you agreed to cancel (new ones were submitted); run the command again", len(ids))
		}
		return err
	}
	a.printSummary("cancelled", r)
	return nil
}

// previewIDs lists the ids of the jobs f selects in states (f's own when it
// names some), up to rpc.MaxBulk+1.
func previewIDs(ctx context.Context, c *client.Client, f rpc.Filter, states []rpc.State) ([]int64, error) {
	p := f.ListParams(rpc.MaxListLimit)
	p.State = f.States(states)
	var ids []int64
	for {
		r, err := c.List(ctx, p)
		if err != nil {
			return nil, err
		}
		for _, j := range r.Jobs {
			ids = append(ids, j.ID)
		}
		if r.NextCursor == nil || len(ids) > rpc.MaxBulk {
			return ids, nil
		}
		p.Cursor = r.NextCursor
	}
}

// abbrevIDs names up to 10 ids.
func abbrevIDs(ids []int64) string {
	if len(ids) <= 10 {
		return joinIDs(ids)
	}
	return joinIDs(ids[:10]) + fmt.Sprintf(" and %d more", len(ids)-10)
}

// stdinIsTerminal reports whether a prompt can be answered.
func (a *app) stdinIsTerminal() bool {
	f, ok := a.stdin.(*os.File)
	if !ok {
		return false
	}
	_, err := unix.IoctlGetTermios(int(f.Fd()), unix.TCGETS)
	return err == nil
}

// completeFilterArgs offers job ids and filter terms; after state= the
// states, after queue= the daemon's queues.
func completeFilterArgs(a *app) cobra.CompletionFunc {
	return func(cc *cobra.Command, args []string, s string) ([]string, cobra.ShellCompDirective) {
		const dir = cobra.ShellCompDirectiveNoFileComp
		switch {
		case strings.HasPrefix(s, "state="):
			var out []string
			for _, st := range []string{"queued", "running", "succeeded", "failed", "cancelled"} {
				out = append(out, "state="+st)
			}
			return out, dir
		case strings.HasPrefix(s, "queue="):
			qs, _ := a.completeQueues(cc, args, s)
			out := make([]string, len(qs))
			for i, q := range qs {
				out[i] = "queue=" + q
			}
			return out, dir
		}
		terms := []string{"state=\tby state", "queue=\tby queue", "label:\tby label KEY=VALUE", "name=\tby name glob", "age<\tsubmitted less than D ago", "age>\tsubmitted more than D ago"}
		if len(args) > 0 && isFilter(args) {
			return terms, dir | cobra.ShellCompDirectiveNoSpace
		}
		ids, _ := a.completeIDs(cc, args, s)
		if len(args) > 0 || (s != "" && s[0] >= '0' && s[0] <= '9') {
			return ids, dir
		}
		return slices.Concat(ids, terms), dir | cobra.ShellCompDirectiveNoSpace
	}
}
