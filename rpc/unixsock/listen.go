// Package unixsock makes and checks spool's Unix socket: the private folder and
// the 0600 socket the daemon listens on, the sockets systemd hands over, and the
// peer credentials both ends check (same uid or root). It imports only the
// standard library and x/sys; the server, the client and spoold import it.
package unixsock

import (
	"errors"
	"fmt"
	"io/fs"
	"net"
	"os"
	"path/filepath"
	"syscall"
	"time"
)

// staleDialTimeout bounds the dial that tells a live daemon from an old socket file.
const staleDialTimeout = 2 * time.Second

// Listen listens on the Unix socket at path as section 1 of the protocol says: the
// socket's folder is created with mode 0700 when missing, and an existing one is used
// only if it is a real directory (not a link) owned by this process's uid with mode
// 0700. An old socket file is removed only when a connection to it fails; a live one
// means another daemon serves it. The socket is made 0600. The caller holds the
// database lock, so that no other daemon of the same state may race for the path.
// Closing the listener removes the socket file.
func Listen(path string) (net.Listener, error) {
	dir := filepath.Dir(path)
	if err := socketDir(dir); err != nil {
		return nil, err
	}
	if err := clearOldSocket(path); err != nil {
		return nil, err
	}
	ln, err := net.ListenUnix("unix", &net.UnixAddr{Name: path, Net: "unix"})
	if err != nil {
		return nil, fmt.Errorf("listen on %s: %w", path, err)
	}
	ln.SetUnlinkOnClose(true)
	if err := os.Chmod(path, 0o600); err != nil {
		ln.Close()
		return nil, fmt.Errorf("make the socket %s private: %w", path, err)
	}
	return ln, nil
}

// socketDir makes sure dir exists and is a private folder of ours.
func socketDir(dir string) error {
	fi, err := os.Lstat(dir)
	if errors.Is(err, fs.ErrNotExist) {
		if err := os.MkdirAll(dir, 0o700); err != nil {
			return fmt.Errorf("create the socket folder %s: %w", dir, err)
		}
		// The umask may only have removed bits; make sure of the mode.
		if err := os.Chmod(dir, 0o700); err != nil {
			return fmt.Errorf("create the socket folder %s: %w", dir, err)
		}
		fi, err = os.Lstat(dir)
	}
	if err != nil {
		return fmt.Errorf("check the socket folder %s: %w", dir, err)
	}
	if fi.Mode()&fs.ModeSymlink != 0 {
		return fmt.Errorf("socket folder %s is a symbolic link; refusing to use it (remove it or choose another --socket)", dir)
	}
	if !fi.IsDir() {
		return fmt.Errorf("socket folder %s is not a directory", dir)
	}
	uid, ok := fileUID(fi)
	if !ok {
		return fmt.Errorf("socket folder %s: cannot read its owner", dir)
	}
	if me := os.Getuid(); uid != me {
		return fmt.Errorf("socket folder %s is owned by uid %d, not by us (uid %d); refusing to use it", dir, uid, me)
	}
	if perm := fi.Mode() & (fs.ModePerm | fs.ModeSetuid | fs.ModeSetgid | fs.ModeSticky); perm != 0o700 {
		return fmt.Errorf("socket folder %s has mode %04o, want 0700; refusing to use it (chmod 700 it)", dir, uint32(perm.Perm()))
	}
	return nil
}

// clearOldSocket removes an old socket file at path whose daemon is gone, and
// refuses when a daemon still answers there or the path is something else.
func clearOldSocket(path string) error {
	fi, err := os.Lstat(path)
	if errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("check the socket path %s: %w", path, err)
	}
	if fi.Mode().Type() != fs.ModeSocket {
		return fmt.Errorf("%s exists and is not a socket; refusing to replace it", path)
	}
	c, err := net.DialTimeout("unix", path, staleDialTimeout)
	if err == nil {
		c.Close()
		return fmt.Errorf("another spoold is listening on %s", path)
	}
	if !errors.Is(err, syscall.ECONNREFUSED) && !errors.Is(err, syscall.ENOENT) {
		return fmt.Errorf("check whether a daemon listens on %s: %w", path, err)
	}
	if err := os.Remove(path); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("remove the old socket %s: %w", path, err)
	}
	return nil
}

// CheckSocketOwner is the client's side of section 1: before dialing, it checks that
// the socket's folder and the socket itself belong to the client's uid or to root,
// so that nobody else can pose as the daemon (in /tmp, say). A missing socket or
// folder gives an error that wraps fs.ErrNotExist.
func CheckSocketOwner(path string) error {
	me := os.Getuid()
	dir := filepath.Dir(path)
	fi, err := os.Lstat(dir)
	if err != nil {
		return fmt.Errorf("check the owner of %s: %w", dir, err)
	}
	if fi.Mode()&fs.ModeSymlink != 0 {
		// A link is followed only when it and its target are ours or root's.
		if err := checkOwner(dir, fi, me); err != nil {
			return err
		}
		if fi, err = os.Stat(dir); err != nil {
			return fmt.Errorf("check the owner of %s: %w", dir, err)
		}
	}
	if err := checkOwner(dir, fi, me); err != nil {
		return err
	}
	if fi, err = os.Lstat(path); err != nil {
		return fmt.Errorf("check the owner of %s: %w", path, err)
	}
	return checkOwner(path, fi, me)
}

func checkOwner(p string, fi fs.FileInfo, me int) error {
	uid, ok := fileUID(fi)
	if !ok {
		return fmt.Errorf("check the owner of %s: cannot read it", p)
	}
	if uid != me && uid != 0 {
		return fmt.Errorf("%s is owned by uid %d, neither us (uid %d) nor root: refusing to trust it", p, uid, me)
	}
	return nil
}

// CheckPeerUID reads the credentials of the other end of c and accepts them only
// when its uid is ours or root's. The daemon checks its clients with it and clients
// check the daemon.
func CheckPeerUID(c *net.UnixConn) error {
	uid, pid, err := PeerCredentials(c)
	if err != nil {
		return err
	}
	if me := os.Getuid(); uid != me && uid != 0 {
		return fmt.Errorf("peer (pid %d) runs as uid %d, neither ours (%d) nor root", pid, uid, me)
	}
	return nil
}

func fileUID(fi fs.FileInfo) (int, bool) {
	st, ok := fi.Sys().(*syscall.Stat_t)
	if !ok {
		return 0, false
	}
	return int(st.Uid), true
}
