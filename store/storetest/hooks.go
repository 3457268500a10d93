package storetest

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/matryer/is"

	"spool/daemon"
	"spool/rpc"
)

// The cases of on_finish hooks: a job's final transition stores its
// follow-up job and the events of both in the same commit, whatever the path
// to the final state (the owner's transition, a cancel, a dependency's
// cascade); the states filter; the queue's hook; a template removed since;
// the bound on chains.

// putNotify stores template name, whose job names the job that ended and its
// state, with a required param who.
func putNotify(t *testing.T, s daemon.Store, name string, extra string) {
	t.Helper()
	is := is.New(t)
	is.Helper()
	spec := fmt.Sprintf(`{"name":"notify {{job_id}} {{job_state}} {{who}}","steps":[{"name":"run","exec":{"argv":["true"]}}]%s}`, extra)
	err := s.PutTemplate(context.Background(), rpc.Template{Name: name, Spec: []byte(spec), Params: map[string]rpc.TemplateParam{
		"job_id": {Required: true}, "job_state": {}, "who": {Required: true},
	}, CreatedAt: epoch(), UpdatedAt: epoch()})
	is.NoErr(err) // the template is stored
}

// hooked is Spec(name) with the hook of template tmpl, for states.
func hooked(name, tmpl string, states ...rpc.State) rpc.Spec {
	sp := Spec(name)
	sp.OnFinish = &rpc.OnFinish{Template: tmpl, Params: map[string]string{"who": "ops"}, States: states}
	return sp
}

// followUp finds the on_finish event of job id in evs; 0 when none.
func followUp(evs []rpc.Event, id int64) int64 {
	for _, ev := range evs {
		if ev.Type == rpc.EventOnFinish && ev.Job == id && ev.FollowUp != nil {
			return *ev.FollowUp
		}
	}
	return 0
}

// typesOf is the types of the events of job id in evs.
func typesOf(evs []rpc.Event, id int64) []string {
	var out []string
	for _, ev := range evs {
		if ev.Job == id {
			out = append(out, ev.Type)
		}
	}
	return out
}

func testHookFinal(t *testing.T, r *Rig) {
	is := is.New(t)
	s := r.S
	putNotify(t, s, "notify", "")
	o := join(t, s, "a")
	job := submit(t, s, hooked("work", "notify"))[0]
	is.Equal(job.Run.OnFinish.Template, "notify") // the record knows its hook
	run := claim(t, s, o, 1, epoch())[0]
	_, last := bounds(t, s)
	c0 := counts(t, s)
	var n0 uint64
	cs, commits := s.(committer)
	if commits {
		n0 = cs.Commits()
	}
	evs := apply(t, s, failStep(run, o, epoch().Add(time.Second)))
	if commits {
		is.Equal(cs.Commits()-n0, uint64(1)) // one commit
	}
	is.True(consecutive(evs, last+1)) // seq dense
	next := followUp(evs, job.ID)
	is.True(next > job.ID)                                     // the follow-up is named on the ended job
	is.Equal(typesOf(evs, next), []string{rpc.EventSubmitted}) // and submitted with it
	is.Equal(get(t, s, job.ID).State, rpc.StateFailed)         // the final state is stored
	f := get(t, s, next)
	is.Equal(f.State, rpc.StateQueued) // the follow-up is queued
	is.Equal(f.Name, fmt.Sprintf("notify %d failed ops", job.ID))
	is.Equal(f.Template.Name, "notify")
	is.Equal(f.Template.Params["job_id"], fmt.Sprint(job.ID)) // builtins as params
	is.Equal(f.Run.HookDepth, 1)
	c1 := counts(t, s)
	is.Equal(c1[rpc.StateQueued], c0[rpc.StateQueued]+1) // counted
	got := claim(t, s, o, 1, epoch().Add(2*time.Second))
	is.Equal(ids(got), []int64{next}) // and claimed like any job
	stored, err := s.Events(context.Background(), last, 0)
	is.NoErr(err)
	is.True(len(stored) > len(evs)) // the claim's events follow
	for i, ev := range evs {
		is.Equal(stored[i].Type, ev.Type) // the hook's events were stored as returned
		is.Equal(stored[i].Seq, ev.Seq)
	}
}

func testHookStates(t *testing.T, r *Rig) {
	is := is.New(t)
	s := r.S
	putNotify(t, s, "notify", "")
	o := join(t, s, "a")
	recs := submit(t, s, hooked("only-ok", "notify", rpc.StateSucceeded), hooked("only-fail", "notify", rpc.StateFailed))
	run := claim(t, s, o, 2, epoch())
	is.Equal(len(run), 2)
	evs := apply(t, s, failStep(run[0], o, epoch()), failStep(run[1], o, epoch()))
	is.Equal(followUp(evs, recs[0].ID), int64(0)) // succeeded only: no follow-up for a failure
	is.True(followUp(evs, recs[1].ID) != 0)       // failed: fired
	is.Equal(typesOf(evs, recs[0].ID)[len(typesOf(evs, recs[0].ID))-1], rpc.EventFailed)
}

func testHookQueueCancel(t *testing.T, r *Rig) {
	is := is.New(t)
	ctx := context.Background()
	s := r.S
	putNotify(t, s, "notify", "")
	is.NoErr(s.PutQueue(ctx, rpc.Queue{Name: "hooked", OnFinish: &rpc.OnFinish{Template: "notify", Params: map[string]string{"who": "queue"}}}))
	recs := submit(t, s, inQueue("q", "hooked", 0), Spec("plain"))
	dep := submit(t, s, after("dep", recs[0].ID))[0]
	_, last := bounds(t, s)
	_, _, evs, err := s.Cancel(ctx, recs[0].ID, "no", epoch())
	is.NoErr(err)                     // a queued job is cancelled
	is.True(consecutive(evs, last+1)) // dense
	next := followUp(evs, recs[0].ID)
	is.True(next != 0) // the queue's hook fired on the cancel
	is.Equal(get(t, s, next).Name, fmt.Sprintf("notify %d cancelled queue", recs[0].ID))
	is.Equal(followUp(evs, dep.ID), int64(0))                 // the dependent (default queue, no hook) fails without one
	is.Equal(get(t, s, dep.ID).State, rpc.StateFailed)        // failed by the cascade
	_, _, evs, err = s.Cancel(ctx, recs[1].ID, "no", epoch()) // a job of a queue without a hook
	is.NoErr(err)
	is.Equal(followUp(evs, recs[1].ID), int64(0)) // fires nothing

	// A job's own hook wins over its queue's; a cascade fires the dependent's.
	a := submit(t, s, inQueue("a", "hooked", 0))[0]
	sp := hooked("b", "notify")
	sp.After = []int64{a.ID}
	b := submit(t, s, sp)[0]
	_, _, evs, err = s.Cancel(ctx, a.ID, "no", epoch())
	is.NoErr(err)
	fa, fb := followUp(evs, a.ID), followUp(evs, b.ID)
	is.True(fa != 0 && fb != 0) // both fired in the one transaction
	is.Equal(get(t, s, fb).Name, fmt.Sprintf("notify %d failed ops", b.ID))
}

func testHookTemplateRemoved(t *testing.T, r *Rig) {
	is := is.New(t)
	ctx := context.Background()
	s := r.S
	putNotify(t, s, "notify", "")
	job := submit(t, s, hooked("work", "notify"))[0]
	is.NoErr(s.RemoveTemplate(ctx, "notify"))
	c0 := counts(t, s)
	_, last := bounds(t, s)
	st, _, evs, err := s.Cancel(ctx, job.ID, "no", epoch())
	is.NoErr(err)                    // the cancel is stored all the same
	is.Equal(st, rpc.StateCancelled) // with its final state
	is.True(consecutive(evs, last+1))
	ts := typesOf(evs, job.ID)
	is.Equal(ts[len(ts)-1], rpc.EventOnFinishFailed) // the hook's failure is told
	is.True(evs[len(evs)-1].Error != "")             // with why
	c1 := counts(t, s)
	is.Equal(c1[rpc.StateQueued], c0[rpc.StateQueued]-1) // no follow-up
	is.Equal(get(t, s, job.ID).State, rpc.StateCancelled)
}

func testHookChainBound(t *testing.T, r *Rig) {
	is := is.New(t)
	ctx := context.Background()
	s := r.S
	// A template whose job's hook is the template itself.
	putNotify(t, s, "loop", `,"on_finish":{"template":"loop","params":{"who":"loop"}}`)
	id := submit(t, s, hooked("first", "loop"))[0].ID
	for depth := 0; ; depth++ {
		_, _, evs, err := s.Cancel(ctx, id, "no", epoch())
		is.NoErr(err)
		next := followUp(evs, id)
		if depth == rpc.MaxHookDepth {
			is.Equal(next, int64(0)) // the chain ends at the bound
			ts := typesOf(evs, id)
			is.Equal(ts[len(ts)-1], rpc.EventOnFinishFailed) // told
			break
		}
		is.True(next != 0) // below the bound, each follow-up's hook fires
		f := get(t, s, next)
		is.Equal(f.Run.HookDepth, depth+1)
		is.Equal(f.Run.OnFinish.Template, "loop") // from the template's spec
		id = next
	}
}

func testHookBulkAndReap(t *testing.T, r *Rig) {
	is := is.New(t)
	ctx := context.Background()
	s := r.S
	putNotify(t, s, "notify", "")

	// A bulk cancel fires each job's hook, all in its one commit.
	recs := submit(t, s, hooked("a", "notify"), hooked("b", "notify"))
	_, last := bounds(t, s)
	var n0 uint64
	cs, commits := s.(committer)
	if commits {
		n0 = cs.Commits()
	}
	_, evs, err := s.CancelMany(ctx, ids(recs), "bulk", epoch())
	is.NoErr(err)
	if commits {
		is.Equal(cs.Commits()-n0, uint64(1)) // one commit
	}
	is.True(consecutive(evs, last+1))
	fa, fb := followUp(evs, recs[0].ID), followUp(evs, recs[1].ID)
	is.True(fa != 0 && fb != 0 && fa != fb) // one follow-up each

	// A job of a daemon that is gone, whose step fails on an interrupt, fails
	// at the reap, and its hook fires there.
	sp := hooked("reaped", "notify")
	sp.Steps[0].OnInterrupt = rpc.OnInterruptFail
	rec := submit(t, s, sp)[0]
	apply(t, s, start(rec, epoch())) // running with no live lease
	_, evs, err = s.Reap(ctx, epoch().Add(time.Minute))
	is.NoErr(err)
	is.Equal(get(t, s, rec.ID).State, rpc.StateFailed) // failed by its on_interrupt
	next := followUp(evs, rec.ID)
	is.True(next != 0) // the hook fired in the reap's transaction
	is.Equal(get(t, s, next).Name, fmt.Sprintf("notify %d failed ops", rec.ID))
}
