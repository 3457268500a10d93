package main

import (
	"context"
	"fmt"
	"maps"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/spf13/cobra"
	"github.com/spf13/pflag"

	"spool/rpc"
)

// scheduleCommand is the schedule command's entry in commandList.
func scheduleCommand() command {
	return command{name: "schedule", args: "add NAME --cron EXPR|--every D --template T [--param k=v]... | list | show NAME | pause NAME | resume NAME | rm NAME",
		summary: "run a template on a cron expression or an interval", define: defineSchedule, complete: completeScheduleArgs,
		long: "A schedule runs a template at each slot of a cron expression (minute hour\n" +
			"day-of-month month day-of-week, or @daily, @hourly...) read in a time zone (--tz,\n" +
			"an IANA name; default the daemon's), or every interval (--every 10m). Each slot\n" +
			"fires once, across restarts. Slots missed while the daemon was down fire as\n" +
			"--catch-up says: none (skip them), last (the latest once; the default) or all\n" +
			"(each, oldest first, at most --catch-up-max). add replaces a schedule of the same\n" +
			"name, keeping the slots it fired.",
		example: "  spool schedule add nightly --cron '0 3 * * *' --tz Europe/Paris --template backup --param dir=/home\n" +
			"  spool schedule add poll --every 10m --template check --catch-up none\n" +
			"  spool schedule list\n  spool schedule pause nightly\n  spool schedule rm nightly"}
}

func defineSchedule(a *app, fs *pflag.FlagSet) runner {
	var params pairsFlag
	cronExpr := fs.String("cron", "", "a cron `EXPR`: five fields, or @daily, @hourly, @every 10m")
	every := fs.String("every", "", "fire every `D` (90s, 10m, 1h): the same as --cron '@every D'")
	tz := fs.String("tz", "", "the time `ZONE` the expression is read in (an IANA name; default the daemon's)")
	tpl := fs.String("template", "", "the `TEMPLATE` each slot runs")
	fs.Var(&params, "param", "a param `k=v` of the template (repeatable)")
	catchUp := fs.String("catch-up", "", "missed slots: `POLICY` none, last (default) or all")
	catchUpMax := fs.Int("catch-up-max", 0, "with --catch-up all, fire at most `N` missed slots (default 10)")
	paused := fs.Bool("paused", false, "store the schedule paused")
	return func(ctx context.Context, args []string) error {
		if len(args) == 0 {
			return usagef("schedule: say add, list, show, pause, resume or rm")
		}
		sub, args := args[0], args[1:]
		want := func(n int, synopsis string) error {
			if len(args) != n {
				return usagef("usage: spool schedule %s", synopsis)
			}
			return nil
		}
		switch sub {
		case "add", "put":
			if err := want(1, "add NAME --cron EXPR|--every D --template T [--param k=v]..."); err != nil {
				return err
			}
			expr := *cronExpr
			switch {
			case expr != "" && *every != "":
				return usagef("schedule add: give --cron or --every, not both")
			case *every != "":
				if d, err := time.ParseDuration(*every); err != nil || d <= 0 {
					return usagef("schedule add: --every %q is not a positive duration (90s, 10m, 1h)", *every)
				}
				expr = "@every " + *every
			case expr == "":
				return usagef("schedule add: say when, with --cron '0 3 * * *' or --every 10m")
			}
			if *tpl == "" {
				return usagef("schedule add: say which template it runs, with --template")
			}
			c, err := a.client(ctx)
			if err != nil {
				return err
			}
			p := rpc.SchedulePutParams{Name: args[0], Cron: expr, TZ: *tz, Template: *tpl, Params: params.m,
				CatchUp: *catchUp, CatchUpMax: *catchUpMax, Paused: *paused}
			sc, err := c.SchedulePut(ctx, p)
			if err != nil {
				return err
			}
			return a.result(sc, func() {
				a.printf("schedule %s stored, %s\n", sc.Name, a.nextText(sc))
			})
		case "list", "ls":
			if err := want(0, "list"); err != nil {
				return err
			}
			c, err := a.client(ctx)
			if err != nil {
				return err
			}
			r, err := c.ScheduleList(ctx)
			if err != nil {
				return err
			}
			if r.Schedules == nil {
				r.Schedules = []rpc.Schedule{}
			}
			if a.json {
				return a.printJSON(r)
			}
			if len(r.Schedules) == 0 {
				a.printf("no schedules\n")
				return nil
			}
			tb := &table{headers: []string{"SCHEDULE", "WHEN", "TZ", "TEMPLATE", "NEXT", "LAST JOB"}, flex: 1}
			for _, sc := range r.Schedules {
				next := cell{text: "-", style: styleDim}
				switch {
				case sc.Paused:
					next = cell{text: "paused", style: styleYellow}
				case sc.Error != "":
					next = cell{text: "error", style: styleYellow}
				case sc.NextSlot != nil:
					next = cell{text: a.slotText(*sc.NextSlot, sc.TZ)}
				}
				last := "-"
				if sc.LastJob != nil {
					last = strconv.FormatInt(*sc.LastJob, 10)
				}
				tb.rows = append(tb.rows, []cell{{text: sc.Name}, {text: sc.Cron}, {text: sc.TZ},
					{text: strings.TrimSpace(sc.Template + " " + pairsText(sc.Params))}, next, {text: last}})
			}
			tb.render(a.stdout, a.term)
			return nil
		case "show", "get":
			if err := want(1, "show NAME"); err != nil {
				return err
			}
			c, err := a.client(ctx)
			if err != nil {
				return err
			}
			sc, err := c.ScheduleGet(ctx, rpc.ScheduleNameParams{Name: args[0]})
			if err != nil {
				return err
			}
			return a.result(sc, func() { a.printSchedule(sc) })
		case "pause", "resume":
			if err := want(1, sub+" NAME"); err != nil {
				return err
			}
			c, err := a.client(ctx)
			if err != nil {
				return err
			}
			call := c.SchedulePause
			if sub == "resume" {
				call = c.ScheduleResume
			}
			sc, err := call(ctx, rpc.ScheduleNameParams{Name: args[0]})
			if err != nil {
				return err
			}
			return a.result(sc, func() {
				if sc.Paused {
					a.printf("schedule %s paused\n", sc.Name)
				} else {
					a.printf("schedule %s resumed, %s\n", sc.Name, a.nextText(sc))
				}
			})
		case "rm", "remove":
			if err := want(1, "rm NAME"); err != nil {
				return err
			}
			c, err := a.client(ctx)
			if err != nil {
				return err
			}
			if err := c.ScheduleRemove(ctx, rpc.ScheduleNameParams{Name: args[0]}); err != nil {
				return err
			}
			if a.json {
				return a.printJSON(rpc.Empty{})
			}
			a.printf("schedule %s removed\n", args[0])
			return nil
		}
		return usagef("schedule: unknown subcommand %q (add, list, show, pause, resume, rm)", sub)
	}
}

// slotText is a slot in the schedule's zone (the CLI's own for Local).
func (a *app) slotText(t time.Time, tz string) string {
	loc := time.Local
	if tz != "" && tz != "Local" {
		if l, err := time.LoadLocation(tz); err == nil {
			loc = l
		}
	}
	return t.In(loc).Format("2006-01-02 15:04:05 MST")
}

// nextText says when a schedule fires next.
func (a *app) nextText(sc *rpc.Schedule) string {
	switch {
	case sc.Paused:
		return "paused"
	case sc.NextSlot == nil:
		return "with no next slot"
	}
	return "next at " + a.slotWhen(sc)
}

// slotWhen is a running schedule's next slot and how far off it is.
func (a *app) slotWhen(sc *rpc.Schedule) string {
	d := sc.NextSlot.Sub(a.now()).Round(time.Second)
	return fmt.Sprintf("%s (in %s)", a.slotText(*sc.NextSlot, sc.TZ), max(d, 0))
}

// pairsText is params as k=v, sorted.
func pairsText(m map[string]string) string {
	var out []string
	for _, k := range slices.Sorted(maps.Keys(m)) {
		out = append(out, k+"="+m[k])
	}
	return strings.Join(out, " ")
}

func (a *app) printSchedule(sc *rpc.Schedule) {
	a.printf("%s\n", a.term.paint(styleBold, "schedule "+sc.Name))
	row := func(k, v string) { a.printf("%-11s%s\n", k, v) }
	row("when", sc.Cron+" ("+sc.TZ+")")
	row("template", strings.TrimSpace(sc.Template+" "+pairsText(sc.Params)))
	cu := sc.CatchUp
	if cu == rpc.CatchUpAll {
		cu += fmt.Sprintf(" (at most %d)", sc.CatchUpMax)
	}
	row("catch-up", cu)
	switch {
	case sc.Paused:
		row("next", a.term.paint(styleYellow, "paused"))
	case sc.NextSlot != nil:
		row("next", a.slotWhen(sc))
	}
	if sc.LastSlot != nil {
		last := a.slotText(*sc.LastSlot, sc.TZ)
		if sc.LastJob != nil {
			last += fmt.Sprintf(", job %d", *sc.LastJob)
		}
		row("last", last)
	}
	if sc.Error != "" {
		row("error", a.term.paint(styleYellow, sc.Error))
	}
	row("updated", humanAge(sc.UpdatedAt, a.now()))
}

// completeScheduleArgs offers schedule's subcommands, then schedule names.
func completeScheduleArgs(a *app) cobra.CompletionFunc {
	return func(cc *cobra.Command, args []string, _ string) ([]string, cobra.ShellCompDirective) {
		switch {
		case len(args) == 0:
			return []string{"add\tstore a schedule", "list\tlist the schedules", "show\tshow a schedule",
				"pause\tpause a schedule", "resume\tresume a schedule", "rm\tremove a schedule"}, cobra.ShellCompDirectiveNoFileComp
		case len(args) == 1 && args[0] != "list" && args[0] != "ls":
			return a.completeSchedules(cc), cobra.ShellCompDirectiveNoFileComp
		}
		return nil, cobra.ShellCompDirectiveNoFileComp
	}
}

// completeSchedules offers the daemon's schedule names.
func (a *app) completeSchedules(cc *cobra.Command) []string {
	ctx, cancel := context.WithTimeout(cc.Context(), 3*time.Second)
	defer cancel()
	c, err := a.client(ctx)
	if err != nil {
		return nil
	}
	r, err := c.ScheduleList(ctx)
	if err != nil {
		return nil
	}
	var out []string
	for _, sc := range r.Schedules {
		out = append(out, sc.Name)
	}
	return out
}

// scheduleFlagCompletions registers what schedule's flags complete to.
func (a *app) scheduleFlagCompletions(cc *cobra.Command) {
	fs := cc.Flags()
	if fs.Lookup("catch-up") != nil {
		_ = cc.RegisterFlagCompletionFunc("catch-up", cobra.FixedCompletions(
			[]string{"none\tskip missed slots", "last\tfire the latest missed slot", "all\tfire every missed slot"}, cobra.ShellCompDirectiveNoFileComp))
	}
	if fs.Lookup("template") != nil {
		_ = cc.RegisterFlagCompletionFunc("template", func(cc *cobra.Command, _ []string, _ string) ([]string, cobra.ShellCompDirective) {
			return a.completeTemplates(cc), cobra.ShellCompDirectiveNoFileComp
		})
	}
	if fs.Lookup("tz") != nil {
		_ = cc.RegisterFlagCompletionFunc("tz", cobra.FixedCompletions(
			[]string{"Local", "UTC", "Europe/London", "Europe/Paris", "Europe/Berlin", "America/New_York", "America/Chicago",
				"America/Los_Angeles", "Asia/Tokyo", "Asia/Kolkata", "Australia/Sydney"}, cobra.ShellCompDirectiveNoFileComp))
	}
	for _, name := range []string{"cron", "every", "param", "catch-up-max"} {
		if fs.Lookup(name) != nil {
			_ = cc.RegisterFlagCompletionFunc(name, cobra.NoFileCompletions)
		}
	}
}
