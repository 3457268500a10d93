package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/matryer/is"

	"spool/client"
	"spool/rpc"
)

// TestREADMEWalkthrough runs the README's "Quick start" section as a newcomer
// would: `make run` in the checkout (building into a folder of the test's own),
// then each command of the section through bash, with the fresh bin/ on PATH, a
// home folder and XDG_RUNTIME_DIR of its own (so the default socket and state
// folder are private), and the section's pipeline.json. Where the README says
// what a command prints or does, the test checks it.
//
// The commands are read from the README, not copied: the test fails when the
// section has a command the walkthrough does not know, or lacks one it knows,
// so that neither can change without the other. `make` and build.sh are
// stand-ins of the test's own (running spool's whole suite inside its suite
// would take long); the pipeline runs the real `go` on a small module.
func TestREADMEWalkthrough(t *testing.T) {
	if testing.Short() {
		t.Skip("the README walkthrough builds with make and runs a daemon; skipped with -short")
	}
	for _, tool := range []string{"make", "bash", "go"} {
		if _, err := exec.LookPath(tool); err != nil {
			t.Skipf("the README walkthrough needs %s (Debian: apt-get install %s)", tool, tool)
		}
	}
	root, err := filepath.Abs(filepath.Join("..", ".."))
	if err != nil {
		t.Fatal(err)
	}
	readme, err := os.ReadFile(filepath.Join(root, "README.md"))
	if err != nil {
		t.Fatalf("read the README: %v", err)
	}
	sec := readmeSection(t, string(readme), "Quick start")
	w := newWalk(t, root)

	steps := []walkStep{
		{"make run", w.makeRun},
		{"spool submit -- make test", w.submitMakeTest},
		{"spool watch 1", w.watch1},
		{"spool status", w.status},
		{"spool logs 1", w.logs1},
		{"spool wait 1", w.wait1},
		{"spool submit --name nightly --queue builds --retry 3 --timeout 2h -- ./build.sh", w.submitNightly},
		{"spool submit --after 1 -- make deploy", w.submitDeploy},
		{"spool queue builds --parallel 1", w.queueBuilds},
		{"spool logs -f 2", w.followLogs2},
		{`spool cancel 2 --reason "wrong branch"`, w.cancel2},
		{"spool retry 2", w.retry2},
		{"spool submit -f pipeline.json", w.submitPipeline(sec.json)},
	}
	var known []string
	for _, s := range steps {
		known = append(known, s.command)
	}
	if !slices.Equal(sec.commands, known) {
		t.Fatalf("the README's Quick start commands changed; update this walkthrough (and its checks) with them.\nREADME:\n  %s\nwalkthrough:\n  %s",
			strings.Join(sec.commands, "\n  "), strings.Join(known, "\n  "))
	}
	for _, s := range steps {
		if !t.Run(s.command, func(t *testing.T) { s.run(t, s.command) }) {
			t.Fatalf("the README's %q failed; the later commands depend on it", s.command)
		}
	}
	w.deployRan(t)
	w.stopDaemon(t)
}

// walkStep is one README command and what the walkthrough checks of it.
type walkStep struct {
	command string
	run     func(t *testing.T, line string)
}

// readmeText is what the walkthrough reads from one README section.
type readmeText struct {
	commands []string // the lines of its indented code blocks, comments cut
	json     string   // its fenced json block (pipeline.json)
}

// readmeSection finds the "## name" section and reads its indented code blocks
// (the commands, without their trailing `# comment`) and its json block.
func readmeSection(t *testing.T, readme, name string) readmeText {
	t.Helper()
	_, sec, ok := strings.Cut(readme, "\n## "+name+"\n")
	if !ok {
		t.Fatalf("the README has no %q section", name)
	}
	if i := strings.Index(sec, "\n## "); i >= 0 {
		sec = sec[:i]
	}
	comment := regexp.MustCompile(`\s+#\s.*$`)
	var r readmeText
	var fence *strings.Builder
	for line := range strings.SplitSeq(sec, "\n") {
		switch {
		case fence != nil && strings.HasPrefix(line, "```"):
			r.json, fence = fence.String(), nil
		case fence != nil:
			fence.WriteString(line + "\n")
		case line == "```json":
			fence = &strings.Builder{}
		case strings.HasPrefix(line, "    "):
			if cmd := strings.TrimSpace(comment.ReplaceAllString(line, "")); cmd != "" {
				r.commands = append(r.commands, cmd)
			}
		}
	}
	if r.json == "" {
		t.Fatalf("the README's %q section has no json block", name)
	}
	return r
}

// walk is the newcomer's machine: a checkout, a private home and runtime folder,
// a work folder (the second terminal's), and the daemon that `make run` started.
type walk struct {
	parent                     *testing.T // the whole walkthrough's: the daemon lives as long
	root, home, run, bin, work string
	gate                       string   // `make test` ends once this file exists
	env                        []string // the second terminal's environment
	goEnv                      []string // where go keeps its caches, kept under the fake home
	daemon                     *exec.Cmd
	daemonOut                  *syncBuffer
	daemonDone                 chan struct{}
	c                          *client.Client
}

func newWalk(t *testing.T, root string) *walk {
	t.Helper()
	dir := shortDir(t)
	w := &walk{parent: t, root: root, home: filepath.Join(dir, "home"), run: filepath.Join(dir, "run"),
		bin: filepath.Join(dir, "bin"), work: filepath.Join(dir, "work")}
	for _, d := range []string{w.home, w.run, w.work, filepath.Join(dir, "stubs")} {
		if err := os.MkdirAll(d, 0o700); err != nil {
			t.Fatal(err)
		}
	}
	// The go command's caches stay where they are: a fake home would download
	// and build everything again.
	out, err := exec.Command("go", "env", "-json", "GOCACHE", "GOMODCACHE", "GOPATH", "GOENV", "GOFLAGS").Output()
	if err != nil {
		t.Fatalf("go env: %v", err)
	}
	var ge map[string]string
	if err := json.Unmarshal(out, &ge); err != nil {
		t.Fatalf("go env: %v", err)
	}
	for k, v := range ge {
		w.goEnv = append(w.goEnv, k+"="+v)
	}
	// Stand-ins: `make` for the jobs (the test's own make is the real one), and
	// the build script of "A few more".
	stubs := filepath.Join(dir, "stubs")
	writeExec(t, filepath.Join(stubs, "make"), `#!/bin/sh
case "$1" in
test) echo "ok   spool/rpc"; echo "40/100 compiling" >&"$SPOOL_PROGRESS_FD"
	while [ ! -e "$WALK_GATE" ]; do sleep 0.05; done
	echo "ok   spool/daemon" ;;
deploy) echo deployed ;;
*) echo "make stand-in: no target $1" >&2; exit 2 ;;
esac
`)
	writeExec(t, filepath.Join(w.work, "build.sh"), "#!/bin/sh\necho building\necho 1/3 compiling >&\"$SPOOL_PROGRESS_FD\"\nexec sleep 600\n")
	// The pipeline's project: a Go program with a test.
	for name, text := range map[string]string{
		"go.mod":       "module app\n\ngo 1.26\n",
		"main.go":      "package main\n\nfunc main() {}\n",
		"main_test.go": "package main\n\nimport \"testing\"\n\nfunc TestApp(t *testing.T) {}\n",
	} {
		if err := os.WriteFile(filepath.Join(w.work, name), []byte(text), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	w.gate = filepath.Join(dir, "gate")
	w.env = append(w.baseEnv(), "WALK_GATE="+w.gate,
		"PATH="+w.bin+string(os.PathListSeparator)+stubs+string(os.PathListSeparator)+os.Getenv("PATH"))
	return w
}

// baseEnv is this process's environment for a newcomer: their own home and
// runtime folder, no socket or state folder chosen, no colour, and none of an
// enclosing make's variables.
func (w *walk) baseEnv() []string {
	var env []string
	for _, kv := range os.Environ() {
		k, _, _ := strings.Cut(kv, "=")
		switch k {
		case "HOME", "XDG_RUNTIME_DIR", "XDG_STATE_HOME", "XDG_CONFIG_HOME", "SPOOL_SOCKET", "PATH",
			"MAKEFLAGS", "MAKELEVEL", "MFLAGS", "MAKEOVERRIDES", "GOCACHE", "GOMODCACHE", "GOPATH", "GOENV", "GOFLAGS":
			continue
		}
		env = append(env, kv)
	}
	env = append(env, "HOME="+w.home, "XDG_RUNTIME_DIR="+w.run, "NO_COLOR=1")
	return append(env, w.goEnv...)
}

func writeExec(t *testing.T, path, text string) {
	t.Helper()
	if err := os.WriteFile(path, []byte(text), 0o700); err != nil {
		t.Fatal(err)
	}
}

// sh runs a README line through bash in the second terminal's folder.
func (w *walk) sh(t *testing.T, line string) cliResult {
	t.Helper()
	cmd := exec.Command("bash", "-c", line)
	cmd.Dir, cmd.Env = w.work, w.env
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	done := make(chan error, 1)
	if err := cmd.Start(); err != nil {
		t.Fatalf("%s: %v", line, err)
	}
	go func() { done <- cmd.Wait() }()
	var err error
	select {
	case err = <-done:
	case <-time.After(2 * time.Minute):
		_ = cmd.Process.Kill()
		t.Fatalf("%s did not end in 2 minutes; it printed:\n%s%s", line, stdout.String(), stderr.String())
	}
	code := 0
	var ee *exec.ExitError
	if errors.As(err, &ee) {
		code = ee.ExitCode()
	} else if err != nil {
		t.Fatalf("%s: %v", line, err)
	}
	t.Logf("$ %s\n%s%s(exit %d)", line, stdout.String(), stderr.String(), code)
	return cliResult{stdout: stdout.String(), stderr: stderr.String(), code: code}
}

// makeRun is the first terminal: `make run` in the checkout, building into the
// test's folder, serving the default socket under the private runtime folder.
func (w *walk) makeRun(t *testing.T, line string) {
	is := is.New(t)
	cmd := exec.Command("bash", "-c", line+" BIN="+w.bin)
	cmd.Dir = w.root
	cmd.Env = append(w.baseEnv(), "PATH="+os.Getenv("PATH"))
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true} // a terminal's foreground group, for Ctrl-C
	w.daemonOut = &syncBuffer{}
	cmd.Stdout, cmd.Stderr = w.daemonOut, w.daemonOut
	is.NoErr(cmd.Start()) // make run starts
	w.daemon, w.daemonDone = cmd, make(chan struct{})
	go func() { _ = cmd.Wait(); close(w.daemonDone) }()
	w.parent.Cleanup(func() {
		select {
		case <-w.daemonDone:
		default:
			_ = syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
			<-w.daemonDone
		}
	})

	socket := filepath.Join(w.run, "spool", "spoold.sock") // the README's default socket
	deadline := time.Now().Add(5 * time.Minute)            // the build may start from a cold cache
	for {
		c, err := client.Dial(context.Background(), socket)
		if err == nil {
			if _, err = c.Info(tctx(t)); err == nil {
				w.c = c
				w.parent.Cleanup(func() { c.Close() })
				break
			}
			c.Close()
		}
		select {
		case <-w.daemonDone:
			t.Fatalf("make run ended:\n%s", w.daemonOut.String())
		default:
		}
		if time.Now().After(deadline) {
			t.Fatalf("make run did not serve %s: %v\n%s", socket, err, w.daemonOut.String())
		}
		time.Sleep(50 * time.Millisecond)
	}
	for _, b := range []string{"spoold", "spool"} {
		_, err := os.Stat(filepath.Join(w.bin, b))
		is.NoErr(err) // make run built both programs
	}
	info, err := w.c.Info(tctx(t))
	is.NoErr(err)
	is.Equal(info.StateDir, filepath.Join(w.home, ".local", "state", "spool")) // the README's state folder
}

func (w *walk) submitMakeTest(t *testing.T, line string) {
	is := is.New(t)
	r := w.sh(t, line)
	is.Equal(r.code, 0)       // submitted
	is.Equal(r.stdout, "1\n") // "prints the job's id, say 1"
	j, err := w.c.Get(tctx(t), rpc.GetParams{ID: 1})
	is.NoErr(err)
	is.Equal(j.Spec.Dir, w.work) // "runs make test in the folder it was submitted from"
}

// watch1 follows job 1 while it runs: the stand-in `make test` waits for the
// test's gate, opened once watch has shown the job running.
func (w *walk) watch1(t *testing.T, line string) {
	is := is.New(t)
	f := w.start(t, line)
	first := f.line(t)
	is.Equal(strings.Fields(first)[1], "1")     // an event of job 1
	is.True(strings.Contains(first, "running")) // which is running
	is.NoErr(os.WriteFile(w.gate, nil, 0o600))  // let make test finish
	rest, code := f.wait(t)
	is.Equal(code, 0) // "follow it until it ends": it ended, and succeeded
	last := first
	for _, l := range rest {
		is.Equal(strings.Fields(l)[1], "1") // each line an event of job 1
		last = l
	}
	is.True(strings.Contains(last, "succeeded")) // the last one says how it ended
}

// following is a README command that runs until it is stopped or its job ends.
type following struct {
	cmd    *exec.Cmd
	lines  chan string
	stderr *syncBuffer
}

// start starts a README line in the second terminal and reads its output lines.
func (w *walk) start(t *testing.T, line string) *following {
	t.Helper()
	cmd := exec.Command("bash", "-c", "exec "+line)
	cmd.Dir, cmd.Env = w.work, w.env
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	f := &following{cmd: cmd, lines: make(chan string, 64), stderr: &syncBuffer{}}
	cmd.Stderr = f.stderr
	if err := cmd.Start(); err != nil {
		t.Fatalf("%s: %v", line, err)
	}
	t.Cleanup(func() { _ = cmd.Process.Kill() })
	go func() {
		sc := bufio.NewScanner(stdout)
		for sc.Scan() {
			f.lines <- sc.Text()
		}
		close(f.lines)
	}()
	return f
}

// line is the next line it prints.
func (f *following) line(t *testing.T) string {
	t.Helper()
	select {
	case l, ok := <-f.lines:
		if !ok {
			t.Fatalf("%v ended without printing; stderr: %s", f.cmd.Args, f.stderr.String())
		}
		return l
	case <-time.After(2 * time.Minute):
		t.Fatalf("%v printed nothing in 2 minutes; stderr: %s", f.cmd.Args, f.stderr.String())
	}
	return ""
}

// wait reads the rest of its lines and returns them with its exit code.
func (f *following) wait(t *testing.T) ([]string, int) {
	t.Helper()
	var rest []string
	timeout := time.After(2 * time.Minute)
	for {
		select {
		case l, ok := <-f.lines:
			if ok {
				rest = append(rest, l)
				continue
			}
		case <-timeout:
			t.Fatalf("%v did not end in 2 minutes; stderr: %s", f.cmd.Args, f.stderr.String())
		}
		break
	}
	err := f.cmd.Wait()
	var ee *exec.ExitError
	if errors.As(err, &ee) {
		return rest, ee.ExitCode()
	} else if err != nil {
		t.Fatalf("%v: %v", f.cmd.Args, err)
	}
	return rest, 0
}

func (w *walk) status(t *testing.T, line string) {
	is := is.New(t)
	r := w.sh(t, line)
	is.Equal(r.code, 0) // "the newest jobs"
	rows := strings.Split(strings.TrimSpace(r.stdout), "\n")
	is.Equal(len(rows), 2) // a header and job 1
	f := strings.Fields(rows[1])
	is.Equal(f[0], "1")                                          // job 1
	is.Equal(f[1], "succeeded")                                  // its state
	is.True(strings.Contains(rows[1], "make test"))              // and its command
	is.True(strings.Contains(strings.ToUpper(rows[0]), "STATE")) // under a header
}

func (w *walk) logs1(t *testing.T, line string) {
	is := is.New(t)
	r := w.sh(t, line)
	is.Equal(r.code, 0)                                       // "what it printed"
	is.Equal(r.stdout, "ok   spool/rpc\nok   spool/daemon\n") // exactly what the stand-in printed
}

func (w *walk) wait1(t *testing.T, line string) {
	is := is.New(t)
	r := w.sh(t, line)
	is.Equal(r.code, 0)                              // "exit 0 if it succeeded"
	is.True(strings.Contains(r.stdout, "succeeded")) // and says so
}

func (w *walk) submitNightly(t *testing.T, line string) {
	is := is.New(t)
	r := w.sh(t, line)
	is.Equal(r.code, 0)       // submitted
	is.Equal(r.stdout, "2\n") // the next id, as the README's later commands assume
	j, err := w.c.Get(tctx(t), rpc.GetParams{ID: 2})
	is.NoErr(err)
	is.Equal(j.Spec.Name, "nightly")                            // --name
	is.Equal(j.Spec.Queue, "builds")                            // --queue
	is.Equal(j.Spec.Steps[0].Retry.Attempts, 3)                 // --retry 3
	is.Equal(time.Duration(j.Spec.Timeout), 2*time.Hour)        // --timeout 2h
	is.Equal(j.Spec.Steps[0].Exec.Argv, []string{"./build.sh"}) // the command
}

func (w *walk) submitDeploy(t *testing.T, line string) {
	is := is.New(t)
	r := w.sh(t, line)
	is.Equal(r.code, 0)       // submitted
	is.Equal(r.stdout, "3\n") // job 3
	j, err := w.c.Get(tctx(t), rpc.GetParams{ID: 3})
	is.NoErr(err)
	is.Equal(j.Spec.After, []int64{1}) // after job 1; whether it ran is checked at the end
}

// deployRan checks job 3 once the builds are cancelled: with one CPU (the
// default --max-parallel) it waits for the running build.
func (w *walk) deployRan(t *testing.T) {
	is := is.New(t)
	j, err := w.c.Wait(tctx(t), rpc.WaitParams{ID: 3})
	is.NoErr(err)
	is.Equal(j.State, rpc.StateSucceeded) // "runs only if job 1 succeeds": it did, so it ran
	r := w.sh(t, "spool logs 3")
	is.Equal(r.stdout, "deployed\n") // make deploy ran
}

func (w *walk) queueBuilds(t *testing.T, line string) {
	is := is.New(t)
	r := w.sh(t, line)
	is.Equal(r.code, 0) // "one build at a time"
	var row []string
	for l := range strings.SplitSeq(r.stdout, "\n") {
		if f := strings.Fields(l); len(f) > 1 && f[0] == "builds" {
			row = f
		}
	}
	is.True(row != nil)   // the queue is shown
	is.Equal(row[1], "1") // with its limit of 1
	qs, err := w.c.QueueList(tctx(t))
	is.NoErr(err)
	found := false
	for _, q := range qs.Queues {
		if q.Name == "builds" {
			found = true
			is.True(q.Parallel != nil && *q.Parallel == 1) // the daemon has it too
		}
	}
	is.True(found) // the queue exists
}

// followLogs2 is `spool logs -f 2` in a terminal: it prints the build's output
// as it comes, until Ctrl-C, which leaves the job running.
func (w *walk) followLogs2(t *testing.T, line string) {
	is := is.New(t)
	f := w.start(t, line)
	is.Equal(f.line(t), "building")                // "follow the output as it comes": the running build's first line
	is.NoErr(f.cmd.Process.Signal(syscall.SIGINT)) // "Ctrl-C to stop"
	_, code := f.wait(t)
	is.Equal(code, 0)                                       // following stopped cleanly (exit 0)
	is.True(strings.Contains(f.stderr.String(), "goes on")) // saying the job goes on
	j, err := w.c.Get(tctx(t), rpc.GetParams{ID: 2})
	is.NoErr(err)
	is.Equal(j.State, rpc.StateRunning) // and it does
}

func (w *walk) cancel2(t *testing.T, line string) {
	is := is.New(t)
	r := w.sh(t, line)
	is.Equal(r.code, 0)                               // cancelled
	is.Equal(r.stdout, "2 cancelled: wrong branch\n") // with the reason
	j, err := w.c.Get(tctx(t), rpc.GetParams{ID: 2})
	is.NoErr(err)
	is.Equal(j.State, rpc.StateCancelled) // for good
	r = w.sh(t, "spool wait 2")
	is.Equal(r.code, 1) // the Quick start's "spool wait: 1 if not"
}

func (w *walk) retry2(t *testing.T, line string) {
	is := is.New(t)
	r := w.sh(t, line)
	is.Equal(r.code, 0)       // "the same job again"
	is.Equal(r.stdout, "4\n") // "as a new job"
	j, err := w.c.Get(tctx(t), rpc.GetParams{ID: 4})
	is.NoErr(err)
	is.Equal(j.Spec.Name, "nightly")                            // the same spec
	is.Equal(j.Spec.Steps[0].Exec.Argv, []string{"./build.sh"}) // the same command
	_, err = w.c.Cancel(tctx(t), rpc.CancelParams{ID: 4})
	is.NoErr(err) // the build would run for minutes
}

// submitPipeline writes the README's pipeline.json, first as printed (its dir
// does not exist here: refused, naming it, as the README says), then with dir
// changed to a project folder, as the README says to, and follows the job
// through its test and build steps into its wait.
func (w *walk) submitPipeline(spec string) func(t *testing.T, line string) {
	return func(t *testing.T, line string) {
		is := is.New(t)
		var doc map[string]any
		is.NoErr(json.Unmarshal([]byte(spec), &doc)) // the README's pipeline.json is JSON
		dir, _ := doc["dir"].(string)
		path := filepath.Join(w.work, "pipeline.json")
		if _, err := os.Stat(dir); errors.Is(err, os.ErrNotExist) {
			is.NoErr(os.WriteFile(path, []byte(spec), 0o600))
			r := w.sh(t, line)
			is.True(r.code != 0)                                  // refused
			is.True(strings.Contains(r.stderr, dir))              // naming the folder
			is.True(strings.Contains(r.stderr, "does not exist")) // and what is wrong with it
			is.True(strings.Contains(r.stderr, "pipeline.json:")) // where
		}
		changed := strings.Replace(spec, fmt.Sprintf("%q", dir), fmt.Sprintf("%q", w.work), 1)
		is.True(changed != spec || dir == w.work) // "change dir to your project's folder"
		is.NoErr(os.WriteFile(path, []byte(changed), 0o600))
		r := w.sh(t, line)
		is.Equal(r.code, 0)       // accepted
		is.Equal(r.stdout, "5\n") // job 5

		deadline := time.Now().Add(3 * time.Minute)
		var j *rpc.Job
		for {
			var err error
			j, err = w.c.Get(tctx(t), rpc.GetParams{ID: 5})
			is.NoErr(err)
			if j.State.Final() || len(j.Steps) > 2 && j.Steps[2].State == rpc.StateRunning {
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("the pipeline did not reach its wait step: %+v", j.Steps)
			}
			time.Sleep(50 * time.Millisecond)
		}
		if j.State.Final() {
			r := w.sh(t, "spool show 5; spool logs 5 test; spool logs 5 build")
			t.Fatalf("the pipeline ended before its wait step:\n%s%s", r.stdout, r.stderr)
		}
		is.Equal(len(j.Steps), 4)                      // test, build, wait, ping
		is.Equal(j.Steps[0].State, rpc.StateSucceeded) // go test ./... passed
		is.Equal(j.Steps[1].State, rpc.StateSucceeded) // go build passed
		_, err := os.Stat(filepath.Join(w.work, "app"))
		is.NoErr(err) // and built the program in dir
		_, err = w.c.Cancel(tctx(t), rpc.CancelParams{ID: 5})
		is.NoErr(err) // the rest would wait 30s and post to port 8080
	}
}

// stopDaemon is Ctrl-C in the first terminal: make and spoold get SIGINT, and
// spoold stops cleanly.
func (w *walk) stopDaemon(t *testing.T) {
	is := is.New(t)
	is.NoErr(syscall.Kill(-w.daemon.Process.Pid, syscall.SIGINT)) // Ctrl-C
	select {
	case <-w.daemonDone:
	case <-time.After(time.Minute):
		t.Fatalf("spoold did not stop on Ctrl-C:\n%s", w.daemonOut.String())
	}
	out := w.daemonOut.String()
	is.True(strings.Contains(out, "daemon stopped")) // it stopped cleanly
	is.True(!strings.Contains(out, "level=ERROR"))   // with no error on the way
}
