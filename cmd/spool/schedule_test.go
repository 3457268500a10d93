package main

import (
	"strings"
	"testing"
	"time"

	"github.com/matryer/is"

	"spool/rpc"
)

// TestScheduleCompletion: completion knows schedule's subcommands and the
// values of its flags, without a daemon.
func TestScheduleCompletion(t *testing.T) {
	env := map[string]string{"SPOOL_SOCKET": "/nonexistent/spool.sock"}
	for _, c := range []struct {
		args []string
		want []string
	}{
		{[]string{"__complete", "sch"}, []string{"schedule"}},
		{[]string{"__complete", "schedule", ""}, []string{"add", "list", "show", "pause", "resume", "rm"}},
		{[]string{"__complete", "schedule", "add", "n", "--catch-up", ""}, []string{"none", "last", "all"}},
		{[]string{"__complete", "schedule", "add", "n", "--tz", ""}, []string{"UTC", "Europe/Paris", "Local"}},
		{[]string{"__complete", "schedule", "add", "n", "--"}, []string{"--cron", "--every", "--tz", "--template", "--param", "--catch-up", "--catch-up-max", "--paused"}},
	} {
		t.Run(strings.Join(c.args[1:], " "), func(t *testing.T) {
			is := is.New(t)
			r := spool(t, env, "", c.args...)
			is.Equal(r.code, 0) // completes
			for _, w := range c.want {
				is.True(strings.Contains(r.stdout, w)) // offers it
			}
		})
	}
}

// TestScheduleUsage: schedule add says what is missing before it calls the
// daemon.
func TestScheduleUsage(t *testing.T) {
	env := map[string]string{"SPOOL_SOCKET": "/nonexistent/spool.sock"}
	for _, c := range []struct {
		args []string
		want string
	}{
		{[]string{"schedule"}, "say add, list"},
		{[]string{"schedule", "add", "n", "--template", "t"}, "say when"},
		{[]string{"schedule", "add", "n", "--cron", "@daily"}, "--template"},
		{[]string{"schedule", "add", "n", "--cron", "@daily", "--every", "1m", "--template", "t"}, "not both"},
	} {
		t.Run(strings.Join(c.args, " "), func(t *testing.T) {
			is := is.New(t)
			r := spool(t, env, "", c.args...)
			is.Equal(r.code, 2)                         // a usage error
			is.True(strings.Contains(r.stderr, c.want)) // saying what is wrong
		})
	}
}

// TestScheduleFiredLine: watch shows a fire with its schedule and slot.
func TestScheduleFiredLine(t *testing.T) {
	is := is.New(t)
	a := &app{}
	slot := time.Date(2026, 12, 8, 2, 0, 0, 0, time.UTC)
	line := a.eventLine(&rpc.Event{Seq: 9, Time: slot, Job: 31, Type: rpc.EventScheduleFired, Schedule: "nightly", Slot: &slot})
	is.True(strings.Contains(line, "schedule_fired"))                                   // the type
	is.True(strings.Contains(line, "schedule nightly"))                                 // the schedule
	is.True(strings.Contains(line, "slot "+slot.Local().Format("2006-01-02 15:04:05"))) // its slot
}
