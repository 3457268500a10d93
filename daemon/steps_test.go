package daemon_test

import (
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/matryer/is"

	"spool/daemon"
	"spool/rpc"
)

func httpStep(h rpc.HTTPStep) rpc.Step { return rpc.Step{HTTP: &h} }

func TestHTTPStepRetriesUntilTheServerAnswers(t *testing.T) {
	is := is.New(t)
	var calls atomic.Int32
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if calls.Add(1) <= 2 {
			http.Error(w, "not yet", http.StatusServiceUnavailable)
			return
		}
		fmt.Fprint(w, "  the manifest\n")
	}))
	defer srv.Close()
	h := start(t, t.TempDir(), nil)
	j := submit(t, h.d, rpc.Spec{Steps: []rpc.Step{{
		HTTP:  &rpc.HTTPStep{URL: srv.URL + "/manifest"},
		Retry: &rpc.Retry{Attempts: 3, Backoff: dur(20 * time.Millisecond), MaxBackoff: dur(40 * time.Millisecond)},
	}}})
	j = wait(t, h.d, j.ID)
	is.Equal(j.State, rpc.StateSucceeded)                    // the third attempt got a 200
	is.Equal(j.Steps[0].Attempt, 3)                          // after two 503s
	is.Equal(j.Steps[0].Kind, rpc.KindHTTP)                  // an http step
	is.Equal(string(j.Result), `"the manifest"`)             // the body is the result, trimmed
	is.Equal(calls.Load(), int32(3))                         // three requests in all
	is.True(strings.Contains(*j.Steps[0].OutputTail, "200")) // the log shows the status

	evs := stored(t, h, j.ID)
	retrying := ofType(evs, rpc.EventStepRetrying)
	is.Equal(len(retrying), 2) // one step_retrying per failed attempt
	for k, ev := range retrying {
		is.Equal(ev.Attempt, k+1)                                 // naming the failed attempt
		is.True(ev.RetryAt != nil && !ev.RetryAt.Before(ev.Time)) // with the time of the next one
		is.True(strings.Contains(ev.Error, "503"))                // and why it failed
	}
}

func TestHTTPStepSendsAndChecks(t *testing.T) {
	is := is.New(t)
	type seen struct {
		method, ctype, token, body string
	}
	got := make(chan seen, 10)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		got <- seen{r.Method, r.Header.Get("Content-Type"), r.Header.Get("X-Token"), string(b)}
		switch r.URL.Path {
		case "/json":
			fmt.Fprint(w, `{"ok": true, "n": [1, 2]}`)
		case "/created":
			w.WriteHeader(http.StatusCreated)
			fmt.Fprint(w, "made")
		case "/big":
			w.Write([]byte(strings.Repeat("x", 5000)))
		case "/bad":
			fmt.Fprint(w, "{not json")
		default:
			http.NotFound(w, r)
		}
	}))
	defer srv.Close()
	h := start(t, t.TempDir(), nil)

	t.Run("headers and body are sent; json result parses", func(t *testing.T) {
		is := is.New(t)
		j := submit(t, h.d, rpc.Spec{Steps: []rpc.Step{{
			HTTP: &rpc.HTTPStep{Method: "POST", URL: srv.URL + "/json", Body: `{"q": 1}`,
				Headers: map[string]string{"Content-Type": "application/json", "X-Token": "t0k"}},
			Result: rpc.ResultJSON,
		}}})
		j = wait(t, h.d, j.ID)
		is.Equal(j.State, rpc.StateSucceeded)               // 200 is a 2xx
		is.Equal(string(j.Result), `{"ok":true,"n":[1,2]}`) // parsed and compacted JSON
		s := <-got
		is.Equal(s, seen{"POST", "application/json", "t0k", `{"q": 1}`}) // method, headers and body arrived
	})

	t.Run("expect_status", func(t *testing.T) {
		is := is.New(t)
		ok := submit(t, h.d, rpc.Spec{Steps: []rpc.Step{httpStep(rpc.HTTPStep{URL: srv.URL + "/created", ExpectStatus: []int{201}})}})
		notFound := submit(t, h.d, rpc.Spec{Steps: []rpc.Step{httpStep(rpc.HTTPStep{URL: srv.URL + "/missing", ExpectStatus: []int{404}})}})
		wrong := submit(t, h.d, rpc.Spec{Steps: []rpc.Step{httpStep(rpc.HTTPStep{URL: srv.URL + "/created", ExpectStatus: []int{200}})}})
		defaultNot2xx := submit(t, h.d, rpc.Spec{Steps: []rpc.Step{httpStep(rpc.HTTPStep{URL: srv.URL + "/missing"})}})
		is.Equal(wait(t, h.d, ok.ID).State, rpc.StateSucceeded)       // 201 was expected
		is.Equal(wait(t, h.d, notFound.ID).State, rpc.StateSucceeded) // 404 was expected
		w := wait(t, h.d, wrong.ID)
		is.Equal(w.State, rpc.StateFailed)                                   // 201 was not expected
		is.True(strings.Contains(w.Steps[0].Error, "unexpected status 201")) // the error names the status
		dn := wait(t, h.d, defaultNot2xx.ID)
		is.Equal(dn.State, rpc.StateFailed)                 // by default only 2xx succeed
		is.True(strings.Contains(dn.Steps[0].Error, "404")) // naming the status
		for range 4 {
			<-got
		}
	})

	t.Run("max_body", func(t *testing.T) {
		is := is.New(t)
		j := submit(t, h.d, rpc.Spec{Steps: []rpc.Step{httpStep(rpc.HTTPStep{URL: srv.URL + "/big", MaxBody: 1000})}})
		j = wait(t, h.d, j.ID)
		is.Equal(j.State, rpc.StateFailed)                                               // 5000 bytes do not fit in 1000
		is.True(strings.Contains(j.Steps[0].Error, "larger than max_body (1000 bytes)")) // a clear error
		<-got
		j = submit(t, h.d, rpc.Spec{Steps: []rpc.Step{httpStep(rpc.HTTPStep{URL: srv.URL + "/big", MaxBody: 5000})}})
		j = wait(t, h.d, j.ID)
		is.Equal(j.State, rpc.StateSucceeded) // exactly max_body fits
		<-got
	})

	t.Run("invalid json result", func(t *testing.T) {
		is := is.New(t)
		j := submit(t, h.d, rpc.Spec{Steps: []rpc.Step{{HTTP: &rpc.HTTPStep{URL: srv.URL + "/bad"}, Result: rpc.ResultJSON}}})
		j = wait(t, h.d, j.ID)
		is.Equal(j.State, rpc.StateFailed)                            // the body is not JSON
		is.True(strings.Contains(j.Steps[0].Error, "not valid JSON")) // says so
		<-got
	})
}

func TestHTTPStepCancelMidRequest(t *testing.T) {
	is := is.New(t)
	arrived := make(chan struct{}, 1)
	release := make(chan struct{})
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		arrived <- struct{}{}
		select {
		case <-r.Context().Done():
		case <-release:
		}
	}))
	defer srv.Close()
	defer close(release)
	h := start(t, t.TempDir(), nil)
	j := submit(t, h.d, rpc.Spec{Steps: []rpc.Step{httpStep(rpc.HTTPStep{URL: srv.URL + "/hang"})}})
	<-arrived
	c, err := h.d.Cancel(ctxT(t), rpc.CancelParams{ID: j.ID, Reason: "enough"})
	is.NoErr(err)                                  // the cancel is answered once the job is final
	is.Equal(c.State, rpc.StateCancelled)          // the request was abandoned
	is.Equal(c.Steps[0].State, rpc.StateCancelled) // and its step cancelled
	is.Equal(c.Error, "enough")                    // with the reason
}

func TestStepTimeoutStopsTheProcessAndRetries(t *testing.T) {
	is := is.New(t)
	dir := t.TempDir()
	h := start(t, dir, nil)
	pids := filepath.Join(dir, "pids")
	// Each attempt records its process group, then sleeps past its timeout.
	script := `echo $$ >> ` + pids + `; sleep 30`
	j := submit(t, h.d, rpc.Spec{Steps: []rpc.Step{{Shell: &rpc.ShellStep{Script: script}, Timeout: dur(300 * time.Millisecond),
		Retry: &rpc.Retry{Attempts: 2, Backoff: dur(10 * time.Millisecond), MaxBackoff: dur(10 * time.Millisecond)}}}})
	j = wait(t, h.d, j.ID)
	is.Equal(j.State, rpc.StateFailed)                    // both attempts timed out
	is.Equal(j.Steps[0].Attempt, 2)                       // a timed-out attempt is retried
	is.Equal(j.Steps[0].Error, "timeout after 300ms")     // the step says why
	is.Equal(j.Error, "step step-0: timeout after 300ms") // so does the job
	is.Equal(*j.Steps[0].Signal, "SIGTERM")               // stopped as by cancel
	retrying := ofType(stored(t, h, j.ID), rpc.EventStepRetrying)
	is.Equal(len(retrying), 1)                         // one retry
	is.Equal(retrying[0].Error, "timeout after 300ms") // after a timeout
	b, err := os.ReadFile(pids)
	is.NoErr(err)
	lines := strings.Fields(string(b))
	is.Equal(len(lines), 2) // two attempts ran
	for _, l := range lines {
		pgid, err := strconv.Atoi(l)
		is.NoErr(err)
		eventually(t, "the timed-out group is gone", func() bool {
			return syscall.Kill(-pgid, 0) == syscall.ESRCH
		})
	}
}

func TestJobTimeout(t *testing.T) {
	is := is.New(t)
	h := start(t, t.TempDir(), nil)
	j := submit(t, h.d, rpc.Spec{Timeout: dur(400 * time.Millisecond), Steps: []rpc.Step{
		shell("true"),
		shell("sleep 30"),
		shell("echo never"),
	}})
	j = wait(t, h.d, j.ID)
	is.Equal(j.State, rpc.StateFailed)             // the job ran out of time
	is.Equal(j.Error, "timeout after 400ms")       // and says so
	is.Equal(j.Steps[0].State, rpc.StateSucceeded) // the first step was done
	is.Equal(j.Steps[1].State, rpc.StateFailed)    // the second was stopped
	is.Equal(*j.Steps[1].Signal, "SIGTERM")        // as by cancel
	is.Equal(j.Steps[2].State, rpc.StateSkipped)   // the rest skipped

	// The job's timeout also ends a wait between attempts.
	j = submit(t, h.d, rpc.Spec{Timeout: dur(300 * time.Millisecond), Steps: []rpc.Step{{Shell: &rpc.ShellStep{Script: "exit 1"},
		Retry: &rpc.Retry{Attempts: 5, Backoff: dur(time.Hour), MaxBackoff: dur(time.Hour)}}}})
	j = wait(t, h.d, j.ID)
	is.Equal(j.State, rpc.StateFailed)       // no hour-long wait
	is.Equal(j.Error, "timeout after 300ms") // the job's timeout
	is.Equal(j.Steps[0].Attempt, 1)          // the second attempt never came
}

func TestResults(t *testing.T) {
	is := is.New(t)
	h := start(t, t.TempDir(), nil)

	t.Run("text is trimmed", func(t *testing.T) {
		is := is.New(t)
		j := wait(t, h.d, submit(t, h.d, rpc.Spec{Steps: []rpc.Step{shell(`printf '\n  two words \n\n'`)}}).ID)
		is.Equal(string(j.Result), `"two words"`) // surrounding white space is gone
		is.True(!j.ResultTruncated)               // nothing was cut
	})

	t.Run("text over 64 KiB keeps the last 64 KiB", func(t *testing.T) {
		is := is.New(t)
		// 100 KiB of 'a' and then a tail that must survive.
		j := wait(t, h.d, submit(t, h.d, rpc.Spec{Steps: []rpc.Step{shell(`head -c 102400 /dev/zero | tr '\0' a; printf 'THE-END'`)}}).ID)
		is.Equal(j.State, rpc.StateSucceeded) // a long result does not fail a text step
		var s string
		is.NoErr(json.Unmarshal(j.Result, &s))
		is.Equal(len(s), 64<<10)                 // the last 64 KiB
		is.True(strings.HasSuffix(s, "THE-END")) // the end is kept
		is.True(j.ResultTruncated)               // and the job says it was cut
	})

	t.Run("json over 64 KiB fails", func(t *testing.T) {
		is := is.New(t)
		j := wait(t, h.d, submit(t, h.d, rpc.Spec{Steps: []rpc.Step{{Shell: &rpc.ShellStep{Script: `printf '"'; head -c 70000 /dev/zero | tr '\0' a; printf '"'`}, Result: rpc.ResultJSON}}}).ID)
		is.Equal(j.State, rpc.StateFailed)                   // too large for json
		is.True(strings.Contains(j.Steps[0].Error, "65536")) // the cap is stated
	})

	t.Run("invalid json fails and says where", func(t *testing.T) {
		is := is.New(t)
		j := wait(t, h.d, submit(t, h.d, rpc.Spec{Steps: []rpc.Step{{Shell: &rpc.ShellStep{Script: `echo '{"a": 1,, }'`}, Result: rpc.ResultJSON}}}).ID)
		is.Equal(j.State, rpc.StateFailed)                                      // not JSON
		is.True(strings.Contains(j.Steps[0].Error, "result is not valid JSON")) // says so
		is.True(strings.Contains(j.Steps[0].Error, "offset 9"))                 // and where
		is.True(strings.Contains(j.Error, "not valid JSON"))                    // the job too
	})

	t.Run("none, and the job result is the last non-none step's", func(t *testing.T) {
		is := is.New(t)
		j := wait(t, h.d, submit(t, h.d, rpc.Spec{Steps: []rpc.Step{
			{Name: "first", Shell: &rpc.ShellStep{Script: "echo 1"}, Result: rpc.ResultJSON},
			{Name: "answer", Shell: &rpc.ShellStep{Script: "echo '[42]'"}, Result: rpc.ResultJSON},
			{Name: "quiet", Shell: &rpc.ShellStep{Script: "echo noise; cat $SPOOL_RESULTS_DIR/answer"}, Result: rpc.ResultNone},
			{Name: "nap", Sleep: &rpc.SleepStep{Duration: dur(time.Millisecond)}, Result: rpc.ResultNone},
		}}).ID)
		is.Equal(j.State, rpc.StateSucceeded)                     // every step ran
		is.Equal(string(j.Result), "[42]")                        // the last step whose result is not none
		is.Equal(string(j.Steps[2].Result), "null")               // a none step has no result
		is.True(strings.Contains(*j.Steps[2].OutputTail, "[42]")) // it read the earlier result from SPOOL_RESULTS_DIR
		_, err := os.Stat(filepath.Join(h.dir, "results", itoa(j.ID), "quiet"))
		is.True(os.IsNotExist(err)) // a none step leaves no result file
	})

	t.Run("results dir has one file per finished step", func(t *testing.T) {
		is := is.New(t)
		j := wait(t, h.d, submit(t, h.d, rpc.Spec{Steps: []rpc.Step{
			{Name: "a", Exec: &rpc.ExecStep{Argv: []string{"echo", "alpha"}}},
			{Name: "b", Shell: &rpc.ShellStep{Script: "echo beta"}},
			{Name: "c", Shell: &rpc.ShellStep{Script: `ls "$SPOOL_RESULTS_DIR" | tr '\n' ' '; cat "$SPOOL_RESULTS_DIR/a" "$SPOOL_RESULTS_DIR/b"`}},
		}}).ID)
		is.Equal(j.State, rpc.StateSucceeded)         // all ran
		is.Equal(string(j.Result), `"a b alphabeta"`) // the later step saw both earlier results
	})
}

func TestProgressLinesReachWatchersAndTheJob(t *testing.T) {
	is := is.New(t)
	dir := t.TempDir()
	h := start(t, dir, nil)
	g1, g2, g3 := newGate(t, dir, "g1"), newGate(t, dir, "g2"), newGate(t, dir, "g3")
	script := `echo "3/10 copying" >&$SPOOL_PROGRESS_FD; ` + g1.wait() + `
echo "50% half" >&$SPOOL_PROGRESS_FD; ` + g2.wait() + `
echo "- almost there" >&$SPOOL_PROGRESS_FD; ` + g3.wait()
	j := submit(t, h.d, rpc.Spec{Steps: []rpc.Step{shell(script)}})
	w, err := h.d.Watch(ctxT(t), rpc.WatchParams{Jobs: []int64{j.ID}})
	is.NoErr(err)
	defer w.Close()
	next := func() *rpc.Progress {
		for {
			ev, err := w.Next(ctxT(t))
			is.NoErr(err)
			if ev.Type == rpc.EventProgress {
				is.Equal(ev.Job, j.ID)     // for the watched job
				is.Equal(ev.Seq, int64(0)) // progress is not stored
				return ev.Progress
			}
		}
	}
	p := next()
	is.Equal(*p.Done, int64(3))    // done/total
	is.Equal(*p.Total, int64(10))  // parsed
	is.Equal(*p.Percent, 30.0)     // with its percentage
	is.Equal(p.Message, "copying") // and message
	g := get(t, h.d, j.ID)
	is.True(g.Progress != nil && *g.Progress.Done == 3) // job.get shows it while it runs
	g1.open(t)
	p = next()
	is.Equal(*p.Percent, 50.0) // pct%
	is.True(p.Done == nil)     // without counts
	is.Equal(p.Message, "half")
	g2.open(t)
	p = next()
	is.Equal(p.Message, "almost there") // a message alone
	eventually(t, "job.get shows the message", func() bool {
		g := get(t, h.d, j.ID)
		return g.Progress != nil && g.Progress.Message == "almost there"
	})
	g3.open(t)
	j = wait(t, h.d, j.ID)
	is.Equal(j.State, rpc.StateSucceeded) // the job finished
	is.True(j.Progress != nil)            // the latest progress stays on the job
	is.Equal(j.Progress.Message, "almost there")
}

func TestProgressGarbageAndFloodsAreHarmless(t *testing.T) {
	is := is.New(t)
	h := start(t, t.TempDir(), nil)
	garbage := `{
  printf 'no newline at all %.0s' $(seq 1 2000)
  echo
  head -c 3000000 /dev/urandom
  echo
  echo "nan% x"; echo "-5/10 x"; echo "5/0 x"; echo "150% x"; echo "/ x"; echo "-"; echo "1e400% x"
  printf '\377\376 bad utf8 line\n'
  head -c 2000000 /dev/zero
  echo; echo "7/8 fine"
} >&$SPOOL_PROGRESS_FD; echo out`
	bad := submit(t, h.d, rpc.Spec{Steps: []rpc.Step{shell(garbage)}})
	// Meanwhile other jobs run as usual.
	var others []int64
	for range 3 {
		others = append(others, submit(t, h.d, rpc.Spec{Steps: []rpc.Step{shell("echo fine")}}).ID)
	}
	j := wait(t, h.d, bad.ID)
	is.Equal(j.State, rpc.StateSucceeded) // garbage on the progress fd does not fail the step
	is.Equal(string(j.Result), `"out"`)   // nor mix into its output
	is.True(j.Progress != nil)            // the one good line counted
	is.Equal(*j.Progress.Done, int64(7))  // 7/8
	is.Equal(j.Progress.Message, "fine")
	for _, id := range others {
		is.Equal(wait(t, h.d, id).State, rpc.StateSucceeded) // other jobs are fine
	}
}

func TestProgressIsCoalesced(t *testing.T) {
	is := is.New(t)
	h := start(t, t.TempDir(), nil)
	script := `i=1; while [ $i -le 10000 ]; do echo "$i/10000 line $i"; i=$((i+1)); done >&$SPOOL_PROGRESS_FD`
	// Submit on a paused queue so that the watch is in place before it starts.
	paused := true
	_, err := h.d.QueueSet(ctxT(t), rpc.QueueSetParams{Name: "burst", Paused: &paused})
	is.NoErr(err)
	j := submit(t, h.d, rpc.Spec{Queue: "burst", Steps: []rpc.Step{shell(script)}})
	w, err := h.d.Watch(ctxT(t), rpc.WatchParams{Jobs: []int64{j.ID}})
	is.NoErr(err)

	// Read job.get concurrently while progress is published.
	stop := make(chan struct{})
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			select {
			case <-stop:
				return
			default:
			}
			_, _ = h.d.Get(ctxT(t), rpc.GetParams{ID: j.ID})
		}
	}()
	paused = false
	began := time.Now() // before the job can start
	_, err = h.d.QueueSet(ctxT(t), rpc.QueueSetParams{Name: "burst", Paused: &paused})
	is.NoErr(err)
	var progress []rpc.Event
	for _, ev := range events(t, w) {
		if ev.Type == rpc.EventProgress {
			progress = append(progress, ev)
		}
	}
	took := time.Since(began) // after the last event arrived
	close(stop)
	wg.Wait()
	is.True(len(progress) >= 1)   // progress was seen
	is.True(len(progress) < 1000) // far fewer events than the 10000 lines
	last := progress[len(progress)-1].Progress
	is.Equal(*last.Done, int64(10000)) // the latest line is never lost
	for k := 1; k < len(progress); k++ {
		is.True(*progress[k].Progress.Done > *progress[k-1].Progress.Done) // in order
	}
	// Coalesced to at most one event per 100ms, but the last (flushed at the
	// step's end): n events were published over at least (n-2)*100ms, all of it
	// between began and took. (An event's time is that of its line, which can be
	// long before it was published when the machine is busy, so it says nothing
	// about the spacing.)
	if n := len(progress); n > 2 {
		is.True(time.Duration(n-2)*100*time.Millisecond <= took) // at most ~10 a second
	}
	t.Logf("%d progress events for 10000 lines", len(progress))
}

func TestHeartbeatsAndOutputEvents(t *testing.T) {
	is := is.New(t)
	dir := t.TempDir()
	h := start(t, dir, nil)
	g := newGate(t, dir, "go")
	script := `echo "- working" >&3; i=0; while [ $i -lt 50 ]; do echo "line $i"; i=$((i+1)); done; ` + g.wait() + `; echo to-stderr >&2; echo last`
	paused := true
	_, err := h.d.QueueSet(ctxT(t), rpc.QueueSetParams{Name: "hb", Paused: &paused})
	is.NoErr(err)
	j := submit(t, h.d, rpc.Spec{Queue: "hb", Steps: []rpc.Step{shell(script)}})
	w, err := h.d.Watch(ctxT(t), rpc.WatchParams{Jobs: []int64{j.ID}, Heartbeat: dur(100 * time.Millisecond), Output: true})
	is.NoErr(err)
	other, err := h.d.Watch(ctxT(t), rpc.WatchParams{Jobs: []int64{j.ID}})
	is.NoErr(err)
	paused = false
	_, err = h.d.QueueSet(ctxT(t), rpc.QueueSetParams{Name: "hb", Paused: &paused})
	is.NoErr(err)

	var beats []rpc.Event
	var data strings.Builder
	var next int64
	opened := false
	for {
		ev, err := w.Next(ctxT(t))
		if err == io.EOF {
			break
		}
		is.NoErr(err)
		switch ev.Type {
		case rpc.EventHeartbeat:
			beats = append(beats, *ev)
			is.Equal(ev.Job, j.ID)               // for the running job
			is.Equal(ev.State, rpc.StateRunning) // its state
			is.Equal(*ev.Step, 0)                // its step
			is.True(ev.Elapsed > 0)              // how long it has run
			// Once a heartbeat shows the last line written so far, let the step end.
			if !opened && len(beats) >= 3 && ev.LastLine != nil && *ev.LastLine == "line 49" {
				is.True(ev.Progress != nil && ev.Progress.Message == "working") // and the progress
				opened = true
				g.open(t)
			}
		case rpc.EventOutput:
			is.Equal(*ev.Step, 0)      // the step's output
			is.Equal(*ev.Offset, next) // offsets are contiguous
			data.WriteString(*ev.Data)
			next += int64(len(*ev.Data))
		}
	}
	is.True(opened)          // heartbeats came at the watch's interval with the last line
	is.True(len(beats) >= 3) // several of them while the job ran
	log, err := os.ReadFile(filepath.Join(dir, "logs", itoa(j.ID), "0.log"))
	is.NoErr(err)
	is.Equal(data.String(), string(log)) // the output events concatenated are the log

	for _, ev := range events(t, other) {
		is.True(ev.Type != rpc.EventOutput && ev.Type != rpc.EventHeartbeat) // only watches that asked get them
	}
}

func TestLogCap(t *testing.T) {
	is := is.New(t)
	h := start(t, t.TempDir(), func(c *daemon.Config) { c.MaxLog = 64 << 10 })
	setQueue(t, h.d, rpc.QueueSetParams{Name: "capped", Paused: ptr(true)})
	j := submit(t, h.d, rpc.Spec{Queue: "capped", Steps: []rpc.Step{shell(`head -c 1048576 /dev/zero | tr '\0' x; echo; echo done`)}})
	w, err := h.d.Watch(ctxT(t), rpc.WatchParams{Jobs: []int64{j.ID}, Output: true})
	is.NoErr(err)
	setQueue(t, h.d, rpc.QueueSetParams{Name: "capped", Paused: ptr(false)})
	var data strings.Builder
	for _, ev := range events(t, w) {
		if ev.Type == rpc.EventOutput {
			is.Equal(*ev.Offset, int64(data.Len())) // contiguous
			data.WriteString(*ev.Data)
		}
	}
	j = wait(t, h.d, j.ID)
	is.Equal(j.State, rpc.StateSucceeded) // a long log does not fail the step
	b, err := os.ReadFile(filepath.Join(h.dir, "logs", itoa(j.ID), "0.log"))
	is.NoErr(err)
	is.True(len(b) > 64<<10 && len(b) < 64<<10+200) // the cap plus a marker line
	marker := string(b[64<<10:])
	want := fmt.Sprintf("log limit of %d bytes reached, %d bytes dropped", 64<<10, 1048576+6-(64<<10))
	is.True(strings.Contains(marker, want))                            // the marker says what was dropped
	is.True(strings.Contains(*j.Steps[0].OutputTail, "bytes dropped")) // and shows in the tail
	is.Equal(data.String(), string(b))                                 // output watchers see the marker too
}

func TestSleepAfterRestartSleepsTheRemainder(t *testing.T) {
	is := is.New(t)
	dir := t.TempDir()
	clock := &offsetClock{}
	h := start(t, dir, func(c *daemon.Config) { c.Clock = clock })
	j := submit(t, h.d, rpc.Spec{Steps: []rpc.Step{{Sleep: &rpc.SleepStep{Duration: dur(time.Hour)}}}})
	eventually(t, "the sleep runs", func() bool { return get(t, h.d, j.ID).Steps[0].State == rpc.StateRunning })
	started := *get(t, h.d, j.ID).Steps[0].StartedAt
	h.shutdown()

	// While the daemon was down, the clock moved to 1.5s before the hour is over.
	clock.Advance(started.Add(time.Hour - 1500*time.Millisecond).Sub(clock.Now()))
	h2 := start(t, dir, func(c *daemon.Config) { c.Clock = clock })
	j2 := wait(t, h2.d, j.ID)                                       // a sleep that started over would take an hour
	is.Equal(j2.State, rpc.StateSucceeded)                          // it finished
	is.True(j2.Steps[0].StartedAt.Equal(started))                   // the attempt kept its start
	is.Equal(j2.Steps[0].Attempt, 1)                                // the interruption used no attempt
	is.True(!j2.Steps[0].FinishedAt.Before(started.Add(time.Hour))) // it was not cut short
}

func TestRetryWaitSurvivesARestart(t *testing.T) {
	is := is.New(t)
	dir := t.TempDir()
	clock := &offsetClock{}
	h := start(t, dir, func(c *daemon.Config) { c.Clock = clock })
	count := filepath.Join(dir, "count")
	script := `n=$(cat ` + count + ` 2>/dev/null || echo 0); n=$((n+1)); echo $n > ` + count + `; [ $n -ge 3 ]`
	j := submit(t, h.d, rpc.Spec{Steps: []rpc.Step{{Shell: &rpc.ShellStep{Script: script},
		Retry: &rpc.Retry{Attempts: 5, Backoff: dur(time.Hour), MaxBackoff: dur(time.Hour)}}}})
	eventually(t, "the step waits to retry", func() bool { return get(t, h.d, j.ID).Steps[0].State == rpc.StateRetrying })
	retryAt := *get(t, h.d, j.ID).Steps[0].RetryAt
	h.shutdown()

	// Down until 1s before the stored retry_at.
	clock.Advance(retryAt.Add(-time.Second).Sub(clock.Now()))
	h2 := start(t, dir, func(c *daemon.Config) { c.Clock = clock })
	g := get(t, h2.d, j.ID)
	is.Equal(g.Steps[0].State, rpc.StateRetrying) // still waiting after the restart
	is.True(g.Steps[0].RetryAt.Equal(retryAt))    // for the stored time
	// The next wait is an hour again: the test sees the second attempt, then
	// moves the clock past the second retry_at and wakes the runner by restarting.
	eventually(t, "the second attempt", func() bool { return get(t, h2.d, j.ID).Steps[0].Attempt == 2 })
	evs := stored(t, h2, j.ID)
	starts := ofType(evs, rpc.EventStepStarted)
	second := starts[len(starts)-1]
	is.Equal(second.Attempt, 2)                         // the attempt count went on
	is.True(!second.Time.Before(retryAt))               // not before retry_at: the wait was not skipped
	is.Equal(len(ofType(evs, rpc.EventInterrupted)), 1) // the restart was seen

	eventually(t, "the second retry wait", func() bool { return get(t, h2.d, j.ID).Steps[0].State == rpc.StateRetrying })
	retryAt2 := *get(t, h2.d, j.ID).Steps[0].RetryAt
	h2.shutdown()
	clock.Advance(retryAt2.Sub(clock.Now()))
	h3 := start(t, dir, func(c *daemon.Config) { c.Clock = clock })
	j3 := wait(t, h3.d, j.ID)
	is.Equal(j3.State, rpc.StateSucceeded) // the third attempt succeeded
	is.Equal(j3.Steps[0].Attempt, 3)       // counted across two restarts
}

func TestProgressWhileReadersLook(t *testing.T) {
	is := is.New(t)
	h := start(t, t.TempDir(), nil)
	// Progress lines for a while; each one may be published while job.get and
	// heartbeats read the job's live state.
	script := `i=0; while [ $i -lt 3000 ]; do echo "$i/3000"; i=$((i+1)); [ $((i % 100)) -eq 0 ] && sleep 0.01; done >&3`
	id := submit(t, h.d, rpc.Spec{Steps: []rpc.Step{shell(script)}}).ID
	w, err := h.d.Watch(ctxT(t), rpc.WatchParams{Heartbeat: dur(100 * time.Millisecond)})
	is.NoErr(err)
	defer w.Close()
	stop := make(chan struct{})
	var wg sync.WaitGroup
	for range 4 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				select {
				case <-stop:
					return
				default:
				}
				_, _ = h.d.Get(ctxT(t), rpc.GetParams{ID: id})
			}
		}()
	}
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			if _, err := w.Next(ctxT(t)); err != nil {
				return
			}
		}
	}()
	j, err := h.d.Wait(ctxShort(t, 20*time.Second), rpc.WaitParams{ID: id})
	close(stop)
	_ = w.Close()
	is.NoErr(err)                         // the job finished: no deadlock between progress and readers
	is.Equal(j.State, rpc.StateSucceeded) // it ran through
	wg.Wait()
}

func TestJobTimeoutIsAWallClockDeadlineAcrossRestarts(t *testing.T) {
	is := is.New(t)
	dir := t.TempDir()
	clock := &offsetClock{}
	mod := func(c *daemon.Config) { c.Clock = clock; c.KillGrace = 500 * time.Millisecond }
	h := start(t, dir, mod)
	j := submit(t, h.d, rpc.Spec{Timeout: dur(time.Hour), Steps: []rpc.Step{shell("sleep 60")}})
	eventually(t, "the step runs", func() bool { return get(t, h.d, j.ID).Steps[0].State == rpc.StateRunning })
	started := *get(t, h.d, j.ID).StartedAt
	h.shutdown()

	// Down until 3s before the hour is over: the restart does not reset the limit,
	// and the step that resumes is stopped when the hour is over.
	clock.Advance(started.Add(time.Hour - 3*time.Second).Sub(clock.Now()))
	h2 := start(t, dir, mod)
	j2 := wait(t, h2.d, j.ID)
	is.Equal(j2.State, rpc.StateFailed)                    // the hour ran out during the second run
	is.Equal(j2.Error, "timeout after 1h0m0s")             // and says so
	is.True(j2.StartedAt.Equal(started))                   // the job kept its first start
	is.True(!j2.FinishedAt.Before(started.Add(time.Hour))) // not before its time
	is.Equal(j2.Steps[0].State, rpc.StateFailed)           // the resumed step was stopped
	is.Equal(*j2.Steps[0].Signal, "SIGTERM")               // as by cancel
}

func TestCancelDuringRetryWait(t *testing.T) {
	is := is.New(t)
	h := start(t, t.TempDir(), nil)
	j := submit(t, h.d, rpc.Spec{Steps: []rpc.Step{{Shell: &rpc.ShellStep{Script: "exit 1"},
		Retry: &rpc.Retry{Attempts: 3, Backoff: dur(time.Hour), MaxBackoff: dur(time.Hour)}}, shell("true")}})
	eventually(t, "the step waits to retry", func() bool { return get(t, h.d, j.ID).Steps[0].State == rpc.StateRetrying })
	c, err := h.d.Cancel(ctxT(t), rpc.CancelParams{ID: j.ID, Reason: "no more"})
	is.NoErr(err)
	is.Equal(c.State, rpc.StateCancelled)          // cancelled at once
	is.Equal(c.Steps[0].State, rpc.StateCancelled) // the waiting step too
	is.True(c.Steps[0].RetryAt == nil)             // no retry is left
	is.Equal(c.Steps[1].State, rpc.StateSkipped)   // the rest skipped
	is.Equal(c.Error, "no more")
}

func TestHTTPProgressCountsBytes(t *testing.T) {
	is := is.New(t)
	half := make(chan struct{})
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Length", "2000")
		w.Write([]byte(strings.Repeat("a", 1000)))
		w.(http.Flusher).Flush()
		<-half
		w.Write([]byte(strings.Repeat("b", 1000)))
	}))
	defer srv.Close()
	h := start(t, t.TempDir(), nil)
	j := submit(t, h.d, rpc.Spec{Steps: []rpc.Step{{HTTP: &rpc.HTTPStep{URL: srv.URL}, Result: rpc.ResultNone}}})
	var p *rpc.Progress
	eventually(t, "progress of the first half", func() bool {
		p = get(t, h.d, j.ID).Progress
		return p != nil
	})
	close(half)
	is.Equal(*p.Done, int64(1000))  // bytes received
	is.Equal(*p.Total, int64(2000)) // of Content-Length
	is.Equal(*p.Percent, 50.0)
	j = wait(t, h.d, j.ID)
	is.Equal(j.State, rpc.StateSucceeded)
	is.Equal(*j.Progress.Done, int64(2000)) // all of it
}
