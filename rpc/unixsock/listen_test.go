package unixsock

import (
	"bufio"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"github.com/matryer/is"
)

func TestListenCreatesPrivateFolder(t *testing.T) {
	is := is.New(t)
	base := shortDir(t)
	path := filepath.Join(base, "spool", "s.sock")
	ln, err := Listen(path)
	is.NoErr(err) // a missing folder is created
	defer ln.Close()

	fi, err := os.Lstat(filepath.Dir(path))
	is.NoErr(err)                                  // the folder exists
	is.True(fi.IsDir())                            // it is a directory
	is.Equal(fi.Mode().Perm(), os.FileMode(0o700)) // the folder is private
	fi, err = os.Lstat(path)
	is.NoErr(err)                                  // the socket exists
	is.Equal(fi.Mode().Type(), os.ModeSocket)      // it is a socket
	is.Equal(fi.Mode().Perm(), os.FileMode(0o600)) // the socket is private
	is.NoErr(CheckSocketOwner(path))               // a client trusts the socket the daemon made

	ln.Close()
	_, err = os.Lstat(path)
	is.True(os.IsNotExist(err)) // closing the listener removes the socket
}

func TestListenRefusesSymlinkFolder(t *testing.T) {
	is := is.New(t)
	base := shortDir(t)
	real := filepath.Join(base, "real")
	is.NoErr(os.Mkdir(real, 0o700))                         // the link's target
	is.NoErr(os.Symlink(real, filepath.Join(base, "link"))) // the folder is a link
	_, err := Listen(filepath.Join(base, "link", "s.sock"))
	is.True(err != nil)                                     // a linked folder is refused
	is.True(strings.Contains(err.Error(), "symbolic link")) // and the error says why
}

func TestListenRefusesWrongMode(t *testing.T) {
	is := is.New(t)
	base := shortDir(t)
	dir := filepath.Join(base, "d")
	is.NoErr(os.Mkdir(dir, 0o700)) // the folder
	is.NoErr(os.Chmod(dir, 0o755)) // readable by others
	_, err := Listen(filepath.Join(dir, "s.sock"))
	is.True(err != nil)                            // a folder others may enter is refused
	is.True(strings.Contains(err.Error(), "0755")) // and the error names the mode
}

func TestListenRefusesFolderOfAnotherUser(t *testing.T) {
	if os.Getuid() != 0 {
		t.Skip("needs root to chown")
	}
	is := is.New(t)
	base := shortDir(t)
	dir := filepath.Join(base, "d")
	is.NoErr(os.Mkdir(dir, 0o700))        // the folder
	is.NoErr(os.Chown(dir, 65534, 65534)) // owned by someone else
	_, err := Listen(filepath.Join(dir, "s.sock"))
	is.True(err != nil)                             // a folder of another user is refused
	is.True(strings.Contains(err.Error(), "owned")) // and the error says why
}

func TestListenRemovesStaleSocket(t *testing.T) {
	is := is.New(t)
	base := shortDir(t)
	dir := filepath.Join(base, "d")
	is.NoErr(os.Mkdir(dir, 0o700)) // the folder
	path := filepath.Join(dir, "s.sock")
	old, err := net.ListenUnix("unix", &net.UnixAddr{Name: path, Net: "unix"})
	is.NoErr(err) // an old daemon's socket
	old.SetUnlinkOnClose(false)
	old.Close() // the old daemon died and left its socket file

	ln, err := Listen(path)
	is.NoErr(err) // the stale socket is replaced
	defer ln.Close()
	go func() {
		if c, err := ln.Accept(); err == nil {
			c.Close()
		}
	}()
	c, err := net.Dial("unix", path)
	is.NoErr(err) // the new socket serves
	c.Close()
}

func TestListenRefusesLiveSocket(t *testing.T) {
	is := is.New(t)
	base := shortDir(t)
	path := filepath.Join(base, "d", "s.sock")
	first, err := Listen(path)
	is.NoErr(err) // the first daemon listens
	defer first.Close()

	_, err = Listen(path)
	is.True(err != nil)                                           // a second daemon is refused
	is.Equal(err.Error(), "another spoold is listening on "+path) // and told why
	_, err = os.Lstat(path)
	is.NoErr(err) // the live socket is left alone
}

func TestListenRefusesNonSocket(t *testing.T) {
	is := is.New(t)
	base := shortDir(t)
	dir := filepath.Join(base, "d")
	is.NoErr(os.Mkdir(dir, 0o700)) // the folder
	path := filepath.Join(dir, "s.sock")
	is.NoErr(os.WriteFile(path, []byte("data"), 0o600)) // a regular file where the socket goes
	_, err := Listen(path)
	is.True(err != nil) // a file that is not a socket is never removed
	b, err := os.ReadFile(path)
	is.NoErr(err)               // the file is still there
	is.Equal(string(b), "data") // untouched
}

func TestCheckSocketOwnerRefusesOthers(t *testing.T) {
	if os.Getuid() != 0 {
		t.Skip("needs root to chown")
	}
	is := is.New(t)
	base := shortDir(t)
	dir := filepath.Join(base, "d")
	is.NoErr(os.Mkdir(dir, 0o755)) // the folder
	path := filepath.Join(dir, "s.sock")
	ln, err := net.ListenUnix("unix", &net.UnixAddr{Name: path, Net: "unix"})
	is.NoErr(err) // a socket
	defer ln.Close()
	is.NoErr(CheckSocketOwner(path)) // ours: trusted

	is.NoErr(os.Lchown(path, 65534, 65534)) // the socket belongs to someone else
	is.True(CheckSocketOwner(path) != nil)  // not trusted
	is.NoErr(os.Lchown(path, 0, 0))         // restore the owner

	is.NoErr(os.Chown(dir, 65534, 65534))  // the folder belongs to someone else
	is.True(CheckSocketOwner(path) != nil) // not trusted
}

// TestSystemdListeners starts this test binary as a socket-activated child, with a
// listening socket on fd 3, and talks to it through that socket.
func TestSystemdListeners(t *testing.T) {
	is := is.New(t)
	base := shortDir(t)
	path := filepath.Join(base, "a.sock")
	ln, err := net.ListenUnix("unix", &net.UnixAddr{Name: path, Net: "unix"})
	is.NoErr(err) // the socket systemd would make
	defer ln.Close()
	f, err := ln.File()
	is.NoErr(err) // its descriptor, to hand down
	defer f.Close()

	// sh's $$ is the pid exec keeps, as systemd sets LISTEN_PID to the service's pid.
	cmd := exec.Command("/bin/sh", "-c", `LISTEN_PID=$$ LISTEN_FDS=1 LISTEN_FDNAMES=spool exec "$0" -test.run='^TestSystemdHelper$'`, os.Args[0])
	cmd.Env = append(os.Environ(), "SPOOL_TEST_HELPER=systemd")
	cmd.ExtraFiles = []*os.File{f}
	out, err := cmd.StdoutPipe()
	is.NoErr(err)         // the child's report
	is.NoErr(cmd.Start()) // start the activated child
	defer cmd.Wait()
	sc := bufio.NewScanner(out)
	is.True(sc.Scan())                           // the child reports what it was handed
	is.Equal(sc.Text(), "listeners=1 env=clean") // one listener handed over, its variables removed

	c, err := net.Dial("unix", path)
	is.NoErr(err) // the child serves the handed socket
	defer c.Close()
	line, err := bufio.NewReader(c).ReadString('\n')
	is.NoErr(err)             // the child answers
	is.Equal(line, "hello\n") // through the activated listener
}

func TestSystemdHelper(t *testing.T) {
	if os.Getenv("SPOOL_TEST_HELPER") != "systemd" {
		t.Skip("helper process for TestSystemdListeners")
	}
	lns, err := SystemdListeners()
	if err != nil {
		os.Stdout.WriteString("error " + err.Error() + "\n")
		return
	}
	env := "clean"
	for _, k := range []string{"LISTEN_PID", "LISTEN_FDS", "LISTEN_FDNAMES"} {
		if _, ok := os.LookupEnv(k); ok {
			env = "dirty"
		}
	}
	os.Stdout.WriteString("listeners=" + strconv.Itoa(len(lns)) + " env=" + env + "\n")
	if len(lns) != 1 {
		return
	}
	c, err := lns[0].Accept()
	if err != nil {
		return
	}
	c.Write([]byte("hello\n"))
	c.Close()
	lns[0].Close()
}

func TestSystemdListenersNotActivated(t *testing.T) {
	is := is.New(t)
	t.Setenv("LISTEN_PID", "1")
	t.Setenv("LISTEN_FDS", "1")
	lns, err := SystemdListeners()
	is.NoErr(err)         // another process's activation is not ours
	is.Equal(len(lns), 0) // and hands us nothing
	_, set := os.LookupEnv("LISTEN_FDS")
	is.True(!set) // the variables are removed all the same
}

// shortDir is a temporary folder with a short path: a socket's path must fit in
// 108 bytes, which t.TempDir's may not.
func shortDir(t *testing.T) string {
	t.Helper()
	dir, err := os.MkdirTemp("", "sp")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	return dir
}
