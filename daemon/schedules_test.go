package daemon_test

import (
	"slices"
	"testing"
	"time"

	"github.com/matryer/is"

	"spool/daemon"
	"spool/rpc"
)

// schedTemplate stores template "tick", a quick job with one param.
func schedTemplate(t *testing.T, h *harness) {
	t.Helper()
	_, err := putTemplate(t, h, "tick", `{"name": "tick {{what}}", "steps": [{"exec": {"argv": ["true", "{{what}}"]}}]}`,
		map[string]rpc.TemplateParam{"what": {Required: true}})
	if err != nil {
		t.Fatalf("put template: %v", err)
	}
}

// firedSlots is the slots of the jobs schedule name made, in slot order.
func firedSlots(t *testing.T, h *harness, name string) []string {
	t.Helper()
	res, err := h.d.List(ctxT(t), rpc.ListParams{Labels: map[string]string{"schedule": name}, Limit: 1000})
	if err != nil {
		t.Fatalf("list: %v", err)
	}
	var out []string
	for _, j := range res.Jobs {
		out = append(out, j.Labels["slot"])
	}
	slices.Sort(out)
	return out
}

// settle wakes the daemon and waits until schedule name has made want jobs,
// then a little longer, to see that it makes no more.
func settle(t *testing.T, h *harness, name string, want int) []string {
	t.Helper()
	h.d.Wake()
	deadline := time.Now().Add(10 * time.Second)
	for len(firedSlots(t, h, name)) < want && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	h.d.Wake()
	time.Sleep(150 * time.Millisecond)
	got := firedSlots(t, h, name)
	if len(got) != want {
		t.Fatalf("schedule %s made %d jobs (%v), want %d", name, len(got), got, want)
	}
	return got
}

// setClock moves clock to at.
func setClock(c *offsetClock, at time.Time) { c.Advance(at.Sub(c.Now())) }

func putSchedule(t *testing.T, h *harness, p rpc.SchedulePutParams) *rpc.Schedule {
	t.Helper()
	if p.Template == "" {
		p.Template = "tick"
	}
	if p.Params == nil {
		p.Params = map[string]string{"what": p.Name}
	}
	sc, err := h.d.SchedulePut(ctxT(t), p)
	if err != nil {
		t.Fatalf("put schedule %s: %v", p.Name, err)
	}
	return sc
}

func slotText(t time.Time) string { return t.UTC().Format(time.RFC3339) }

func TestScheduleFiresOncePerSlot(t *testing.T) {
	is := is.New(t)
	clock := &offsetClock{}
	t0 := time.Date(2026, 6, 1, 10, 0, 0, 0, time.UTC)
	setClock(clock, t0)
	h := start(t, t.TempDir(), func(c *daemon.Config) { c.Clock = clock })
	schedTemplate(t, h)
	sc := putSchedule(t, h, rpc.SchedulePutParams{Name: "hourly", Cron: "0 * * * *", TZ: "UTC"})
	is.Equal(sc.CatchUp, rpc.CatchUpLast)                                    // the default policy
	is.True(sc.NextSlot.Equal(time.Date(2026, 6, 1, 11, 0, 0, 0, time.UTC))) // the next hour
	settle(t, h, "hourly", 0)                                                // nothing before its slot

	setClock(clock, time.Date(2026, 6, 1, 11, 0, 1, 0, time.UTC))
	got := settle(t, h, "hourly", 1) // the slot fires
	is.Equal(got, []string{"2026-06-01T11:00:00Z"})
	for range 5 {
		h.d.Wake() // wakes do not fire it again
	}
	settle(t, h, "hourly", 1)
	g, err := h.d.ScheduleGet(ctxT(t), rpc.ScheduleNameParams{Name: "hourly"})
	is.NoErr(err)
	is.Equal(slotText(*g.LastSlot), "2026-06-01T11:00:00Z") // last_slot
	is.True(g.LastJob != nil)                               // and its job
	job := get(t, h.d, *g.LastJob)
	is.Equal(job.Template.Name, "tick")             // made from the template
	is.Equal(job.Template.Params["what"], "hourly") // with the schedule's params

	setClock(clock, time.Date(2026, 6, 1, 12, 0, 1, 0, time.UTC))
	got = settle(t, h, "hourly", 2) // the next slot
	is.Equal(got[1], "2026-06-01T12:00:00Z")

	// A restart does not fire a fired slot again.
	h.shutdown()
	h = start(t, h.dir, func(c *daemon.Config) { c.Clock = clock })
	settle(t, h, "hourly", 2)
}

func TestScheduleCatchUpPolicies(t *testing.T) {
	is := is.New(t)
	clock := &offsetClock{}
	t0 := time.Date(2026, 6, 1, 10, 0, 0, 0, time.UTC)
	setClock(clock, t0)
	dir := t.TempDir()
	h := start(t, dir, func(c *daemon.Config) { c.Clock = clock })
	schedTemplate(t, h)
	setClock(clock, t0) // slots count from the put, in whole seconds
	for _, p := range []string{rpc.CatchUpNone, rpc.CatchUpLast, rpc.CatchUpAll} {
		putSchedule(t, h, rpc.SchedulePutParams{Name: p, Cron: "@every 1h", CatchUp: p, CatchUpMax: 3})
	}
	h.shutdown()
	// The daemon is down for 5h30m: slots at 11:00 ... 15:00 are missed.
	setClock(clock, t0.Add(5*time.Hour+30*time.Minute))
	h = start(t, dir, func(c *daemon.Config) { c.Clock = clock })
	is.Equal(settle(t, h, "all", 3), []string{"2026-06-01T13:00:00Z", "2026-06-01T14:00:00Z", "2026-06-01T15:00:00Z"}) // the last 3
	is.Equal(settle(t, h, "last", 1), []string{"2026-06-01T15:00:00Z"})                                                // the latest
	settle(t, h, "none", 0)                                                                                            // none: missed slots are skipped
	g, err := h.d.ScheduleGet(ctxT(t), rpc.ScheduleNameParams{Name: "none"})
	is.NoErr(err)
	is.Equal(slotText(*g.NextSlot), "2026-06-01T16:00:00Z") // its next slot is ahead

	// On time, none fires like the others.
	setClock(clock, t0.Add(6*time.Hour+time.Second))
	settle(t, h, "none", 1)
	settle(t, h, "all", 4)
	settle(t, h, "last", 2)
}

func TestSchedulePause(t *testing.T) {
	is := is.New(t)
	clock := &offsetClock{}
	t0 := time.Date(2026, 6, 1, 10, 0, 0, 0, time.UTC)
	setClock(clock, t0)
	h := start(t, t.TempDir(), func(c *daemon.Config) { c.Clock = clock })
	schedTemplate(t, h)
	setClock(clock, t0)
	putSchedule(t, h, rpc.SchedulePutParams{Name: "p", Cron: "@every 1h", CatchUp: rpc.CatchUpAll})
	sc, err := h.d.SchedulePause(ctxT(t), rpc.ScheduleNameParams{Name: "p"})
	is.NoErr(err)               // paused
	is.True(sc.Paused)          // says so
	is.True(sc.NextSlot == nil) // no next slot while paused
	setClock(clock, t0.Add(2*time.Hour+time.Second))
	settle(t, h, "p", 0) // a paused schedule does not fire
	sc, err = h.d.ScheduleResume(ctxT(t), rpc.ScheduleNameParams{Name: "p"})
	is.NoErr(err)                                                             // resumed
	is.Equal(*sc.NextSlot, sc.UpdatedAt.Truncate(time.Second).Add(time.Hour)) // an hour after the resume
	is.True(sc.NextSlot.After(t0.Add(3 * time.Hour)))                         // not at a slot it was paused for
	settle(t, h, "p", 0)                                                      // the slots while paused do not fire
	setClock(clock, sc.NextSlot.Add(time.Second))
	settle(t, h, "p", 1) // the next one does

	l, err := h.d.ScheduleList(ctxT(t))
	is.NoErr(err)
	is.Equal(len(l.Schedules), 1) // listed
	is.NoErr(h.d.ScheduleRemove(ctxT(t), rpc.ScheduleNameParams{Name: "p"}))
	setClock(clock, t0.Add(5*time.Hour))
	settle(t, h, "p", 1) // a removed schedule fires no more; its jobs stay
	_, err = h.d.ScheduleGet(ctxT(t), rpc.ScheduleNameParams{Name: "p"})
	is.Equal(rpc.CodeOf(err), rpc.CodeNotFound) // gone
}

// TestScheduleDST: in Europe/Paris, 2026-03-29 springs forward from 02:00 to
// 03:00: a daily 02:30 has no slot that day and fires next on the 30th.
func TestScheduleDST(t *testing.T) {
	is := is.New(t)
	paris, err := time.LoadLocation("Europe/Paris")
	is.NoErr(err)
	clock := &offsetClock{}
	setClock(clock, time.Date(2026, 3, 28, 12, 0, 0, 0, paris))
	h := start(t, t.TempDir(), func(c *daemon.Config) { c.Clock = clock })
	schedTemplate(t, h)
	sc := putSchedule(t, h, rpc.SchedulePutParams{Name: "dst", Cron: "30 2 * * *", TZ: "Europe/Paris", CatchUp: rpc.CatchUpAll})
	is.Equal(slotText(*sc.NextSlot), "2026-03-30T00:30:00Z") // 02:30 CEST on the 30th: the 29th has none
	setClock(clock, time.Date(2026, 3, 29, 12, 0, 0, 0, paris))
	settle(t, h, "dst", 0) // nothing on the 29th
	setClock(clock, time.Date(2026, 3, 30, 2, 31, 0, 0, paris))
	is.Equal(settle(t, h, "dst", 1), []string{"2026-03-30T00:30:00Z"}) // fires at 02:30 CEST
}

func TestScheduleValidation(t *testing.T) {
	h := start(t, t.TempDir(), nil)
	schedTemplate(t, h)
	for _, c := range []struct {
		name  string
		p     rpc.SchedulePutParams
		field string
	}{
		{"bad cron", rpc.SchedulePutParams{Name: "x", Cron: "61 * * * *", Template: "tick", Params: map[string]string{"what": "a"}}, "cron"},
		{"too few fields", rpc.SchedulePutParams{Name: "x", Cron: "* * *", Template: "tick", Params: map[string]string{"what": "a"}}, "cron"},
		{"zone in the expression", rpc.SchedulePutParams{Name: "x", Cron: "CRON_TZ=UTC 0 3 * * *", Template: "tick", Params: map[string]string{"what": "a"}}, "cron"},
		{"never", rpc.SchedulePutParams{Name: "x", Cron: "0 0 30 2 *", Template: "tick", Params: map[string]string{"what": "a"}}, "cron"},
		{"unknown zone", rpc.SchedulePutParams{Name: "x", Cron: "@daily", TZ: "Mars/Olympus", Template: "tick", Params: map[string]string{"what": "a"}}, "tz"},
		{"unknown template", rpc.SchedulePutParams{Name: "x", Cron: "@daily", Template: "nope"}, "template"},
		{"unknown param", rpc.SchedulePutParams{Name: "x", Cron: "@daily", Template: "tick", Params: map[string]string{"what": "a", "extra": "b"}}, "params.extra"},
		{"missing param", rpc.SchedulePutParams{Name: "x", Cron: "@daily", Template: "tick"}, "params.what"},
		{"bad policy", rpc.SchedulePutParams{Name: "x", Cron: "@daily", Template: "tick", CatchUp: "some"}, "catch_up"},
		{"bad bound", rpc.SchedulePutParams{Name: "x", Cron: "@daily", Template: "tick", CatchUpMax: 5000}, "catch_up_max"},
		{"bad name", rpc.SchedulePutParams{Name: "a b", Cron: "@daily", Template: "tick"}, "name"},
	} {
		t.Run(c.name, func(t *testing.T) {
			is := is.New(t)
			_, err := h.d.SchedulePut(ctxT(t), c.p)
			re := rpc.AsError(err)
			is.Equal(re.Code, rpc.CodeInvalidParams) // refused as invalid
			is.Equal(re.Data.Field, c.field)         // naming the field
			t.Log(re.Data.Reason)
		})
	}
	is := is.New(t)
	l, err := h.d.ScheduleList(ctxT(t))
	is.NoErr(err)
	is.Equal(len(l.Schedules), 0) // nothing was stored
}
