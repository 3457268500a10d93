package main

import (
	"strings"
	"testing"
	"time"

	"github.com/matryer/is"

	"spool/rpc"
)

func TestParseFilter(t *testing.T) {
	ok := []struct {
		args []string
		want rpc.Filter
	}{
		{[]string{"state=failed"}, rpc.Filter{State: []rpc.State{rpc.StateFailed}}},
		{[]string{"state=failed,cancelled", "queue=build"}, rpc.Filter{State: []rpc.State{rpc.StateFailed, rpc.StateCancelled}, Queue: "build"}},
		{[]string{"label:team=infra", "label:env=prod"}, rpc.Filter{Labels: map[string]string{"team": "infra", "env": "prod"}}},
		{[]string{"label:k="}, rpc.Filter{Labels: map[string]string{"k": ""}}},
		{[]string{"name=nightly-*"}, rpc.Filter{Name: "nightly-*"}},
		{[]string{"age<2h"}, rpc.Filter{NewerThan: rpc.Duration(2 * time.Hour)}},
		{[]string{"age>3d", "age<5d"}, rpc.Filter{OlderThan: rpc.Duration(72 * time.Hour), NewerThan: rpc.Duration(120 * time.Hour)}},
	}
	for _, c := range ok {
		t.Run(strings.Join(c.args, " "), func(t *testing.T) {
			is := is.New(t)
			var f rpc.Filter
			is.NoErr(parseFilter(c.args, &f)) // the terms are read
			is.Equal(f, c.want)               // into the filter
		})
	}
	bad := []struct {
		args []string
		says string // the message names the term and what to do
	}{
		{[]string{"state=done"}, `unknown state "done"; use queued`},
		{[]string{"state=failed", "state=queued"}, "comma separated"},
		{[]string{"queue=Build"}, "[a-z0-9._-]"},
		{[]string{"queue=a", "queue=b"}, "queue given twice"},
		{[]string{"label:team"}, "label:KEY=VALUE"},
		{[]string{"label=team=x"}, "label:KEY=VALUE"},
		{[]string{"colour=red"}, `unknown term "colour"; use state=`},
		{[]string{"nightly"}, "not a term; use state="},
		{[]string{"name="}, "give a value after name="},
		{[]string{"name=[a"}, "filter: name: not a valid glob"},
		{[]string{"age<soon"}, "positive duration like 90s"},
		{[]string{"age<-2h"}, "positive duration"},
		{[]string{"age>2h", "age<1h"}, "newer_than: must be more than older_than"},
		{[]string{"queue=a", "7"}, `"7" is a job id: give job ids or a filter, not both`},
	}
	for _, c := range bad {
		t.Run(strings.Join(c.args, " "), func(t *testing.T) {
			is := is.New(t)
			var f rpc.Filter
			err := parseFilter(c.args, &f)
			is.True(err != nil) // the term is refused
			_, usage := err.(*usageError)
			is.True(usage)                                 // as a usage error (exit 2)
			is.True(strings.Contains(err.Error(), c.says)) // saying what is wrong and what to do
		})
	}
}

func TestIsFilter(t *testing.T) {
	is := is.New(t)
	is.True(!isFilter([]string{"1", "22"}))     // ids
	is.True(isFilter([]string{"queue=x"}))      // a term
	is.True(isFilter([]string{"3", "queue=x"})) // a mix is a filter (refused by parseFilter)
	is.True(!isFilter(nil))                     // nothing is not a filter
}
