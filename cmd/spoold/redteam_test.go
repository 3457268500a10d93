package main

import (
	"context"
	"fmt"
	"maps"
	"math/rand/v2"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/matryer/is"

	"spool/client"
	"spool/rpc"
)

// The red-team suite of the daemon's execution guarantees: every process of a
// step is contained, no step runs twice at once, a cancelled or timed-out job
// ends as it was told, and the protocol's answers hold under kills and races.
// Each test runs a few rounds in `make test`; `make crash` sets
// SPOOL_CRASH_ROUNDS for many more. Processes are found through /proc by the
// marker each test puts in its daemons' environment (see markTest).

// allModes are the containment modes a test runs in: whatever the daemon
// picks, then each one by name (skipped where the daemon cannot use it).
var allModes = []string{"default", "cgroup", "group"}

// TestRedTeamKill9DuringStarts submits 64 jobs whose step leaves a background
// child (`sleep 60 & wait`) at --max-parallel 64 and kills the daemon with
// SIGKILL 0-20 ms after the submit is answered, while it starts them. /proc is
// sampled all along: no two runs of a step (two live `sleep 60` of one job) may
// be alive at once, and after the restart every process from before the kill
// must be gone.
func TestRedTeamKill9DuringStarts(t *testing.T) {
	containmentModes(t, allModes, func(t *testing.T, mode string, flags []string) {
		is := is.New(t)
		p, mark := redteamDaemon(t, mode, flags, "--max-parallel", "64")
		n := rounds(t, 2)
		ctx := longCtx(t, n)
		const jobs = 64
		rng := rand.New(rand.NewPCG(uint64(time.Now().UnixNano()), 1))
		// A run of a step is its one `sleep 60`: two of one job is a double run.
		// (60 s: a leftover outlives the wait for it to be gone.)
		sampler := startSampler(t, mark, func(pr proc) string {
			if pr.comm != "sleep" {
				return ""
			}
			return strconv.Itoa(pr.pid)
		})
		for round := 0; round < n; round++ {
			c := p.client()
			specs := make([]rpc.Spec, jobs)
			for i := range specs {
				specs[i] = rpc.Spec{Steps: []rpc.Step{sh("sleep 60 & wait")}}
			}
			res, err := c.Submit(ctx, rpc.SubmitParams{Jobs: specs})
			is.NoErr(err) // the batch is stored
			delay := time.Duration(rng.IntN(21)) * time.Millisecond
			time.Sleep(delay)
			p.kill9()
			c.Close()
			before := stepProcs(mark)
			p.start()
			// Every process of the killed daemon's steps is gone after the
			// restart (stopped before anything resumed).
			left := pollProcs(goneWithin, func() []proc {
				var l []proc
				for _, q := range stepProcs(mark) {
					if slices.ContainsFunc(before, func(b proc) bool { return b.key() == q.key() }) {
						l = append(l, q)
					}
				}
				return l
			})
			if len(left) > 0 {
				t.Errorf("round %d: processes from before the kill are alive after the restart: %s", round+1, procNames(left))
			}
			// Let the interrupted jobs start again while the sampler looks.
			c = p.client()
			ids := make([]int64, len(res.Jobs))
			for i, j := range res.Jobs {
				ids[i] = j.ID
			}
			deadline := time.Now().Add(20 * time.Second)
			running := 0
			for ; time.Now().Before(deadline); time.Sleep(50 * time.Millisecond) {
				seen := map[string]bool{}
				for _, q := range stepProcs(mark) {
					seen[q.env["SPOOL_JOB_ID"]] = true
				}
				if running = len(seen); running >= jobs {
					break
				}
			}
			time.Sleep(300 * time.Millisecond)
			t.Logf("round %d: killed %v after the submit with %d step processes alive; after the restart %d jobs ran again",
				round+1, delay, len(before), running)
			cancelAll(ctx, t, c, ids)
			if l := pollProcs(goneWithin, func() []proc { return stepProcs(mark) }); len(l) > 0 {
				t.Errorf("round %d: processes of cancelled jobs are alive: %s", round+1, procNames(l))
			}
			c.Close()
			sampler.check(t)
		}
		samples := sampler.end(t)
		t.Logf("%d rounds, %d samples of /proc", n, samples)
		checkNoZombies(t, p)
		checkNoRace(t, p)
	})
}

// cancelAll cancels ids from 8 clients and waits until each is final.
func cancelAll(ctx context.Context, t *testing.T, c *client.Client, ids []int64) {
	t.Helper()
	var wg sync.WaitGroup
	for i := 0; i < 8; i++ {
		wg.Go(func() {
			for k := i; k < len(ids); k += 8 {
				// A cancel answers within the kill grace and a few seconds.
				cctx, cancel := context.WithTimeout(ctx, 30*time.Second)
				_, err := c.Cancel(cctx, rpc.CancelParams{ID: ids[k], Reason: "red team"})
				cancel()
				if err != nil && rpc.CodeOf(err) != rpc.CodeBadState {
					t.Errorf("cancel %d: %v", ids[k], err)
				}
			}
		})
	}
	wg.Wait()
	waitFinal(ctx, t, c, ids)
}

// cancelAnswer is what one cancel was answered.
type cancelAnswer struct {
	job *rpc.Job
	err *rpc.Error
}

// neverStarted reports whether the cancel answered a job that was cancelled
// before any step of it started.
func (a cancelAnswer) neverStarted() bool {
	if a.job == nil || a.job.State != rpc.StateCancelled || a.job.StartedAt != nil {
		return false
	}
	for _, s := range a.job.Steps {
		if s.Attempt != 0 || s.StartedAt != nil {
			return false
		}
	}
	return true
}

// checkCancelAnswer checks one cancel's answer against the protocol: the job,
// cancelled, or 1002 for a job that was already final. It returns the answer.
func checkCancelAnswer(t *testing.T, v *violations, id int64, j *rpc.Job, err error) cancelAnswer {
	t.Helper()
	if err != nil {
		e := protoErr(err)
		if e == nil || e.Code != rpc.CodeBadState {
			v.add("cancel %d: answered %v, want the cancelled job or 1002", id, err)
			return cancelAnswer{}
		}
		return cancelAnswer{err: e}
	}
	if j.State != rpc.StateCancelled {
		v.add("cancel %d: answered the job in state %s (error %q), want cancelled or 1002", id, j.State, j.Error)
	}
	return cancelAnswer{job: j}
}

// checkStoredAgrees checks that the stored job agrees with the cancel's answer.
func checkStoredAgrees(v *violations, id int64, a cancelAnswer, stored *rpc.Job) {
	switch {
	case a.job != nil:
		if stored.State != a.job.State {
			v.add("job %d: the cancel answered %s, stored is %s", id, a.job.State, stored.State)
		}
		if a.neverStarted() && (stored.StartedAt != nil || stored.Steps[0].Attempt != 0) {
			v.add("job %d: the cancel answered a job that never started; stored: started_at %v, attempt %d", id, stored.StartedAt, stored.Steps[0].Attempt)
		}
	case a.err != nil:
		if !stored.Final() {
			v.add("job %d: the cancel answered 1002, the job is %s", id, stored.State)
		}
		if a.err.Data != nil && a.err.Data.State != "" && a.err.Data.State != stored.State {
			v.add("job %d: the cancel answered 1002 with state %s, stored is %s", id, a.err.Data.State, stored.State)
		}
	}
}

// TestRedTeamCancelQueuedNeverRuns submits 200 jobs that append their id to a
// file, at --max-parallel 4, and cancels them from 8 clients at once. A job
// whose cancel answered it cancelled before it started must not have run; the
// stored jobs agree with the answers.
func TestRedTeamCancelQueuedNeverRuns(t *testing.T) {
	is := is.New(t)
	p, _ := redteamDaemon(t, "default", nil, "--max-parallel", "4")
	n := rounds(t, 2)
	runs := filepath.Join(shortDir(t), "runs")
	c := p.client()
	ctx := longCtx(t, n)
	var v violations
	queuedCancels, runningCancels, lost := 0, 0, 0
	for round := 0; round < n; round++ {
		specs := make([]rpc.Spec, 200)
		for i := range specs {
			specs[i] = rpc.Spec{Env: map[string]string{"RUNS": runs}, Steps: []rpc.Step{sh(`echo "$SPOOL_JOB_ID" >> "$RUNS"; sleep 0.02`)}}
		}
		res, err := c.Submit(ctx, rpc.SubmitParams{Jobs: specs})
		is.NoErr(err) // 200 jobs stored
		ids := make([]int64, len(res.Jobs))
		for i, j := range res.Jobs {
			ids[i] = j.ID
		}
		answers := make([]cancelAnswer, len(ids))
		var wg sync.WaitGroup
		for w := 0; w < 8; w++ {
			cw := p.client()
			wg.Go(func() {
				for k := w; k < len(ids); k += 8 {
					j, err := cw.Cancel(ctx, rpc.CancelParams{ID: ids[k], Reason: "red team"})
					answers[k] = checkCancelAnswer(t, &v, ids[k], j, err)
				}
			})
		}
		wg.Wait()
		final := waitFinal(ctx, t, c, ids)
		ran := map[string]bool{}
		for _, l := range readLines(t, runs) {
			ran[l] = true
		}
		for k, id := range ids {
			a := answers[k]
			checkStoredAgrees(&v, id, a, final[id])
			switch {
			case a.neverStarted():
				queuedCancels++
				if ran[strconv.FormatInt(id, 10)] {
					v.add("job %d: cancelled while queued (attempt 0, no started_at), yet its command ran", id)
				}
			case a.job != nil:
				runningCancels++
			default:
				lost++
			}
		}
	}
	t.Logf("%d rounds of 200 jobs: %d cancelled while queued, %d cancelled while running, %d ended before their cancel (1002)",
		n, queuedCancels, runningCancels, lost)
	v.report(t, "a job cancelled while queued never runs")
	checkNoRace(t, p)
}

// TestRedTeamTimeoutIsTheOutcome runs steps that exit 0 on SIGTERM past their
// timeout: the stored timeout is the outcome, step-level and job-level, and in
// a job of two steps the timed-out step fails and the next is skipped.
func TestRedTeamTimeoutIsTheOutcome(t *testing.T) {
	p, _ := redteamDaemon(t, "default", nil, "--max-parallel", "8")
	c := p.client()
	const stubborn = "trap 'exit 0' TERM; sleep 30 & wait"
	half := rpc.Duration(500 * time.Millisecond)
	step := func(timeout rpc.Duration) rpc.Step {
		s := sh(stubborn)
		s.Timeout = timeout
		return s
	}
	cases := []struct {
		name string
		spec rpc.Spec
		// failed is the step that timed out; the ones after it are skipped.
		failed int
	}{
		{"step timeout", rpc.Spec{Steps: []rpc.Step{step(half)}}, 0},
		{"job timeout", rpc.Spec{Timeout: half, Steps: []rpc.Step{step(0)}}, 0},
		{"step timeout, two steps", rpc.Spec{Steps: []rpc.Step{step(half), sh("echo never")}}, 0},
		{"job timeout, two steps", rpc.Spec{Timeout: half, Steps: []rpc.Step{step(0), sh("echo never")}}, 0},
		{"job timeout in the second step", rpc.Spec{Timeout: half, Steps: []rpc.Step{sh("true"), step(0), sh("echo never")}}, 1},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			is := is.New(t)
			ctx := tctx(t)
			res, err := c.Submit(ctx, rpc.SubmitParams{Job: &tc.spec})
			is.NoErr(err)
			j, err := c.Wait(ctx, rpc.WaitParams{ID: res.Job.ID, Timeout: rpc.Duration(60 * time.Second)})
			is.NoErr(err)
			t.Logf("job: %s %q; steps: %s", j.State, j.Error, stepStates(j))
			is.Equal(j.State, rpc.StateFailed)                         // the timeout is the outcome, whatever the exit status
			is.True(strings.HasSuffix(j.Error, "timeout after 500ms")) // the job says why
			is.Equal(j.Steps[tc.failed].State, rpc.StateFailed)        // the timed-out step failed
			is.Equal(j.Steps[tc.failed].Error, "timeout after 500ms")  // with the timeout as its error
			for i := 0; i < tc.failed; i++ {
				is.Equal(j.Steps[i].State, rpc.StateSucceeded) // the steps before it succeeded
			}
			for i := tc.failed + 1; i < len(j.Steps); i++ {
				is.Equal(j.Steps[i].State, rpc.StateSkipped) // the steps after it never ran
				is.Equal(j.Steps[i].Error, "")               // and carry no error of the one that timed out
			}
		})
	}
	checkNoRace(t, p)
}

func stepStates(j *rpc.Job) string {
	s := make([]string, len(j.Steps))
	for i, st := range j.Steps {
		s[i] = fmt.Sprintf("%s %s %q", st.Name, st.State, st.Error)
	}
	return strings.Join(s, ", ")
}

// escapeScript starts a child in a session of its own that ignores SIGTERM, and
// a double-forked daemon, then sleeps for the main process's time.
func escapeScript(main string) string {
	return `(setsid sh -c "trap '' TERM; sleep 300" &); (sh -c "sleep 300 &" &); ` + main
}

// waitEscaped waits until job id has want processes `sleep 300`: the two
// escaped ones, and the main process's own when it sleeps too.
func waitEscaped(t *testing.T, mark string, id int64, want int) {
	t.Helper()
	deadline := time.Now().Add(60 * time.Second)
	for {
		n := 0
		for _, q := range jobProcs(mark, id) {
			if cmdline(q.pid) == "sleep 300" {
				n++
			}
		}
		if n >= want {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("job %d: %d of %d sleeps started: %s", id, n, want, procNames(jobProcs(mark, id)))
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// TestRedTeamContainment runs a step whose tree has a setsid child that ignores
// SIGTERM and a double-forked daemon, and ends it by cancel, by timeout, by its
// main process's exit, and by a SIGKILL of spoold and a restart: each time no
// process of the job may be alive within the kill grace and a margin, and no
// child of spoold may stay a zombie.
func TestRedTeamContainment(t *testing.T) {
	containmentModes(t, allModes, func(t *testing.T, mode string, flags []string) {
		p, mark := redteamDaemon(t, mode, flags, "--max-parallel", "4")
		c := p.client()
		gone := func(t *testing.T, id int64, how string) {
			t.Helper()
			if l := pollProcs(goneWithin, func() []proc { return jobProcs(mark, id) }); len(l) > 0 {
				t.Errorf("after %s, processes of job %d are alive: %s", how, id, procNames(l))
			}
			checkNoZombies(t, p)
		}
		t.Run("cancel", func(t *testing.T) {
			is := is.New(t)
			ctx := tctx(t)
			s := rpc.Spec{Steps: []rpc.Step{sh(escapeScript("sleep 300"))}}
			res, err := c.Submit(ctx, rpc.SubmitParams{Job: &s})
			is.NoErr(err)
			waitEscaped(t, mark, res.Job.ID, 3)
			j, err := c.Cancel(ctx, rpc.CancelParams{ID: res.Job.ID, Reason: "red team"})
			is.NoErr(err)
			is.Equal(j.State, rpc.StateCancelled) // the cancel is the outcome
			gone(t, res.Job.ID, "a cancel")
		})
		t.Run("timeout", func(t *testing.T) {
			is := is.New(t)
			ctx := tctx(t)
			st := sh(escapeScript("sleep 300"))
			st.Timeout = rpc.Duration(2 * time.Second)
			s := rpc.Spec{Steps: []rpc.Step{st}}
			res, err := c.Submit(ctx, rpc.SubmitParams{Job: &s})
			is.NoErr(err)
			waitEscaped(t, mark, res.Job.ID, 3)
			j, err := c.Wait(ctx, rpc.WaitParams{ID: res.Job.ID, Timeout: rpc.Duration(60 * time.Second)})
			is.NoErr(err)
			is.Equal(j.State, rpc.StateFailed) // the step timed out
			gone(t, res.Job.ID, "a timeout")
		})
		t.Run("step end", func(t *testing.T) {
			is := is.New(t)
			ctx := tctx(t)
			// The main process exits 0 once the test saw both escapes.
			goFile := filepath.Join(shortDir(t), "go")
			wait := `while [ ! -e "$GOFILE" ]; do sleep 0.05; done`
			s := rpc.Spec{Env: map[string]string{"GOFILE": goFile}, Steps: []rpc.Step{sh(escapeScript(wait)), sh("true")}}
			res, err := c.Submit(ctx, rpc.SubmitParams{Job: &s})
			is.NoErr(err)
			waitEscaped(t, mark, res.Job.ID, 2)
			is.NoErr(os.WriteFile(goFile, nil, 0o644))
			j, err := c.Wait(ctx, rpc.WaitParams{ID: res.Job.ID, Timeout: rpc.Duration(60 * time.Second)})
			is.NoErr(err)
			is.Equal(j.State, rpc.StateSucceeded) // the main process exited 0
			gone(t, res.Job.ID, "the end of the step")
		})
		t.Run("orphans reaped", func(t *testing.T) {
			is := is.New(t)
			ctx := tctx(t)
			// Escaped children that end on their own after their step.
			s := rpc.Spec{Steps: []rpc.Step{sh(`(setsid sh -c "sleep 0.5" &); (sh -c "sleep 0.5 &" &); true`)}}
			res, err := c.Submit(ctx, rpc.SubmitParams{Job: &s})
			is.NoErr(err)
			j, err := c.Wait(ctx, rpc.WaitParams{ID: res.Job.ID, Timeout: rpc.Duration(60 * time.Second)})
			is.NoErr(err)
			is.Equal(j.State, rpc.StateSucceeded) // the main process exited 0
			gone(t, res.Job.ID, "the end of the step and of its escaped children")
		})
		t.Run("kill -9 and restart", func(t *testing.T) {
			is := is.New(t)
			ctx := tctx(t)
			st := sh(escapeScript("sleep 300"))
			st.OnInterrupt = rpc.OnInterruptFail // no rerun: after the restart nothing of the job may live
			s := rpc.Spec{Steps: []rpc.Step{st}}
			res, err := c.Submit(ctx, rpc.SubmitParams{Job: &s})
			is.NoErr(err)
			waitEscaped(t, mark, res.Job.ID, 3)
			p.kill9()
			p.start()
			c = p.client()
			j, err := c.Wait(ctx, rpc.WaitParams{ID: res.Job.ID, Timeout: rpc.Duration(60 * time.Second)})
			is.NoErr(err)
			is.Equal(j.State, rpc.StateFailed) // interrupted, and on_interrupt says fail
			gone(t, res.Job.ID, "a SIGKILL of spoold and a restart")
		})
		checkNoRace(t, p)
	})
}

// TestRedTeamCancelRacesTheEnd cancels short jobs at about the moment they end:
// each cancel answers the job cancelled, or 1002; never a job that ended
// otherwise; and the stored job agrees with the answer.
func TestRedTeamCancelRacesTheEnd(t *testing.T) {
	p, _ := redteamDaemon(t, "default", nil, "--max-parallel", "8")
	perClient := 25 * rounds(t, 1)
	ctx := longCtx(t, perClient/25)
	var v violations
	var cancelled, late atomic.Int64
	var wg sync.WaitGroup
	for w := 0; w < 8; w++ {
		c := p.client()
		r := rand.New(rand.NewPCG(uint64(time.Now().UnixNano()), uint64(w)))
		wg.Go(func() {
			for i := 0; i < perClient; i++ {
				ms := r.IntN(6) * 10
				script := "true"
				if ms > 0 {
					script = fmt.Sprintf("sleep 0.%02d", ms)
				}
				s := rpc.Spec{Steps: []rpc.Step{sh(script)}}
				res, err := c.Submit(ctx, rpc.SubmitParams{Job: &s})
				if err != nil {
					v.add("submit: %v", err)
					return
				}
				id := res.Job.ID
				// Wait for the start, then cancel about when the step ends.
				w, err := c.Watch(ctx, rpc.WatchParams{Jobs: []int64{id}, Since: rpc.Since(0)})
				if err != nil {
					v.add("watch %d: %v", id, err)
					return
				}
				for {
					ev, err := w.Next(ctx)
					if err != nil || ev.Type == rpc.EventStepStarted || ev.Type == "done" {
						break
					}
				}
				w.Close()
				time.Sleep(time.Duration(ms-5+r.IntN(15)) * time.Millisecond)
				j, err := c.Cancel(ctx, rpc.CancelParams{ID: id, Reason: "red team"})
				a := checkCancelAnswer(t, &v, id, j, err)
				stored, err := c.Get(ctx, rpc.GetParams{ID: id})
				if err != nil {
					v.add("get %d: %v", id, err)
					return
				}
				checkStoredAgrees(&v, id, a, stored)
				if a.job != nil {
					cancelled.Add(1)
				} else {
					late.Add(1)
				}
			}
		})
	}
	wg.Wait()
	t.Logf("%d cancels: %d answered the cancelled job, %d answered 1002", 8*perClient, cancelled.Load(), late.Load())
	v.report(t, "a cancel that races the job's end answers cancelled or 1002")
	checkNoRace(t, p)
}

// TestRedTeamResultsDirPerJob checks that a one-step job's results folder is its
// own: a file written there is not seen by a later, unrelated job.
func TestRedTeamResultsDirPerJob(t *testing.T) {
	is := is.New(t)
	p, _ := redteamDaemon(t, "default", nil)
	c := p.client()
	ctx := tctx(t)
	run := func(s rpc.Spec) *rpc.Job {
		res, err := c.Submit(ctx, rpc.SubmitParams{Job: &s})
		is.NoErr(err)
		j, err := c.Wait(ctx, rpc.WaitParams{ID: res.Job.ID, Timeout: rpc.Duration(60 * time.Second)})
		is.NoErr(err)
		return j
	}
	writer := run(rpc.Spec{Steps: []rpc.Step{sh(`echo secret > "$SPOOL_RESULTS_DIR/leak" 2>/dev/null; printf %s "$SPOOL_RESULTS_DIR"`)}})
	readerSpec := rpc.Spec{Steps: []rpc.Step{sh(`ls -A "$SPOOL_RESULTS_DIR" 2>/dev/null | tr '\n' ' '; echo "| $SPOOL_RESULTS_DIR"`)}}
	for _, reader := range []*rpc.Job{run(readerSpec), run(rpc.Spec{Steps: []rpc.Step{readerSpec.Steps[0], sh("true")}})} {
		listing, dir, _ := strings.Cut(jsonString(reader.Steps[0].Result), "| ")
		wdir := jsonString(writer.Result)
		t.Logf("writer %d: folder %q; reader %d: folder %q holds %q", writer.ID, wdir, reader.ID, dir, listing)
		is.Equal(reader.State, rpc.StateSucceeded)      // the reader ran
		is.True(!strings.Contains(listing, "leak"))     // it does not see the other job's file
		is.True(wdir != "" && dir != "" && wdir != dir) // each job has its own SPOOL_RESULTS_DIR
	}
}

// TestRedTeamShutdownAnswers submits from many clients while the daemon shuts
// down (daemon.shutdown, and SIGTERM): each submit answers success or 1006,
// never another error, and every acknowledged job is there after the restart.
func TestRedTeamShutdownAnswers(t *testing.T) {
	for _, how := range []string{"daemon.shutdown", "SIGTERM"} {
		t.Run(how, func(t *testing.T) {
			is := is.New(t)
			p, _ := redteamDaemon(t, "default", nil, "--max-parallel", "2")
			n := rounds(t, 2)
			ctx := longCtx(t, n)
			var v violations
			acked := map[int64]bool{}
			var mu sync.Mutex
			refused, lostConn := 0, 0
			rng := rand.New(rand.NewPCG(uint64(time.Now().UnixNano()), 2))
			for round := 0; round < n; round++ {
				var wg sync.WaitGroup
				var stop atomic.Bool
				for w := 0; w < 12; w++ {
					wg.Go(func() {
						c, err := client.Dial(ctx, p.socket)
						if err != nil {
							return // the daemon stopped listening already
						}
						defer c.Close()
						for i := 0; !stop.Load(); i++ {
							s := rpc.Spec{Steps: []rpc.Step{sh("sleep 0.05")}}
							var res *rpc.SubmitResult
							if i%3 == 2 {
								res, err = c.Submit(ctx, rpc.SubmitParams{Jobs: []rpc.Spec{s, s, s}})
							} else {
								res, err = c.Submit(ctx, rpc.SubmitParams{Job: &s})
							}
							mu.Lock()
							switch e := protoErr(err); {
							case err == nil && res.Job != nil:
								acked[res.Job.ID] = true
							case err == nil:
								for _, j := range res.Jobs {
									acked[j.ID] = true
								}
							case e != nil && e.Code == rpc.CodeShuttingDown:
								refused++
							case e != nil:
								v.add("a submit during %s answered %d %q, want success or 1006", how, e.Code, e.Message)
							default:
								lostConn++ // the connection closed: not acknowledged
							}
							mu.Unlock()
							if err != nil && protoErr(err) == nil {
								return
							}
						}
					})
				}
				time.Sleep(time.Duration(100+rng.IntN(400)) * time.Millisecond)
				if how == "SIGTERM" {
					_ = p.cmd.Process.Signal(syscall.SIGTERM)
				} else {
					c := p.client()
					if err := c.Shutdown(ctx, rpc.ShutdownParams{}); err != nil && protoErr(err) != nil {
						t.Errorf("daemon.shutdown: %v", err)
					}
				}
				select {
				case <-p.exited:
				case <-time.After(60 * time.Second):
					t.Fatalf("spoold did not stop after %s", how)
				}
				stop.Store(true)
				wg.Wait()
				p.start()
				c := p.client()
				stored := listAll(ctx, t, c)
				mu.Lock()
				for id := range acked {
					if _, ok := stored[id]; !ok {
						v.add("job %d was acknowledged before %s and is lost", id, how)
					}
				}
				mu.Unlock()
			}
			t.Logf("%d rounds: %d jobs acknowledged, %d submits answered 1006, %d lost their connection unanswered", n, len(acked), refused, lostConn)
			is.True(len(acked) > 0) // submits were served before the shutdown
			v.report(t, "submits during "+how)
			checkNoRace(t, p)
		})
	}
}

// TestRedTeamManyClients runs 8 clients that submit, cancel, retry, remove and
// prune short jobs at random, then checks: no job cancelled ran a process after
// its cancel was answered (nor at all when cancelled before it started), every
// job ends, the event log replays from 0 without a gap, and daemon.info's counts
// agree with job.list.
func TestRedTeamManyClients(t *testing.T) {
	is := is.New(t)
	p, _ := redteamDaemon(t, "default", nil, "--max-parallel", "4")
	log := filepath.Join(shortDir(t), "log")
	ops := 40 * rounds(t, 1)
	ctx := longCtx(t, ops/40)
	var v violations
	var mu sync.Mutex
	var ids []int64
	pick := func(r *rand.Rand) int64 {
		mu.Lock()
		defer mu.Unlock()
		if len(ids) == 0 {
			return 0
		}
		return ids[r.IntN(len(ids))]
	}
	add := func(js ...rpc.Job) {
		mu.Lock()
		defer mu.Unlock()
		for _, j := range js {
			ids = append(ids, j.ID)
		}
	}
	counts := map[string]int{}
	count := func(op string) {
		mu.Lock()
		counts[op]++
		mu.Unlock()
	}
	spec := func(r *rand.Rand) rpc.Spec {
		return rpc.Spec{Env: map[string]string{"LOG": log}, Steps: []rpc.Step{
			sh(fmt.Sprintf(`echo "run $SPOOL_JOB_ID" >> "$LOG"; sleep 0.0%d`, r.IntN(6)))}}
	}
	allowed := func(op string, id int64, err error, codes ...int) {
		if err == nil {
			return
		}
		if e := protoErr(err); e == nil || !slices.Contains(codes, e.Code) {
			v.add("%s %d: %v", op, id, err)
		}
	}
	var wg sync.WaitGroup
	for w := 0; w < 8; w++ {
		c := p.client()
		r := rand.New(rand.NewPCG(uint64(time.Now().UnixNano()), uint64(w)))
		wg.Go(func() {
			for i := 0; i < ops; i++ {
				switch k := r.IntN(20); {
				case k < 7:
					count("submit")
					if r.IntN(3) == 0 {
						res, err := c.Submit(ctx, rpc.SubmitParams{Jobs: []rpc.Spec{spec(r), spec(r), spec(r)}})
						allowed("submit", 0, err)
						if err == nil {
							add(res.Jobs...)
						}
					} else {
						s := spec(r)
						res, err := c.Submit(ctx, rpc.SubmitParams{Job: &s})
						allowed("submit", 0, err)
						if err == nil {
							add(*res.Job)
						}
					}
				case k < 12:
					count("cancel")
					id := pick(r)
					if id == 0 {
						continue
					}
					j, err := c.Cancel(ctx, rpc.CancelParams{ID: id, Reason: "red team"})
					allowed("cancel", id, err, rpc.CodeBadState, rpc.CodeNotFound)
					if err == nil {
						a := checkCancelAnswer(t, &v, id, j, err)
						if j.State != rpc.StateCancelled {
							continue
						}
						what := "cancelled"
						if a.neverStarted() {
							what = "cancelled-queued"
						}
						if err := appendLine(log, fmt.Sprintf("%s %d", what, id)); err != nil {
							v.add("append to the log: %v", err)
						}
					}
				case k < 15:
					count("retry")
					id := pick(r)
					if id == 0 {
						continue
					}
					j, err := c.Retry(ctx, rpc.RetryParams{ID: id})
					allowed("retry", id, err, rpc.CodeBadState, rpc.CodeNotFound)
					if err == nil {
						add(*j)
					}
				case k < 18:
					count("remove")
					id := pick(r)
					if id == 0 {
						continue
					}
					rm := []int64{id}
					if other := pick(r); other != id {
						rm = append(rm, other)
					}
					_, err := c.Remove(ctx, rpc.RemoveParams{IDs: rm})
					allowed("remove", id, err, rpc.CodeBadState)
				default:
					count("prune")
					states := []rpc.State{[]rpc.State{rpc.StateSucceeded, rpc.StateFailed, rpc.StateCancelled}[r.IntN(3)]}
					_, err := c.Prune(ctx, rpc.PruneParams{States: states})
					allowed("prune", 0, err)
				}
				time.Sleep(time.Duration(r.IntN(20)) * time.Millisecond)
			}
		})
	}
	wg.Wait()
	c := p.client()
	// Every job that is still there ends.
	jobs := listAll(ctx, t, c)
	final := waitFinal(ctx, t, c, slices.Collect(maps.Keys(jobs)))
	// No process ran after its job's cancel was answered, nor at all for a job
	// cancelled before it started.
	cancelledAt := map[string]int{}
	neverStarted := map[string]bool{}
	for i, l := range readLines(t, log) {
		what, id, _ := strings.Cut(l, " ")
		switch what {
		case "cancelled", "cancelled-queued":
			if _, ok := cancelledAt[id]; !ok {
				cancelledAt[id] = i
			}
			neverStarted[id] = neverStarted[id] || what == "cancelled-queued"
		case "run":
			if _, ok := cancelledAt[id]; ok {
				v.add("job %s ran a process after its cancel was answered", id)
			}
		}
	}
	for _, l := range readLines(t, log) {
		if what, id, _ := strings.Cut(l, " "); what == "run" && neverStarted[id] {
			v.add("job %s was cancelled before it started, yet ran", id)
		}
	}
	// The event log replays without a gap, with one final event per job that
	// matches its state.
	evs := replayEvents(ctx, t, c)
	lastFinal := map[int64]string{}
	for _, ev := range evs {
		if finalEvent(ev.Type) {
			if prev, ok := lastFinal[ev.Job]; ok {
				v.add("job %d has final events %s and %s", ev.Job, prev, ev.Type)
			}
			lastFinal[ev.Job] = ev.Type
		}
	}
	listed := map[rpc.State]int{}
	for id, j := range final {
		listed[j.State]++
		if lastFinal[id] != string(j.State) {
			v.add("job %d is %s, its final event is %q", id, j.State, lastFinal[id])
		}
	}
	// daemon.info counts what job.list lists.
	info, err := c.Info(ctx)
	is.NoErr(err)
	for _, s := range []rpc.State{rpc.StateQueued, rpc.StateRunning, rpc.StateSucceeded, rpc.StateFailed, rpc.StateCancelled} {
		if info.Counts[s] != listed[s] {
			v.add("daemon.info counts %d %s jobs, job.list lists %d", info.Counts[s], s, listed[s])
		}
	}
	t.Logf("operations %v; %d jobs left (%v), %d events, %d cancels answered", counts, len(jobs), listed, len(evs), len(cancelledAt))
	v.report(t, "many clients racing")
	checkNoRace(t, p)
}
