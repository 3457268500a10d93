package main

import (
	"context"
	"strconv"
	"strings"

	"github.com/spf13/cobra"
	"github.com/spf13/pflag"

	"spool/rpc"
)

// pauseCommands are pause, resume and signal, for commandList.
func pauseCommands() []command {
	return []command{
		{name: "pause", args: "ID", summary: "pause a running job: stop its processes (it keeps its slot)", ids: true, define: definePause,
			long: "Pause a running job: its step's processes are frozen (cgroup freezer) or stopped\n" +
				"(SIGSTOP), it stays running and keeps its slot, and its timeouts stop. A restart\n" +
				"of spoold keeps it paused: its step runs again from its start once resumed.",
			example: "  spool pause 7\n  spool resume 7"},
		{name: "resume", args: "ID", summary: "resume a paused job", ids: true, define: defineResume,
			example: "  spool resume 7"},
		{name: "signal", args: "ID SIGNAL", summary: "send a signal (HUP, USR1, TERM...) to a running job's processes", define: defineSignal, complete: completeSignalArgs,
			example: "  spool signal 7 HUP\n  spool signal 7 sigusr1"},
	}
}

func definePause(a *app, fs *pflag.FlagSet) runner {
	return func(ctx context.Context, args []string) error {
		id, c, err := a.oneJob(ctx, "pause", args)
		if err != nil {
			return err
		}
		j, err := c.Pause(ctx, rpc.PauseParams{ID: id})
		if err != nil {
			return err
		}
		return a.result(j, func() { a.printf("%d paused\n", j.ID) })
	}
}

func defineResume(a *app, fs *pflag.FlagSet) runner {
	return func(ctx context.Context, args []string) error {
		id, c, err := a.oneJob(ctx, "resume", args)
		if err != nil {
			return err
		}
		j, err := c.Resume(ctx, rpc.PauseParams{ID: id})
		if err != nil {
			return err
		}
		return a.result(j, func() { a.printf("%d %s\n", j.ID, j.State) })
	}
}

func defineSignal(a *app, fs *pflag.FlagSet) runner {
	return func(ctx context.Context, args []string) error {
		if len(args) != 2 {
			return usagef("signal takes a job id and a signal name")
		}
		name, ok := rpc.SignalName(args[1])
		if !ok {
			return usagef("unknown signal %q; one of %s", args[1], strings.Join(rpc.SignalNames(), " "))
		}
		id, c, err := a.oneJob(ctx, "signal", args[:1])
		if err != nil {
			return err
		}
		j, err := c.Signal(ctx, rpc.SignalParams{ID: id, Signal: name})
		if err != nil {
			return err
		}
		return a.result(j, func() { a.printf("%d %s sent\n", j.ID, name) })
	}
}

// completeSignalArgs offers job ids, then signal names.
func completeSignalArgs(a *app) cobra.CompletionFunc {
	return func(cc *cobra.Command, args []string, s string) ([]string, cobra.ShellCompDirective) {
		switch len(args) {
		case 0:
			return a.completeIDs(cc, args, s)
		case 1:
			if _, err := strconv.ParseInt(args[0], 10, 64); err != nil {
				return nil, cobra.ShellCompDirectiveNoFileComp
			}
			return rpc.SignalNames(), cobra.ShellCompDirectiveNoFileComp
		}
		return nil, cobra.ShellCompDirectiveNoFileComp
	}
}
