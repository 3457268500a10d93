package main

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/matryer/is"
	"go.etcd.io/bbolt"

	"spool/rpc"
)

// mountTmpfs mounts a tmpfs of size at a new folder, or skips the test saying why.
func mountTmpfs(t *testing.T, size string) string {
	t.Helper()
	dir := filepath.Join(shortDir(t), "fs")
	if err := os.Mkdir(dir, 0o700); err != nil {
		t.Fatal(err)
	}
	out, err := exec.Command("mount", "-t", "tmpfs", "-o", "size="+size+",mode=0700", "tmpfs", dir).CombinedOutput()
	if err != nil {
		t.Skipf("cannot mount a small tmpfs to fill (needs root and CAP_SYS_ADMIN): %v %s", err, out)
	}
	t.Cleanup(func() {
		if out, err := exec.Command("umount", "-l", dir).CombinedOutput(); err != nil {
			t.Errorf("umount %s: %v %s", dir, err, out)
		}
	})
	return dir
}

// fill writes a file until the file system is full.
func fill(t *testing.T, path string) {
	t.Helper()
	f, err := os.Create(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	buf := make([]byte, 64<<10)
	for {
		if _, err := f.Write(buf); err != nil {
			if !errors.Is(err, syscall.ENOSPC) {
				t.Fatalf("fill: %v", err)
			}
			return
		}
	}
}

// TestDiskFull runs the daemon on a 2 MiB tmpfs, fills it while a job runs,
// and checks that submits answer 1004 and change nothing, that the job that
// finishes meanwhile is not lost, that the database stays consistent, and that
// everything works again once there is room.
func TestDiskFull(t *testing.T) {
	is := is.New(t)
	b := buildBins(t)
	mnt := mountTmpfs(t, "2m")
	dir := shortDir(t)
	p := &daemonProc{t: t, bins: b, state: filepath.Join(mnt, "state"), socket: filepath.Join(dir, "run", "s.sock")}
	p.start()
	t.Cleanup(p.kill)
	c := p.client()
	ctx := tctx(t)

	before := rpc.Spec{Name: "before", Steps: []rpc.Step{sh("echo before")}}
	res, err := c.Submit(ctx, rpc.SubmitParams{Job: &before})
	is.NoErr(err) // a submit with room
	first := res.Job.ID
	_, err = c.Wait(ctx, rpc.WaitParams{ID: first})
	is.NoErr(err)
	gate := filepath.Join(dir, "gate")
	runs := filepath.Join(dir, "runs")
	running := rpc.Spec{Name: "finishes-while-full", Steps: []rpc.Step{sh("echo run >> " + runs + "; while [ ! -e " + gate + " ]; do sleep 0.05; done; echo done")}}
	res, err = c.Submit(ctx, rpc.SubmitParams{Job: &running})
	is.NoErr(err)
	runID := res.Job.ID
	waitRunning(t, c, runID)

	filler := filepath.Join(mnt, "filler")
	fill(t, filler)
	// Submits fail with 1004 once the database cannot grow; the first few may
	// still fit in pages the file already has.
	big := strings.Repeat("x", 60<<10)
	var refused error
	stored := 0
	for i := 0; i < 200 && refused == nil; i++ {
		s := rpc.Spec{Name: fmt.Sprintf("full-%d", i), Env: map[string]string{"BIG": big}, Steps: []rpc.Step{sh("true")}}
		res, err := c.Submit(ctx, rpc.SubmitParams{Job: &s})
		if err != nil {
			refused = err
			break
		}
		stored++
		_ = res
	}
	is.True(refused != nil) // the disk is full
	t.Logf("disk full: %d submits fitted, then: %v", stored, refused)
	is.Equal(rpc.CodeOf(refused), rpc.CodeStorage) // answered 1004
	info, err := c.Info(ctx)
	is.NoErr(err) // the daemon still answers
	lastBefore := info.LastSeq

	// The running job finishes while the disk is full.
	is.NoErr(os.WriteFile(gate, nil, 0o600))
	time.Sleep(time.Second)
	_, err = c.Get(ctx, rpc.GetParams{ID: runID})
	is.NoErr(err) // reads work while full
	s := rpc.Spec{Name: "still-full", Steps: []rpc.Step{sh("true")}}
	_, err = c.Submit(ctx, rpc.SubmitParams{Job: &s})
	if err != nil {
		is.Equal(rpc.CodeOf(err), rpc.CodeStorage) // still 1004
	}

	// Room again: the job's end is stored, submits work.
	is.NoErr(os.Remove(filler))
	j, err := c.Wait(ctx, rpc.WaitParams{ID: runID, Timeout: rpc.Duration(60 * time.Second)})
	is.NoErr(err)
	is.True(j.Final()) // the job that finished while the disk was full is not left running
	t.Logf("the job that finished while the disk was full: %s %q", j.State, j.Error)
	n, err := os.ReadFile(runs)
	is.NoErr(err)
	is.Equal(strings.Count(string(n), "run"), 1) // the step whose outcome waited for room ran once
	after := rpc.Spec{Name: "after", Steps: []rpc.Step{sh("echo after")}}
	res, err = c.Submit(ctx, rpc.SubmitParams{Job: &after})
	is.NoErr(err) // submits work again
	j, err = c.Wait(ctx, rpc.WaitParams{ID: res.Job.ID, Timeout: rpc.Duration(60 * time.Second)})
	is.NoErr(err)
	is.Equal(j.State, rpc.StateSucceeded) // and run

	// No refused submit was stored; the log has no gap.
	list := listAll(ctx, t, c)
	for _, jj := range list {
		is.True(!strings.HasPrefix(jj.Name, "full-") || jj.ID < runID+int64(stored)+1) // only acknowledged submits are stored
	}
	w, err := c.Watch(ctx, rpc.WatchParams{Since: rpc.Since(0)})
	is.NoErr(err)
	var seq int64
	for seq < w.Result().Seq {
		ev, err := w.Next(ctx)
		is.NoErr(err)
		if ev.Seq == 0 {
			continue
		}
		is.Equal(ev.Seq, seq+1) // no gap
		seq = ev.Seq
	}
	is.True(seq >= lastBefore)
	w.Close()

	// The database is consistent.
	c.Close()
	p.stop()
	out, err := exec.Command(b.spoold, "check", "--state-dir", p.state).CombinedOutput()
	is.NoErr(err) // spoold check passes
	t.Logf("%s", out)
	for _, line := range strings.Split(p.logs.String(), "\n") {
		if strings.Contains(line, "level=ERROR") || strings.Contains(line, "level=WARN") {
			t.Logf("daemon: %s", line)
		}
	}
	checkNoRace(t, p)
}

// damagedDB makes a database with a job in it and returns the state folder.
func damagedDB(t *testing.T) (state string, db []byte) {
	t.Helper()
	p := newDaemon(t)
	c := p.client()
	ctx := tctx(t)
	s := rpc.Spec{Steps: []rpc.Step{sh("echo hello")}}
	res, err := c.Submit(ctx, rpc.SubmitParams{Job: &s})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := c.Wait(ctx, rpc.WaitParams{ID: res.Job.ID}); err != nil {
		t.Fatal(err)
	}
	c.Close()
	p.stop()
	db, err = os.ReadFile(filepath.Join(p.state, "spool.db"))
	if err != nil {
		t.Fatal(err)
	}
	return p.state, db
}

// TestDamagedDatabase: a database that is garbage, truncated, empty or of a newer
// schema makes spoold (and spoold check) exit non-zero with a clear message, and
// is left byte for byte as it was: never overwritten, never started empty.
func TestDamagedDatabase(t *testing.T) {
	b := buildBins(t)
	state, good := damagedDB(t)
	newer := func(t *testing.T, path string) {
		db, err := bbolt.Open(path, 0o600, &bbolt.Options{Timeout: time.Second})
		if err != nil {
			t.Fatal(err)
		}
		defer db.Close()
		err = db.Update(func(tx *bbolt.Tx) error { return tx.Bucket([]byte("meta")).Put([]byte("version"), []byte("99")) })
		if err != nil {
			t.Fatal(err)
		}
	}
	cases := []struct {
		name   string
		damage func(t *testing.T, path string)
		want   string
	}{
		{"garbage", func(t *testing.T, path string) {
			os.WriteFile(path, bytes.Repeat([]byte{0xde, 0xad, 0xbe, 0xef}, len(good)/4), 0o600)
		}, "damaged or of another kind"},
		{"garbage meta pages", func(t *testing.T, path string) {
			b := bytes.Clone(good)
			for i := 0; i < 8192; i++ {
				b[i] = byte(i * 7)
			}
			os.WriteFile(path, b, 0o600)
		}, "no valid meta page"},
		// Three pages: the meta pages and one more; the store reserves room
		// past its data, so a fraction of the file's length may not cut any.
		{"truncated", func(t *testing.T, path string) { os.Truncate(path, 3*4096) }, "truncated"},
		{"empty", func(t *testing.T, path string) { os.Truncate(path, 0) }, "empty"},
		{"newer schema", newer, "newer than this program supports"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			is := is.New(t)
			path := filepath.Join(state, "spool.db")
			is.NoErr(os.WriteFile(path, good, 0o600))
			c.damage(t, path)
			damaged, err := os.ReadFile(path)
			is.NoErr(err)

			socket := filepath.Join(shortDir(t), "s.sock")
			ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
			defer cancel()
			out, err := exec.CommandContext(ctx, b.spoold, "--socket", socket, "--state-dir", state).CombinedOutput()
			var ee *exec.ExitError
			is.True(errors.As(err, &ee)) // spoold exits non-zero
			t.Logf("spoold: %v: %s", err, out)
			is.True(ee.ExitCode() > 0)                            // with an exit code, not a signal
			is.True(strings.Contains(string(out), c.want))        // and says why
			is.True(!strings.Contains(string(out), "goroutine ")) // in a message, not a crash
			after, err := os.ReadFile(path)
			is.NoErr(err)
			is.True(bytes.Equal(after, damaged)) // the file is left as it was

			out, err = exec.CommandContext(ctx, b.spoold, "check", "--state-dir", state).CombinedOutput()
			is.True(err != nil) // spoold check fails too
			is.True(strings.Contains(string(out), c.want))
			after, err = os.ReadFile(path)
			is.NoErr(err)
			is.True(bytes.Equal(after, damaged)) // and leaves it as it was
		})
	}
}

// TestCompactCommand: `spoold compact` refuses while a daemon runs, and on a
// stopped daemon's database rewrites it without losing anything.
func TestCompactCommand(t *testing.T) {
	is := is.New(t)
	p := newDaemon(t)
	c := p.client()
	ctx := tctx(t)
	var specs []rpc.Spec
	for i := 0; i < 30; i++ {
		specs = append(specs, rpc.Spec{Name: fmt.Sprintf("j%d", i), Env: map[string]string{"PAD": strings.Repeat("p", 4000)}, Steps: []rpc.Step{sh("true")}})
	}
	res, err := c.Submit(ctx, rpc.SubmitParams{Jobs: specs})
	is.NoErr(err)
	var ids []int64
	for _, j := range res.Jobs {
		_, err := c.Wait(ctx, rpc.WaitParams{ID: j.ID})
		is.NoErr(err)
		ids = append(ids, j.ID)
	}
	_, err = c.Remove(ctx, rpc.RemoveParams{IDs: ids[:20]})
	is.NoErr(err) // leave free pages behind
	path := filepath.Join(p.state, "spool.db")

	out, err := exec.Command(p.bins.spoold, "compact", "--state-dir", p.state).CombinedOutput()
	is.True(err != nil) // refused while the daemon runs
	t.Logf("while running: %s", out)
	info, err := c.Info(ctx)
	is.NoErr(err) // the daemon is unharmed
	c.Close()
	p.stop()

	before, err := os.Stat(path)
	is.NoErr(err)
	out, err = exec.Command(p.bins.spoold, "compact", "--state-dir", p.state).CombinedOutput()
	is.NoErr(err) // compacts a stopped daemon's database
	after, err := os.Stat(path)
	is.NoErr(err)
	t.Logf("%s: %d bytes before, %d after", strings.TrimSpace(string(out)), before.Size(), after.Size())
	is.True(after.Size() <= before.Size())            // not larger
	is.Equal(after.Mode().Perm(), os.FileMode(0o600)) // still 0600
	out, err = exec.Command(p.bins.spoold, "check", "--state-dir", p.state).CombinedOutput()
	is.NoErr(err) // and consistent
	_ = out

	p.start()
	c = p.client()
	info2, err := c.Info(ctx)
	is.NoErr(err)
	is.Equal(info2.StoreID, info.StoreID) // the same database
	is.Equal(info2.LastSeq, info.LastSeq) // with every event
	for _, id := range ids[20:] {
		j, err := c.Get(ctx, rpc.GetParams{ID: id})
		is.NoErr(err)                         // every job kept
		is.Equal(j.State, rpc.StateSucceeded) // as it was
	}
	s := rpc.Spec{Steps: []rpc.Step{sh("true")}}
	res2, err := c.Submit(ctx, rpc.SubmitParams{Job: &s})
	is.NoErr(err)
	is.True(res2.Job.ID > ids[len(ids)-1]) // ids go on
	checkNoRace(t, p)
}
