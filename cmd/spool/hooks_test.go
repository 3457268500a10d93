package main

import (
	"testing"

	"github.com/matryer/is"

	"spool/rpc"
)

func TestSubmitOnFinishFlags(t *testing.T) {
	is := is.New(t)
	p, err := parseSubmit(t, nil, "", "--on-finish", "notify", "--on-finish-param", "to=ops", "--on-finish-state", "failed,cancelled", "--", "false")
	is.NoErr(err) // the flags parse
	is.Equal(*p.Job.OnFinish, rpc.OnFinish{Template: "notify", Params: map[string]string{"to": "ops"},
		States: []rpc.State{rpc.StateFailed, rpc.StateCancelled}}) // the hook, as given
	p, err = parseSubmit(t, nil, "", "--", "true")
	is.NoErr(err)
	is.Equal(p.Job.OnFinish, nil) // no hook without the flag
	_, err = parseSubmit(t, nil, "", "--on-finish-param", "to=ops", "--", "true")
	is.True(err != nil) // a param without --on-finish is a usage error
}
