package rpc_test

import (
	"strings"
	"testing"
	"time"

	"github.com/matryer/is"

	"spool/rpc"
)

func TestFilterValidate(t *testing.T) {
	cases := []struct {
		name  string
		check func() error
		field string // "" when valid
		says  string
	}{
		{"empty", rpc.JobsWaitParams{}.Validate, "", ""},
		{"bad state", rpc.JobsWaitParams{Filter: rpc.Filter{State: []rpc.State{"done"}}}.Validate, "filter.state[0]", "unknown job state"},
		{"wait on final", rpc.JobsWaitParams{Filter: rpc.Filter{State: []rpc.State{rpc.StateQueued, rpc.StateFailed}}}.Validate, "filter.state[1]", "waits for unfinished jobs"},
		{"retry queued", rpc.JobsRetryParams{Filter: rpc.Filter{State: []rpc.State{rpc.StateQueued}}}.Validate, "filter.state[0]", "failed or cancelled"},
		{"cancel succeeded", rpc.JobsCancelParams{Filter: rpc.Filter{State: []rpc.State{rpc.StateSucceeded}}}.Validate, "filter.state[0]", "unfinished"},
		{"bad queue", rpc.JobsCancelParams{Filter: rpc.Filter{Queue: "A B"}}.Validate, "filter.queue", "[a-z0-9._-]"},
		{"bad glob", rpc.JobsRetryParams{Filter: rpc.Filter{Name: "[x"}}.Validate, "filter.name", "valid glob"},
		{"long glob", rpc.JobsRetryParams{Filter: rpc.Filter{Name: strings.Repeat("a", rpc.MaxNameGlob+1)}}.Validate, "filter.name", "at most"},
		{"negative age", rpc.JobsWaitParams{Filter: rpc.Filter{OlderThan: -1}}.Validate, "filter.older_than", "negative"},
		{"empty window", rpc.JobsWaitParams{Filter: rpc.Filter{OlderThan: rpc.Duration(time.Hour), NewerThan: rpc.Duration(time.Minute)}}.Validate, "filter.newer_than", "more than older_than"},
		{"limit high", rpc.JobsRetryParams{Limit: rpc.MaxBulk + 1}.Validate, "limit", "must be 1 to"},
		{"limit negative", rpc.JobsCancelParams{Limit: -1}.Validate, "limit", "must be 1 to"},
		{"negative timeout", rpc.JobsWaitParams{Timeout: -1}.Validate, "timeout", "negative"},
		{"list name", rpc.ListParams{Name: "[x"}.Validate, "name", "valid glob"},
		{"list ok", rpc.ListParams{Name: "n*", OlderThan: rpc.Duration(time.Hour)}.Validate, "", ""},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			is := is.New(t)
			err := c.check()
			if c.field == "" {
				is.NoErr(err) // valid params pass
				return
			}
			var re *rpc.Error
			is.True(err != nil) // bad params are refused
			re = err.(*rpc.Error)
			is.Equal(re.Code, rpc.CodeInvalidParams)          // as -32602
			is.Equal(re.Data.Field, c.field)                  // naming the field by its path
			is.True(strings.Contains(re.Data.Reason, c.says)) // and what to do
		})
	}
}

func TestFilterMatch(t *testing.T) {
	is := is.New(t)
	now := time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)
	j := &rpc.Job{Name: "nightly-7", Queue: "build", Labels: map[string]string{"team": "infra"}, SubmittedAt: now.Add(-time.Hour)}
	is.True(rpc.Filter{}.Match(j, now))                                           // no filter matches all
	is.True(rpc.Filter{Queue: "build", Name: "nightly-*"}.Match(j, now))          // queue and glob
	is.True(!rpc.Filter{Name: "weekly-*"}.Match(j, now))                          // another glob
	is.True(!rpc.Filter{Labels: map[string]string{"team": "web"}}.Match(j, now))  // another label value
	is.True(!rpc.Filter{Labels: map[string]string{"env": ""}}.Match(j, now))      // a missing label
	is.True(rpc.Filter{NewerThan: rpc.Duration(2 * time.Hour)}.Match(j, now))     // age<2h
	is.True(!rpc.Filter{NewerThan: rpc.Duration(30 * time.Minute)}.Match(j, now)) // not age<30m
	is.True(rpc.Filter{OlderThan: rpc.Duration(30 * time.Minute)}.Match(j, now))  // age>30m
	is.True(!rpc.Filter{OlderThan: rpc.Duration(2 * time.Hour)}.Match(j, now))    // not age>2h
}
