package main

import (
	"bytes"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/matryer/is"

	"spool/rpc"
)

// TestCLIBulk (issue 17, "Queue-wide and bulk"): wait for a queue, retry what
// failed and cancel by label, each one call through the real spool against a
// real spoold, across a kill -9 restart.
func TestCLIBulk(t *testing.T) {
	is := is.New(t)
	p := newDaemon(t, "--max-parallel", "8")
	c := p.client()
	ctx := tctx(t)
	gate := filepath.Join(p.state, "..", "gate")
	gated := "while [ ! -e '" + gate + "' ]; do sleep 0.02; done"
	submit := func(s rpc.Spec) int64 {
		t.Helper()
		res, err := c.Submit(ctx, rpc.SubmitParams{Job: &s})
		is.NoErr(err) // the job is submitted
		return res.Job.ID
	}
	// Queue z: two failures and a success, over before the rest starts.
	f1 := submit(rpc.Spec{Name: "f1", Queue: "z", Steps: []rpc.Step{sh("exit 1")}})
	f2 := submit(rpc.Spec{Name: "f2", Queue: "z", Steps: []rpc.Step{sh("exit 1")}})
	ok := submit(rpc.Spec{Name: "ok", Queue: "z", Steps: []rpc.Step{sh("true")}})
	for _, id := range []int64{f1, f2, ok} {
		_, err := c.Wait(ctx, rpc.WaitParams{ID: id})
		is.NoErr(err)
	}
	// Queue x: two jobs behind a gate, one of which fails.
	x1 := submit(rpc.Spec{Name: "x1", Queue: "x", Steps: []rpc.Step{sh(gated)}})
	x2 := submit(rpc.Spec{Name: "x2", Queue: "x", Steps: []rpc.Step{sh(gated + "; exit 3")}})
	// Queue y: long jobs, two labelled k=v (one waits for a slot of y), one k=w.
	_, err := c.QueueSet(ctx, rpc.QueueSetParams{Name: "y", Parallel: ptr(2)})
	is.NoErr(err)
	kv := map[string]string{"k": "v"}
	y1 := submit(rpc.Spec{Name: "y1", Queue: "y", Labels: kv, Steps: []rpc.Step{sh("sleep 120")}})
	yw := submit(rpc.Spec{Name: "yw", Queue: "y", Labels: map[string]string{"k": "w"}, Steps: []rpc.Step{sh("sleep 120")}})
	y2 := submit(rpc.Spec{Name: "y2", Queue: "y", Labels: kv, Steps: []rpc.Step{sh("sleep 120")}})
	waitRunning(t, c, y1)
	waitRunning(t, c, yw)

	t.Run("status by filter", func(t *testing.T) {
		is := is.New(t)
		r := spoolRun(t, p, nil, "", "--json", "status", "label:k=v")
		is.Equal(r.code, 0) // listed
		var res rpc.ListResult
		is.NoErr(json.Unmarshal([]byte(r.stdout), &res))
		is.Equal(listIDs(res.Jobs), []int64{y1, y2}) // exactly the labelled jobs
		r = spoolRun(t, p, nil, "", "--json", "status", "state=failed", "name=f*")
		is.NoErr(json.Unmarshal([]byte(r.stdout), &res))
		is.Equal(listIDs(res.Jobs), []int64{f1, f2}) // state and name glob
		r = spoolRun(t, p, nil, "", "status", "colour=red")
		is.Equal(r.code, 2)                                          // a bad term is a usage error
		is.True(strings.Contains(r.stderr, `unknown term "colour"`)) // naming it
	})

	t.Run("completions", func(t *testing.T) {
		is := is.New(t)
		r := spoolRun(t, p, nil, "", "__complete", "wait", "")
		is.Equal(r.code, 0)
		is.True(strings.Contains(r.stdout, fmt.Sprintf("%d\t", f1))) // job ids
		is.True(strings.Contains(r.stdout, "queue=\t"))              // and filter terms
		is.True(strings.Contains(r.stdout, "label:\t"))
		r = spoolRun(t, p, nil, "", "__complete", "cancel", "state=")
		is.True(strings.Contains(r.stdout, "state=running\n")) // states after state=
		r = spoolRun(t, p, nil, "", "__complete", "retry", "queue=")
		is.True(strings.Contains(r.stdout, "queue=y\n")) // the daemon's queues after queue=
		r = spoolRun(t, p, nil, "", "__complete", "cancel", "--")
		is.True(strings.Contains(r.stdout, "--yes")) // the new flags
		r = spoolRun(t, p, nil, "", "__complete", "retry", "--")
		is.True(strings.Contains(r.stdout, "--failed"))
	})

	t.Run("wait for a queue", func(t *testing.T) {
		is := is.New(t)
		r := spoolRun(t, p, nil, "", "wait", "queue=x", "--timeout", "100ms")
		is.Equal(r.code, 1)                              // not done in time
		is.True(strings.Contains(r.stderr, "timed out")) // and says so
		is.True(strings.Contains(r.stdout, "2 running")) // with the jobs' states
		cmd := exec.Command(p.bins.spool, "--socket", p.socket, "--json", "wait", "queue=x")
		var out bytes.Buffer
		cmd.Stdout = &out
		is.NoErr(cmd.Start())
		// The wait covers the jobs unfinished when its call arrives: open the
		// gate only once the CLI is connected to the daemon, and a moment more.
		waitConnected(t, cmd.Process.Pid)
		time.Sleep(300 * time.Millisecond)
		is.NoErr(os.WriteFile(gate, nil, 0o600))
		err := cmd.Wait()
		is.True(err != nil) // one job of x failed: exit 1
		var res rpc.JobsResult
		is.NoErr(json.Unmarshal(out.Bytes(), &res))
		is.True(res.Done)                           // x is done
		is.Equal(res.Jobs, 2)                       // its two jobs
		is.Equal(res.NotSucceeded, []int64{x2})     // the failed one is named
		is.Equal(res.Counts[rpc.StateSucceeded], 1) // the other succeeded
		j, err := c.Get(ctx, rpc.GetParams{ID: y1})
		is.NoErr(err)
		is.Equal(j.State, rpc.StateRunning) // queue y was not waited for
		_ = x1
	})

	t.Run("cancel by label", func(t *testing.T) {
		is := is.New(t)
		r := spoolRun(t, p, nil, "", "cancel", "label:k=v")
		is.Equal(r.code, 2)                              // two jobs, no terminal, no --yes
		is.True(strings.Contains(r.stderr, "add --yes")) // says what to do
		j, err := c.Get(ctx, rpc.GetParams{ID: y1})
		is.NoErr(err)
		is.Equal(j.State, rpc.StateRunning) // and cancelled nothing
		r = spoolRun(t, p, nil, "", "--json", "cancel", "label:k=v", "--yes", "--reason", "bulk")
		is.Equal(r.code, 0) // cancelled
		var res rpc.JobsResult
		is.NoErr(json.Unmarshal([]byte(r.stdout), &res))
		is.Equal(res.Cancelled, []int64{y1, y2}) // exactly the labelled ones, running and queued
		j, err = c.Get(ctx, rpc.GetParams{ID: yw})
		is.NoErr(err)
		is.Equal(j.State, rpc.StateRunning) // the other label runs on
	})

	p.kill9()
	p.start()
	c = p.client()

	t.Run("after kill -9", func(t *testing.T) {
		is := is.New(t)
		for _, id := range []int64{y1, y2} {
			j, err := c.Get(ctx, rpc.GetParams{ID: id})
			is.NoErr(err)
			is.Equal(j.State, rpc.StateCancelled) // the cancel is durable
			is.Equal(j.Error, "bulk")             // with its reason
		}
		r := spoolRun(t, p, nil, "", "retry", "--failed")
		is.Equal(r.code, 0) // retried
		var retried []string
		for _, line := range strings.Split(strings.TrimSpace(r.stdout), "\n") {
			_, of, _ := strings.Cut(line, "(retry of ")
			retried = append(retried, strings.TrimSuffix(of, ")"))
		}
		is.Equal(retried, []string{fmt.Sprint(f1), fmt.Sprint(f2), fmt.Sprint(x2)}) // exactly the failed ones, not the cancelled
		r = spoolRun(t, p, nil, "", "retry", "--failed")
		is.Equal(r.code, 0)                                                                                    // again
		is.True(strings.Contains(r.stderr, fmt.Sprintf("retried before, so not again: %d %d %d", f1, f2, x2))) // retries nothing twice
		is.True(!strings.Contains(r.stdout, fmt.Sprintf("(retry of %d)", f1)))                                 // f1 is not retried again
		r = spoolRun(t, p, nil, "", "cancel", "--all", "--yes")
		is.Equal(r.code, 0) // the rest (yw, interrupted and resumed; the retries) is cancelled
		r = spoolRun(t, p, nil, "", "--json", "wait", "--all")
		is.Equal(r.code, 0) // nothing left to wait for
		var res rpc.JobsResult
		is.NoErr(json.Unmarshal([]byte(r.stdout), &res))
		is.Equal(res.Jobs, 0) // nothing unfinished
	})
}

func listIDs(jobs []rpc.Job) []int64 {
	out := []int64{}
	for _, j := range jobs {
		out = append(out, j.ID)
	}
	slices.Sort(out)
	return out
}

func ptr[T any](v T) *T { return &v }

// waitConnected waits until process pid holds a socket (the CLI dialled the
// daemon), failing the test after a generous limit.
func waitConnected(t *testing.T, pid int) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for time.Now().Before(deadline) {
		fds, _ := os.ReadDir(fmt.Sprintf("/proc/%d/fd", pid))
		for _, fd := range fds {
			if l, err := os.Readlink(fmt.Sprintf("/proc/%d/fd/%s", pid, fd.Name())); err == nil && strings.HasPrefix(l, "socket:") {
				return
			}
		}
		time.Sleep(10 * time.Millisecond)
	}
	t.Fatalf("process %d never connected to the daemon", pid)
}
