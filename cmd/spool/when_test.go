package main

import (
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/matryer/is"
)

// TestParseAt: each form --at accepts, relative to a fixed now in a zone that is
// not UTC; a time of day already past today is tomorrow's (and a note says so);
// other times in the past, and bad input, are usage errors naming --at.
func TestParseAt(t *testing.T) {
	paris, err := time.LoadLocation("Europe/Paris")
	if err != nil {
		t.Skipf("no time zone database here: %v", err)
	}
	tokyo, err := time.LoadLocation("Asia/Tokyo")
	if err != nil {
		t.Skipf("no time zone database here: %v", err)
	}
	local := time.FixedZone("LOC", -5*3600) // the machine's zone in this test
	now := time.Date(2026, 12, 7, 10, 15, 0, 0, local)
	day := func(y int, m time.Month, d, h, mi, s int, loc *time.Location) time.Time {
		return time.Date(y, m, d, h, mi, s, 0, loc)
	}
	good := []struct {
		in   string
		want time.Time
		note string // a part of the note, "" for none
	}{
		{"14:30", day(2026, 12, 7, 14, 30, 0, local), ""},
		{"9:05", day(2026, 12, 8, 9, 5, 0, local), "tomorrow"},
		{"10:15", day(2026, 12, 8, 10, 15, 0, local), "has passed today"}, // now is past too
		{"10:15:01", day(2026, 12, 7, 10, 15, 1, local), ""},
		{" 23:59:59 ", day(2026, 12, 7, 23, 59, 59, local), ""},
		{"00:00", day(2026, 12, 8, 0, 0, 0, local), "Tue 2026-12-08 00:00:00"},
		{"today 18:00", day(2026, 12, 7, 18, 0, 0, local), ""},
		{"Tomorrow 09:00", day(2026, 12, 8, 9, 0, 0, local), ""},
		{"tomorrow 11:00", day(2026, 12, 8, 11, 0, 0, local), ""},
		{"2026-12-24", day(2026, 12, 24, 0, 0, 0, local), ""},
		{"2026-12-24T18:00", day(2026, 12, 24, 18, 0, 0, local), ""},
		{"2026-12-24t18:00:30", day(2026, 12, 24, 18, 0, 30, local), ""},
		{"2026-12-24 18:00", day(2026, 12, 24, 18, 0, 0, local), ""},
		{"2027-02-28 07:00:05", day(2027, 2, 28, 7, 0, 5, local), ""},
		{"2026-12-24T18:00:00+01:00", day(2026, 12, 24, 17, 0, 0, time.UTC), ""},
		{"2026-12-24T18:00+0100", day(2026, 12, 24, 17, 0, 0, time.UTC), ""},
		{"2026-12-24T17:00Z", day(2026, 12, 24, 17, 0, 0, time.UTC), ""},
		{"2026-12-24T17:00:00-05:00", day(2026, 12, 24, 17, 0, 0, local), ""},
		{"2026-12-24 18:00 Europe/Paris", day(2026, 12, 24, 18, 0, 0, paris), ""},
		{"2026-12-24T18:00 Europe/Paris", day(2026, 12, 24, 18, 0, 0, paris), ""},
		{"2027-07-01 18:00 Europe/Paris", day(2027, 7, 1, 18, 0, 0, paris), ""}, // summer time there
		{"2026-12-24 UTC", day(2026, 12, 24, 0, 0, 0, time.UTC), ""},
		{"09:00 UTC", day(2026, 12, 8, 9, 0, 0, time.UTC), "tomorrow"}, // 15:15 UTC now
		{"16:00 UTC", day(2026, 12, 7, 16, 0, 0, time.UTC), ""},
		{"18:00 +01:00", day(2026, 12, 7, 17, 0, 0, time.UTC), ""},
		{"tomorrow 09:00 Asia/Tokyo", day(2026, 12, 9, 9, 0, 0, tokyo), ""}, // it is already the 8th in Tokyo
		{"01:00 Asia/Tokyo", day(2026, 12, 8, 1, 0, 0, tokyo), ""},          // 00:15 on the 8th there: still to come today
		{"00:10 Asia/Tokyo", day(2026, 12, 9, 0, 10, 0, tokyo), "tomorrow"}, // past there today
	}
	for _, c := range good {
		t.Run(c.in, func(t *testing.T) {
			is := is.New(t)
			got, note, err := parseAt(c.in, now)
			is.NoErr(err)
			is.True(got.Equal(c.want)) // the instant meant
			if c.note == "" {
				is.Equal(note, "") // no note
			} else {
				is.True(strings.Contains(note, c.note)) // the note says what it meant
			}
			is.True(got.After(now)) // never in the past
		})
	}

	bad := []struct {
		in, says string
	}{
		{"", "is not a time"},
		{"soon", "is not a time"},
		{"25:00", "is not a time"},
		{"12:60", "is not a time"},
		{"12:5", "is not a time"},
		{"1230", "is not a time"},
		{"2026-02-30", "is not a time"},
		{"2026-13-01 10:00", "is not a time"},
		{"26-12-24", "is not a time"},
		{"yesterday 10:00", "is not a time"},
		{"2026-12-24T18:00+25:00", "is not a time"},
		{"2026-12-24 18:00 Mars/Olympus", "unknown time zone"},
		{"today 09:00", "is in the past"},
		{"2026-12-01", "is in the past"},
		{"2026-12-07T10:15", "is in the past"},
		{"2025-12-24 18:00 Europe/Paris", "is in the past"},
		{"a b c d", "is not a time"},
	}
	for _, c := range bad {
		t.Run("bad "+c.in, func(t *testing.T) {
			is := is.New(t)
			_, _, err := parseAt(c.in, now)
			var ue *usageError
			is.True(errors.As(err, &ue))                    // a usage error (exit 2)
			is.True(strings.HasPrefix(ue.msg, "--at "))     // naming the flag
			is.True(strings.Contains(ue.msg, c.says))       // and what is wrong
			is.True(strings.Contains(ue.msg, "\""+c.in+"")) // quoting the value
			if c.says == "is not a time" {
				is.True(strings.Contains(ue.msg, "tomorrow 09:00")) // with the forms accepted
			}
		})
	}
}

// TestParseDelay: durations with units, days in front, and refusals that name
// --delay and say the forms.
func TestParseDelay(t *testing.T) {
	for _, c := range []struct {
		in   string
		want time.Duration
	}{
		{"10m", 10 * time.Minute},
		{"90s", 90 * time.Second},
		{"1h30m", 90 * time.Minute},
		{"2d", 48 * time.Hour},
		{"1d12h", 36 * time.Hour},
		{" 250ms ", 250 * time.Millisecond},
	} {
		t.Run(c.in, func(t *testing.T) {
			is := is.New(t)
			got, err := parseDelay(c.in)
			is.NoErr(err)
			is.Equal(got, c.want) // the duration meant
		})
	}
	for _, in := range []string{"", "10", "ten minutes", "-5m", "0s", "0d", "d", "1.5d", "99999999d", "2d-1h"} {
		t.Run("bad "+in, func(t *testing.T) {
			is := is.New(t)
			_, err := parseDelay(in)
			var ue *usageError
			is.True(errors.As(err, &ue))                    // a usage error
			is.True(strings.HasPrefix(ue.msg, "--delay "))  // naming the flag
			is.True(strings.Contains(ue.msg, "\""+in+"\"")) // and the value
		})
	}
}

// TestWhenFlags: --delay and --at together are refused; neither gives no time.
func TestWhenFlags(t *testing.T) {
	is := is.New(t)
	now := time.Date(2026, 12, 7, 10, 0, 0, 0, time.UTC)
	at, _, err := (&whenFlags{}).notBefore(now)
	is.NoErr(err)
	is.True(at == nil) // no flag, no not_before
	at, _, err = (&whenFlags{delay: "10m"}).notBefore(now)
	is.NoErr(err)
	is.True(at.Equal(now.Add(10 * time.Minute))) // --delay from now
	_, _, err = (&whenFlags{delay: "10m", at: "14:30"}).notBefore(now)
	var ue *usageError
	is.True(errors.As(err, &ue))                          // both: a usage error
	is.True(strings.Contains(ue.msg, "--delay and --at")) // naming both
}
