package main

import (
	"bytes"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/matryer/is"
)

// TestNodeClient runs the example client in client/node, written on the npm
// package vscode-jsonrpc with LSP framing, against a real daemon: over the socket,
// and through `spool rpc` as an editor would spawn it.
func TestNodeClient(t *testing.T) {
	node, err := exec.LookPath("node")
	if err != nil {
		t.Skip("node is not installed (Debian: apt-get install nodejs npm)")
	}
	dir, err := filepath.Abs(filepath.Join("..", "..", "client", "node"))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(filepath.Join(dir, "node_modules", "vscode-jsonrpc")); err != nil {
		t.Skip("client/node/node_modules is missing: run npm ci --prefix client/node")
	}
	t.Setenv("GORACE", "atexit_sleep_ms=0")
	p := newDaemon(t)

	run := func(t *testing.T, wantCode int, args ...string) string {
		t.Helper()
		cmd := exec.Command(node, append([]string{filepath.Join(dir, "spool-client.js"), "--socket", p.socket}, args...)...)
		cmd.Dir = dir
		var stdout, stderr bytes.Buffer
		cmd.Stdout, cmd.Stderr = &stdout, &stderr
		err := cmd.Run()
		code := 0
		var ee *exec.ExitError
		if errors.As(err, &ee) {
			code = ee.ExitCode()
		} else if err != nil {
			t.Fatalf("node: %v", err)
		}
		if code != wantCode {
			t.Fatalf("node client %v: exit %d, want %d\nstdout:\n%s\nstderr:\n%s", args, code, wantCode, stdout.String(), stderr.String())
		}
		return stdout.String()
	}

	t.Run("socket", func(t *testing.T) {
		is := is.New(t)
		out := run(t, 0)
		is.True(strings.Contains(out, "daemon: spoold ")) // daemon.info answered
		is.True(strings.Contains(out, "socket "+p.socket+"\n"))
		is.True(strings.Contains(out, " submitted queued\n"))                                       // the watch replayed the submit
		is.True(strings.Contains(out, " step_finished step-0 succeeded\n"))                         // and brought the live events
		is.True(strings.Contains(out, " succeeded succeeded\n"))                                    // up to the outcome, before done
		is.True(strings.Contains(out, "result: \"hello from node\"\n"))                             // the job's result
		is.True(strings.Contains(out, "log:\nhello from node\n"))                                   // and its log
		is.True(strings.Contains(out, "error 1001: ") && strings.Contains(out, `{"id":999999999}`)) // errors carry code and data
		is.True(strings.Contains(out, "job.wait cancelled: error -32800"))                          // $/cancelRequest as vscode-jsonrpc sends it
		is.True(strings.Contains(out, "cancelled: job "))
	})
	t.Run("spool rpc", func(t *testing.T) {
		is := is.New(t)
		out := run(t, 1, "--spool", p.bins.spool, "--", "sh", "-c", "echo through the relay; exit 3")
		is.True(strings.Contains(out, "log:\nthrough the relay\n")) // the relay carries LSP framing both ways
		is.True(strings.Contains(out, " failed: "))                 // the job failed, and the client says so
		is.True(strings.Contains(out, "job.wait cancelled: error -32800"))
	})
}
