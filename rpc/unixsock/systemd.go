package unixsock

import (
	"fmt"
	"net"
	"os"
	"strconv"
	"strings"

	"golang.org/x/sys/unix"
)

// listenFDsStart is the first file descriptor systemd passes (SD_LISTEN_FDS_START).
const listenFDsStart = 3

// SystemdListeners returns the listening sockets systemd handed this process by
// socket activation: LISTEN_PID must be this process's pid and LISTEN_FDS counts the
// descriptors from 3 (LISTEN_FDNAMES, when set, names them). Only AF_UNIX stream
// sockets are accepted; anything else is an error. It removes LISTEN_PID, LISTEN_FDS
// and LISTEN_FDNAMES from the environment, so that jobs never inherit them. It
// returns nil, nil when the process was not socket-activated.
func SystemdListeners() ([]net.Listener, error) {
	pidStr, fdsStr, namesStr := os.Getenv("LISTEN_PID"), os.Getenv("LISTEN_FDS"), os.Getenv("LISTEN_FDNAMES")
	for _, k := range []string{"LISTEN_PID", "LISTEN_FDS", "LISTEN_FDNAMES"} {
		os.Unsetenv(k)
	}
	if pidStr == "" || fdsStr == "" {
		return nil, nil
	}
	pid, err := strconv.Atoi(pidStr)
	if err != nil || pid != os.Getpid() {
		return nil, nil
	}
	n, err := strconv.Atoi(fdsStr)
	if err != nil || n < 0 {
		return nil, fmt.Errorf("socket activation: LISTEN_FDS=%q is not a count", fdsStr)
	}
	var names []string
	if namesStr != "" {
		names = strings.Split(namesStr, ":")
	}
	var lns []net.Listener
	fail := func(err error) ([]net.Listener, error) {
		for _, ln := range lns {
			ln.Close()
		}
		return nil, err
	}
	for i := range n {
		fd := listenFDsStart + i
		name := "LISTEN_FD_" + strconv.Itoa(fd)
		if i < len(names) && names[i] != "" {
			name = names[i]
		}
		ln, err := activatedListener(fd, name)
		if err != nil {
			return fail(fmt.Errorf("socket activation: fd %d (%s): %w", fd, name, err))
		}
		lns = append(lns, ln)
	}
	return lns, nil
}

// activatedListener checks that fd is a listening AF_UNIX stream socket and wraps it.
func activatedListener(fd int, name string) (net.Listener, error) {
	typ, err := unix.GetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_TYPE)
	if err != nil {
		return nil, fmt.Errorf("not a socket: %w", err)
	}
	if typ != unix.SOCK_STREAM {
		return nil, fmt.Errorf("not a stream socket")
	}
	sa, err := unix.Getsockname(fd)
	if err != nil {
		return nil, fmt.Errorf("read the socket's address: %w", err)
	}
	if _, ok := sa.(*unix.SockaddrUnix); !ok {
		return nil, fmt.Errorf("not an AF_UNIX socket (spool serves no network socket)")
	}
	unix.CloseOnExec(fd)
	f := os.NewFile(uintptr(fd), name)
	defer f.Close()
	ln, err := net.FileListener(f)
	if err != nil {
		return nil, fmt.Errorf("listen: %w", err)
	}
	if ul, ok := ln.(*net.UnixListener); ok {
		// The socket file is systemd's: closing must not remove it.
		ul.SetUnlinkOnClose(false)
	}
	return ln, nil
}
