package unixsock

import (
	"net"
	"os"
	"path/filepath"
	"runtime"
	"testing"

	"github.com/matryer/is"
)

func TestPeerCredentials(t *testing.T) {
	is := is.New(t)
	dir, err := os.MkdirTemp("", "sp")
	is.NoErr(err) // temp folder
	t.Cleanup(func() { os.RemoveAll(dir) })
	ln, err := net.ListenUnix("unix", &net.UnixAddr{Name: filepath.Join(dir, "s"), Net: "unix"})
	is.NoErr(err) // listen
	defer ln.Close()
	c, err := net.Dial("unix", filepath.Join(dir, "s"))
	is.NoErr(err) // dial
	defer c.Close()
	sc, err := ln.AcceptUnix()
	is.NoErr(err) // accept
	defer sc.Close()

	uid, pid, err := PeerCredentials(sc)
	is.NoErr(err)              // credentials of a local peer
	is.Equal(uid, os.Getuid()) // the peer is this process's user
	if runtime.GOOS == "linux" {
		is.Equal(pid, os.Getpid()) // the peer is this process
	}
}
