package main

import (
	"maps"
	"slices"
	"strings"

	"github.com/spf13/cobra"
	"github.com/spf13/pflag"

	"spool/rpc"
)

// hookFlags are the flags of an on_finish hook: submit's --on-finish
// TEMPLATE with --on-finish-param k=v and --on-finish-state, queue's
// --on-finish (an empty TEMPLATE removes the queue's hook).
type hookFlags struct {
	template string
	params   pairsFlag
	states   stringsFlag
}

func (h *hookFlags) register(fs *pflag.FlagSet) {
	fs.StringVar(&h.template, "on-finish", "", "when the job ends, submit a follow-up job from `TEMPLATE` (params job_id, job_state, job_name, job_error, job_result)")
	fs.Var(&h.params, "on-finish-param", "a param `k=v` of the --on-finish template (repeatable)")
	fs.Var(&h.states, "on-finish-state", "fire --on-finish only when the job ends in `STATE` (repeatable; default every final state)")
}

// hook is the hook the flags give, nil when --on-finish is not given.
func (h *hookFlags) hook(fs *pflag.FlagSet) (*rpc.OnFinish, error) {
	if !fs.Changed("on-finish") {
		if len(h.params.m) > 0 || len(h.states) > 0 {
			return nil, usagef("--on-finish-param and --on-finish-state need --on-finish TEMPLATE")
		}
		return nil, nil
	}
	o := &rpc.OnFinish{Template: h.template, Params: maps.Clone(h.params.m)}
	for _, s := range h.states {
		for _, st := range strings.Split(s, ",") {
			o.States = append(o.States, rpc.State(strings.TrimSpace(st)))
		}
	}
	return o, nil
}

// hookFlagCompletions registers what the hook flags complete to.
func (a *app) hookFlagCompletions(cc *cobra.Command) {
	fs := cc.Flags()
	if fs.Lookup("on-finish") != nil {
		_ = cc.RegisterFlagCompletionFunc("on-finish", func(cc *cobra.Command, _ []string, _ string) ([]string, cobra.ShellCompDirective) {
			return a.completeTemplates(cc), cobra.ShellCompDirectiveNoFileComp
		})
	}
	if fs.Lookup("on-finish-param") != nil {
		_ = cc.RegisterFlagCompletionFunc("on-finish-param", func(cc *cobra.Command, _ []string, _ string) ([]string, cobra.ShellCompDirective) {
			name, _ := cc.Flags().GetString("on-finish")
			if name == "" {
				return nil, cobra.ShellCompDirectiveNoFileComp
			}
			c, err := a.client(cc.Context())
			if err != nil {
				return nil, cobra.ShellCompDirectiveNoFileComp
			}
			t, err := c.TemplateGet(cc.Context(), rpc.TemplateNameParams{Name: name})
			if err != nil {
				return nil, cobra.ShellCompDirectiveNoFileComp
			}
			var out []string
			for _, k := range slices.Sorted(maps.Keys(t.Params)) {
				if !slices.Contains(rpc.HookParams, k) {
					out = append(out, k+"=")
				}
			}
			return out, cobra.ShellCompDirectiveNoFileComp | cobra.ShellCompDirectiveNoSpace
		})
	}
	if fs.Lookup("on-finish-state") != nil {
		_ = cc.RegisterFlagCompletionFunc("on-finish-state", cobra.FixedCompletions(
			[]string{"succeeded", "failed", "cancelled", "skipped"}, cobra.ShellCompDirectiveNoFileComp))
	}
}
