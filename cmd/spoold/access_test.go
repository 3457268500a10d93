package main

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/matryer/is"

	"spool/rpc"
)

// helperDialEnv names the socket TestHelperDial dials when the test binary is
// run again as another user.
const helperDialEnv = "SPOOL_TEST_HELPER_DIAL"

// TestHelperDial is not a test: run by TestAccessOtherUser as another user, it
// dials the socket, sends daemon.info, and prints what happened.
func TestHelperDial(t *testing.T) {
	socket := os.Getenv(helperDialEnv)
	if socket == "" {
		t.Skip("a helper run by TestAccessOtherUser")
	}
	fmt.Printf("uid %d\n", os.Getuid())
	c, err := net.Dial("unix", socket)
	if err != nil {
		fmt.Printf("DIAL FAILED: %v\n", err)
		return
	}
	defer c.Close()
	_, werr := io.WriteString(c, `{"jsonrpc":"2.0","id":1,"method":"daemon.info"}`+"\n")
	_ = c.SetReadDeadline(time.Now().Add(20 * time.Second))
	line, err := bufio.NewReader(c).ReadString('\n')
	switch {
	case line == "" && (errors.Is(err, io.EOF) || errors.Is(err, syscall.ECONNRESET)):
		// Closed with our request unread: EOF, or a reset.
		fmt.Printf("CLOSED WITHOUT ANSWER (read: %v, write: %v)\n", err, werr)
	case err != nil && line == "":
		fmt.Printf("READ FAILED: %v\n", err)
	default:
		fmt.Printf("ANSWERED: %s\n", strings.TrimSpace(line))
	}
}

// copyFile copies the file at src to dst with mode.
func copyFile(t *testing.T, src, dst string, mode os.FileMode) {
	t.Helper()
	in, err := os.Open(src)
	if err != nil {
		t.Fatal(err)
	}
	defer in.Close()
	out, err := os.OpenFile(dst, os.O_CREATE|os.O_WRONLY|os.O_TRUNC, mode)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := io.Copy(out, in); err != nil {
		t.Fatal(err)
	}
	if err := out.Close(); err != nil {
		t.Fatal(err)
	}
}

// TestAccessOtherUser opens the socket's folder and the socket to everyone, then
// connects from a process of another user: the daemon closes the connection
// without answering and logs the refusal. Root (the tests' user) is served.
func TestAccessOtherUser(t *testing.T) {
	is := is.New(t)
	if os.Getuid() != 0 {
		t.Skip("needs root to run a process as another user")
	}
	p := newDaemon(t)
	const nobody = 65534

	// The file modes would let anyone in.
	top := filepath.Dir(filepath.Dir(p.socket))
	is.NoErr(os.Chmod(top, 0o755))
	is.NoErr(os.Chmod(filepath.Dir(p.socket), 0o777))
	is.NoErr(os.Chmod(p.socket, 0o666))
	// The test binary, where the other user can run it.
	self, err := os.Executable()
	is.NoErr(err)
	helper := filepath.Join(top, "helper.test")
	copyFile(t, self, helper, 0o755)

	cmd := exec.Command(helper, "-test.run=^TestHelperDial$")
	cmd.Env = append(os.Environ(), helperDialEnv+"="+p.socket)
	cmd.Dir = top
	cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: nobody, Gid: nobody}}
	out, err := cmd.CombinedOutput()
	is.NoErr(err) // the helper ran
	t.Logf("helper as uid %d:\n%s", nobody, out)
	is.True(strings.Contains(string(out), fmt.Sprintf("uid %d", nobody))) // it ran as the other user
	is.True(strings.Contains(string(out), "CLOSED WITHOUT ANSWER"))       // and was closed without an answer
	deadline := time.Now().Add(10 * time.Second)
	for !strings.Contains(p.logs.String(), "refused connection from another user") && time.Now().Before(deadline) {
		time.Sleep(20 * time.Millisecond)
	}
	logs := p.logs.String()
	is.True(strings.Contains(logs, "refused connection from another user")) // the refusal is logged
	is.True(strings.Contains(logs, fmt.Sprintf("peer_uid=%d", nobody)))     // naming the peer

	r := p.raw()
	is.True(r.call(1, "daemon.info", `{}`).Error == nil) // root is served
	checkNoRace(t, p)
}

// TestAccessModes checks the modes of the socket, its folder, the state folder,
// the database and every log and result file, whatever the umask.
func TestAccessModes(t *testing.T) {
	is := is.New(t)
	old := syscall.Umask(0)
	t.Cleanup(func() { syscall.Umask(old) })
	p := newDaemon(t)
	c := p.client()
	ctx := tctx(t)
	s := rpc.Spec{Steps: []rpc.Step{sh("echo one"), sh("echo two >&2; echo 50% >&$SPOOL_PROGRESS_FD")}}
	res, err := c.Submit(ctx, rpc.SubmitParams{Job: &s})
	is.NoErr(err)
	j, err := c.Wait(ctx, rpc.WaitParams{ID: res.Job.ID})
	is.NoErr(err)
	is.Equal(j.State, rpc.StateSucceeded) // the job ran, leaving logs and results

	mode := func(path string) fs.FileMode {
		fi, err := os.Lstat(path)
		is.NoErr(err)
		return fi.Mode()
	}
	is.Equal(mode(p.socket).Perm(), fs.FileMode(0o600))                           // socket 0600
	is.True(mode(p.socket)&fs.ModeSocket != 0)                                    // and a socket
	is.Equal(mode(filepath.Dir(p.socket)).Perm(), fs.FileMode(0o700))             // its folder 0700
	is.Equal(mode(p.state).Perm(), fs.FileMode(0o700))                            // state folder 0700
	is.Equal(mode(filepath.Join(p.state, "spool.db")).Perm(), fs.FileMode(0o600)) // database 0600
	files := 0
	err = filepath.WalkDir(p.state, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		m := mode(path)
		switch {
		case d.IsDir() && path == filepath.Join(p.state, "results", "none"):
			if m.Perm() != 0o500 { // the empty results folder of one-step jobs is read-only
				t.Errorf("folder %s has mode %v, want 0500", path, m.Perm())
			}
		case d.IsDir() && m.Perm() != 0o700:
			t.Errorf("folder %s has mode %v, want 0700", path, m.Perm())
		case m.Type().IsRegular() && m.Perm() != 0o600:
			t.Errorf("file %s has mode %v, want 0600", path, m.Perm())
		case m.Type().IsRegular():
			files++
		}
		return nil
	})
	is.NoErr(err)
	is.True(files >= 3) // the database and the two steps' logs at least
}
