package rpc

import (
	"fmt"
	"slices"
)

// OnFinish is a hook run when a job ends: a follow-up job made from a stored
// template, submitted in the same store transaction as the job's final state.
// It is set on a job (its spec's on_finish) or on a queue (queue.set); a job's
// own hook wins over its queue's.
type OnFinish struct {
	// Template names the stored template the follow-up is made from.
	Template string `json:"template"`
	// Params are the template's params, next to the builtin ones (HookParams).
	Params map[string]string `json:"params,omitempty"`
	// States are the final states the hook fires for; none is every final state.
	States []State `json:"states,omitempty"`
}

// Events of hooks, stored on the job that ended.
const (
	// EventOnFinish: the job's hook submitted the follow-up job FollowUp.
	EventOnFinish = "on_finish"
	// EventOnFinishFailed: the job's hook could not make its follow-up (Error
	// says why); the job's final state is stored all the same.
	EventOnFinishFailed = "on_finish_failed"
)

// MaxHookDepth bounds chains of hooks: a follow-up's hook_depth is its
// finished job's plus one, and a job whose hook_depth is MaxHookDepth does not
// fire its hook (an on_finish_failed event says so).
const MaxHookDepth = 8

// HookParams are the params a hook gives its follow-up, for the names its
// template declares: the finished job's id, final state, name, error, and
// result (its JSON text, "" when none).
var HookParams = []string{"job_id", "job_state", "job_name", "job_error", "job_result"}

// Matches reports whether the hook fires for final state st.
func (o *OnFinish) Matches(st State) bool {
	return o != nil && o.Template != "" && (len(o.States) == 0 || slices.Contains(o.States, st))
}

// NormalizeOnFinish checks a hook, naming its fields under field.
func NormalizeOnFinish(field string, o *OnFinish) error {
	if !templateNameOK(o.Template) {
		return InvalidParams(field+".template", "must name a template: 1 to 64 letters, digits, '.', '-' or '_'")
	}
	for name := range o.Params {
		if slices.Contains(HookParams, name) {
			return InvalidParams(field+".params."+name, fmt.Sprintf("%s is given by the hook itself", name))
		}
		if !templateNameOK(name) {
			return InvalidParams(field+".params."+name, "is not a param name")
		}
	}
	for i, st := range o.States {
		if !st.Final() {
			return InvalidParams(fmt.Sprintf("%s.states[%d]", field, i), "must be a final state: succeeded, failed, cancelled or skipped")
		}
	}
	return nil
}
