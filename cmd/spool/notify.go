package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"spool/client"
	"spool/rpc"
)

// notifySend is the desktop notification program --notify runs (libnotify's).
const notifySend = "notify-send"

// noNotifySend says what --notify needs when notify-send is missing.
const noNotifySend = "--notify needs notify-send, which is not on PATH " +
	"(Debian, Ubuntu: apt-get install libnotify-bin; Fedora: dnf install libnotify; Arch: pacman -S libnotify)"

// findNotifySend finds notify-send in this shell's PATH.
func (a *app) findNotifySend() (string, error) {
	for _, dir := range filepath.SplitList(a.getenv("PATH")) {
		if dir == "" || !filepath.IsAbs(dir) {
			continue
		}
		p := filepath.Join(dir, notifySend)
		if executable(p) {
			return p, nil
		}
	}
	return "", errors.New(noNotifySend)
}

func executable(p string) bool {
	fi, err := os.Stat(p)
	return err == nil && !fi.IsDir() && fi.Mode()&0o111 != 0
}

// notifyArgs are notify-send's arguments for a final job: its id and state as the
// summary, its name (or command) and error as the body; a job that did not
// succeed is critical.
func notifyArgs(j *rpc.Job) []string {
	urgency, icon := "normal", "dialog-information"
	if j.State != rpc.StateSucceeded {
		urgency, icon = "critical", "dialog-error"
	}
	summary := fmt.Sprintf("spool: job %d %s", j.ID, j.State)
	body := jobTitle(j)
	if j.Error != "" && j.Error != string(j.State) {
		if body != "" {
			body += "\n"
		}
		body += oneLine(j.Error)
	}
	args := []string{"-u", urgency, "-i", icon, "--", summary}
	if body != "" {
		args = append(args, body)
	}
	return args
}

// notify shows a desktop notification for a final job; a failure is told on
// stderr and changes nothing else.
func (a *app) notify(ctx context.Context, prog string, j *rpc.Job) {
	cmd := exec.CommandContext(ctx, prog, notifyArgs(j)...)
	cmd.Env = a.environ()
	if out, err := cmd.CombinedOutput(); err != nil {
		msg := strings.TrimSpace(string(out))
		if msg == "" {
			msg = err.Error()
		}
		fmt.Fprintf(a.stderr, "spool: notify-send for job %d: %s\n", j.ID, oneLine(msg))
	}
}

// notifyLater leaves a `spool wait --notify` running in the background, on its
// own session, for submit --notify: it shows the notification once the jobs are
// final, after submit returned. It holds nothing of the daemon's: if the daemon
// or the machine stops meanwhile, no notification comes.
func (a *app) notifyLater(ids []int64) error {
	self, err := os.Executable()
	if err != nil {
		return fmt.Errorf("--notify: find spool itself: %w", err)
	}
	args := []string{"--socket", a.socketPath(), "wait", "--notify"}
	for _, id := range ids {
		args = append(args, strconv.FormatInt(id, 10))
	}
	cmd := exec.Command(self, args...)
	cmd.Env = a.environ()
	cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true}
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("--notify: start the background wait: %w", err)
	}
	return cmd.Process.Release()
}

// submittedIDs are the ids of the jobs job.submit answered with.
func submittedIDs(r *rpc.SubmitResult) []int64 {
	if r.Job != nil {
		return []int64{r.Job.ID}
	}
	ids := make([]int64, len(r.Jobs))
	for i := range r.Jobs {
		ids[i] = r.Jobs[i].ID
	}
	return ids
}

// maxNotifyWaits bounds the jobs wait --notify waits for at once.
const maxNotifyWaits = 64

// notifyEach waits for every job at once and shows each one's notification as
// it is final; wait(i, id) then gives the i-th job's outcome, in the order of ids.
// stop ends the waits that are left and waits for them.
func (a *app) notifyEach(ctx context.Context, c *client.Client, ids []int64, deadline time.Time, prog string) (wait func(int, int64) (*rpc.Job, error), stop func()) {
	type outcome struct {
		j   *rpc.Job
		err error
	}
	ctx, cancel := context.WithCancel(ctx)
	outs := make([]chan outcome, len(ids))
	var wg sync.WaitGroup
	var mu sync.Mutex // one notify-send at a time
	sem := make(chan struct{}, maxNotifyWaits)
	for i, id := range ids {
		outs[i] = make(chan outcome, 1)
		wg.Go(func() {
			sem <- struct{}{}
			defer func() { <-sem }()
			j, err := a.waitOne(ctx, c, id, deadline)
			if err == nil && j.Final() {
				mu.Lock()
				a.notify(ctx, prog, j)
				mu.Unlock()
			}
			outs[i] <- outcome{j, err}
		})
	}
	wait = func(i int, _ int64) (*rpc.Job, error) {
		o := <-outs[i]
		return o.j, o.err
	}
	stop = func() {
		cancel()
		wg.Wait()
	}
	return wait, stop
}
