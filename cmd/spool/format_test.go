package main

import (
	"bytes"
	"strings"
	"testing"
	"time"
	"unicode/utf8"

	"github.com/matryer/is"

	"spool/rpc"
)

func TestHumanDuration(t *testing.T) {
	is := is.New(t)
	for d, want := range map[time.Duration]string{
		0:                                    "0ms",
		250 * time.Millisecond:               "250ms",
		3 * time.Second:                      "3s",
		3*time.Second + 900*time.Millisecond: "3s",
		59 * time.Second:                     "59s",
		2*time.Minute + 10*time.Second:       "2m10s",
		2*time.Minute + 5*time.Second:        "2m05s",
		time.Hour + 2*time.Minute + 59*time.Second: "1h02m",
		23*time.Hour + 59*time.Minute:              "23h59m",
		50 * time.Hour:                             "2d02h",
		-time.Second:                               "0ms",
	} {
		is.Equal(humanDuration(d), want) // durations read like "2m10s" and "1h02m"
	}
}

func TestHumanAge(t *testing.T) {
	is := is.New(t)
	now := time.Date(2026, 11, 30, 12, 0, 0, 0, time.UTC)
	for d, want := range map[time.Duration]string{
		0:                            "just now",
		-5 * time.Second:             "just now",
		5 * time.Second:              "5s ago",
		3 * time.Minute:              "3m ago",
		2*time.Hour + 59*time.Minute: "2h ago",
		49 * time.Hour:               "2d ago",
	} {
		is.Equal(humanAge(now.Add(-d), now), want) // ages read like "5s ago"
	}
}

func TestCut(t *testing.T) {
	is := is.New(t)
	is.Equal(cut("hello", 10), "hello")       // short text stays
	is.Equal(cut("hello", 5), "hello")        // text that fits exactly stays
	is.Equal(cut("hello world", 6), "hello…") // long text ends with an ellipsis
	is.Equal(cut("héllo wörld", 4), "hél…")   // counted in characters, not bytes
	is.Equal(cut("hello", 1), "…")            // one cell
	is.Equal(cut("hello", 0), "")             // no room
}

func TestTableWidths(t *testing.T) {
	is := is.New(t)
	now := time.Date(2026, 11, 30, 12, 0, 0, 0, time.UTC)
	start := now.Add(-3 * time.Minute)
	jobs := []rpc.Job{
		{ID: 1, State: rpc.StateRunning, Queue: "default", Name: strings.Repeat("long name ", 20), SubmittedAt: now.Add(-5 * time.Minute), StartedAt: &start},
		{ID: 12345, State: rpc.StateQueued, Queue: "q", Name: "short", SubmittedAt: now.Add(-5 * time.Second), Waiting: ptr("capacity")},
	}
	for _, width := range []int{60, 80, 120} {
		var b bytes.Buffer
		jobsTable(jobs, now).render(&b, terminal{width: width})
		lines := strings.Split(strings.TrimRight(b.String(), "\n"), "\n")
		is.Equal(len(lines), 3) // a header and a line per job
		for _, l := range lines {
			is.True(utf8.RuneCountInString(l) <= width) // every line fits
		}
		is.True(strings.Contains(lines[1], "…"))                                       // the long name is cut
		is.True(strings.Contains(lines[1], "3m00s"))                                   // the running job's duration
		is.True(strings.Contains(lines[1], "5m ago"))                                  // its age
		is.True(strings.Contains(lines[2], "queued (capacity)"))                       // why a queued job waits
		is.Equal(strings.Index(lines[0], "STATE"), strings.Index(lines[1], "running")) // columns align
	}

	var b bytes.Buffer
	jobsTable(jobs, now).render(&b, terminal{})
	is.True(!strings.Contains(b.String(), "…"))                                                // without a width nothing is cut
	is.True(strings.Contains(b.String(), strings.TrimSpace(strings.Repeat("long name ", 20)))) // the whole name

	b.Reset()
	jobsTable(jobs, now).render(&b, terminal{width: 200, color: true, tty: true})
	is.True(strings.Contains(b.String(), "\x1b[36mrunning")) // colour on a terminal
	lines := strings.Split(b.String(), "\n")
	plain := stripANSI(lines[1])
	is.Equal(strings.Index(stripANSI(lines[0]), "QUEUE"), strings.Index(plain, "default")) // colour does not shift columns
}

func stripANSI(s string) string {
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		if s[i] == 0x1b {
			for i < len(s) && s[i] != 'm' {
				i++
			}
			continue
		}
		b.WriteByte(s[i])
	}
	return b.String()
}

func ptr[T any](v T) *T { return &v }

func TestCommandLine(t *testing.T) {
	is := is.New(t)
	is.Equal(commandLine([]string{"make", "-j4", "all"}), "make -j4 all")                 // plain words stay
	is.Equal(commandLine([]string{"echo", "a b", "it's", ""}), `echo 'a b' 'it'\''s' ''`) // others are quoted for a shell
}

func TestDetectTerminal(t *testing.T) {
	is := is.New(t)
	var b bytes.Buffer
	env := map[string]string{"COLUMNS": "100"}
	term := detectTerminal(&b, func(k string) string { return env[k] })
	is.True(!term.tty)        // a buffer is not a terminal
	is.True(!term.color)      // so no colour
	is.Equal(term.width, 100) // COLUMNS sets the width
	term = detectTerminal(&b, func(string) string { return "" })
	is.Equal(term.width, 0) // no limit otherwise
}

func TestProgress(t *testing.T) {
	is := is.New(t)
	done, total := int64(40), int64(100)
	p := &rpc.Progress{Done: &done, Total: &total, Message: "compiling"}
	is.Equal(progressPercent(p), 40)                           // percent from done/total
	is.Equal(progressText(p), "40/100 40% compiling")          // for people
	is.Equal(progressBar(50, 10), "[#####.....]")              // a bar
	is.Equal(progressPercent(&rpc.Progress{Message: "x"}), -1) // unknown
}
