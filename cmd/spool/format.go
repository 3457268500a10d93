package main

import (
	"fmt"
	"io"
	"os"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"

	"golang.org/x/sys/unix"

	"spool/rpc"
)

// terminal is what the command line knows of its standard output.
type terminal struct {
	tty   bool // stdout is a terminal
	color bool // colour is wanted: a terminal, and NO_COLOR unset
	width int  // columns to fit tables in; 0: no limit
}

// detectTerminal looks at stdout: a terminal when the window size can be read from
// it. COLUMNS, when set, gives the width.
func detectTerminal(stdout io.Writer, getenv func(string) string) terminal {
	var t terminal
	if f, ok := stdout.(*os.File); ok {
		if ws, err := unix.IoctlGetWinsize(int(f.Fd()), unix.TIOCGWINSZ); err == nil {
			t.tty = true
			t.width = int(ws.Col)
		}
	}
	if n, err := strconv.Atoi(getenv("COLUMNS")); err == nil && n > 0 {
		t.width = n
	}
	if t.tty && t.width <= 0 {
		t.width = 80
	}
	t.color = t.tty && getenv("NO_COLOR") == "" && getenv("TERM") != "dumb"
	return t
}

// ANSI styles.
const (
	styleNone   = ""
	styleBold   = "1"
	styleDim    = "2"
	styleRed    = "31"
	styleGreen  = "32"
	styleYellow = "33"
	styleBlue   = "34"
	styleCyan   = "36"
)

// paint wraps s in an ANSI style when colour is on.
func (t terminal) paint(style, s string) string {
	if !t.color || style == styleNone || s == "" {
		return s
	}
	return "\x1b[" + style + "m" + s + "\x1b[0m"
}

// stateStyle is the colour of a job or step state.
func stateStyle(s rpc.State) string {
	switch s {
	case rpc.StateSucceeded:
		return styleGreen
	case rpc.StateFailed:
		return styleRed
	case rpc.StateCancelled:
		return styleYellow
	case rpc.StateRunning:
		return styleCyan
	case rpc.StateRetrying:
		return styleYellow
	case rpc.StateQueued, rpc.StatePending, rpc.StateSkipped:
		return styleDim
	}
	return styleNone
}

// humanDuration is a duration for people: "250ms", "3s", "2m10s", "1h02m", "3d04h".
func humanDuration(d time.Duration) string {
	if d < 0 {
		d = 0
	}
	switch {
	case d < time.Second:
		return strconv.FormatInt(d.Milliseconds(), 10) + "ms"
	case d < time.Minute:
		return strconv.FormatInt(int64(d/time.Second), 10) + "s"
	case d < time.Hour:
		return fmt.Sprintf("%dm%02ds", d/time.Minute, d%time.Minute/time.Second)
	case d < 24*time.Hour:
		return fmt.Sprintf("%dh%02dm", d/time.Hour, d%time.Hour/time.Minute)
	}
	return fmt.Sprintf("%dd%02dh", d/(24*time.Hour), d%(24*time.Hour)/time.Hour)
}

// humanAge says how long ago t was: "5s ago", "3m ago", "2h ago", "4d ago".
func humanAge(t, now time.Time) string {
	d := now.Sub(t)
	switch {
	case d < time.Second:
		return "just now"
	case d < time.Minute:
		return strconv.FormatInt(int64(d/time.Second), 10) + "s ago"
	case d < time.Hour:
		return strconv.FormatInt(int64(d/time.Minute), 10) + "m ago"
	case d < 24*time.Hour:
		return strconv.FormatInt(int64(d/time.Hour), 10) + "h ago"
	}
	return strconv.FormatInt(int64(d/(24*time.Hour)), 10) + "d ago"
}

// span is how long something ran: from start to end, or to now while it runs; "-"
// when it did not start.
func span(start, end *time.Time, now time.Time) string {
	if start == nil {
		return "-"
	}
	stop := now
	if end != nil {
		stop = *end
	}
	return humanDuration(stop.Sub(*start))
}

// cut shortens s to at most n characters, ending it with "…" when cut.
func cut(s string, n int) string {
	if n <= 0 {
		return ""
	}
	if utf8.RuneCountInString(s) <= n {
		return s
	}
	if n == 1 {
		return "…"
	}
	r := []rune(s)
	return string(r[:n-1]) + "…"
}

// oneLine replaces line breaks and tabs so that s fits on one line.
func oneLine(s string) string {
	return strings.Map(func(r rune) rune {
		switch r {
		case '\n', '\r', '\t':
			return ' '
		}
		return r
	}, s)
}

// cell is one cell of a table: its text and its style.
type cell struct {
	text  string
	style string
}

// table is rows of cells under headers; the flex column is cut to fit the width.
type table struct {
	headers []string
	rows    [][]cell
	flex    int // index of the column that shrinks; -1: none
}

const (
	columnGap = 2
	minFlex   = 6
)

// widths computes the column widths for a total width (0: no limit).
func (tb *table) widths(total int) []int {
	w := make([]int, len(tb.headers))
	for i, h := range tb.headers {
		w[i] = utf8.RuneCountInString(h)
	}
	for _, row := range tb.rows {
		for i, c := range row {
			if i < len(w) {
				w[i] = max(w[i], utf8.RuneCountInString(c.text))
			}
		}
	}
	if total <= 0 || tb.flex < 0 || tb.flex >= len(w) {
		return w
	}
	sum := columnGap * (len(w) - 1)
	for _, n := range w {
		sum += n
	}
	if sum > total {
		w[tb.flex] = max(w[tb.flex]-(sum-total), min(minFlex, w[tb.flex]))
	}
	return w
}

// render writes the table fitted to t's width, styled when t has colour.
func (tb *table) render(w io.Writer, t terminal) {
	widths := tb.widths(t.width)
	var b strings.Builder
	line := func(cells []cell) {
		var ln strings.Builder
		for i, c := range cells {
			if i >= len(widths) {
				break
			}
			text := cut(c.text, widths[i])
			pad := widths[i] - utf8.RuneCountInString(text)
			if i > 0 {
				ln.WriteString(strings.Repeat(" ", columnGap))
			}
			ln.WriteString(t.paint(c.style, text))
			if i < len(cells)-1 {
				ln.WriteString(strings.Repeat(" ", pad))
			}
		}
		b.WriteString(strings.TrimRight(ln.String(), " "))
		b.WriteByte('\n')
	}
	head := make([]cell, len(tb.headers))
	for i, h := range tb.headers {
		head[i] = cell{text: h, style: styleBold}
	}
	line(head)
	for _, row := range tb.rows {
		line(row)
	}
	io.WriteString(w, b.String())
}

// quoteArg quotes a command-line argument for a POSIX shell when it needs it.
func quoteArg(s string) string {
	if s == "" {
		return "''"
	}
	safe := true
	for _, r := range s {
		if !(r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || strings.ContainsRune("-_./=:,+@%^", r)) {
			safe = false
			break
		}
	}
	if safe {
		return s
	}
	return "'" + strings.ReplaceAll(s, "'", `'\''`) + "'"
}

// commandLine is argv as one might type it.
func commandLine(argv []string) string {
	parts := make([]string, len(argv))
	for i, a := range argv {
		parts[i] = quoteArg(a)
	}
	return strings.Join(parts, " ")
}

// stepSummary says what a step does, in one line.
func stepSummary(s rpc.Step) string {
	switch {
	case s.Exec != nil:
		return commandLine(s.Exec.Argv)
	case s.Shell != nil:
		return oneLine(strings.TrimSpace(s.Shell.Script))
	case s.Sleep != nil:
		return "sleep " + s.Sleep.Duration.String()
	case s.HTTP != nil:
		method := s.HTTP.Method
		if method == "" {
			method = "GET"
		}
		return method + " " + s.HTTP.URL
	}
	return ""
}

// jobTitle is the job's name, or else what its first step does.
func jobTitle(j *rpc.Job) string {
	if j.Name != "" {
		return oneLine(j.Name)
	}
	if j.Spec != nil && len(j.Spec.Steps) > 0 {
		return stepSummary(j.Spec.Steps[0])
	}
	if len(j.Steps) > 0 {
		return j.Steps[0].Name + " (" + j.Steps[0].Kind + ")"
	}
	return ""
}

// stateText is the job's state with why it waits, or its progress.
func stateText(j *rpc.Job) string {
	s := string(j.State)
	if j.PausedAt != nil {
		return s + " (paused)"
	}
	if j.State == rpc.StateQueued && j.Waiting != nil && *j.Waiting != "" {
		return s + " (" + *j.Waiting + ")"
	}
	if j.State == rpc.StateRunning && j.Progress != nil {
		if p := progressPercent(j.Progress); p >= 0 {
			return fmt.Sprintf("%s %d%%", s, p)
		}
	}
	return s
}

// progressPercent is the progress in whole percent, or -1 when unknown.
func progressPercent(p *rpc.Progress) int {
	switch {
	case p == nil:
		return -1
	case p.Percent != nil:
		return int(*p.Percent)
	case p.Done != nil && p.Total != nil && *p.Total > 0:
		return int(*p.Done * 100 / *p.Total)
	}
	return -1
}

// progressText is a progress for people: "40/100 40% compiling".
func progressText(p *rpc.Progress) string {
	if p == nil {
		return ""
	}
	var parts []string
	if p.Done != nil && p.Total != nil {
		parts = append(parts, fmt.Sprintf("%d/%d", *p.Done, *p.Total))
	} else if p.Done != nil {
		parts = append(parts, strconv.FormatInt(*p.Done, 10))
	}
	if pc := progressPercent(p); pc >= 0 {
		parts = append(parts, fmt.Sprintf("%d%%", pc))
	}
	if p.Message != "" {
		parts = append(parts, oneLine(p.Message))
	}
	return strings.Join(parts, " ")
}

// progressBar draws a bar of width cells for a percentage.
func progressBar(percent, width int) string {
	percent = min(max(percent, 0), 100)
	full := percent * width / 100
	return "[" + strings.Repeat("#", full) + strings.Repeat(".", width-full) + "]"
}

// jobsTable is the table of status: ID, STATE, QUEUE, NAME/COMMAND, AGE, DURATION.
func jobsTable(jobs []rpc.Job, now time.Time) *table {
	tb := &table{headers: []string{"ID", "STATE", "QUEUE", "NAME/COMMAND", "AGE", "DURATION"}, flex: 3}
	for i := range jobs {
		j := &jobs[i]
		tb.rows = append(tb.rows, []cell{
			{text: strconv.FormatInt(j.ID, 10)},
			{text: stateText(j), style: stateStyle(j.State)},
			{text: j.Queue},
			{text: jobTitle(j)},
			{text: humanAge(j.SubmittedAt, now), style: styleDim},
			{text: span(j.StartedAt, j.FinishedAt, now)},
		})
	}
	return tb
}
