//go:build darwin

package unixsock

import (
	"fmt"
	"net"

	"golang.org/x/sys/unix"
)

// PeerCredentials returns the uid of the process at the other end of a Unix socket
// connection, read with getpeereid (LOCAL_PEERCRED). macOS does not give the pid
// this way: it is -1.
func PeerCredentials(c *net.UnixConn) (uid, pid int, err error) {
	raw, err := c.SyscallConn()
	if err != nil {
		return -1, -1, fmt.Errorf("read peer credentials: %w", err)
	}
	var cred *unix.Xucred
	var serr error
	if err := raw.Control(func(fd uintptr) {
		cred, serr = unix.GetsockoptXucred(int(fd), unix.SOL_LOCAL, unix.LOCAL_PEERCRED)
	}); err != nil {
		return -1, -1, fmt.Errorf("read peer credentials: %w", err)
	}
	if serr != nil {
		return -1, -1, fmt.Errorf("read peer credentials: %w", serr)
	}
	return int(cred.Uid), -1, nil
}
