package main

import (
	"context"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/matryer/is"
)

// TestHTTPRefusesToStart runs the real spoold with --http settings that would
// expose it: each exits at once, non-zero, saying why, and serves nothing.
func TestHTTPRefusesToStart(t *testing.T) {
	b := buildBins(t)
	dir := shortDir(t)
	loose := filepath.Join(dir, "loose-token")
	if err := os.WriteFile(loose, []byte("write-0123456789abcdef\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	cert := filepath.Join(dir, "cert.pem")
	cases := []struct {
		name string
		args []string
		want string
	}{
		{"plain HTTP on all interfaces", []string{"--http", "0.0.0.0:0"}, "not a loopback address"},
		{"plain HTTP on a named host", []string{"--http", "example.invalid:8080"}, "missing --http-tls-cert, --http-tls-key, --http-token-file"},
		{"TLS without a token file", []string{"--http", "[::]:0", "--http-tls-cert", cert, "--http-tls-key", cert}, "missing --http-token-file"},
		{"a token file others may read", []string{"--http", "127.0.0.1:0", "--http-token-file", loose}, "chmod 600"},
		{"a cert without its key", []string{"--http", "127.0.0.1:0", "--http-tls-cert", cert}, "go together"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			is := is.New(t)
			ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
			defer cancel()
			args := append([]string{"--socket", filepath.Join(dir, "run", "s.sock"), "--state-dir", filepath.Join(dir, "state")}, c.args...)
			out, err := exec.CommandContext(ctx, b.spoold, args...).CombinedOutput()
			var ee *exec.ExitError
			is.True(err != nil && asExit(err, &ee) && ee.ExitCode() != 0) // spoold refuses to start
			is.True(strings.Contains(string(out), c.want))                // and says why
		})
	}
}

func asExit(err error, ee **exec.ExitError) bool {
	e, ok := err.(*exec.ExitError)
	*ee = e
	return ok
}

// freePort finds a loopback port nobody listens on.
func freePort(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	return addr
}

// TestHTTPLoopbackMakesAToken starts the real spoold with --http on loopback and
// no token file: it makes one in the state folder, 0600, and every data route
// needs it.
func TestHTTPLoopbackMakesAToken(t *testing.T) {
	is := is.New(t)
	addr := freePort(t)
	p := newDaemon(t, "--http", addr)
	tokFile := filepath.Join(p.state, "http-token")
	fi, err := os.Stat(tokFile)
	is.NoErr(err)                                  // the token file was made
	is.Equal(fi.Mode().Perm(), os.FileMode(0o600)) // private to the user, as the socket is
	tok, err := os.ReadFile(tokFile)
	is.NoErr(err)

	call := func(auth string) (int, string) {
		req, _ := http.NewRequest("POST", "http://"+addr+"/api/v1/daemon.info", nil)
		if auth != "" {
			req.Header.Set("Authorization", auth)
		}
		var res *http.Response
		deadline := time.Now().Add(30 * time.Second)
		for {
			res, err = http.DefaultClient.Do(req)
			if err == nil || time.Now().After(deadline) {
				break
			}
			time.Sleep(50 * time.Millisecond)
		}
		is.NoErr(err)
		defer res.Body.Close()
		b, _ := io.ReadAll(res.Body)
		return res.StatusCode, string(b)
	}
	code, _ := call("")
	is.Equal(code, http.StatusUnauthorized) // no token: refused
	code, _ = call("Bearer nope-nope-nope-nope")
	is.Equal(code, http.StatusUnauthorized) // a wrong token: refused
	code, body := call("Bearer " + strings.TrimSpace(string(tok)))
	is.Equal(code, http.StatusOK)                   // the made token is accepted
	is.True(strings.Contains(body, `"protocol":1`)) // daemon.info over HTTP
	res, err := http.Get("http://" + addr + "/healthz")
	is.NoErr(err)
	res.Body.Close()
	is.Equal(res.StatusCode, http.StatusOK) // /healthz for a load balancer
	p.stop()
}
