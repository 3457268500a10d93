package main

import (
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/spf13/pflag"
)

// whenFlags are --delay and --at of submit and run: both set the job's
// not_before, from this machine's clock and time zone.
type whenFlags struct {
	delay string
	at    string
}

// atForms lists the forms --at accepts, for help and errors.
const atForms = "14:30, 14:30:15, 'today 18:00', 'tomorrow 09:00', 2026-12-24, 2026-12-24T18:00, " +
	"'2026-12-24 18:00', a zone after any of them ('2026-12-24 18:00 Europe/Paris', '09:00 UTC', " +
	"'18:00 +01:00'), or RFC 3339 (2026-12-24T18:00:00+01:00, 2026-12-24T17:00Z)"

// delayForms lists the forms --delay accepts.
const delayForms = "a number with a unit, e.g. 90s, 10m, 1h30m, or days: 2d, 1d12h"

func (w *whenFlags) register(fs *pflag.FlagSet) {
	fs.StringVar(&w.delay, "delay", "", "start the job no earlier than `D` from now: 90s, 10m, 1h30m, 2d")
	fs.StringVar(&w.at, "at", "", "start the job no earlier than `TIME`, local unless a zone is given: 14:30 (tomorrow once past), "+
		"'tomorrow 09:00', 2026-12-24T18:00, '2026-12-24 18:00 Europe/Paris', 2026-12-24T18:00+01:00")
}

// notBefore is the job's not_before from the flags, or nil when neither was given.
// note, when not empty, tells what the flags meant where it may surprise (a time
// of day already past today is tomorrow's).
func (w *whenFlags) notBefore(now time.Time) (at *time.Time, note string, err error) {
	switch {
	case w.delay != "" && w.at != "":
		return nil, "", usagef("--delay and --at both say when the job may start: give one of them")
	case w.delay != "":
		d, err := parseDelay(w.delay)
		if err != nil {
			return nil, "", err
		}
		t := now.Add(d)
		return &t, "", nil
	case w.at != "":
		t, note, err := parseAt(w.at, now)
		if err != nil {
			return nil, "", err
		}
		return &t, note, nil
	}
	return nil, "", nil
}

// notBefore reads --delay and --at against this machine's clock; a note on what
// they meant goes to stderr.
func (a *app) notBefore(w *whenFlags) (*time.Time, error) {
	at, note, err := w.notBefore(a.now())
	if err != nil {
		return nil, err
	}
	if note != "" {
		fmt.Fprintf(a.stderr, "spool: %s\n", note)
	}
	return at, nil
}

// maxDelayDays bounds the days of --delay, far below a Duration's range.
const maxDelayDays = 36600

// parseDelay reads --delay: a Go duration, with whole days (2d, 1d12h) allowed in
// front. It must be positive.
func parseDelay(s string) (time.Duration, error) {
	bad := func() error {
		return usagef("--delay %q is not a duration: write %s", s, delayForms)
	}
	v := strings.TrimSpace(s)
	var days time.Duration
	if i := strings.IndexByte(v, 'd'); i >= 0 {
		n, err := strconv.Atoi(v[:i])
		if err != nil || n < 0 || n > maxDelayDays {
			return 0, bad()
		}
		days = time.Duration(n) * 24 * time.Hour
		v = v[i+1:]
	}
	var d time.Duration
	if v != "" {
		var err error
		if d, err = time.ParseDuration(v); err != nil || d < 0 {
			return 0, bad()
		}
	}
	d += days
	if d <= 0 {
		return 0, usagef("--delay %q: must be more than 0 (leave --delay out to start as soon as possible)", s)
	}
	return d, nil
}

// digits reads s as a number of exactly width decimal digits (width 0: one or
// two).
func digits(s string, width int) (int, bool) {
	if (width == 0 && (len(s) < 1 || len(s) > 2)) || (width > 0 && len(s) != width) {
		return 0, false
	}
	n := 0
	for i := 0; i < len(s); i++ {
		if s[i] < '0' || s[i] > '9' {
			return 0, false
		}
		n = n*10 + int(s[i]-'0')
	}
	return n, true
}

// clock is a time of day.
type clock struct{ h, m, s int }

// parseClock reads H:MM, HH:MM or HH:MM:SS.
func parseClock(s string) (clock, bool) {
	parts := strings.Split(s, ":")
	if len(parts) < 2 || len(parts) > 3 {
		return clock{}, false
	}
	h, ok1 := digits(parts[0], 0)
	m, ok2 := digits(parts[1], 2)
	sec, ok3 := 0, true
	if len(parts) == 3 {
		sec, ok3 = digits(parts[2], 2)
	}
	if !ok1 || !ok2 || !ok3 || h > 23 || m > 59 || sec > 59 {
		return clock{}, false
	}
	return clock{h, m, sec}, true
}

// date is a calendar day.
type date struct {
	y int
	m time.Month
	d int
}

// parseDate reads YYYY-MM-DD, a day that exists.
func parseDate(s string) (date, bool) {
	parts := strings.Split(s, "-")
	if len(parts) != 3 {
		return date{}, false
	}
	y, ok1 := digits(parts[0], 4)
	m, ok2 := digits(parts[1], 2)
	d, ok3 := digits(parts[2], 2)
	if !ok1 || !ok2 || !ok3 || m < 1 || m > 12 || d < 1 {
		return date{}, false
	}
	// 2026-02-30 is not a day (time.Date would make it March 2).
	if t := time.Date(y, time.Month(m), d, 12, 0, 0, 0, time.UTC); t.Day() != d {
		return date{}, false
	}
	return date{y, time.Month(m), d}, true
}

// parseOffset reads +01:00, -0500: the offset in seconds.
func parseOffset(s string) (int, bool) {
	if len(s) < 5 || (s[0] != '+' && s[0] != '-') {
		return 0, false
	}
	rest := s[1:]
	if len(rest) == 5 && rest[2] == ':' {
		rest = rest[:2] + rest[3:]
	}
	h, ok1 := digits(rest[:2], 2)
	m, ok2 := digits(rest[2:], 2)
	if len(rest) != 4 || !ok1 || !ok2 || h > 23 || m > 59 {
		return 0, false
	}
	off := h*3600 + m*60
	if s[0] == '-' {
		off = -off
	}
	return off, true
}

// parseZone reads a zone: Z, UTC, an offset (+01:00, -0500) or an IANA name
// (Europe/Paris, from the system's time zone database).
func parseZone(s string) (*time.Location, bool) {
	switch {
	case s == "Z" || s == "z" || s == "UTC" || s == "utc":
		return time.UTC, true
	case s != "" && (s[0] == '+' || s[0] == '-'):
		off, ok := parseOffset(s)
		if !ok {
			return nil, false
		}
		return time.FixedZone(s, off), true
	case strings.Contains(s, "/"):
		loc, err := time.LoadLocation(s)
		if err != nil {
			return nil, false
		}
		return loc, true
	}
	return nil, false
}

// splitAttached splits a zone written against a date-time (2026-12-24T18:00Z,
// 2026-12-24T18:00:00+01:00) from it; ok is false when there is none.
func splitAttached(s string) (rest, zone string, ok bool) {
	if !strings.Contains(s, "T") && !strings.Contains(s, "t") {
		return s, "", false
	}
	if n := len(s); n > 0 && (s[n-1] == 'Z' || s[n-1] == 'z') {
		return s[:n-1], "Z", true
	}
	for _, width := range []int{6, 5} { // +01:00, +0100
		if n := len(s); n > width && (s[n-width] == '+' || s[n-width] == '-') {
			return s[:n-width], s[n-width:], true
		}
	}
	return s, "", false
}

// parseAt reads --at relative to now (whose location is the local zone): see
// atForms. A time of day alone that is already past today is tomorrow's, and
// note says so; any other time in the past is refused, so that a mistyped date
// does not start the job at once.
func parseAt(s string, now time.Time) (time.Time, string, error) {
	bad := func() error {
		return usagef("--at %q is not a time: write %s", s, atForms)
	}
	fields := strings.Fields(s)
	if len(fields) == 0 || len(fields) > 3 {
		return time.Time{}, "", bad()
	}
	loc := now.Location()
	zoned := false
	// A zone after a space.
	if len(fields) > 1 {
		if z, ok := parseZone(fields[len(fields)-1]); ok {
			loc, zoned = z, true
			fields = fields[:len(fields)-1]
		} else if strings.Contains(fields[len(fields)-1], "/") {
			return time.Time{}, "", usagef("--at %q: unknown time zone %q (write a name such as Europe/Paris, UTC, or an offset such as +01:00)", s, fields[len(fields)-1])
		}
	}
	// A zone against a date-time.
	if len(fields) == 1 && !zoned {
		if rest, zone, ok := splitAttached(fields[0]); ok {
			z, ok := parseZone(zone)
			if !ok {
				return time.Time{}, "", bad()
			}
			loc, zoned = z, true
			fields[0] = rest
		}
	}
	var day *date
	var tod *clock
	relative := "" // today, tomorrow
	switch len(fields) {
	case 1:
		f := fields[0]
		if c, ok := parseClock(f); ok {
			tod = &c
			break
		}
		if d, ok := parseDate(f); ok {
			day, tod = &d, &clock{}
			break
		}
		ds, cs, ok := strings.Cut(f, "T")
		if !ok {
			ds, cs, ok = strings.Cut(f, "t")
		}
		d, dok := parseDate(ds)
		c, cok := parseClock(cs)
		if !ok || !dok || !cok {
			return time.Time{}, "", bad()
		}
		day, tod = &d, &c
	case 2:
		c, ok := parseClock(fields[1])
		if !ok {
			return time.Time{}, "", bad()
		}
		tod = &c
		switch w := strings.ToLower(fields[0]); w {
		case "today", "tomorrow":
			relative = w
		default:
			d, ok := parseDate(fields[0])
			if !ok {
				return time.Time{}, "", bad()
			}
			day = &d
		}
	default:
		return time.Time{}, "", bad()
	}
	here := now.In(loc)
	if day == nil {
		day = &date{here.Year(), here.Month(), here.Day()}
		if relative == "tomorrow" {
			day.d++
		}
	}
	t := time.Date(day.y, day.m, day.d, tod.h, tod.m, tod.s, 0, loc)
	if !t.After(now) {
		if relative == "" && len(fields) == 1 && isClockOnly(fields[0]) {
			t = time.Date(day.y, day.m, day.d+1, tod.h, tod.m, tod.s, 0, loc)
			note := fmt.Sprintf("%s has passed today: the job waits until tomorrow, %s", strings.TrimSpace(s), describeTime(t, now, zoned))
			return t, note, nil
		}
		return time.Time{}, "", usagef("--at %q is in the past (%s; it is %s now): give a later time, or leave --at out to start as soon as possible",
			s, describeTime(t, now, zoned), describeTime(now.In(t.Location()), now, zoned))
	}
	return t, "", nil
}

// isClockOnly reports whether s is a time of day alone.
func isClockOnly(s string) bool {
	_, ok := parseClock(s)
	return ok
}

// describeTime writes t for people: weekday, date and time, with the zone when
// one was given or it is not the local one.
func describeTime(t, now time.Time, zoned bool) string {
	layout := "Mon 2006-01-02 15:04:05"
	if zoned || t.Location() != now.Location() {
		layout += " MST"
	}
	return t.Format(layout)
}
