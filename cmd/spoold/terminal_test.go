package main

import (
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/matryer/is"

	"spool/rpc"
)

// screen is a tmux server of the test's own with one window of a fixed size.
type screen struct {
	t    *testing.T
	tmux string
	sock string
}

// newScreen starts a tmux server on a socket in dir, running command in a window of
// 120x30; the server is killed at the end of the test.
func newScreen(t *testing.T, dir, command string) *screen {
	t.Helper()
	path, err := exec.LookPath("tmux")
	if err != nil {
		t.Skip("tmux is not installed (Debian: apt-get install tmux)")
	}
	s := &screen{t: t, tmux: path, sock: filepath.Join(dir, "tmux.sock")}
	cmd := exec.Command(path, "-S", s.sock, "-f", "/dev/null", "new-session", "-d", "-x", "120", "-y", "30", command)
	cmd.Env = append(os.Environ(), "TERM=xterm-256color")
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("tmux new-session: %v\n%s", err, out)
	}
	t.Cleanup(func() { _ = exec.Command(path, "-S", s.sock, "kill-server").Run() })
	return s
}

// capture returns the visible screen, a string per row, trailing blank rows cut.
func (s *screen) capture() []string {
	s.t.Helper()
	out, err := exec.Command(s.tmux, "-S", s.sock, "capture-pane", "-p").Output()
	if err != nil {
		s.t.Fatalf("tmux capture-pane: %v", err)
	}
	rows := strings.Split(strings.TrimRight(string(out), "\n "), "\n")
	return rows
}

// waitFor captures the screen until ok says yes, and returns that screen.
func (s *screen) waitFor(what string, ok func(rows []string) bool) []string {
	s.t.Helper()
	deadline := time.Now().Add(60 * time.Second)
	for {
		rows := s.capture()
		if ok(rows) {
			return rows
		}
		if time.Now().After(deadline) {
			s.t.Fatalf("the screen never showed %s; it shows:\n%s", what, strings.Join(rows, "\n"))
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func countRows(rows []string, sub string) int {
	n := 0
	for _, r := range rows {
		if strings.Contains(r, sub) {
			n++
		}
	}
	return n
}

// TestWatchLiveView runs spool watch on a terminal (tmux) against a real daemon
// for two jobs, one that reports progress and one that only prints, and reads the
// screen: a live line per job redrawn in place while they run (a bar for the
// first, the elapsed time and last output line for the second), then the
// outcomes, and the live lines gone.
func TestWatchLiveView(t *testing.T) {
	is := is.New(t)
	p := newDaemon(t)
	c := p.client()
	ctx := tctx(t)
	dir := shortDir(t)
	gate := filepath.Join(dir, "gate")
	wait := `while [ ! -e ` + gate + ` ]; do sleep 0.05; done`
	// 25 progress lines, a stop until the test opens the gate, 25 more.
	progress := `for i in $(seq 1 50); do
  echo "$i/50 working" >&$SPOOL_PROGRESS_FD
  if [ "$i" = 25 ]; then ` + wait + `; fi
  sleep 0.02
done
echo finished`
	quiet := `echo hello-from-the-quiet-one; ` + wait
	res, err := c.Submit(ctx, rpc.SubmitParams{Jobs: []rpc.Spec{
		{Name: "progress", Steps: []rpc.Step{sh(progress)}},
		{Name: "quiet", Steps: []rpc.Step{sh(quiet)}},
	}})
	is.NoErr(err)
	idA, idB := strconv.FormatInt(res.Jobs[0].ID, 10), strconv.FormatInt(res.Jobs[1].ID, 10)

	command := p.bins.spool + " --socket " + p.socket + " watch " + idA + " " + idB + `; echo "EXIT=$?"; sleep 600`
	scr := newScreen(t, dir, command)

	rows := scr.waitFor("a live line for each job", func(rows []string) bool {
		return countRows(rows, "25/50 50% working") == 1 && countRows(rows, "hello-from-the-quiet-one") == 1
	})
	is.Equal(countRows(rows, "/50"), 1)                      // one progress line, redrawn in place, not a line per update
	is.Equal(countRows(rows, "[##########..........]"), 1)   // a bar, half full
	is.Equal(countRows(rows, "hello-from-the-quiet-one"), 1) // the quiet job's line: its last output
	for _, r := range rows {
		if strings.Contains(r, "hello-from-the-quiet-one") {
			is.True(strings.HasPrefix(r, idB+" "))  // on the quiet job's line
			is.True(strings.Contains(r, "running")) // saying it runs
		}
	}

	is.NoErr(os.WriteFile(gate, nil, 0o600))
	rows = scr.waitFor("the exit status", func(rows []string) bool { return countRows(rows, "EXIT=") == 1 })
	is.Equal(countRows(rows, "EXIT=0"), 1)        // watch exits 0: both jobs succeeded
	is.Equal(countRows(rows, "/50"), 0)           // the live lines are cleared
	is.Equal(countRows(rows, "hello-from"), 0)    // both of them
	is.Equal(countRows(rows, "step_finished"), 2) // each job's step end
	outcomes := 0
	for _, r := range rows {
		f := strings.Fields(r)
		if len(f) >= 3 && f[2] == "succeeded" && (f[1] == idA || f[1] == idB) {
			outcomes++
		}
	}
	is.Equal(outcomes, 2)   // the outcome of each job
	is.True(len(rows) < 12) // a few lines in all, not one per progress report
}
