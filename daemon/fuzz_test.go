package daemon_test

import (
	"fmt"
	"math"
	"strconv"
	"strings"
	"testing"
	"unicode/utf8"

	"spool/daemon"
	"spool/rpc"
)

// formatProgress writes p back as a progress line.
func formatProgress(p rpc.Progress) string {
	var head string
	switch {
	case p.Done != nil:
		head = fmt.Sprintf("%d/%d", *p.Done, *p.Total)
	case p.Percent != nil:
		head = strconv.FormatFloat(*p.Percent, 'g', -1, 64) + "%"
	default:
		head = "-"
	}
	if p.Message == "" {
		return head
	}
	return head + " " + p.Message
}

// FuzzParseProgress checks the progress-line parser: it never panics, what it
// accepts is one of the three forms with numbers in range and a message within
// its bound, line ends do not matter, and an accepted line written back parses
// to the same progress.
func FuzzParseProgress(f *testing.F) {
	for _, s := range []string{
		"3/10 compiling", "100%", "42.5% halfway there", "- just a message", "-", "- ",
		"0/0", "5/3 over", "-1/3", "1/-3", "NaN%", "Inf%", "101%", "-0%", "1e2%", "0x1p-2%",
		"+5/+10", "7/10\r\n", "50%\n", "\xff\xfe", "- caf\xc3\xa9", "garbage", "", "/", "%",
		"1/2/3 x", "9223372036854775807/1", "1/9223372036854775807", "- " + strings.Repeat("é", 600),
		"12%  two  spaces ", "3/4\tTab", "- " + strings.Repeat("a", 1023) + " b", "1/2 " + strings.Repeat("a", 1023) + "\f\fb",
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, line string) {
		p, ok := daemon.ParseProgress(line)
		p2, ok2 := daemon.ParseProgress(strings.TrimRight(line, "\r\n") + "\r\n")
		if ok != ok2 || formatProgress(p) != formatProgress(p2) {
			t.Fatalf("%q and the same line ended by CRLF parse differently: %v %+v, %v %+v", line, ok, p, ok2, p2)
		}
		if !ok {
			return
		}
		if !utf8.ValidString(line) {
			t.Fatalf("accepted invalid UTF-8 %q", line)
		}
		if len(p.Message) > 1024 {
			t.Fatalf("message of %d bytes passed the bound", len(p.Message))
		}
		if p.Message != strings.TrimSpace(p.Message) {
			t.Fatalf("message %q is not trimmed", p.Message)
		}
		switch {
		case p.Done != nil || p.Total != nil:
			if p.Done == nil || p.Total == nil || *p.Done < 0 || *p.Total <= 0 {
				t.Fatalf("%q: done/total out of range: %+v", line, p)
			}
			if p.Percent == nil || *p.Percent < 0 || *p.Percent > 100 || math.IsNaN(*p.Percent) {
				t.Fatalf("%q: done/total without a percent in range", line)
			}
		case p.Percent != nil:
			if *p.Percent < 0 || *p.Percent > 100 || math.IsNaN(*p.Percent) {
				t.Fatalf("%q: percent %v out of range", line, *p.Percent)
			}
		default:
			if p.Message == "" {
				t.Fatalf("%q: accepted with neither numbers nor message", line)
			}
		}
		if !utf8.ValidString(p.Message) {
			t.Fatalf("%q: the message %q is not valid UTF-8", line, p.Message)
		}
		back := formatProgress(p)
		q, ok := daemon.ParseProgress(back)
		if !ok || formatProgress(q) != back {
			t.Fatalf("%q parsed to %+v, written back as %q, which parses to %v %+v", line, p, back, ok, q)
		}
	})
}

// TestParseProgressCutsOnCharacter: a message over 1 KiB is cut to 1 KiB, and
// the cut must not split a character (the message goes to watchers as JSON text).
func TestParseProgressCutsOnCharacter(t *testing.T) {
	p, ok := daemon.ParseProgress("- x" + strings.Repeat("é", 600)) // 1201 bytes: the cut at 1024 falls inside a character
	if !ok {
		t.Fatal("a long message line is progress")
	}
	if !utf8.ValidString(p.Message) {
		t.Fatalf("the message cut at 1 KiB split a character: %q", p.Message[len(p.Message)-4:])
	}
	if len(p.Message) > 1024 {
		t.Fatalf("message of %d bytes passed the bound", len(p.Message))
	}
}
