package rpc

import (
	"context"
	"fmt"
	"time"
)

// Method names of schedules.
const (
	MethodSchedulePut    = "schedule.put"
	MethodScheduleGet    = "schedule.get"
	MethodScheduleList   = "schedule.list"
	MethodScheduleRemove = "schedule.remove"
	MethodSchedulePause  = "schedule.pause"
	MethodScheduleResume = "schedule.resume"
)

// EventScheduleFired is stored with the job a schedule's slot made, in the
// same transaction: Job is the job's id, Schedule the schedule's name and Slot
// the slot's time.
const EventScheduleFired = "schedule_fired"

// Catch-up policies: what a schedule does with the slots that passed while no
// daemon fired them (down, or late by more than ScheduleGrace).
const (
	// CatchUpNone skips missed slots: only a slot noticed within ScheduleGrace
	// of its time fires.
	CatchUpNone = "none"
	// CatchUpLast fires the latest missed slot once, skipping the ones before.
	CatchUpLast = "last"
	// CatchUpAll fires every missed slot, oldest first, up to CatchUpMax of
	// them (the latest ones): the older are skipped.
	CatchUpAll = "all"
)

// Bounds of schedules.
const (
	// ScheduleGrace is how late a slot may be noticed and still count as on
	// time (for CatchUpNone).
	ScheduleGrace = time.Minute
	// DefaultCatchUpMax is CatchUpMax when a put leaves it 0.
	DefaultCatchUpMax = 10
	// MaxCatchUpMax bounds CatchUpMax.
	MaxCatchUpMax = 1000
)

// ScheduleService is the schedules' part of the protocol; Service embeds it.
type ScheduleService interface {
	SchedulePut(ctx context.Context, p SchedulePutParams) (*Schedule, error)
	ScheduleGet(ctx context.Context, p ScheduleNameParams) (*Schedule, error)
	ScheduleList(ctx context.Context) (*ScheduleListResult, error)
	ScheduleRemove(ctx context.Context, p ScheduleNameParams) error
	SchedulePause(ctx context.Context, p ScheduleNameParams) (*Schedule, error)
	ScheduleResume(ctx context.Context, p ScheduleNameParams) (*Schedule, error)
}

// Schedule is a stored schedule: it runs a template on each slot of a cron
// expression (or an "@every" interval) in a time zone.
type Schedule struct {
	Name string `json:"name"`
	// Cron is a five-field cron expression (minute hour day-of-month month
	// day-of-week), a descriptor (@hourly, @daily, ...) or "@every 10m".
	Cron string `json:"cron"`
	// TZ is the IANA zone the expression is read in; "Local" is the daemon's.
	TZ       string            `json:"tz"`
	Template string            `json:"template"`
	Params   map[string]string `json:"params"`
	// CatchUp is none, last or all; CatchUpMax bounds all.
	CatchUp    string `json:"catch_up"`
	CatchUpMax int    `json:"catch_up_max"`
	Paused     bool   `json:"paused"`
	// LastSlot is the latest slot fired, LastJob the job it made.
	LastSlot *time.Time `json:"last_slot"`
	LastJob  *int64     `json:"last_job"`
	// NextSlot is the next slot that will fire (null when paused); the daemon
	// computes it when it answers.
	NextSlot *time.Time `json:"next_slot"`
	// Error is why the last attempt to fire failed (the template is gone, its
	// params no longer fit), or empty; the daemon tries again a minute later.
	Error     string    `json:"error,omitempty"`
	CreatedAt time.Time `json:"created_at"`
	UpdatedAt time.Time `json:"updated_at"`
}

// SchedulePutParams stores a schedule, replacing one of the same name (whose
// last_slot is kept, so that no slot fires twice).
type SchedulePutParams struct {
	Name       string            `json:"name"`
	Cron       string            `json:"cron"`
	TZ         string            `json:"tz"`
	Template   string            `json:"template"`
	Params     map[string]string `json:"params"`
	CatchUp    string            `json:"catch_up"`
	CatchUpMax int               `json:"catch_up_max"`
	Paused     bool              `json:"paused"`
}

// Validate checks what can be checked without the daemon: the name, the
// policy and its bound, the params' strings. The expression, the zone and the
// template are the daemon's to check.
func (p SchedulePutParams) Validate() error {
	if !templateNameOK(p.Name) {
		return InvalidParams("name", "must be 1 to 64 letters, digits, '.', '-' or '_'")
	}
	if p.Cron == "" {
		return InvalidParams("cron", "is required: a cron expression such as \"0 3 * * *\", or \"@every 10m\"")
	}
	if err := checkString("cron", p.Cron); err != nil {
		return err
	}
	if !templateNameOK(p.Template) {
		return InvalidParams("template", "must be 1 to 64 letters, digits, '.', '-' or '_'")
	}
	switch p.CatchUp {
	case "", CatchUpNone, CatchUpLast, CatchUpAll:
	default:
		return InvalidParams("catch_up", fmt.Sprintf("must be %q, %q or %q", CatchUpNone, CatchUpLast, CatchUpAll))
	}
	if p.CatchUpMax < 0 || p.CatchUpMax > MaxCatchUpMax {
		return InvalidParams("catch_up_max", fmt.Sprintf("must be 0 (the default, %d) to %d", DefaultCatchUpMax, MaxCatchUpMax))
	}
	if err := checkString("tz", p.TZ); err != nil {
		return err
	}
	for _, name := range sortedKeys(p.Params) {
		if err := checkString(KeyPath("params", name), p.Params[name]); err != nil {
			return err
		}
	}
	return nil
}

// ScheduleNameParams names a schedule.
type ScheduleNameParams struct {
	Name string `json:"name"`
}

// ScheduleListResult lists the schedules.
type ScheduleListResult struct {
	Schedules []Schedule `json:"schedules"`
}

// NoSchedule is 1001 for a schedule name.
func NoSchedule(name string) *Error {
	return &Error{Code: CodeNotFound, Message: fmt.Sprintf("schedule %q not found", name), Data: &ErrorData{Name: name}}
}

// SlotFired is 1002: the schedule's last_slot is already at or past the slot,
// so it fired (here or on another daemon) and must not fire again.
func SlotFired(name string, slot, last time.Time) *Error {
	return &Error{Code: CodeBadState, Message: fmt.Sprintf("schedule %q already fired slot %s (last_slot %s)",
		name, slot.UTC().Format(time.RFC3339), last.UTC().Format(time.RFC3339)), Data: &ErrorData{Name: name}}
}

// SchedulePaused is 1002: a paused schedule does not fire.
func SchedulePaused(name string) *Error {
	return &Error{Code: CodeBadState, Message: fmt.Sprintf("schedule %q is paused", name), Data: &ErrorData{Name: name}}
}
