package daemon

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"time"

	// Zones come with the program, so that a schedule's tz means the same on
	// every host, whatever its zone database.
	_ "time/tzdata"

	"github.com/robfig/cron/v3"

	"spool/rpc"
)

// Schedules: one goroutine arms one timer for the earliest next slot across the
// schedules (by the daemon's Clock), and at each wake fires the due slots of
// each schedule as its catch-up policy says. A fire makes the job from the
// template as template.run does and stores it with the slot in one store
// transaction (Store.FireSchedule), which refuses a slot at or before the
// schedule's last_slot: a slot fires once, across restarts and daemons.

// cronParser reads the five standard fields and the descriptors (@daily,
// @every 10m).
var cronParser = cron.NewParser(cron.Minute | cron.Hour | cron.Dom | cron.Month | cron.Dow | cron.Descriptor)

// schedRetry is how long a schedule whose fire failed (its template gone, say)
// waits before the next try.
const schedRetry = time.Minute

// schedPoll bounds the timer, so that schedules another daemon stored are seen.
const schedPoll = time.Minute

// schedState is the daemon's schedule loop: its wake-up and the errors of the
// last fires, by schedule name.
type schedState struct {
	wake chan struct{}
	mu   sync.Mutex
	errs map[string]schedErr
}

type schedErr struct {
	msg   string
	until time.Time
}

func newSchedState() *schedState {
	return &schedState{wake: make(chan struct{}, 1), errs: map[string]schedErr{}}
}

// kick wakes the schedule loop.
func (s *schedState) kick() {
	select {
	case s.wake <- struct{}{}:
	default:
	}
}

func (s *schedState) setErr(name, msg string, until time.Time) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if msg == "" {
		delete(s.errs, name)
		return
	}
	s.errs[name] = schedErr{msg: msg, until: until}
}

func (s *schedState) err(name string) schedErr {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.errs[name]
}

// slotter computes a schedule's slots.
type slotter struct {
	spec  cron.Schedule
	every time.Duration // for "@every": slots are every apart from the last
	loc   *time.Location
}

// parseSchedule reads a schedule's expression in its zone, with errors that
// name the field.
func parseSchedule(expr, tz string) (*slotter, error) {
	loc := time.Local
	if tz != "" && tz != "Local" {
		l, err := time.LoadLocation(tz)
		if err != nil || strings.ContainsAny(tz, " \t") {
			return nil, rpc.InvalidParams("tz", fmt.Sprintf("unknown time zone %q: an IANA name such as Europe/Paris, UTC, or Local (the daemon's)", tz))
		}
		loc = l
	}
	e := strings.TrimSpace(expr)
	if strings.HasPrefix(e, "TZ=") || strings.HasPrefix(e, "CRON_TZ=") {
		return nil, rpc.InvalidParams("cron", "name the time zone in tz, not in the expression")
	}
	spec, err := cronParser.Parse(e)
	if err != nil {
		return nil, rpc.InvalidParams("cron", fmt.Sprintf("%v: want five fields (minute hour day-of-month month day-of-week), a descriptor such as @daily, or @every 10m", err))
	}
	z := &slotter{spec: spec, loc: loc}
	if c, ok := spec.(cron.ConstantDelaySchedule); ok {
		z.every = c.Delay
	}
	return z, nil
}

// wall is t's reading on a wall clock of its zone, as a time in UTC.
func wall(t time.Time) time.Time {
	return time.Date(t.Year(), t.Month(), t.Day(), t.Hour(), t.Minute(), t.Second(), 0, time.UTC)
}

// next is the first slot after t, or the zero time when there is none. Slots
// of a cron expression follow the wall clock of the zone: a time that a
// spring-forward day skips has no slot that day (a daily 02:30 in Europe/Paris
// does not fire on the last Sunday of March), and the hour a fall-back day
// repeats has its slots once, the first time (a daily 02:30 fires at 02:30
// CEST, not again at 02:30 CET). "@every" slots are real time apart.
func (z *slotter) next(t time.Time) time.Time {
	if z.every > 0 {
		return t.Truncate(time.Second).Add(z.every)
	}
	from := t.In(z.loc)
	n := z.spec.Next(from)
	for !n.IsZero() && !wall(n).After(wall(from)) {
		n = z.spec.Next(n)
	}
	if n.IsZero() {
		return n
	}
	return n.UTC()
}

// base is the time a schedule's slots count from: its last slot, or when it
// was stored or resumed if later (slots while it was paused do not fire).
func base(sc *rpc.Schedule) time.Time {
	b := sc.UpdatedAt
	if sc.LastSlot != nil && sc.LastSlot.After(b) {
		b = *sc.LastSlot
	}
	return b
}

// due is what sc fires at now under its catch-up policy, oldest first, and
// its first slot after now.
func (z *slotter) due(sc *rpc.Schedule, now time.Time) ([]time.Time, time.Time) {
	keep := 1
	if sc.CatchUp == rpc.CatchUpAll {
		keep = sc.CatchUpMax
		if keep <= 0 {
			keep = rpc.DefaultCatchUpMax
		}
	}
	var slots []time.Time
	var next time.Time
	from := base(sc)
	if z.every > 0 {
		from = from.Truncate(time.Second)
		n := int64(0)
		if now.After(from) {
			n = int64(now.Sub(from) / z.every)
		}
		for k := max(n-int64(keep)+1, 1); k <= n; k++ {
			slots = append(slots, from.Add(time.Duration(k)*z.every))
		}
		next = from.Add(time.Duration(n+1) * z.every)
	} else {
		t := z.next(from)
		for !t.IsZero() && !t.After(now) {
			slots = append(slots, t)
			if len(slots) > keep {
				slots = slots[1:]
			}
			t = z.next(t)
		}
		next = t
	}
	if sc.CatchUp == rpc.CatchUpNone && len(slots) > 0 && now.Sub(slots[len(slots)-1]) > rpc.ScheduleGrace {
		slots = nil
	}
	return slots, next
}

// runSchedules fires the schedules' slots until ctx is done.
func (d *Daemon) runSchedules(ctx context.Context) {
	for {
		next := d.fireSchedules(ctx)
		wait := schedPoll
		if !next.IsZero() {
			wait = min(max(next.Sub(d.clock.Now()), 0), schedPoll)
		}
		t := time.NewTimer(wait)
		select {
		case <-ctx.Done():
			t.Stop()
			return
		case <-d.sched.wake:
		case <-t.C:
		}
		t.Stop()
	}
}

// fireSchedules fires every due slot and returns the earliest time a schedule
// needs the loop again (zero: none does).
func (d *Daemon) fireSchedules(ctx context.Context) time.Time {
	d.mu.Lock()
	stopping := d.stopping
	d.mu.Unlock()
	if stopping {
		return time.Time{}
	}
	scs, err := d.store.Schedules(ctx)
	if err != nil {
		if ctx.Err() == nil {
			d.log.Error("read the schedules", "err", err)
		}
		return d.clock.Now().Add(time.Second)
	}
	var earliest time.Time
	soonest := func(t time.Time) {
		if !t.IsZero() && (earliest.IsZero() || t.Before(earliest)) {
			earliest = t
		}
	}
	for i := range scs {
		sc := &scs[i]
		if sc.Paused {
			continue
		}
		now := d.clock.Now()
		if e := d.sched.err(sc.Name); e.msg != "" && now.Before(e.until) {
			soonest(e.until)
			continue
		}
		z, err := parseSchedule(sc.Cron, sc.TZ)
		if err != nil {
			d.sched.setErr(sc.Name, err.Error(), now.Add(schedRetry))
			soonest(now.Add(schedRetry))
			continue
		}
		slots, next := z.due(sc, now)
		for _, slot := range slots {
			if err := d.fire(ctx, sc, slot); err != nil {
				if ctx.Err() != nil {
					return time.Time{}
				}
				var re *rpc.Error
				if errors.As(err, &re) && (re.Code == rpc.CodeBadState || re.Code == rpc.CodeNotFound) {
					// Fired elsewhere, paused or removed meanwhile.
					continue
				}
				d.log.Error("fire a schedule", "schedule", sc.Name, "slot", slot, "err", err)
				d.sched.setErr(sc.Name, err.Error(), now.Add(schedRetry))
				next = now.Add(schedRetry)
				break
			}
			d.sched.setErr(sc.Name, "", time.Time{})
		}
		soonest(next)
	}
	return earliest
}

// fire makes sc's job for slot and stores it with the slot.
func (d *Daemon) fire(ctx context.Context, sc *rpc.Schedule, slot time.Time) error {
	noKey := ""
	nj, err := d.templateJob(ctx, rpc.TemplateRunParams{
		Name: sc.Template, Params: sc.Params, Key: &noKey,
		Labels: map[string]string{"schedule": sc.Name, "slot": slot.UTC().Format(time.RFC3339)},
	})
	if err != nil {
		return fmt.Errorf("make the job from template %q: %w", sc.Template, err)
	}
	rec, evs, err := d.store.FireSchedule(ctx, sc.Name, slot, nj)
	if err != nil {
		return err
	}
	d.log.Info("schedule fired", "schedule", sc.Name, "slot", slot, "job", rec.ID)
	d.hub.publish(evs)
	d.kick()
	return nil
}

// present fills what the daemon computes: the next slot and the last error.
func (d *Daemon) presentSchedule(sc *rpc.Schedule) *rpc.Schedule {
	sc.NextSlot, sc.Error = nil, ""
	if e := d.sched.err(sc.Name); e.msg != "" {
		sc.Error = e.msg
	}
	if sc.Paused {
		return sc
	}
	z, err := parseSchedule(sc.Cron, sc.TZ)
	if err != nil {
		sc.Error = err.Error()
		return sc
	}
	now := d.clock.Now()
	slots, next := z.due(sc, now)
	if len(slots) > 0 {
		next = slots[0]
	}
	if !next.IsZero() {
		sc.NextSlot = &next
	}
	return sc
}

// SchedulePut validates and stores a schedule.
func (d *Daemon) SchedulePut(ctx context.Context, p rpc.SchedulePutParams) (*rpc.Schedule, error) {
	if err := p.Validate(); err != nil {
		return nil, err
	}
	if err := d.waitReady(ctx); err != nil {
		return nil, err
	}
	if p.TZ == "" {
		p.TZ = "Local"
	}
	z, err := parseSchedule(p.Cron, p.TZ)
	if err != nil {
		return nil, err
	}
	now := d.clock.Now()
	if z.next(now).IsZero() {
		return nil, rpc.InvalidParams("cron", "the expression has no time in the next five years")
	}
	if _, err := d.templateJob(ctx, rpc.TemplateRunParams{Name: p.Template, Params: p.Params}); err != nil {
		var re *rpc.Error
		if errors.As(err, &re) && re.Code == rpc.CodeNoTemplate {
			return nil, rpc.InvalidParams("template", fmt.Sprintf("template %q not found: store it first with template.put", p.Template))
		}
		return nil, err
	}
	if p.CatchUp == "" {
		p.CatchUp = rpc.CatchUpLast
	}
	if p.CatchUpMax == 0 {
		p.CatchUpMax = rpc.DefaultCatchUpMax
	}
	if p.Params == nil {
		p.Params = map[string]string{}
	}
	sc, err := d.store.PutSchedule(ctx, rpc.Schedule{
		Name: p.Name, Cron: p.Cron, TZ: p.TZ, Template: p.Template, Params: p.Params,
		CatchUp: p.CatchUp, CatchUpMax: p.CatchUpMax, Paused: p.Paused, CreatedAt: now, UpdatedAt: now,
	})
	if err != nil {
		return nil, err
	}
	d.sched.setErr(sc.Name, "", time.Time{})
	d.sched.kick()
	return d.presentSchedule(sc), nil
}

// ScheduleGet reads a schedule.
func (d *Daemon) ScheduleGet(ctx context.Context, p rpc.ScheduleNameParams) (*rpc.Schedule, error) {
	sc, err := d.store.Schedule(ctx, p.Name)
	if err != nil {
		return nil, err
	}
	return d.presentSchedule(sc), nil
}

// ScheduleList lists the schedules.
func (d *Daemon) ScheduleList(ctx context.Context) (*rpc.ScheduleListResult, error) {
	scs, err := d.store.Schedules(ctx)
	if err != nil {
		return nil, err
	}
	for i := range scs {
		d.presentSchedule(&scs[i])
	}
	return &rpc.ScheduleListResult{Schedules: scs}, nil
}

// ScheduleRemove removes a schedule; the jobs it made stay.
func (d *Daemon) ScheduleRemove(ctx context.Context, p rpc.ScheduleNameParams) error {
	if err := d.store.RemoveSchedule(ctx, p.Name); err != nil {
		return err
	}
	d.sched.setErr(p.Name, "", time.Time{})
	d.sched.kick()
	return nil
}

// SchedulePause pauses a schedule: no slot fires until it is resumed.
func (d *Daemon) SchedulePause(ctx context.Context, p rpc.ScheduleNameParams) (*rpc.Schedule, error) {
	return d.pauseSchedule(ctx, p.Name, true)
}

// ScheduleResume resumes a schedule; the slots that passed while it was
// paused do not fire.
func (d *Daemon) ScheduleResume(ctx context.Context, p rpc.ScheduleNameParams) (*rpc.Schedule, error) {
	return d.pauseSchedule(ctx, p.Name, false)
}

func (d *Daemon) pauseSchedule(ctx context.Context, name string, paused bool) (*rpc.Schedule, error) {
	sc, err := d.store.PauseSchedule(ctx, name, paused, d.clock.Now())
	if err != nil {
		return nil, err
	}
	d.sched.kick()
	return d.presentSchedule(sc), nil
}
