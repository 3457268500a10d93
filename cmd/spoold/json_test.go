package main

import (
	"bufio"
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"github.com/matryer/is"
)

// jsonLines splits out into its lines and checks that each is one JSON value.
func jsonLines(t *testing.T, name, out string) []map[string]any {
	t.Helper()
	var docs []map[string]any
	sc := bufio.NewScanner(strings.NewReader(out))
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for sc.Scan() {
		var m map[string]any
		if err := json.Unmarshal(sc.Bytes(), &m); err != nil {
			t.Fatalf("%s: a line that is not a JSON object: %q: %v", name, sc.Text(), err)
		}
		docs = append(docs, m)
	}
	if len(docs) == 0 {
		t.Fatalf("%s: no JSON lines", name)
	}
	return docs
}

// TestCLIJSON runs every command of spool with --json against a real daemon and
// checks that what it prints parses: one JSON document, or JSON lines for the
// streams (watch, logs -f). Two commands print no JSON of their own: completion
// prints a shell script, and rpc relays the daemon's own JSON-RPC.
func TestCLIJSON(t *testing.T) {
	is := is.New(t)
	// The race detector sleeps a second at the exit of every program built with
	// it; this test runs spool thirty times.
	t.Setenv("GORACE", "atexit_sleep_ms=0")
	p := newDaemon(t)
	dir := shortDir(t)
	tmpl := filepath.Join(dir, "t.json")
	is.NoErr(os.WriteFile(tmpl, []byte(`{"spec": {"steps": [{"exec": {"argv": ["echo", "{{word}}"]}}]}, "params": {"word": {"default": "hi"}}}`), 0o600))
	specFile := filepath.Join(dir, "spec.json")
	is.NoErr(os.WriteFile(specFile, []byte(`[{"name": "a", "steps": [{"shell": {"script": "echo a"}}]}, {"name": "b", "steps": [{"sleep": {"duration": "10ms"}}]}]`), 0o600))

	doc := func(args ...string) map[string]any {
		t.Helper()
		out := runCLI(t, p, 0, append([]string{"--json"}, args...)...)
		is.True(json.Valid([]byte(out))) // one JSON document
		var m map[string]any
		if err := json.Unmarshal([]byte(out), &m); err != nil {
			t.Fatalf("spool --json %v: not a JSON object: %v\n%s", args, err, out)
		}
		return m
	}
	idOf := func(m map[string]any) string {
		id, ok := m["id"].(float64)
		if !ok {
			t.Fatalf("no id in %v", m)
		}
		return strconv.FormatInt(int64(id), 10)
	}

	job := doc("submit", "--name", "hello", "--label", "k=v", "--", "sh", "-c", "echo hello")
	id := idOf(job)
	is.Equal(job["state"], "queued") // submit prints the stored job
	batch := doc("submit", "-f", specFile)
	is.Equal(len(batch["jobs"].([]any)), 2) // a batch prints {"jobs": [...]}

	waited := doc("wait", id)
	is.Equal(waited["state"], "succeeded") // wait prints the final job
	is.Equal(doc("show", id)["id"], job["id"])
	is.True(len(doc("status")["jobs"].([]any)) == 3) // status prints the list result
	is.True(len(doc("status", "--state", "succeeded", "--label", "k=v")["jobs"].([]any)) == 1)
	is.True(len(doc("status", id)["jobs"].([]any)) == 1)
	logs := doc("logs", id)
	is.Equal(logs["data"], "hello\n") // logs prints the job.logs result
	is.Equal(logs["eof"], true)

	events := jsonLines(t, "watch", runCLI(t, p, 0, "--json", "watch", id))
	is.True(len(events) >= 1) // watch of a final job: its outcome and done, as JSON lines
	followed := jsonLines(t, "logs -f", runCLI(t, p, 0, "--json", "logs", "-f", id))
	is.Equal(followed[0]["data"], "hello\n") // logs -f prints chunks as JSON lines

	retried := doc("retry", id)
	is.Equal(retried["retry_of"], job["id"]) // retry prints the new job
	doc("wait", idOf(retried))

	// A job that fails and retries again and again makes events while the watch runs.
	retrying := filepath.Join(dir, "retrying.json")
	is.NoErr(os.WriteFile(retrying, []byte(`{"steps": [{"shell": {"script": "false"}, "retry": {"attempts": 1000, "backoff": "50ms", "max_backoff": "50ms"}}]}`), 0o600))
	long := doc("submit", "-f", retrying)
	live := jsonLines(t, "watch", runCLIUntil(t, p, `"step_retrying"`, "--json", "watch", idOf(long)))
	is.Equal(live[len(live)-1]["job"], long["id"]) // watch streams the job's events as they happen
	cancelled := doc("cancel", "--reason", "test", idOf(long))
	is.Equal(cancelled["state"], "cancelled") // cancel prints the final job

	is.Equal(doc("queue")["queues"].([]any)[0].(map[string]any)["name"], "default") // queue lists
	is.Equal(doc("queue", "default")["name"], "default")                            // one queue
	set := doc("queue", "slow", "--parallel", "2", "--pause")
	is.Equal(set["paused"], true) // queue set prints the queue

	is.Equal(doc("template", "put", "greet", tmpl)["name"], "greet")
	is.Equal(doc("template", "get", "greet")["name"], "greet")
	is.Equal(len(doc("template", "list")["templates"].([]any)), 1)
	run := doc("run", "greet", "word=there")
	is.Equal(doc("wait", idOf(run))["result"], "there") // run prints the job made from the template
	is.Equal(len(doc("template", "rm", "greet")), 0)    // template rm prints {}

	is.Equal(doc("rm", id)["removed"], float64(1))
	_, ok := doc("prune", "--state", "cancelled")["removed"]
	is.True(ok) // prune prints the count

	info := doc("info")
	is.Equal(info["socket"], p.socket)   // info names the socket
	is.Equal(info["state_dir"], p.state) // and the state folder
	human := runCLI(t, p, 0, "info")
	is.True(strings.Contains(human, "socket       "+p.socket+"\n")) // so does the table for people
	is.True(strings.Contains(human, "state dir    "+p.state+"\n"))
	v := doc("version")
	is.True(v["daemon"] != nil) // version names both sides

	// Errors go to stderr and leave stdout empty, so that a script reading stdout
	// never parses an error as a result.
	out := runCLI(t, p, 1, "--json", "show", "99999")
	is.Equal(out, "")
}

// runCLIUntil runs spool until its output holds marker, then stops it, and
// returns what it printed.
func runCLIUntil(t *testing.T, p *daemonProc, marker string, args ...string) string {
	t.Helper()
	cmd := exec.Command(p.bins.spool, append([]string{"--socket", p.socket}, args...)...)
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatalf("start spool: %v", err)
	}
	defer func() { _ = cmd.Process.Kill(); _ = cmd.Wait() }()
	var b strings.Builder
	sc := bufio.NewScanner(stdout)
	for sc.Scan() {
		b.WriteString(sc.Text() + "\n")
		if strings.Contains(sc.Text(), marker) {
			return b.String()
		}
	}
	t.Fatalf("spool %v ended without printing %s:\n%s", args, marker, b.String())
	return ""
}
