package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/spf13/pflag"

	"spool/client"
	"spool/rpc"
)

// commandList is every command, in the order the help lists them.
func commandList() []command {
	cmds := []command{
		{name: "submit", args: "[flags] -- CMD [ARG...]  |  submit -f FILE|-", summary: "submit a command (or a job spec) as a job; prints its id", strict: true, define: defineSubmit,
			long: "Submit a command as a one-step job, run in the current directory with this shell's\n" +
				"environment (unless --no-env), or submit the job spec (or array of specs) in a file.\n" +
				"Prints the id of each job; --json prints the job as the daemon stored it.",
			example: "  spool submit -- make test\n" +
				"  spool submit --name nightly --queue builds --retry 3 --timeout 2h -- ./build.sh\n" +
				"  spool submit -r 3 -t 90s --after 1 -- make deploy\n" +
				"  spool submit -f pipeline.json\n" +
				"  spool submit --on-finish notify --on-finish-param to=ops -- ./deploy.sh  # a follow-up job from template notify when it ends\n" +
				"  spool submit --delay 10m -- ./backup.sh           # not before 10 minutes from now\n" +
				"  spool submit --at 14:30 -- ./report.sh            # today at 14:30 (tomorrow if that has passed)\n" +
				"  spool submit --at 'tomorrow 09:00' -- make release\n" +
				"  spool submit --at '2026-12-24 18:00 Europe/Paris' -- ./greet.sh\n" +
				"  spool submit --notify -- make test                # a desktop notification when it is over"},
		{name: "status", args: "[ID... | FILTER...] [flags]", summary: "list jobs", ids: true, define: defineStatus, complete: completeFilterArgs,
			long: "List the newest jobs (oldest first on the screen), the jobs named by id, or the\n" +
				"jobs a filter selects. Ids that are not found are reported, and the exit code is then 1.\n" + filterHelp,
			example: "  spool status\n  spool status --state running,queued --queue builds\n  spool status 3 4 5\n  spool status --all --label team=web\n" +
				"  spool status state=failed queue=build label:team=infra 'name=nightly-*' 'age<2h'"},
		{name: "show", args: "ID [--env]", summary: "show a job with its steps and result", ids: true, define: defineShow,
			example: "  spool show 7\n  spool show 7 --env   # with the job's environment\n  spool --json show 7"},
		{name: "watch", args: "[ID...]", summary: "follow the events of jobs (or of all jobs) as they happen", ids: true, waits: true, define: defineWatch,
			long: "Follow the events of the jobs named, until they are final (exit 0 when all\n" +
				"succeeded), or with no ids the events of every job, until Ctrl-C. On a terminal\n" +
				"each running job has a live line at the bottom: its name, progress or last output.",
			example: "  spool watch          # every job, live\n  spool watch 7 8\n  spool --json watch 7  # JSON lines"},
		{name: "wait", args: "ID... | FILTER... | --all [--timeout D] [--notify]", summary: "wait until jobs are final; exit 0 when all succeeded", ids: true, waits: true, define: defineWait, complete: completeFilterArgs,
			long: "Wait for the jobs named by id, or for every job a filter selects that is queued or\n" +
				"running now (--all: every such job), in one call; then sum up how they ended.\n" + filterHelp,
			example: "  spool wait 7 && echo green\n  spool wait 7 8 --timeout 10m\n  spool wait queue=build\n  spool wait --all\n  spool wait --notify 7   # a desktop notification (notify-send) when it is final"},
		{name: "cancel", args: "ID... | FILTER... | --all [--reason R] [--yes]", summary: "cancel jobs", ids: true, waits: true, define: defineCancel, complete: completeFilterArgs,
			long: "Cancel the jobs named by id, or every queued or running job a filter selects (--all:\n" +
				"every one), in one call. Cancelling more than one job by a filter asks first, or\n" +
				"needs --yes when there is no terminal to ask on.\n" + filterHelp,
			example: "  spool cancel 7\n  spool cancel 7 8 --reason \"wrong branch\"\n  spool cancel queue=build --yes\n  spool cancel label:team=infra"},
		{name: "logs", args: "[-f] [-n N] [--stderr] ID [STEP]", summary: "print the log of a job's step (-f: follow it)", waits: true, define: defineLogs, complete: completeLogsArgs,
			long: "Print the log of a job's step: STEP is a name or an index, by default the current\n" +
				"(or last) step. -f follows the log as it grows until the step ends; without STEP\n" +
				"it follows every step of the job, each under a header, until the job ends.\n" +
				"-n N prints only the last N lines (with -f: follows from them, from the current\n" +
				"step). The log holds stdout and stderr merged; --stderr reads stderr alone.",
			example: "  spool logs 7\n  spool logs -f 7\n  spool logs 7 build\n  spool logs -n 20 7\n  spool logs -f -n 5 7\n  spool logs --stderr 7 build"},
		{name: "retry", args: "ID | --failed [FILTER...] | FILTER...", summary: "submit a final job again as a new job", ids: true, define: defineRetry, complete: completeFilterArgs,
			long: "Submit a final job again as a new job, or every failed (--failed) or failed and\n" +
				"cancelled job a filter selects, in one call: all or none. Prints each new id.\n" + filterHelp,
			example: "  spool retry 7\n  spool retry --failed\n  spool retry --failed queue=build 'age<1d'"},
		{name: "rm", args: "ID...", summary: "remove final jobs", ids: true, define: defineRemove,
			example: "  spool rm 7 8"},
		{name: "prune", args: "[--state S]... [--older-than D]", summary: "remove final jobs by state and age", define: definePrune, complete: noArgs,
			example: "  spool prune --older-than 24h\n  spool prune --state succeeded"},
		{name: "queue", args: "[NAME] [--parallel N] [--pause|--resume] [--on-finish TEMPLATE]", summary: "list queues, or change one", define: defineQueue, complete: completeQueueArg,
			example: "  spool queue\n  spool queue builds --parallel 1\n  spool queue builds --pause\n  spool queue builds --on-finish notify --on-finish-state failed"},
		{name: "template", args: "put NAME FILE | get NAME | list | rm NAME", summary: "store, show, list and remove job templates", define: defineTemplate, complete: completeTemplateArgs,
			example: "  spool template put backup backup.json\n  spool template list\n  spool template get backup"},
		{name: "run", args: "TEMPLATE [k=v...] [flags]", summary: "submit a job made from a template", define: defineRun, complete: completeRunArgs,
			example: "  spool run backup dir=/home\n  spool run backup dir=/srv --queue nightly\n  spool run backup dir=/home --at 02:00"},
		scheduleCommand(),
		{name: "info", args: "", summary: "describe the running daemon", define: defineInfo, complete: noArgs},
		{name: "rpc", args: "", summary: "relay standard input and output to the daemon's socket (for editors)", waits: true, define: defineRPC, complete: noArgs},
		{name: "completion", args: "bash|zsh|fish|powershell", summary: "print a shell completion script", define: defineCompletion, complete: completeShells,
			example: "  source <(spool completion bash)\n  spool completion fish | source\n  spool completion zsh > ~/.local/share/zsh/site-functions/_spool"},
		{name: "version", args: "", summary: "print the versions of spool and of the daemon", define: defineVersion, complete: noArgs},
	}
	// After cancel: the commands that change queued jobs, then pause, resume
	// and signal.
	at := slices.IndexFunc(cmds, func(c command) bool { return c.name == "cancel" }) + 1
	cmds = slices.Insert(cmds, at, editCommands()...)
	return slices.Insert(cmds, at+len(editCommands()), pauseCommands()...)
}

// printJobs prints one job, or {"jobs": [...]} for several.
func (a *app) printJobs(jobs []*rpc.Job, many bool) error {
	if !many && len(jobs) == 1 {
		return a.printJSON(jobs[0])
	}
	list := make([]rpc.Job, 0, len(jobs))
	for _, j := range jobs {
		list = append(list, *j)
	}
	return a.printJSON(struct {
		Jobs []rpc.Job `json:"jobs"`
	}{list})
}

func defineStatus(a *app, fs *pflag.FlagSet) runner {
	var states statesFlag
	var labels pairsFlag
	queue := fs.StringP("queue", "q", "", "only jobs of `QUEUE`")
	fs.VarP(&states, "state", "s", "only jobs in `STATE` (repeatable, or comma separated)")
	fs.VarP(&labels, "label", "l", "only jobs with the label `k=v` (repeatable)")
	limit := fs.IntP("limit", "n", 50, "show the newest `N` jobs at most (1 to 1000)")
	all := fs.BoolP("all", "a", false, "show every job")
	return func(ctx context.Context, args []string) error {
		var f rpc.Filter
		if isFilter(args) {
			f = rpc.Filter{State: states, Queue: *queue, Labels: labels.m}
			if err := parseFilter(args, &f); err != nil {
				return err
			}
			args = nil
		}
		ids, err := parseIDs(args)
		if err != nil {
			return err
		}
		if !*all && (*limit < 1 || *limit > 1000) {
			return usagef("--limit must be 1 to 1000")
		}
		c, err := a.client(ctx)
		if err != nil {
			return err
		}
		jobs := []rpc.Job{}
		var next *string
		var missing []string
		if len(ids) > 0 {
			for _, id := range ids {
				j, err := c.Get(ctx, rpc.GetParams{ID: id})
				var re *rpc.Error
				if errors.As(err, &re) && re.Code == rpc.CodeNotFound {
					missing = append(missing, strconv.FormatInt(id, 10))
					continue
				}
				if err != nil {
					return err
				}
				jobs = append(jobs, *j)
			}
		} else {
			p := rpc.ListParams{State: states, Queue: *queue, Labels: labels.m, Limit: *limit, Order: "desc"}
			if f.Narrows() || len(f.State) > 0 {
				p = f.ListParams(*limit)
				p.Order = "desc"
			}
			if *all {
				p.Limit = 1000
			}
			for {
				r, err := c.List(ctx, p)
				if err != nil {
					return err
				}
				jobs = append(jobs, r.Jobs...)
				next = r.NextCursor
				if !*all || next == nil {
					break
				}
				p.Cursor = next
			}
		}
		// notFound says which ids were not found (exit 1) after the found ones.
		notFound := func() error {
			if len(missing) == 0 {
				return nil
			}
			if len(missing) == 1 {
				fmt.Fprintf(a.stderr, "spool: job %s not found\n", missing[0])
			} else {
				fmt.Fprintf(a.stderr, "spool: jobs %s not found\n", strings.Join(missing, ", "))
			}
			return &exitError{code: exitFailure}
		}
		if a.json {
			if err := a.printJSON(rpc.ListResult{Jobs: jobs, NextCursor: next}); err != nil {
				return err
			}
			return notFound()
		}
		if len(jobs) == 0 {
			if len(missing) == 0 {
				a.printf("no jobs\n")
			}
			return notFound()
		}
		if len(ids) == 0 {
			slices.Reverse(jobs) // oldest first, the newest next to the prompt
		}
		a.fillSpecs(ctx, c, jobs)
		jobsTable(jobs, a.now()).render(a.stdout, a.term)
		if next != nil {
			if len(jobs) == 1 {
				fmt.Fprintf(a.stderr, "(only the newest job; --all or --limit N for more)\n")
			} else {
				fmt.Fprintf(a.stderr, "(the newest %d jobs; --all or --limit N for more)\n", len(jobs))
			}
		}
		return notFound()
	}
}

// fillSpecs reads the specs of listed jobs without a name, so that the table can
// show their command. Jobs that cannot be read keep their step names.
func (a *app) fillSpecs(ctx context.Context, c *client.Client, jobs []rpc.Job) {
	var todo []int
	for i := range jobs {
		if jobs[i].Name == "" && jobs[i].Spec == nil {
			todo = append(todo, i)
		}
	}
	const workers = 8
	var wg sync.WaitGroup
	next := make(chan int)
	for range min(workers, len(todo)) {
		wg.Go(func() {
			for i := range next {
				if j, err := c.Get(ctx, rpc.GetParams{ID: jobs[i].ID}); err == nil {
					jobs[i].Spec = j.Spec
				}
			}
		})
	}
	for _, i := range todo {
		next <- i
	}
	close(next)
	wg.Wait()
}

// oneJob reads the one job id a command takes and connects to the daemon.
func (a *app) oneJob(ctx context.Context, cmd string, args []string) (int64, *client.Client, error) {
	if len(args) != 1 {
		return 0, nil, usagef("%s takes one job id", cmd)
	}
	ids, err := parseIDs(args)
	if err != nil {
		return 0, nil, err
	}
	c, err := a.client(ctx)
	if err != nil {
		return 0, nil, err
	}
	return ids[0], c, nil
}

func defineShow(a *app, fs *pflag.FlagSet) runner {
	env := fs.BoolP("env", "e", false, "also show the job's environment (kept in its stored spec)")
	return func(ctx context.Context, args []string) error {
		id, c, err := a.oneJob(ctx, "show", args)
		if err != nil {
			return err
		}
		j, err := c.Get(ctx, rpc.GetParams{ID: id})
		if err != nil {
			return err
		}
		return a.result(j, func() {
			a.printJob(j)
			if *env {
				a.printEnv(j)
			}
		})
	}
}

// printEnv writes the environment of the job's spec, sorted by name.
func (a *app) printEnv(j *rpc.Job) {
	if j.Spec == nil {
		return
	}
	names := make([]string, 0, len(j.Spec.Env))
	for k := range j.Spec.Env {
		names = append(names, k)
	}
	sort.Strings(names)
	a.printf("\n%s\n", a.term.paint(styleBold, fmt.Sprintf("environment (%d)", len(names))))
	for _, k := range names {
		a.printf("%s=%s\n", k, oneLine(j.Spec.Env[k]))
	}
}

// localTime formats t for people, in local time, with its age.
func (a *app) localTime(t *time.Time) string {
	if t == nil {
		return "-"
	}
	return t.Local().Format("2006-01-02 15:04:05") + " (" + humanAge(*t, a.now()) + ")"
}

// printJob writes a job's details and its steps.
func (a *app) printJob(j *rpc.Job) {
	t := a.term
	var b strings.Builder
	field := func(name, value string) {
		if value != "" {
			fmt.Fprintf(&b, "%-11s%s\n", name, value)
		}
	}
	fmt.Fprintf(&b, "%s", t.paint(styleBold, fmt.Sprintf("job %d", j.ID)))
	if j.Name != "" {
		fmt.Fprintf(&b, "  %s", oneLine(j.Name))
	}
	b.WriteString("\n")
	state := t.paint(stateStyle(j.State), string(j.State))
	if j.Waiting != nil && *j.Waiting != "" {
		state += " (waiting: " + *j.Waiting + ")"
	}
	if j.PausedAt != nil {
		state += " (paused since " + j.PausedAt.Local().Format("15:04:05") + ")"
	}
	if j.State == rpc.StateRunning && j.CurrentStep >= 0 && j.CurrentStep < len(j.Steps) {
		state += fmt.Sprintf(" (step %d/%d: %s)", j.CurrentStep+1, len(j.Steps), j.Steps[j.CurrentStep].Name)
	}
	field("state", state)
	field("queue", fmt.Sprintf("%s, priority %d", j.Queue, j.Priority))
	if len(j.Labels) > 0 {
		keys := make([]string, 0, len(j.Labels))
		for k := range j.Labels {
			keys = append(keys, k)
		}
		sort.Strings(keys)
		for i, k := range keys {
			keys[i] = k + "=" + j.Labels[k]
		}
		field("labels", strings.Join(keys, " "))
	}
	if len(j.After) > 0 {
		parts := make([]string, len(j.After))
		for i, id := range j.After {
			parts[i] = strconv.FormatInt(id, 10)
		}
		field("after", strings.Join(parts, ", "))
	}
	if j.Key != nil {
		field("key", *j.Key)
	}
	if j.NotBefore != nil {
		field("not before", j.NotBefore.Local().Format("2006-01-02 15:04:05"))
	}
	field("submitted", a.localTime(&j.SubmittedAt))
	field("started", a.localTime(j.StartedAt))
	if j.Node != "" {
		field("node", j.Node)
	}
	if j.FinishedAt != nil {
		field("finished", a.localTime(j.FinishedAt))
	}
	field("duration", span(j.StartedAt, j.FinishedAt, a.now()))
	if j.Progress != nil && !j.Final() {
		field("progress", progressText(j.Progress))
	}
	if j.RetryOf != nil {
		field("retry of", strconv.FormatInt(*j.RetryOf, 10))
	}
	if j.Template != nil {
		params := make([]string, 0, len(j.Template.Params))
		for k, v := range j.Template.Params {
			params = append(params, k+"="+quoteArg(v))
		}
		sort.Strings(params)
		field("template", strings.TrimSpace(j.Template.Name+" "+strings.Join(params, " ")))
	}
	if j.Spec != nil {
		field("dir", j.Spec.Dir)
		if j.Spec.Timeout > 0 {
			field("timeout", j.Spec.Timeout.String())
		}
	}
	if j.Error != "" {
		field("error", t.paint(styleRed, oneLine(j.Error)))
	}
	io.WriteString(a.stdout, b.String())

	if len(j.Steps) > 0 {
		a.printf("\n")
		a.stepsTable(j).render(a.stdout, t)
	}
	if len(j.Result) > 0 && !bytes.Equal(j.Result, []byte("null")) {
		a.printf("\n%s\n", t.paint(styleBold, "result"))
		a.printf("%s\n", resultText(j.Result))
		if j.ResultTruncated {
			a.printf("%s\n", t.paint(styleDim, "(truncated: only the last 64 KiB are kept)"))
		}
	}
}

// stepsTable is the steps of show: name, kind, state, attempt, exit code, duration,
// error; the running step is marked.
func (a *app) stepsTable(j *rpc.Job) *table {
	tb := &table{headers: []string{"STEP", "KIND", "STATE", "ATTEMPT", "EXIT", "DURATION", "ERROR"}, flex: 6}
	now := a.now()
	for i, s := range j.Steps {
		state := string(s.State)
		if s.State == rpc.StateRetrying && s.RetryAt != nil {
			state += " at " + s.RetryAt.Local().Format("15:04:05")
		}
		exit := "-"
		switch {
		case s.ExitCode != nil:
			exit = strconv.Itoa(*s.ExitCode)
		case s.Signal != nil:
			exit = *s.Signal
		}
		attempt := "-"
		if s.Attempt > 0 {
			attempt = strconv.Itoa(s.Attempt)
		}
		errText := oneLine(s.Error)
		name := s.Name
		if i == j.CurrentStep && j.State == rpc.StateRunning {
			name = "> " + name
		}
		tb.rows = append(tb.rows, []cell{
			{text: name},
			{text: s.Kind},
			{text: state, style: stateStyle(s.State)},
			{text: attempt},
			{text: exit},
			{text: span(s.StartedAt, s.FinishedAt, now)},
			{text: errText, style: styleRed},
		})
	}
	return tb
}

// resultText is a job's result for people: a JSON string as its text, any other
// value as indented JSON.
func resultText(raw json.RawMessage) string {
	var s string
	if json.Unmarshal(raw, &s) == nil {
		return s
	}
	var out bytes.Buffer
	if json.Indent(&out, raw, "", "  ") == nil {
		return out.String()
	}
	return string(raw)
}

func defineWait(a *app, fs *pflag.FlagSet) runner {
	var timeout time.Duration
	durationVarP(fs, &timeout, "timeout", "t", "give up after `D`, e.g. 90s, 2m (the jobs then count as not succeeded)")
	all := fs.BoolP("all", "a", false, "wait for every job queued or running now")
	notify := fs.Bool("notify", false, "show a desktop notification (notify-send) as each job is final")
	return func(ctx context.Context, args []string) error {
		if *all || isFilter(args) {
			if *notify {
				return usagef("--notify: wait for job ids with it, not for a filter or --all")
			}
			var f rpc.Filter
			if err := parseFilter(args, &f); err != nil {
				return err
			}
			return a.waitFilter(ctx, f, timeout)
		}
		if len(args) == 0 {
			return usagef("wait takes job ids, a filter, or --all")
		}
		ids, err := parseIDs(args)
		if err != nil {
			return err
		}
		notifyProg := ""
		if *notify {
			if notifyProg, err = a.findNotifySend(); err != nil {
				return err
			}
		}
		c, err := a.client(ctx)
		if err != nil {
			return a.cutShort(ctx, err, ids, "watch", exitFailure)
		}
		var deadline time.Time
		if timeout > 0 {
			deadline = a.now().Add(timeout)
		}
		jobs := make([]*rpc.Job, 0, len(ids))
		ok := true
		wait := func(_ int, id int64) (*rpc.Job, error) { return a.waitOne(ctx, c, id, deadline) }
		if notifyProg != "" {
			// Each job's notification comes as it is final, whatever the order.
			var stop func()
			wait, stop = a.notifyEach(ctx, c, ids, deadline, notifyProg)
			defer stop()
		}
		for i, id := range ids {
			j, err := wait(i, id)
			if err != nil {
				if ctx.Err() != nil { // interrupted: the jobs are not cancelled
					a.goesOn(ids[i:], "watch")
					return &exitError{code: exitFailure}
				}
				return err
			}
			jobs = append(jobs, j)
			if j.State != rpc.StateSucceeded {
				ok = false
			}
			if !a.json {
				a.printOutcome(j)
			}
		}
		if a.json {
			if err := a.printJobs(jobs, len(ids) > 1); err != nil {
				return err
			}
		}
		if !ok {
			return &exitError{code: exitFailure}
		}
		return nil
	}
}

// waitOne waits with job.wait until the job is final or the deadline (if any) passed.
func (a *app) waitOne(ctx context.Context, c *client.Client, id int64, deadline time.Time) (*rpc.Job, error) {
	for {
		p := rpc.WaitParams{ID: id}
		if !deadline.IsZero() {
			p.Timeout = rpc.Duration(max(deadline.Sub(a.now()), time.Millisecond))
		}
		j, err := c.Wait(ctx, p)
		if err != nil {
			return nil, err
		}
		if j.Final() || (!deadline.IsZero() && !a.now().Before(deadline)) {
			return j, nil
		}
	}
}

// printOutcome writes one line saying how a job ended (or where it is).
func (a *app) printOutcome(j *rpc.Job) {
	line := fmt.Sprintf("%d %s", j.ID, a.term.paint(stateStyle(j.State), string(j.State)))
	if j.Error != "" && j.Error != string(j.State) { // not "16 cancelled: cancelled"
		line += ": " + oneLine(j.Error)
	}
	a.printf("%s\n", line)
}

func defineCancel(a *app, fs *pflag.FlagSet) runner {
	reason := fs.StringP("reason", "r", "", "why (`TEXT`), stored as the job's error")
	all := fs.BoolP("all", "a", false, "cancel every job queued or running now")
	yes := fs.BoolP("yes", "y", false, "cancel every job the filter selects without asking")
	return func(ctx context.Context, args []string) error {
		if *all || isFilter(args) {
			var f rpc.Filter
			if err := parseFilter(args, &f); err != nil {
				return err
			}
			return a.cancelFilter(ctx, f, *reason, *yes)
		}
		if len(args) == 0 {
			return usagef("cancel takes job ids, a filter, or --all")
		}
		ids, err := parseIDs(args)
		if err != nil {
			return err
		}
		c, err := a.client(ctx)
		if err != nil {
			return err
		}
		jobs := make([]*rpc.Job, len(ids))
		errs := make([]error, len(ids))
		var wg sync.WaitGroup
		sem := make(chan struct{}, 8)
		for i, id := range ids {
			wg.Go(func() {
				sem <- struct{}{}
				defer func() { <-sem }()
				jobs[i], errs[i] = c.Cancel(ctx, rpc.CancelParams{ID: id, Reason: *reason})
			})
		}
		wg.Wait()
		var done []*rpc.Job
		failed := false
		for i := range ids {
			if errs[i] != nil {
				if errors.Is(errs[i], context.Canceled) && ctx.Err() != nil {
					return errs[i]
				}
				a.fail(fmt.Errorf("cancel %d: %w", ids[i], errs[i]))
				failed = true
				continue
			}
			done = append(done, jobs[i])
			if !a.json {
				a.printOutcome(jobs[i])
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

func defineRetry(a *app, fs *pflag.FlagSet) runner {
	failed := fs.Bool("failed", false, "retry every failed job the filter (if any) selects")
	return func(ctx context.Context, args []string) error {
		if *failed || isFilter(args) {
			var f rpc.Filter
			if *failed {
				f.State = []rpc.State{rpc.StateFailed}
			}
			if err := parseFilter(args, &f); err != nil {
				return err
			}
			return a.retryFilter(ctx, f)
		}
		id, c, err := a.oneJob(ctx, "retry", args)
		if err != nil {
			return err
		}
		j, err := c.Retry(ctx, rpc.RetryParams{ID: id})
		if err != nil {
			return err
		}
		return a.result(j, func() { a.printf("%d\n", j.ID) })
	}
}

func defineRemove(a *app, fs *pflag.FlagSet) runner {
	return func(ctx context.Context, args []string) error {
		if len(args) == 0 {
			return usagef("rm takes at least one job id")
		}
		ids, err := parseIDs(args)
		if err != nil {
			return err
		}
		c, err := a.client(ctx)
		if err != nil {
			return err
		}
		// job.remove ignores unknown ids: find them first, to say so.
		var found []int64
		var missing []string
		for _, id := range ids {
			_, err := c.Get(ctx, rpc.GetParams{ID: id})
			var re *rpc.Error
			switch {
			case errors.As(err, &re) && re.Code == rpc.CodeNotFound:
				missing = append(missing, strconv.FormatInt(id, 10))
			case err != nil:
				return err
			default:
				found = append(found, id)
			}
		}
		r := &rpc.RemoveResult{}
		if len(found) > 0 {
			if r, err = c.Remove(ctx, rpc.RemoveParams{IDs: found}); err != nil {
				return err
			}
		}
		if err := a.result(r, func() {
			if len(found) > 0 {
				a.printf("removed %d\n", r.Removed)
			}
		}); err != nil {
			return err
		}
		if len(missing) > 0 {
			fmt.Fprintf(a.stderr, "spool: no job %s (unknown, or removed already)\n", strings.Join(missing, ", "))
			return &exitError{code: exitFailure}
		}
		return nil
	}
}

func definePrune(a *app, fs *pflag.FlagSet) runner {
	var states statesFlag
	fs.VarP(&states, "state", "s", "remove jobs in `STATE` (repeatable; default: every final state)")
	var olderThan time.Duration
	durationVarP(fs, &olderThan, "older-than", "", "remove jobs that finished more than `D` ago, e.g. 24h")
	return func(ctx context.Context, args []string) error {
		if len(args) > 0 {
			return usagef("prune takes no arguments (use rm to remove jobs by id)")
		}
		for _, s := range states {
			if !s.Final() {
				return usagef("prune removes final jobs only, not %s ones", s)
			}
		}
		if len(states) == 0 {
			states = statesFlag{rpc.StateSucceeded, rpc.StateFailed, rpc.StateCancelled}
		}
		c, err := a.client(ctx)
		if err != nil {
			return err
		}
		r, err := c.Prune(ctx, rpc.PruneParams{States: states, OlderThan: rpc.Duration(olderThan)})
		if err != nil {
			return err
		}
		return a.result(r, func() { a.printf("removed %d\n", r.Removed) })
	}
}
