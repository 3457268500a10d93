package main

import (
	"encoding/json"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/matryer/is"

	"spool/rpc"
)

// TestE2EScheduleKill9 stores a schedule through the CLI that fires every 2s,
// kills the daemon with SIGKILL right at a slot's moment (a little before, at,
// and a little after it) several times, and checks that every slot from the
// first to the last fired exactly once: one job per slot, none twice, none
// lost (catch_up all).
func TestE2EScheduleKill9(t *testing.T) {
	is := is.New(t)
	p := newDaemon(t)
	file := filepath.Join(p.state, "..", "tick.json")
	is.NoErr(os.WriteFile(file, []byte(`{"spec": {"steps": [{"shell": {"script": "echo $SPOOL_PARAM_WHAT"}}]},
		"params": {"what": {"required": true}}}`), 0o600))
	runCLI(t, p, 0, "template", "put", "tick", file)
	out := runCLI(t, p, 0, "schedule", "add", "tick2", "--every", "2s", "--template", "tick", "--param", "what=hi",
		"--catch-up", "all", "--catch-up-max", "100")
	is.True(strings.Contains(out, "schedule tick2 stored, next at")) // says when it fires

	show := func() rpc.Schedule {
		t.Helper()
		var sc rpc.Schedule
		is.NoErr(json.Unmarshal([]byte(runCLI(t, p, 0, "--json", "schedule", "show", "tick2")), &sc)) // show --json is a schedule
		return sc
	}
	for _, jitter := range []time.Duration{0, -15 * time.Millisecond, 5 * time.Millisecond, 0, 20 * time.Millisecond, -2 * time.Millisecond} {
		sc := show()
		is.True(sc.NextSlot != nil) // a running schedule has a next slot
		time.Sleep(time.Until(sc.NextSlot.Add(jitter)))
		p.kill9()
		p.start()
	}
	// Let it fire a few more on its own, then stop it.
	time.Sleep(5 * time.Second)
	runCLI(t, p, 0, "schedule", "pause", "tick2")
	sc := show()
	is.True(sc.Paused) // paused

	c := p.client()
	res, err := c.List(tctx(t), rpc.ListParams{Labels: map[string]string{"schedule": "tick2"}, Limit: 1000})
	is.NoErr(err)
	var slots []time.Time
	for _, j := range res.Jobs {
		s, err := time.Parse(time.RFC3339, j.Labels["slot"])
		is.NoErr(err) // each job names its slot
		slots = append(slots, s)
	}
	slices.SortFunc(slots, func(a, b time.Time) int { return a.Compare(b) })
	t.Logf("%d jobs for slots %s .. %s", len(slots), slots[0].Format(time.TimeOnly), slots[len(slots)-1].Format(time.TimeOnly))
	is.True(len(slots) >= 7) // a slot for each kill and after
	for i := 1; i < len(slots); i++ {
		if d := slots[i].Sub(slots[i-1]); d != 2*time.Second {
			t.Fatalf("slots %s and %s are %s apart: a slot fired twice (0s) or was lost (4s+)", slots[i-1], slots[i], d)
		}
	}
	is.True(sc.LastSlot.Equal(slots[len(slots)-1])) // last_slot is the newest job's slot

	// The list shows it, paused; rm removes it and keeps its jobs.
	out = runCLI(t, p, 0, "schedule", "list")
	is.True(strings.Contains(out, "tick2") && strings.Contains(out, "paused")) // listed, paused
	runCLI(t, p, 0, "schedule", "rm", "tick2")
	out = runCLI(t, p, 0, "schedule", "list")
	is.True(strings.Contains(out, "no schedules")) // removed
	runCLI(t, p, 1, "schedule", "show", "tick2")   // unknown now
}
