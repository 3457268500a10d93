package main

import (
	"context"
	"strconv"

	"github.com/spf13/cobra"
	"github.com/spf13/pflag"

	"spool/rpc"
)

func defineCompletion(a *app, fs *pflag.FlagSet) runner {
	return func(ctx context.Context, args []string) error {
		if len(args) != 1 {
			return usagef("usage: spool completion bash|zsh|fish|powershell")
		}
		return writeCompletion(a.root, args[0], a.stdout)
	}
}

// completeShells offers completion's shells.
func completeShells(*app) cobra.CompletionFunc {
	return func(_ *cobra.Command, args []string, _ string) ([]string, cobra.ShellCompDirective) {
		if len(args) > 0 {
			return nil, cobra.ShellCompDirectiveNoFileComp
		}
		return []string{"bash", "zsh", "fish", "powershell"}, cobra.ShellCompDirectiveNoFileComp
	}
}

// completeTemplateArgs offers template's subcommands, then template names (or a
// file for put).
func completeTemplateArgs(a *app) cobra.CompletionFunc {
	return func(cc *cobra.Command, args []string, _ string) ([]string, cobra.ShellCompDirective) {
		switch {
		case len(args) == 0:
			return []string{"put\tstore a template", "get\tshow a template", "list\tlist the templates", "rm\tremove a template"}, cobra.ShellCompDirectiveNoFileComp
		case len(args) == 1 && (args[0] == "get" || args[0] == "rm" || args[0] == "put"):
			return a.completeTemplates(cc), cobra.ShellCompDirectiveNoFileComp
		case len(args) == 2 && args[0] == "put":
			return nil, cobra.ShellCompDirectiveDefault
		}
		return nil, cobra.ShellCompDirectiveNoFileComp
	}
}

// completeRunArgs offers template names, then k= for their params.
func completeRunArgs(a *app) cobra.CompletionFunc {
	return func(cc *cobra.Command, args []string, _ string) ([]string, cobra.ShellCompDirective) {
		if len(args) == 0 {
			return a.completeTemplates(cc), cobra.ShellCompDirectiveNoFileComp
		}
		c, err := a.client(cc.Context())
		if err != nil {
			return nil, cobra.ShellCompDirectiveNoFileComp
		}
		t, err := c.TemplateGet(cc.Context(), rpc.TemplateNameParams{Name: args[0]})
		if err != nil {
			return nil, cobra.ShellCompDirectiveNoFileComp
		}
		var out []string
		for k := range t.Params {
			out = append(out, k+"=")
		}
		return out, cobra.ShellCompDirectiveNoFileComp | cobra.ShellCompDirectiveNoSpace
	}
}

// completeLogsArgs offers job ids, then the job's step names.
func completeLogsArgs(a *app) cobra.CompletionFunc {
	return func(cc *cobra.Command, args []string, s string) ([]string, cobra.ShellCompDirective) {
		switch len(args) {
		case 0:
			return a.completeIDs(cc, args, s)
		case 1:
			id, err := strconv.ParseInt(args[0], 10, 64)
			if err != nil {
				return nil, cobra.ShellCompDirectiveNoFileComp
			}
			c, err := a.client(cc.Context())
			if err != nil {
				return nil, cobra.ShellCompDirectiveNoFileComp
			}
			j, err := c.Get(cc.Context(), rpc.GetParams{ID: id})
			if err != nil {
				return nil, cobra.ShellCompDirectiveNoFileComp
			}
			var out []string
			for _, st := range j.Steps {
				out = append(out, st.Name+"\t"+string(st.State))
			}
			return out, cobra.ShellCompDirectiveNoFileComp | cobra.ShellCompDirectiveKeepOrder
		}
		return nil, cobra.ShellCompDirectiveNoFileComp
	}
}

// noArgs completes nothing (no files either).
func noArgs(*app) cobra.CompletionFunc {
	return func(*cobra.Command, []string, string) ([]string, cobra.ShellCompDirective) {
		return nil, cobra.ShellCompDirectiveNoFileComp
	}
}

// completeQueueArg offers the daemon's queue names for queue's NAME.
func completeQueueArg(a *app) cobra.CompletionFunc {
	return func(cc *cobra.Command, args []string, s string) ([]string, cobra.ShellCompDirective) {
		if len(args) > 0 {
			return nil, cobra.ShellCompDirectiveNoFileComp
		}
		return a.completeQueues(cc, args, s)
	}
}
