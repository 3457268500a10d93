package main

import (
	"bufio"
	"context"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"spool/client"
	"spool/rpc"
)

// readLogVia reads a whole step log through one daemon's job.logs.
func readLogVia(ctx context.Context, t *testing.T, c *client.Client, id int64, stream string) string {
	t.Helper()
	var b strings.Builder
	off := int64(0)
	for {
		r, err := c.Logs(ctx, rpc.LogsParams{ID: id, Offset: off, Stream: stream})
		if err != nil {
			t.Fatalf("logs: %v", err)
		}
		b.WriteString(r.Data)
		if r.Offset == off {
			return b.String()
		}
		off = r.Offset
	}
}

// TestClusterLogs: the log of a step that runs on daemon a is read, as it
// grows and whole once the step is over, through daemon b, which started
// after the step and never ran it: by job.logs (merged, stderr, last lines)
// and by spool logs -f. Both read what a's clients read, at the same offsets.
func TestClusterLogs(t *testing.T) {
	dsn := pgServers.DB(t)
	a := newNode(t, dsn, "a")
	ctx := tctx(t)
	ca := a.client()
	const n = 40 // lines, one each 0.1 s
	script := `i=1; while [ $i -le ` + strconv.Itoa(n) + ` ]; do echo "line $i"; echo "warn $i" >&2; i=$((i+1)); sleep 0.1; done`
	res, err := ca.Submit(ctx, rpc.SubmitParams{Job: &rpc.Spec{Steps: []rpc.Step{sh(script)}}})
	if err != nil {
		t.Fatalf("submit: %v", err)
	}
	id := res.Job.ID
	waitRunning(t, ca, id)

	b := newNode(t, dsn, "b")
	cb := b.client()
	// spool logs -f through b, its output timed as it comes.
	cli := exec.CommandContext(ctx, b.bins.spool, "--socket", b.socket, "logs", "-f", strconv.FormatInt(id, 10))
	out, err := cli.StdoutPipe()
	if err != nil {
		t.Fatalf("pipe: %v", err)
	}
	if err := cli.Start(); err != nil {
		t.Fatalf("start spool logs -f: %v", err)
	}
	type seen struct {
		at   time.Time
		line string
	}
	var cliMu sync.Mutex
	var cliLines []seen
	cliDone := make(chan struct{})
	go func() {
		defer close(cliDone)
		sc := bufio.NewScanner(out)
		for sc.Scan() {
			cliMu.Lock()
			cliLines = append(cliLines, seen{time.Now(), sc.Text()})
			cliMu.Unlock()
		}
	}()

	// job.logs through b, as a client that polls it does.
	var viaB strings.Builder
	off := int64(0)
	grewWhileRunning := 0
	var ended time.Time
	for {
		j, err := cb.Get(ctx, rpc.GetParams{ID: id})
		if err != nil {
			t.Fatalf("get through b: %v", err)
		}
		running := j.State == rpc.StateRunning
		if !running && ended.IsZero() {
			ended = time.Now()
		}
		r, err := cb.Logs(ctx, rpc.LogsParams{ID: id, Offset: off})
		if err != nil {
			t.Fatalf("logs through b: %v", err)
		}
		viaB.WriteString(r.Data)
		if r.Offset > off && running {
			grewWhileRunning++
		}
		off = r.Offset
		if r.EOF {
			if running {
				t.Fatalf("eof while the step runs")
			}
			break
		}
		time.Sleep(150 * time.Millisecond)
	}
	if grewWhileRunning < 2 {
		t.Errorf("the log read through b grew %d times while the step ran: not live", grewWhileRunning)
	}
	j, err := cb.Wait(ctx, rpc.WaitParams{ID: id})
	if err != nil || j.State != rpc.StateSucceeded {
		t.Fatalf("wait through b: %v %+v", err, j)
	}

	// The whole log, the same through both, at the same offsets.
	viaA := readLogVia(ctx, t, ca, id, "")
	var want strings.Builder
	for i := 1; i <= n; i++ {
		want.WriteString("line " + strconv.Itoa(i) + "\n")
	}
	if got := onlyPrefix(viaA, "line "); got != want.String() {
		t.Fatalf("the log through a lacks lines:\n%s", viaA)
	}
	if viaB.String() != viaA {
		t.Fatalf("through b the log is\n%q\nthrough a\n%q", viaB.String(), viaA)
	}
	if got := readLogVia(ctx, t, cb, id, ""); got != viaA {
		t.Fatalf("read again through b:\n%q", got)
	}
	errA := readLogVia(ctx, t, ca, id, rpc.StreamStderr)
	if !strings.HasSuffix(errA, "warn "+strconv.Itoa(n)+"\n") || strings.Contains(errA, "line") {
		t.Fatalf("stderr through a:\n%q", errA)
	}
	if errB := readLogVia(ctx, t, cb, id, rpc.StreamStderr); errB != errA {
		t.Fatalf("stderr through b:\n%q\nthrough a:\n%q", errB, errA)
	}
	for _, p := range []rpc.LogsParams{{ID: id, Lines: 3}, {ID: id, Offset: 10, Limit: 20}, {ID: id, Stream: rpc.StreamStderr, Lines: 2}} {
		ra, err := ca.Logs(ctx, p)
		if err != nil {
			t.Fatalf("logs through a: %v", err)
		}
		rb, err := cb.Logs(ctx, p)
		if err != nil {
			t.Fatalf("logs through b: %v", err)
		}
		if *ra != *rb {
			t.Fatalf("logs %+v: through a %+v, through b %+v", p, *ra, *rb)
		}
	}

	// spool logs -f through b: live, then whole, and it ends with the job.
	select {
	case <-cliDone:
	case <-time.After(20 * time.Second):
		t.Fatalf("spool logs -f through b did not end with the job")
	}
	if err := cli.Wait(); err != nil {
		t.Fatalf("spool logs -f through b: %v", err)
	}
	cliMu.Lock()
	defer cliMu.Unlock()
	var printed strings.Builder
	early := 0
	for _, s := range cliLines {
		printed.WriteString(s.line + "\n")
		if s.at.Before(ended.Add(-time.Second)) {
			early++
		}
	}
	if printed.String() != viaA {
		t.Fatalf("spool logs -f through b printed\n%q\nwant\n%q", printed.String(), viaA)
	}
	t.Logf("through b: job.logs grew %d times while the step ran; spool logs -f printed %d of %d lines a second or more before its end", grewWhileRunning, early, len(cliLines))
	if early < n/4 {
		t.Errorf("spool logs -f through b printed %d lines a second before the step ended: not live", early)
	}
	if got := runCLI(t, b, 0, "logs", "--stderr", strconv.FormatInt(id, 10)); got != errA {
		t.Fatalf("spool logs --stderr through b:\n%q", got)
	}
}

// onlyPrefix keeps the lines of s that start with prefix.
func onlyPrefix(s, prefix string) string {
	var b strings.Builder
	for _, l := range strings.SplitAfter(s, "\n") {
		if strings.HasPrefix(l, prefix) {
			b.WriteString(l)
		}
	}
	return b.String()
}
