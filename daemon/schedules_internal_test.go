package daemon

import (
	"testing"
	"time"

	"github.com/matryer/is"
)

// TestSlotsFallBack: in Europe/Paris, 2026-10-25 falls back from 03:00 CEST to
// 02:00 CET; the repeated hour has its slots once, the first time.
func TestSlotsFallBack(t *testing.T) {
	is := is.New(t)
	utc := func(s string) time.Time {
		tm, err := time.Parse(time.RFC3339, s)
		is.NoErr(err)
		return tm
	}
	walk := func(expr, from string, n int) []string {
		z, err := parseSchedule(expr, "Europe/Paris")
		is.NoErr(err)
		var out []string
		t := utc(from)
		for range n {
			t = z.next(t)
			out = append(out, t.Format(time.RFC3339))
		}
		return out
	}
	is.Equal(walk("30 2 * * *", "2026-10-24T10:00:00Z", 3),
		[]string{"2026-10-25T00:30:00Z", "2026-10-26T01:30:00Z", "2026-10-27T01:30:00Z"}) // once on the 25th, at 02:30 CEST
	is.Equal(walk("*/30 * * * *", "2026-10-24T23:40:00Z", 5),
		[]string{"2026-10-25T00:00:00Z", "2026-10-25T00:30:00Z", "2026-10-25T02:00:00Z", "2026-10-25T02:30:00Z", "2026-10-25T03:00:00Z"}) // 02:00 and 02:30 CET skipped
	is.Equal(walk("30 2 * * *", "2026-03-28T10:00:00Z", 2),
		[]string{"2026-03-30T00:30:00Z", "2026-03-31T00:30:00Z"}) // none on the 29th (spring forward)
	is.Equal(walk("@every 90s", "2026-03-28T10:00:00.5Z", 2),
		[]string{"2026-03-28T10:01:30Z", "2026-03-28T10:03:00Z"}) // intervals in real time, whole seconds
}
