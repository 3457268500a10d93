//go:build linux

package unixsock

import (
	"fmt"
	"net"

	"golang.org/x/sys/unix"
)

// PeerCredentials returns the uid and pid of the process at the other end of a
// Unix socket connection, read with SO_PEERCRED.
func PeerCredentials(c *net.UnixConn) (uid, pid int, err error) {
	raw, err := c.SyscallConn()
	if err != nil {
		return -1, -1, fmt.Errorf("read peer credentials: %w", err)
	}
	var cred *unix.Ucred
	var serr error
	if err := raw.Control(func(fd uintptr) {
		cred, serr = unix.GetsockoptUcred(int(fd), unix.SOL_SOCKET, unix.SO_PEERCRED)
	}); err != nil {
		return -1, -1, fmt.Errorf("read peer credentials: %w", err)
	}
	if serr != nil {
		return -1, -1, fmt.Errorf("read peer credentials: %w", serr)
	}
	return int(cred.Uid), int(cred.Pid), nil
}
