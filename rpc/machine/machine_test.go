package machine_test

import (
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"os"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/matryer/is"

	"spool/rpc"
	"spool/rpc/machine"
)

var t0 = time.Date(2026, 12, 1, 10, 0, 0, 0, time.UTC)

func ptr[T any](v T) *T { return &v }

// step is a step of a spec as validation leaves it: result "text", on_interrupt
// "retry", one try, unless changed.
func step(name string, opts ...func(*rpc.Step)) rpc.Step {
	s := rpc.Step{Name: name, Shell: &rpc.ShellStep{Script: "true"}, Result: rpc.ResultText, OnInterrupt: rpc.OnInterruptRetry}
	for _, o := range opts {
		o(&s)
	}
	return s
}

func tries(n int) func(*rpc.Step) {
	return func(s *rpc.Step) {
		s.Retry = &rpc.Retry{Attempts: n, Backoff: rpc.Duration(time.Second), MaxBackoff: rpc.Duration(time.Minute)}
	}
}

func result(mode string) func(*rpc.Step) { return func(s *rpc.Step) { s.Result = mode } }

func onInterrupt(p string) func(*rpc.Step) { return func(s *rpc.Step) { s.OnInterrupt = p } }

// newRecord is a queued job as the daemon submits it.
func newRecord(id int64, timeout time.Duration, steps ...rpc.Step) rpc.Record {
	spec := &rpc.Spec{Name: "job", Queue: "default", Timeout: rpc.Duration(timeout), Steps: steps}
	rec := rpc.Record{Job: rpc.Job{ID: id, Name: "job", Queue: "default", State: rpc.StateQueued, SubmittedAt: t0.Add(-time.Hour), Spec: spec}}
	for _, s := range steps {
		rec.Steps = append(rec.Steps, rpc.StepStatus{Name: s.Name, Kind: s.Kind(), State: rpc.StatePending})
	}
	return rec
}

// threeSteps is a job of three one-try steps.
func threeSteps() rpc.Record {
	return newRecord(7, 0, step("fetch"), step("build"), step("report"))
}

// running is rec claimed by n1/5 at t0, its step 0 on its first attempt.
func running(rec rpc.Record) rpc.Record {
	machine.Claim(&rec, machine.Owner{Node: "n1", Epoch: 5}, t0)
	return rec
}

// atStep is rec running with the steps before i succeeded and step i on its
// first attempt.
func atStep(rec rpc.Record, i int) rpc.Record {
	rec = running(rec)
	for k := 0; k < i; k++ {
		machine.StepSucceeded(&rec, k, machine.Outcome{ExitCode: ptr(0), Result: json.RawMessage(fmt.Sprintf(`"r%d"`, k)), KeepResult: true}, t0)
	}
	return rec
}

func types(evs []rpc.Event) []string {
	var out []string
	for _, e := range evs {
		out = append(out, e.Type)
	}
	return out
}

func stepStates(rec rpc.Record) []rpc.State {
	var out []rpc.State
	for _, s := range rec.Steps {
		out = append(out, s.State)
	}
	return out
}

func TestClaim(t *testing.T) {
	o := machine.Owner{Node: "n2", Epoch: 9}
	t1 := t0.Add(10 * time.Minute)
	cases := []struct {
		name  string
		rec   func() rpc.Record
		check func(is *is.I, rec rpc.Record, evs []rpc.Event)
	}{
		{"first claim starts step 0", func() rpc.Record {
			r := newRecord(7, time.Hour, step("a"), step("b"))
			r.Waiting = ptr("capacity")
			return r
		}, func(is *is.I, rec rpc.Record, evs []rpc.Event) {
			is.Equal(types(evs), []string{rpc.EventStarted, rpc.EventStepStarted})     // started, then the step's start
			is.Equal(*evs[1].Step, 0)                                                  // the step started is step 0
			is.Equal(evs[1].Attempt, 1)                                                // its first attempt
			is.Equal(evs[1].State, rpc.StateRunning)                                   // the step event says running
			is.Equal(*rec.StartedAt, t1)                                               // the job's first start is now
			is.Equal(*rec.Run.Deadline, t1.Add(time.Hour))                             // deadline = started_at + spec timeout
			is.Equal(stepStates(rec), []rpc.State{rpc.StateRunning, rpc.StatePending}) // only step 0 runs
			is.Equal(rec.Steps[0].Attempt, 1)                                          // attempt counted at start
			is.Equal(*rec.Steps[0].StartedAt, t1)                                      // the attempt starts now
			is.True(!rec.Run.Resumed)                                                  // a new attempt, not a resumed one
			is.Equal(rec.Waiting, nil)                                                 // a running job waits for nothing
		}},
		{"resumes an interrupted attempt with its number kept", func() rpc.Record {
			r := atStep(newRecord(7, time.Hour, step("a"), step("b")), 1)
			r.Steps[1].Attempt = 2
			machine.Interrupt(&r, t0.Add(5*time.Minute))
			return r
		}, func(is *is.I, rec rpc.Record, evs []rpc.Event) {
			is.Equal(types(evs), []string{rpc.EventStarted, rpc.EventStepStarted}) // started, then the resumed step
			is.Equal(*evs[1].Step, 1)                                              // the interrupted step resumes
			is.Equal(evs[1].Attempt, 2)                                            // an interruption uses up no attempt
			is.Equal(rec.Steps[1].Attempt, 2)                                      // the record keeps the attempt too
			is.Equal(*rec.Steps[1].StartedAt, t0)                                  // the attempt keeps its start time
			is.True(rec.Run.Resumed)                                               // the runner is told the attempt resumes
			is.True(!rec.Run.Interrupted)                                          // the interruption is consumed
			is.Equal(*rec.StartedAt, t0)                                           // the job's first start is kept
			is.Equal(*rec.Run.Deadline, t0.Add(time.Hour))                         // a restart does not extend the deadline
			is.Equal(rec.Steps[0].State, rpc.StateSucceeded)                       // finished steps stay as they were
		}},
		{"a step waiting for a retry is not started", func() rpc.Record {
			r := running(newRecord(7, 0, step("a", tries(3))))
			machine.StepRetrying(&r, 0, machine.Outcome{ExitCode: ptr(1), Err: "exit status 1"}, t0.Add(time.Hour), t0)
			machine.Interrupt(&r, t0)
			return r
		}, func(is *is.I, rec rpc.Record, evs []rpc.Event) {
			is.Equal(types(evs), []string{rpc.EventStarted})   // only the job's start: the attempt starts when retry_at is due
			is.Equal(rec.Steps[0].State, rpc.StateRetrying)    // the step keeps waiting
			is.Equal(*rec.Steps[0].RetryAt, t0.Add(time.Hour)) // with its retry time
			is.Equal(rec.Steps[0].Attempt, 1)                  // and the attempt that failed
		}},
		{"a deadline is set from started_at, not from now", func() rpc.Record {
			r := newRecord(7, time.Hour, step("a"))
			r.StartedAt = ptr(t0)
			return r
		}, func(is *is.I, rec rpc.Record, evs []rpc.Event) {
			is.Equal(*rec.Run.Deadline, t0.Add(time.Hour)) // from the first start
			is.Equal(*rec.StartedAt, t0)                   // started_at is set once
		}},
		{"no timeout, no deadline", func() rpc.Record {
			return newRecord(7, 0, step("a"))
		}, func(is *is.I, rec rpc.Record, evs []rpc.Event) {
			is.Equal(rec.Run.Deadline, nil) // a job without a timeout has no deadline
		}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			is := is.New(t)
			rec := c.rec()
			is.Equal(rec.State, rpc.StateQueued) // claims take queued jobs
			evs := machine.Claim(&rec, o, t1)
			is.Equal(rec.State, rpc.StateRunning)    // a claimed job runs
			is.Equal(rec.Run.Node, "n2")             // owned by the claimer's node
			is.Equal(rec.Run.Epoch, int64(9))        // and epoch, which fences its writes
			is.Equal(evs[0].Type, rpc.EventStarted)  // the job's start comes first
			is.Equal(evs[0].State, rpc.StateRunning) // the started event says running
			for _, e := range evs {
				is.Equal(e.Job, int64(7)) // every event names the job
				is.Equal(e.Time, t1)      // at the claim's time
			}
			c.check(is, rec, evs)
		})
	}
}

func TestStartStep(t *testing.T) {
	t1 := t0.Add(time.Minute)
	t.Run("a retry counts a new attempt and clears the last one's outcome", func(t *testing.T) {
		is := is.New(t)
		rec := running(newRecord(7, 0, step("a", tries(3))))
		rec.Run.Resumed = true // the attempt before was a resumed one
		machine.StepRetrying(&rec, 0, machine.Outcome{ExitCode: ptr(2), Signal: ptr("SIGTERM"), Err: "exit status 2"}, t1, t0)
		rec.Steps[0].FinishedAt = ptr(t0)
		ev := machine.StartStep(&rec, 0, t1)
		s := rec.Steps[0]
		is.Equal(s.State, rpc.StateRunning)     // the attempt runs
		is.Equal(s.Attempt, 2)                  // attempt incremented
		is.Equal(*s.StartedAt, t1)              // started now
		is.Equal(s.RetryAt, nil)                // no longer waiting
		is.Equal(s.FinishedAt, nil)             // not over
		is.Equal(s.ExitCode, nil)               // the last attempt's exit code is gone
		is.Equal(s.Signal, nil)                 // and its signal
		is.Equal(s.Error, "")                   // and its error
		is.True(!rec.Run.Resumed)               // a new attempt is not a resumed one
		is.Equal(ev.Type, rpc.EventStepStarted) // the attempt's start is stored
		is.Equal(ev.Attempt, 2)                 // the event carries the new attempt
		is.Equal(ev.Time, t1)                   // at now
	})
	t.Run("an interrupted attempt that never counted becomes attempt 1", func(t *testing.T) {
		is := is.New(t)
		rec := newRecord(7, 0, step("a"))
		rec.Run.Interrupted = true
		ev := machine.StartStep(&rec, 0, t1)
		is.Equal(rec.Steps[0].Attempt, 1)                // at least 1
		is.Equal(*rec.Steps[0].StartedAt, t1)            // no start time to keep: now
		is.True(rec.Run.Resumed && !rec.Run.Interrupted) // resumed, interruption consumed
		is.Equal(ev.Attempt, 1)                          // the event agrees
	})
	t.Run("StartStep moves current_step", func(t *testing.T) {
		is := is.New(t)
		rec := running(threeSteps())
		rec.Steps[0].State = rpc.StateSucceeded
		machine.StartStep(&rec, 1, t1)
		is.Equal(rec.CurrentStep, 1) // current_step follows the started step
	})
}

func TestStepEvent(t *testing.T) {
	is := is.New(t)
	rec := running(threeSteps())
	machine.StepRetrying(&rec, 0, machine.Outcome{ExitCode: ptr(3), Signal: ptr("SIGKILL"), Err: "killed"}, t0.Add(time.Minute), t0)
	ev := machine.StepEvent(&rec, 0, rpc.EventStepRetrying, t0)
	is.Equal(*ev.Step, 0)                      // step index
	is.Equal(ev.StepName, "fetch")             // step name
	is.Equal(ev.State, rpc.StateRetrying)      // the step's state
	is.Equal(ev.Attempt, 1)                    // its attempt
	is.Equal(*ev.ExitCode, 3)                  // its exit code
	is.Equal(*ev.Signal, "SIGKILL")            // its signal
	is.Equal(ev.Error, "killed")               // its error
	is.Equal(*ev.RetryAt, t0.Add(time.Minute)) // its retry time
	is.Equal(ev.Job, int64(7))                 // the job
	*ev.Step = 2
	is.Equal(*machine.StepEvent(&rec, 0, rpc.EventStepRetrying, t0).Step, 0) // each event has its own step index
}

func TestStepSucceeded(t *testing.T) {
	t1 := t0.Add(time.Minute)
	ok := func(res string) machine.Outcome {
		return machine.Outcome{ExitCode: ptr(0), Result: json.RawMessage(res), KeepResult: true}
	}
	t.Run("a middle step starts the next in the same transition", func(t *testing.T) {
		is := is.New(t)
		rec := running(threeSteps())
		rec.Run.Procs = []rpc.Proc{{Step: 0, PID: 42}}
		evs := machine.StepSucceeded(&rec, 0, ok(`"a"`), t1)
		is.Equal(types(evs), []string{rpc.EventStepFinished, rpc.EventStepStarted})                    // the end of one, the start of the next
		is.Equal(*evs[0].Step, 0)                                                                      // the finished step
		is.Equal(evs[0].State, rpc.StateSucceeded)                                                     // it succeeded
		is.Equal(*evs[0].ExitCode, 0)                                                                  // with its exit code
		is.Equal(*evs[1].Step, 1)                                                                      // the started step
		is.Equal(evs[1].Attempt, 1)                                                                    // on its first attempt
		is.Equal(rec.State, rpc.StateRunning)                                                          // the job goes on
		is.Equal(rec.CurrentStep, 1)                                                                   // at the next step
		is.Equal(stepStates(rec), []rpc.State{rpc.StateSucceeded, rpc.StateRunning, rpc.StatePending}) // one step runs at a time
		is.Equal(*rec.Steps[0].FinishedAt, t1)                                                         // step 0 ended now
		is.Equal(string(rec.Steps[0].Result), `"a"`)                                                   // its result is kept
		is.Equal(*rec.Steps[1].StartedAt, t1)                                                          // step 1 started now
		is.Equal(rec.Run.Procs, nil)                                                                   // step 0's processes are forgotten
		is.Equal(rec.FinishedAt, nil)                                                                  // the job is not over
		is.Equal(rec.Result, nil)                                                                      // and has no result yet
	})
	t.Run("the last step finalizes with the job's result", func(t *testing.T) {
		is := is.New(t)
		rec := atStep(threeSteps(), 2)
		evs := machine.StepSucceeded(&rec, 2, ok(`"c"`), t1)
		is.Equal(types(evs), []string{rpc.EventStepFinished, rpc.EventSucceeded}) // the step's end, then the job's
		is.Equal(rec.State, rpc.StateSucceeded)                                   // the job succeeded
		is.Equal(*rec.FinishedAt, t1)                                             // now
		is.Equal(rec.Error, "")                                                   // without error
		is.Equal(string(rec.Result), `"c"`)                                       // the last step's result
		is.Equal(string(evs[1].Result), `"c"`)                                    // carried by the final event
	})
	t.Run("a last step whose result is none leaves the result to the one before", func(t *testing.T) {
		is := is.New(t)
		rec := atStep(newRecord(7, 0, step("a"), step("b", result(rpc.ResultNone))), 1)
		out := ok(`"ignored"`)
		out.KeepResult = false // the runner keeps no result of a "none" step
		out.Truncated = true
		machine.StepSucceeded(&rec, 1, out, t1)
		is.Equal(rec.Steps[1].Result, nil)   // a "none" step keeps no result
		is.Equal(string(rec.Result), `"r0"`) // the job's result is step 0's
		is.True(!rec.ResultTruncated)        // truncation of a result not kept does not count
	})
	t.Run("a kept truncated result marks the job", func(t *testing.T) {
		is := is.New(t)
		rec := running(newRecord(7, 0, step("a")))
		out := ok(`"tail"`)
		out.Truncated = true
		machine.StepSucceeded(&rec, 0, out, t1)
		is.True(rec.ResultTruncated) // result_truncated follows the kept result
	})
	for _, i := range []int{0, 2} {
		t.Run(fmt.Sprintf("a cancel stored is the outcome at step %d", i), func(t *testing.T) {
			is := is.New(t)
			rec := atStep(threeSteps(), i)
			rec.Run.CancelReason = ptr("wrong branch")
			evs := machine.StepSucceeded(&rec, i, ok(`"x"`), t1)
			is.Equal(types(evs), []string{rpc.EventStepFinished, rpc.EventCancelled}) // no success, no next step
			is.Equal(evs[0].State, rpc.StateCancelled)                                // the step is cancelled
			is.Equal(rec.State, rpc.StateCancelled)                                   // and the job
			is.Equal(rec.Error, "wrong branch")                                       // with the reason
			is.Equal(rec.Steps[i].Error, "wrong branch")                              // on the step too
			is.Equal(rec.Steps[i].Result, nil)                                        // no result of a cancelled step
			is.Equal(rec.Result, nil)                                                 // nor of the job
			for k := i + 1; k < 3; k++ {
				is.Equal(rec.Steps[k].State, rpc.StateSkipped) // the rest are skipped
			}
		})
	}
}

func TestStepRetrying(t *testing.T) {
	is := is.New(t)
	t1, at := t0.Add(time.Minute), t0.Add(time.Minute+2*time.Second)
	rec := running(newRecord(7, 0, step("a", tries(3)), step("b")))
	rec.Run.Procs = []rpc.Proc{{Step: 0, PID: 42}}
	evs := machine.StepRetrying(&rec, 0, machine.Outcome{ExitCode: ptr(1), Err: "exit status 1"}, at, t1)
	s := rec.Steps[0]
	is.Equal(rec.State, rpc.StateRunning)                 // the job keeps running, and its slot
	is.Equal(s.State, rpc.StateRetrying)                  // the step waits
	is.Equal(*s.RetryAt, at)                              // until at
	is.Equal(s.Attempt, 1)                                // the attempt is kept; the next start counts
	is.Equal(*s.ExitCode, 1)                              // the failed attempt's exit code
	is.Equal(s.Error, "exit status 1")                    // and error
	is.Equal(s.FinishedAt, nil)                           // the step is not over
	is.Equal(rec.Run.Procs, nil)                          // the attempt's processes are forgotten
	is.Equal(types(evs), []string{rpc.EventStepRetrying}) // one event
	is.Equal(*evs[0].Step, 0)                             // of step 0
	is.Equal(evs[0].Attempt, 1)                           // the attempt that failed
	is.Equal(evs[0].Error, "exit status 1")               // why
	is.Equal(*evs[0].RetryAt, at)                         // when the next comes
	is.Equal(evs[0].Time, t1)                             // at now
	is.Equal(rec.Steps[1].State, rpc.StatePending)        // later steps wait
}

func TestEndStep(t *testing.T) {
	t1 := t0.Add(time.Minute)
	cases := []struct {
		name              string
		out               machine.Outcome
		state             rpc.State
		errText           string
		stepErr, finalTyp string
	}{
		{"failed keeps the attempt's error", machine.Outcome{ExitCode: ptr(2), Err: "exit status 2"}, rpc.StateFailed, "step build: exit status 2", "exit status 2", rpc.EventFailed},
		{"failed without an error of its own takes the job's", machine.Outcome{ExitCode: ptr(0)}, rpc.StateFailed, "timeout after 1h0m0s", "timeout after 1h0m0s", rpc.EventFailed},
		{"cancelled overrides the error text", machine.Outcome{Signal: ptr("SIGTERM"), Err: "killed by SIGTERM"}, rpc.StateCancelled, "wrong branch", "wrong branch", rpc.EventCancelled},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			is := is.New(t)
			rec := atStep(threeSteps(), 1)
			rec.Steps[1].RetryAt = ptr(t0)
			evs := machine.EndStep(&rec, 1, c.out, c.state, c.errText, t1)
			s := rec.Steps[1]
			is.Equal(s.State, c.state)                                        // the step ends in state
			is.Equal(s.Error, c.stepErr)                                      // with the right error text
			is.Equal(*s.FinishedAt, t1)                                       // now
			is.Equal(s.RetryAt, nil)                                          // waiting for nothing
			is.Equal(s.ExitCode, c.out.ExitCode)                              // the process's exit code is kept
			is.Equal(s.Signal, c.out.Signal)                                  // and its signal
			is.Equal(rec.Steps[0].State, rpc.StateSucceeded)                  // earlier steps keep their outcome
			is.Equal(rec.Steps[2].State, rpc.StateSkipped)                    // later ones are skipped
			is.Equal(rec.State, c.state)                                      // the job ends in the same state
			is.Equal(rec.Error, c.errText)                                    // with the job's error text
			is.Equal(rec.Result, nil)                                         // no result unless it succeeded
			is.Equal(types(evs), []string{rpc.EventStepFinished, c.finalTyp}) // step, then job
			is.Equal(evs[0].State, c.state)                                   // the step event says how it ended
			is.Equal(evs[0].Error, c.stepErr)                                 // and why
			is.Equal(evs[1].Error, c.errText)                                 // the job event carries the job's error
		})
	}
}

func TestFailRunning(t *testing.T) {
	t1 := t0.Add(time.Hour)
	cases := []struct {
		name string
		rec  func() rpc.Record
	}{
		{"a running step", func() rpc.Record { return atStep(threeSteps(), 1) }},
		{"a step waiting for a retry", func() rpc.Record {
			r := atStep(newRecord(7, time.Hour, step("a"), step("b", tries(2)), step("c")), 1)
			machine.StepRetrying(&r, 1, machine.Outcome{ExitCode: ptr(1), Err: "exit status 1"}, t1.Add(time.Minute), t0)
			return r
		}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			is := is.New(t)
			rec := c.rec()
			evs := machine.FailRunning(&rec, "timeout after 1h0m0s", t1)
			is.Equal(stepStates(rec), []rpc.State{rpc.StateSucceeded, rpc.StateFailed, rpc.StateSkipped}) // the current step fails, the rest skipped
			is.Equal(rec.Steps[1].Error, "timeout after 1h0m0s")                                          // the step says why
			is.Equal(rec.Steps[1].RetryAt, nil)                                                           // and waits no more
			is.Equal(*rec.Steps[1].FinishedAt, t1)                                                        // it ended now
			is.Equal(rec.State, rpc.StateFailed)                                                          // the job fails
			is.Equal(rec.Error, "timeout after 1h0m0s")                                                   // as the protocol words it
			is.Equal(types(evs), []string{rpc.EventStepFinished, rpc.EventFailed})                        // step, then job
			is.Equal(*evs[0].Step, 1)                                                                     // the current step
		})
	}
	t.Run("a step already over is left as it is", func(t *testing.T) {
		is := is.New(t)
		rec := running(threeSteps())
		rec.Steps[0].State = rpc.StateSucceeded
		evs := machine.FailRunning(&rec, "timeout", t1)
		is.Equal(types(evs), []string{rpc.EventFailed})  // no step event for a step that is over
		is.Equal(rec.Steps[0].State, rpc.StateSucceeded) // its outcome stands
	})
}

func TestEndUnstarted(t *testing.T) {
	t1 := t0.Add(time.Minute)
	waitingRetry := func() rpc.Record {
		r := atStep(newRecord(7, 0, step("a"), step("b", tries(3)), step("c")), 1)
		machine.StepRetrying(&r, 1, machine.Outcome{ExitCode: ptr(1), Err: "exit status 1"}, t1.Add(time.Hour), t0)
		return r
	}
	cases := []struct {
		name    string
		rec     func() rpc.Record
		reason  string
		state   rpc.State
		steps   []rpc.State
		evTypes []string
		stepErr string // of the current step
	}{
		{"a queued job cancelled", threeSteps, "not needed", rpc.StateCancelled,
			[]rpc.State{rpc.StateCancelled, rpc.StateSkipped, rpc.StateSkipped},
			[]string{rpc.EventStepFinished, rpc.EventCancelled}, "not needed"},
		{"a queued job whose dependency failed", threeSteps, machine.DependencyFailed(3), rpc.StateFailed,
			[]rpc.State{rpc.StateSkipped, rpc.StateSkipped, rpc.StateSkipped},
			[]string{rpc.EventFailed}, ""},
		{"a running job waiting for a retry, cancelled", waitingRetry, "stop", rpc.StateCancelled,
			[]rpc.State{rpc.StateSucceeded, rpc.StateCancelled, rpc.StateSkipped},
			[]string{rpc.EventStepFinished, rpc.EventCancelled}, "stop"},
		{"a running job waiting for a retry, failed", waitingRetry, "gone", rpc.StateFailed,
			[]rpc.State{rpc.StateSucceeded, rpc.StateFailed, rpc.StateSkipped},
			[]string{rpc.EventStepFinished, rpc.EventFailed}, "exit status 1"},
		{"a running job whose step runs no process yet, cancelled", func() rpc.Record { return running(threeSteps()) }, "stop", rpc.StateCancelled,
			[]rpc.State{rpc.StateCancelled, rpc.StateSkipped, rpc.StateSkipped},
			[]string{rpc.EventStepFinished, rpc.EventCancelled}, "stop"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			is := is.New(t)
			rec := c.rec()
			cur := rec.CurrentStep
			evs := machine.EndUnstarted(&rec, c.reason, c.state, t1)
			is.Equal(stepStates(rec), c.steps)        // which steps end how
			is.Equal(types(evs), c.evTypes)           // and what is stored
			is.Equal(rec.State, c.state)              // the job is final
			is.Equal(rec.Error, c.reason)             // with the reason
			is.Equal(*rec.FinishedAt, t1)             // now
			is.Equal(rec.Steps[cur].Error, c.stepErr) // the current step's error
			is.Equal(rec.Steps[cur].RetryAt, nil)     // nothing waits any more
			is.Equal(evs[len(evs)-1].Error, c.reason) // the final event says why
			if len(evs) == 2 {
				is.Equal(*evs[0].Step, cur)              // the step event is the current step's
				is.Equal(evs[0].State, c.steps[cur])     // in its final state
				is.Equal(*rec.Steps[cur].FinishedAt, t1) // ended now
			}
		})
	}
}

func TestDependencyFailed(t *testing.T) {
	is := is.New(t)
	is.Equal(machine.DependencyFailed(42), "dependency 42 failed") // the protocol's wording
}

func TestInterrupt(t *testing.T) {
	t1 := t0.Add(time.Minute)
	interrupted := func(policy string) rpc.Record {
		r := atStep(newRecord(7, time.Hour, step("a"), step("b", onInterrupt(policy), tries(3)), step("c")), 1)
		r.Steps[1].Attempt = 2
		r.Run.Procs = []rpc.Proc{{Step: 1, PID: 42}}
		return r
	}
	t.Run("on_interrupt retry queues the job with the attempt kept", func(t *testing.T) {
		is := is.New(t)
		rec := interrupted(rpc.OnInterruptRetry)
		evs := machine.Interrupt(&rec, t1)
		is.Equal(rec.State, rpc.StateQueued)                                                           // queued again
		is.Equal(stepStates(rec), []rpc.State{rpc.StateSucceeded, rpc.StatePending, rpc.StatePending}) // at its first unfinished step
		is.Equal(rec.Steps[1].Attempt, 2)                                                              // attempt kept
		is.Equal(*rec.Steps[1].StartedAt, t0)                                                          // start time kept
		is.True(rec.Run.Interrupted)                                                                   // the next start resumes it
		is.Equal(rec.Run.Epoch, int64(0))                                                              // a queued job has no owner epoch
		is.Equal(rec.Run.Procs, nil)                                                                   // the processes are the reaper's concern
		is.Equal(*rec.Run.Deadline, t0.Add(time.Hour))                                                 // the deadline stays
		is.Equal(types(evs), []string{rpc.EventInterrupted})                                           // only the interruption
		is.Equal(*evs[0].Step, 1)                                                                      // naming the step
		is.Equal(evs[0].StepName, "b")                                                                 // by name too
		is.Equal(evs[0].Time, t1)                                                                      // at now
	})
	t.Run("on_interrupt fail fails the job", func(t *testing.T) {
		is := is.New(t)
		rec := interrupted(rpc.OnInterruptFail)
		evs := machine.Interrupt(&rec, t1)
		is.Equal(rec.State, rpc.StateFailed)                                                          // failed
		is.Equal(rec.Error, "interrupted")                                                            // the protocol's error
		is.Equal(stepStates(rec), []rpc.State{rpc.StateSucceeded, rpc.StateFailed, rpc.StateSkipped}) // the step fails, the rest skipped
		is.Equal(rec.Steps[1].Error, "interrupted")                                                   // the step says why
		is.Equal(types(evs), []string{rpc.EventInterrupted, rpc.EventStepFinished, rpc.EventFailed})  // in this order
		is.Equal(evs[1].Attempt, 2)                                                                   // the attempt that was cut
	})
	t.Run("a cancel stored queues it even when on_interrupt is fail", func(t *testing.T) {
		is := is.New(t)
		rec := interrupted(rpc.OnInterruptFail)
		rec.Run.CancelReason = ptr("stop")
		evs := machine.Interrupt(&rec, t1)
		is.Equal(rec.State, rpc.StateQueued)                 // queued, so that its claimant stores the cancel
		is.Equal(*rec.Run.CancelReason, "stop")              // the cancel stays stored
		is.Equal(types(evs), []string{rpc.EventInterrupted}) // no failure
		is.True(machine.Runnable(&rec, t1))                  // and it can be claimed
	})
	t.Run("a step waiting for a retry keeps waiting", func(t *testing.T) {
		is := is.New(t)
		rec := interrupted(rpc.OnInterruptFail)
		machine.StepRetrying(&rec, 1, machine.Outcome{ExitCode: ptr(1)}, t1.Add(time.Hour), t0)
		evs := machine.Interrupt(&rec, t1)
		is.Equal(rec.State, rpc.StateQueued)                 // on_interrupt speaks of a step that ran
		is.Equal(rec.Steps[1].State, rpc.StateRetrying)      // it still waits
		is.Equal(*rec.Steps[1].RetryAt, t1.Add(time.Hour))   // for the same time
		is.True(!rec.Run.Interrupted)                        // no attempt was cut
		is.Equal(types(evs), []string{rpc.EventInterrupted}) // the interruption is stored
	})
	t.Run("the next claim resumes the attempt", func(t *testing.T) {
		is := is.New(t)
		rec := interrupted(rpc.OnInterruptRetry)
		machine.Interrupt(&rec, t1)
		t2 := t1.Add(time.Minute)
		evs := machine.Claim(&rec, machine.Owner{Node: "n3", Epoch: 11}, t2)
		is.Equal(types(evs), []string{rpc.EventStarted, rpc.EventStepStarted}) // started again
		is.Equal(evs[1].Attempt, 2)                                            // the same attempt
		is.True(rec.Run.Resumed)                                               // flagged as resumed
		is.Equal(rec.Run.Epoch, int64(11))                                     // the new owner's epoch
		is.Equal(*rec.StartedAt, t0)                                           // the job's first start stands
	})
}

func TestFinalize(t *testing.T) {
	t1 := t0.Add(time.Minute)
	cases := []struct {
		state  rpc.State
		typ    string
		errTxt string
		result string
	}{
		{rpc.StateSucceeded, rpc.EventSucceeded, "", `"r2"`},
		{rpc.StateFailed, rpc.EventFailed, "step c: exit status 1", ""},
		{rpc.StateCancelled, rpc.EventCancelled, "stop", ""},
	}
	for _, c := range cases {
		t.Run(string(c.state), func(t *testing.T) {
			is := is.New(t)
			rec := atStep(threeSteps(), 2) // steps 0 and 1 have results
			rec.Steps[2].Result = json.RawMessage(`"r2"`)
			rec.Waiting = ptr("capacity")
			rec.Run.Procs = []rpc.Proc{{PID: 1}}
			ev := machine.Finalize(&rec, c.state, c.errTxt, t1)
			is.Equal(rec.State, c.state)           // the final state
			is.Equal(rec.Error, c.errTxt)          // its error
			is.Equal(*rec.FinishedAt, t1)          // now
			is.Equal(rec.Waiting, nil)             // a final job waits for nothing
			is.Equal(rec.Run.Procs, nil)           // and has no processes
			is.Equal(string(rec.Result), c.result) // a result only on success
			is.Equal(ev.Type, c.typ)               // the final event's type
			is.Equal(ev.State, c.state)            // and state
			is.Equal(ev.Error, c.errTxt)           // and error
			is.Equal(string(ev.Result), c.result)  // and result
			is.Equal(ev.Job, int64(7))             // of the job
			is.Equal(ev.Step, nil)                 // a job event, not a step event
		})
	}
}

func TestJobResult(t *testing.T) {
	rec := func(modes []string, results ...string) rpc.Record {
		var steps []rpc.Step
		for i, m := range modes {
			steps = append(steps, step(fmt.Sprintf("s%d", i), result(m)))
		}
		r := newRecord(1, 0, steps...)
		for i, res := range results {
			if res != "" {
				r.Steps[i].Result = json.RawMessage(res)
			}
		}
		return r
	}
	noSpec := rec([]string{rpc.ResultText, rpc.ResultNone}, `"a"`, "")
	noSpec.Spec = nil
	cases := []struct {
		name string
		rec  rpc.Record
		want string
	}{
		{"the last step's", rec([]string{rpc.ResultText, rpc.ResultJSON}, `"a"`, `{"b":1}`), `{"b":1}`},
		{"a none step is skipped", rec([]string{rpc.ResultText, rpc.ResultNone}, `"a"`, ""), `"a"`},
		{"only none steps", rec([]string{rpc.ResultNone, rpc.ResultNone}), ""},
		{"the last step that is not none had no result", rec([]string{rpc.ResultText, rpc.ResultJSON}, `"a"`, ""), ""},
		{"without a spec, the last result there is", noSpec, `"a"`},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			is := is.New(t)
			is.Equal(string(machine.JobResult(&c.rec)), c.want) // the protocol's job result
		})
	}
}

func TestRunnable(t *testing.T) {
	now := t0
	cases := []struct {
		name string
		rec  func() rpc.Record
		want bool
	}{
		{"queued", threeSteps, true},
		{"not_before due", func() rpc.Record { r := threeSteps(); r.NotBefore = ptr(now); return r }, true},
		{"not_before ahead", func() rpc.Record { r := threeSteps(); r.NotBefore = ptr(now.Add(time.Nanosecond)); return r }, false},
		{"running", func() rpc.Record { return running(threeSteps()) }, false},
		{"final", func() rpc.Record { r := threeSteps(); machine.EndUnstarted(&r, "x", rpc.StateCancelled, now); return r }, false},
		{"queued with a cancel stored", func() rpc.Record { r := threeSteps(); r.Run.CancelReason = ptr("x"); return r }, true},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			is := is.New(t)
			rec := c.rec()
			is.Equal(machine.Runnable(&rec, now), c.want) // only a queued job that is due
		})
	}
}

// The walk: random legal sequences of transitions, each made by whoever may
// cause it as STATE_MACHINE.md says, checked against that file's tables and
// against the lifecycle's invariants.

// docTables reads the transition tables of STATE_MACHINE.md: job rows as
// "from|to|Function|event,event", step rows as "from|to|Function".
func docTables(t *testing.T) (jobs, steps map[string]bool) {
	b, err := os.ReadFile("STATE_MACHINE.md")
	if err != nil {
		t.Fatal(err)
	}
	tick := regexp.MustCompile("`([^`]*)`")
	ticked := func(s string) []string {
		var out []string
		for _, m := range tick.FindAllStringSubmatch(s, -1) {
			out = append(out, m[1])
		}
		return out
	}
	jobs, steps = map[string]bool{}, map[string]bool{}
	section := ""
	for _, line := range strings.Split(string(b), "\n") {
		if strings.HasPrefix(line, "## ") {
			section = strings.TrimPrefix(line, "## ")
			continue
		}
		if !strings.HasPrefix(line, "|") || strings.HasPrefix(line, "|---") {
			continue
		}
		cells := strings.Split(strings.Trim(line, "|"), "|")
		for i := range cells {
			cells[i] = strings.TrimSpace(cells[i])
		}
		switch {
		case section == "Job transitions" && len(cells) == 6 && strings.HasPrefix(cells[2], "`"):
			fn := ticked(cells[2])[0]
			for _, from := range strings.Split(cells[0], ", ") {
				jobs[from+"|"+cells[1]+"|"+fn+"|"+strings.Join(ticked(cells[4]), ",")] = true
			}
		case section == "Step transitions" && len(cells) == 4 && strings.HasPrefix(cells[2], "`"):
			for _, fn := range ticked(cells[2]) {
				steps[cells[0]+"|"+cells[1]+"|"+fn] = true
			}
		}
	}
	if len(jobs) < 10 || len(steps) < 10 {
		t.Fatalf("STATE_MACHINE.md: read %d job rows and %d step rows; its tables changed shape", len(jobs), len(steps))
	}
	return jobs, steps
}

// move is one legal transition: fn names the function of package machine, ""
// for a write that is no transition (a cancel stored on a running job).
type move struct {
	fn    string
	cause string
	do    func(r *rpc.Record, now time.Time) []rpc.Event
}

type walker struct {
	rng   *rand.Rand
	now   time.Time
	epoch int64
	owner machine.Owner
}

func (w *walker) record(id int64) rpc.Record {
	n := 1 + w.rng.IntN(4)
	var steps []rpc.Step
	for i := range n {
		s := step(fmt.Sprintf("s%d", i), tries(1+w.rng.IntN(3)))
		s.Result = []string{rpc.ResultText, rpc.ResultJSON, rpc.ResultNone}[w.rng.IntN(3)]
		if w.rng.IntN(3) == 0 {
			s.OnInterrupt = rpc.OnInterruptFail
		}
		steps = append(steps, s)
	}
	var timeout time.Duration
	if w.rng.IntN(2) == 0 {
		timeout = time.Hour
	}
	rec := newRecord(id, timeout, steps...)
	if w.rng.IntN(4) == 0 {
		rec.NotBefore = ptr(w.now.Add(time.Duration(w.rng.IntN(300)) * time.Second))
	}
	return rec
}

// moves lists what may happen to rec now, by who may cause it.
func (w *walker) moves(rec *rpc.Record) []move {
	var ms []move
	switch rec.State {
	case rpc.StateQueued:
		if machine.Runnable(rec, w.now) {
			ms = append(ms, move{"Claim", "claim", func(r *rpc.Record, now time.Time) []rpc.Event {
				w.epoch++
				w.owner = machine.Owner{Node: fmt.Sprintf("n%d", w.epoch%3), Epoch: w.epoch}
				return machine.Claim(r, w.owner, now)
			}})
		}
		ms = append(ms, move{"EndUnstarted", "cancel (store)", func(r *rpc.Record, now time.Time) []rpc.Event {
			reason := "cancelled"
			if r.Run.CancelReason != nil { // reaped after a cancel: the first reason stands
				reason = *r.Run.CancelReason
			}
			return machine.EndUnstarted(r, reason, rpc.StateCancelled, now)
		}})
		if rec.PausedAt != nil {
			ms = append(ms, move{"Resume", "resume (a paused job reaped)", machine.Resume})
		}
		switch {
		case rec.Run.Held:
			ms = append(ms, move{"Release", "job.release", machine.Release})
		case rec.Run.CancelReason == nil: // a store refuses to hold a job with a cancel stored
			ms = append(ms, move{"Hold", "job.hold", machine.Hold})
		}
		ms = append(ms, move{"Edit", "job.edit", func(r *rpc.Record, now time.Time) []rpc.Event {
			p := r.Priority + 1 + w.rng.IntN(3)
			evs, err := machine.Edit(r, rpc.EditParams{ID: r.ID, Priority: &p}, now)
			if err != nil {
				panic(err)
			}
			return evs
		}})
		if rec.StartedAt == nil { // only a job that never ran can lose a dependency
			ms = append(ms, move{"EndUnstarted", "store cascade", func(r *rpc.Record, now time.Time) []rpc.Event {
				return machine.EndUnstarted(r, machine.DependencyFailed(r.ID-1), rpc.StateFailed, now)
			}})
		}
	case rpc.StateRunning:
		i := rec.CurrentStep
		cancel := rec.Run.CancelReason
		spec := rec.Spec.Steps[i]
		if cancel == nil {
			ms = append(ms, move{"", "cancel (request)", func(r *rpc.Record, now time.Time) []rpc.Event {
				r.Run.CancelReason = ptr(fmt.Sprintf("reason %d", w.rng.IntN(100)))
				return nil
			}})
		} else {
			ms = append(ms, move{"EndUnstarted", "runner: a cancel at its turn", func(r *rpc.Record, now time.Time) []rpc.Event {
				return machine.EndUnstarted(r, *r.Run.CancelReason, rpc.StateCancelled, now)
			}})
		}
		ms = append(ms, move{"Interrupt", "reaper", machine.Interrupt})
		if rec.PausedAt == nil {
			ms = append(ms, move{"Pause", "pause", machine.Pause})
		} else {
			ms = append(ms, move{"Resume", "resume", machine.Resume})
		}
		if cancel == nil && rec.Spec.Timeout > 0 {
			ms = append(ms, move{"FailRunning", "timeout (job)", func(r *rpc.Record, now time.Time) []rpc.Event {
				return machine.FailRunning(r, "timeout after 1h0m0s", now)
			}})
		}
		switch rec.Steps[i].State {
		case rpc.StateRunning:
			// The runner asks for a success whatever it knows of a cancel: the
			// machine makes a stored cancel the outcome.
			ms = append(ms, move{"StepSucceeded", "runner", func(r *rpc.Record, now time.Time) []rpc.Event {
				out := machine.Outcome{ExitCode: ptr(0), KeepResult: spec.Result != rpc.ResultNone}
				if out.KeepResult && w.rng.IntN(5) > 0 { // sometimes none, as a sleep step's json
					out.Result = json.RawMessage(fmt.Sprintf(`"%d/%d/%d"`, r.ID, i, r.Steps[i].Attempt))
					out.Truncated = w.rng.IntN(4) == 0
				}
				return machine.StepSucceeded(r, i, out, now)
			}})
			if cancel != nil {
				ms = append(ms, move{"EndStep", "cancel (runner)", func(r *rpc.Record, now time.Time) []rpc.Event {
					return machine.EndStep(r, i, machine.Outcome{Signal: ptr("SIGTERM"), Err: "killed by SIGTERM"}, rpc.StateCancelled, *r.Run.CancelReason, now)
				}})
				break
			}
			if rec.Steps[i].Attempt < spec.Retry.Attempts {
				ms = append(ms, move{"StepRetrying", "runner", func(r *rpc.Record, now time.Time) []rpc.Event {
					return machine.StepRetrying(r, i, machine.Outcome{ExitCode: ptr(1), Err: "exit status 1"}, now.Add(time.Duration(1+w.rng.IntN(60))*time.Second), now)
				}})
			}
			ms = append(ms, move{"EndStep", "runner", func(r *rpc.Record, now time.Time) []rpc.Event {
				return machine.EndStep(r, i, machine.Outcome{ExitCode: ptr(1), Err: "exit status 1"}, rpc.StateFailed, "step "+spec.Name+": exit status 1", now)
			}})
		case rpc.StateRetrying:
			if cancel == nil && rec.PausedAt == nil { // no attempt starts while paused
				ms = append(ms, move{"StartStep", "runner", func(r *rpc.Record, now time.Time) []rpc.Event {
					return []rpc.Event{machine.StartStep(r, i, now)}
				}})
			}
		}
	}
	return ms
}

// replay is what the events say of a job: its state and its steps' states
// (skipped steps have no event: they stay as they were).
func replay(state rpc.State, steps []rpc.State, evs []rpc.Event) rpc.State {
	for _, e := range evs {
		switch e.Type {
		case rpc.EventStarted:
			state = rpc.StateRunning
		case rpc.EventPaused, rpc.EventResumed:
			// no state changes
		case rpc.EventInterrupted:
			state = rpc.StateQueued
			if steps[*e.Step] == rpc.StateRunning {
				steps[*e.Step] = rpc.StatePending
			}
		case rpc.EventSucceeded, rpc.EventFailed, rpc.EventCancelled:
			state = e.State
		case rpc.EventStepStarted, rpc.EventStepRetrying, rpc.EventStepFinished:
			steps[*e.Step] = e.State
		}
	}
	return state
}

// TestTableOfStateMachine walks random legal sequences of transitions on random
// records and checks each move against STATE_MACHINE.md's tables and the
// lifecycle's invariants, then that every row of the tables was walked.
func TestTableOfStateMachine(t *testing.T) {
	jobRows, stepRows := docTables(t)
	seenJob, seenStep := map[string]bool{}, map[string]bool{}
	w := &walker{rng: rand.New(rand.NewPCG(15, 15)), now: t0} // fixed: the same walk each run
	is := is.New(t)
	for id := int64(1); id <= 3000; id++ {
		w.walk(t, is, id, jobRows, stepRows, seenJob, seenStep)
	}
	var missing []string
	for k := range jobRows {
		if !seenJob[k] {
			missing = append(missing, "job "+k)
		}
	}
	for k := range stepRows {
		if !seenStep[k] {
			missing = append(missing, "step "+k)
		}
	}
	slices.Sort(missing)
	if len(missing) > 0 {
		t.Errorf("rows of STATE_MACHINE.md the walk never made:\n%s", strings.Join(missing, "\n"))
	}
}

// walk moves one random job until it is final (or 200 moves), checking each move.
func (w *walker) walk(t *testing.T, is *is.I, id int64, jobRows, stepRows, seenJob, seenStep map[string]bool) {
	rec := w.record(id)
	var history []string
	stepsSeen := stepStates(rec) // the steps' states as the events tell them
	jobSeen := rec.State
	var startedAt *time.Time
	var paused time.Duration // the time the job spent paused
	defer func() {
		if t.Failed() {
			t.Logf("job %d: %s", id, strings.Join(history, "; "))
		}
	}()
	{
		for n := 0; n < 200 && !rec.State.Final(); n++ {
			w.now = w.now.Add(time.Duration(w.rng.IntN(90)) * time.Second)
			ms := w.moves(&rec)
			if len(ms) == 0 {
				continue // waiting for not_before
			}
			m := ms[w.rng.IntN(len(ms))]
			before := rec
			before.Steps = slices.Clone(rec.Steps)
			evs := m.do(&rec, w.now)
			if m.fn == "Resume" {
				paused += w.now.Sub(*before.PausedAt)
				is.Equal(rec.PausedAt, nil) // resumed
			}
			if m.fn == "Pause" {
				is.Equal(*rec.PausedAt, w.now) // paused now
			}
			if rec.State.Final() {
				is.Equal(rec.PausedAt, nil) // a final job is not paused
			}
			history = append(history, fmt.Sprintf("%s by %s: %s→%s %v", m.fn, m.cause, before.State, rec.State, types(evs)))

			// The tables.
			if m.fn != "" {
				key := string(before.State) + "|" + string(rec.State) + "|" + m.fn + "|" + strings.Join(types(evs), ",")
				if !jobRows[key] {
					t.Fatalf("job transition %q is no row of STATE_MACHINE.md", key)
				}
				seenJob[key] = true
				for k := range rec.Steps {
					if a, b := before.Steps[k].State, rec.Steps[k].State; a != b {
						key := string(a) + "|" + string(b) + "|" + m.fn
						if !stepRows[key] {
							t.Fatalf("step transition %q is no row of STATE_MACHINE.md", key)
						}
						seenStep[key] = true
					}
				}
			} else {
				is.Equal(len(evs), 0)             // a cancel request of a running job stores no event
				is.Equal(rec.State, before.State) // and changes no state
			}

			// The events.
			for _, e := range evs {
				is.Equal(e.Job, rec.ID) // every event names its job
				is.Equal(e.Time, w.now) // at the transition's time
				if e.Type == rpc.EventPaused || e.Type == rpc.EventResumed {
					is.Equal(*e.Step, rec.CurrentStep) // a pause names the current step
					continue
				}
				if e.Type == rpc.EventStarted || e.Type == rpc.EventSucceeded || e.Type == rpc.EventFailed || e.Type == rpc.EventCancelled ||
					e.Type == rpc.EventHeld || e.Type == rpc.EventReleased || e.Type == rpc.EventEdited {
					is.Equal(e.Step, nil) // job events name no step
					continue
				}
				is.True(e.Step != nil && *e.Step >= 0 && *e.Step < len(rec.Steps)) // step events name a step of the job
				is.Equal(e.StepName, rec.Steps[*e.Step].Name)                      // by its name too
				if e.Type == rpc.EventStepStarted {
					prev := before.Steps[*e.Step].Attempt
					if rec.Run.Resumed {
						is.Equal(e.Attempt, max(prev, 1)) // a resumed attempt keeps its number
					} else {
						is.Equal(e.Attempt, prev+1) // a new attempt counts one more
					}
				}
			}
			for k, e := range evs {
				if e.Type == rpc.EventSucceeded || e.Type == rpc.EventFailed || e.Type == rpc.EventCancelled {
					is.Equal(k, len(evs)-1)    // a final event comes last
					is.True(rec.State.Final()) // and only for a final job
				}
			}
			jobSeen = replay(jobSeen, stepsSeen, evs)
			is.Equal(jobSeen, rec.State) // the events tell the job's state
			for k, s := range rec.Steps {
				is.True(stepsSeen[k] == s.State || s.State == rpc.StateSkipped) // and every step's, but skipped ones
			}

			// Attempts, cancels, owners, times.
			for k := range rec.Steps {
				is.True(rec.Steps[k].Attempt >= before.Steps[k].Attempt)          // an attempt never decreases
				is.True(rec.Steps[k].Attempt <= rec.Spec.Steps[k].Retry.Attempts) // nor exceeds the step's tries
			}
			if before.Run.CancelReason != nil {
				is.Equal(*rec.Run.CancelReason, *before.Run.CancelReason) // a stored cancel is sticky
				if rec.State.Final() {
					is.Equal(rec.State, rpc.StateCancelled)       // and is the outcome
					is.Equal(rec.Error, *before.Run.CancelReason) // with its reason
				}
			}
			if rec.StartedAt != nil {
				if startedAt == nil {
					startedAt = rec.StartedAt
				}
				is.Equal(*rec.StartedAt, *startedAt) // started_at is set once
				if rec.Spec.Timeout > 0 {
					is.Equal(*rec.Run.Deadline, startedAt.Add(time.Hour+paused)) // and the deadline from it, moved by the time paused
				}
			}
			switch rec.State {
			case rpc.StateQueued:
				is.Equal(rec.Run.Epoch, int64(0)) // a queued job has no owner
			case rpc.StateRunning:
				is.Equal(rec.Run.Epoch, w.owner.Epoch) // a running job is its claimer's
				is.Equal(rec.Run.Node, w.owner.Node)   // node and epoch
			}
			checkShape(is, rec)
			if rec.State.Final() {
				is.Equal(*rec.FinishedAt, w.now) // a final job ended now
				if rec.State == rpc.StateSucceeded {
					is.Equal(rec.Result, machine.JobResult(&rec)) // its result is the protocol's
				} else {
					is.Equal(rec.Result, nil) // only a success has a result
				}
			}
		}
	}
}

// checkShape checks what each job state allows of its steps.
func checkShape(is *is.I, rec rpc.Record) {
	cur := rec.CurrentStep
	runningSteps := 0
	for k, s := range rec.Steps {
		if s.State == rpc.StateRunning {
			runningSteps++
		}
		if rec.State.Final() {
			is.True(s.State.Final()) // a final job has every step final or skipped
			continue
		}
		switch {
		case k < cur:
			is.Equal(s.State, rpc.StateSucceeded) // the steps before the current one succeeded
		case k > cur:
			is.Equal(s.State, rpc.StatePending) // the steps after it wait
		}
	}
	switch rec.State {
	case rpc.StateQueued:
		is.Equal(runningSteps, 0)                                                                      // nothing runs for a queued job
		is.True(rec.Steps[cur].State == rpc.StatePending || rec.Steps[cur].State == rpc.StateRetrying) // its current step waits
	case rpc.StateRunning:
		st := rec.Steps[cur].State
		is.True(st == rpc.StateRunning || st == rpc.StateRetrying) // the current step runs or waits for a retry
		if st == rpc.StateRunning {
			is.Equal(runningSteps, 1) // exactly one step runs while the job runs a step
		} else {
			is.Equal(runningSteps, 0) // and none while it waits
		}
	default:
		is.Equal(runningSteps, 0) // nothing runs for a final job
	}
}
