// Command testskips reads `go test -json` on standard input, prints what `go test`
// without -v would (each package's result, and the output of failed tests), and
// ends with a summary of the tests that skipped and why, so that a run that
// skipped (a tool not installed, -short) says so.
package main

import (
	"bufio"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"sort"
	"strings"
)

// event is one line of `go test -json` (see go doc test2json).
type event struct {
	Action  string
	Package string
	Test    string
	Output  string
}

// skip is a skipped test and the reason it logged.
type skip struct {
	pkg, test, reason string
}

func main() {
	skips, err := summarize(os.Stdin, os.Stdout)
	if err != nil {
		fmt.Fprintf(os.Stderr, "testskips: %v\n", err)
		os.Exit(1)
	}
	printSkips(os.Stdout, skips)
}

// summarize copies the output of the events in r to w and returns the skips.
func summarize(r io.Reader, w io.Writer) ([]skip, error) {
	out := bufio.NewWriter(w)
	defer out.Flush()
	logs := map[string][]string{} // package/test -> its output lines
	var skips []skip
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 1<<20), 16<<20)
	for sc.Scan() {
		line := sc.Bytes()
		var ev event
		if json.Unmarshal(line, &ev) != nil || ev.Action == "" {
			out.Write(append(line, '\n')) // not JSON: a build error, say
			continue
		}
		key := ev.Package + "/" + ev.Test
		switch ev.Action {
		case "output":
			if ev.Test != "" {
				logs[key] = append(logs[key], ev.Output)
			} else if ev.Output != "PASS\n" && !strings.HasPrefix(ev.Output, "=== ") {
				out.WriteString(ev.Output)
			}
		case "skip":
			if ev.Test != "" {
				skips = append(skips, skip{pkg: ev.Package, test: ev.Test, reason: reason(logs[key])})
			}
			delete(logs, key)
		case "fail":
			for _, l := range logs[key] {
				out.WriteString(l)
			}
			delete(logs, key)
		case "pass":
			delete(logs, key)
		}
	}
	return skips, sc.Err()
}

// reason is what a skipped test logged: its lines other than === and --- ones.
func reason(lines []string) string {
	var parts []string
	for _, l := range lines {
		t := strings.TrimSpace(l)
		if t == "" || strings.HasPrefix(t, "=== ") || strings.HasPrefix(t, "--- ") {
			continue
		}
		// "file_test.go:30: tmux is not installed" -> the message.
		if i := strings.Index(t, ".go:"); i >= 0 {
			if j := strings.Index(t[i+4:], ": "); j >= 0 {
				t = t[i+4+j+2:]
			}
		}
		parts = append(parts, t)
	}
	if len(parts) == 0 {
		return "(no reason given)"
	}
	return strings.Join(parts, "; ")
}

// printSkips writes the summary: each skipped test with its reason, grouped by
// reason.
func printSkips(w io.Writer, skips []skip) {
	if len(skips) == 0 {
		fmt.Fprintln(w, "\nskipped tests: none")
		return
	}
	sort.Slice(skips, func(i, j int) bool {
		if skips[i].reason != skips[j].reason {
			return skips[i].reason < skips[j].reason
		}
		return skips[i].pkg+skips[i].test < skips[j].pkg+skips[j].test
	})
	fmt.Fprintf(w, "\nskipped tests: %d\n", len(skips))
	for _, s := range skips {
		fmt.Fprintf(w, "  %s %s: %s\n", strings.TrimPrefix(s.pkg, "spool/"), s.test, s.reason)
	}
}
