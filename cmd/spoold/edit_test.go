package main

import (
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/matryer/is"

	"spool/rpc"
)

// TestE2EHoldEditRelease drives spool hold, release and edit against the real
// daemon: a held job stays held across a kill -9 and does not run until it is
// released, and an edit of priority reorders two jobs queued behind a paused
// queue.
func TestE2EHoldEditRelease(t *testing.T) {
	is := is.New(t)
	p := newDaemon(t, "--max-parallel", "2")
	dir := filepath.Dir(p.state)
	ran := filepath.Join(dir, "ran")
	order := filepath.Join(dir, "order")
	id := func(out string) string { return strings.TrimSpace(out) }

	// Hold a queued job while its queue is paused, then resume the queue.
	runCLI(t, p, 0, "queue", "q", "--pause")
	held := id(runCLI(t, p, 0, "submit", "--queue", "q", "--", "sh", "-c", "echo ran >> "+ran))
	out := runCLI(t, p, 0, "hold", held)
	is.True(strings.Contains(out, "(held)")) // the CLI says it is held
	runCLI(t, p, 0, "queue", "q", "--resume")
	time.Sleep(300 * time.Millisecond)
	_, err := os.Stat(ran)
	is.True(os.IsNotExist(err)) // a held job does not run

	// kill -9, restart: still held, still not run.
	p.kill9()
	p.start()
	var j rpc.Job
	is.NoErr(json.Unmarshal([]byte(runCLI(t, p, 0, "--json", "show", held)), &j))
	is.Equal(j.State, rpc.StateQueued)                // still queued after the crash
	is.True(j.Waiting != nil && *j.Waiting == "held") // and held
	time.Sleep(300 * time.Millisecond)
	_, err = os.Stat(ran)
	is.True(os.IsNotExist(err)) // and it did not run at the restart

	// Release runs it.
	is.NoErr(json.Unmarshal([]byte(runCLI(t, p, 0, "--json", "release", held)), &j))
	is.True(j.Waiting == nil || *j.Waiting != "held") // --json prints the released job
	runCLI(t, p, 0, "wait", held)
	b, err := os.ReadFile(ran)
	is.NoErr(err)
	is.Equal(string(b), "ran\n") // it ran, once

	// Edit priority reorders two jobs queued behind a paused queue.
	runCLI(t, p, 0, "queue", "p", "--pause", "--parallel", "1")
	first := id(runCLI(t, p, 0, "submit", "--queue", "p", "--", "sh", "-c", "echo first >> "+order))
	second := id(runCLI(t, p, 0, "submit", "--queue", "p", "--", "sh", "-c", "echo second >> "+order))
	is.NoErr(json.Unmarshal([]byte(runCLI(t, p, 0, "--json", "edit", second, "--priority", "5", "--label", "moved=yes")), &j))
	is.Equal(j.Priority, 5)                          // the edit is stored
	is.Equal(j.Labels["moved"], "yes")               // labels too
	runCLI(t, p, 1, "edit", first, "--after", first) // a cycle is refused
	runCLI(t, p, 0, "queue", "p", "--resume")
	runCLI(t, p, 0, "wait", first, second)
	b, err = os.ReadFile(order)
	is.NoErr(err)
	is.Equal(string(b), "second\nfirst\n") // the edited priority ran first
	runCLI(t, p, 1, "hold", first)         // a final job cannot be held

	// The events say what happened.
	c := p.client()
	ctx := tctx(t)
	last, err := c.Info(ctx)
	is.NoErr(err)
	w, err := c.Watch(ctx, rpc.WatchParams{Since: rpc.Since(0)})
	is.NoErr(err)
	var types, changes []string
	for {
		ev, err := w.Next(ctx)
		is.NoErr(err)
		switch ev.Type {
		case rpc.EventHeld, rpc.EventReleased, rpc.EventEdited:
			types = append(types, ev.Type)
		}
		if ev.Type == rpc.EventEdited {
			changes = append(changes, string(ev.Changes))
		}
		if ev.Seq == last.LastSeq {
			break
		}
	}
	is.Equal(types, []string{rpc.EventHeld, rpc.EventReleased, rpc.EventEdited}) // each change is an event, stored across the crash
	is.True(strings.Contains(changes[0], `"priority":{"from":0,"to":5}`))        // with what changed
}
