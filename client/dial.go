package client

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"net"
	"os"
	"spool/rpc/unixsock"
	"syscall"
)

// ErrNotRunning is wrapped by the error Dial returns when nothing serves the socket:
// the socket file is missing, or connecting to it is refused.
var ErrNotRunning = errors.New("the daemon is not running")

// DialConn connects to the daemon's socket after the checks of the protocol: the
// socket's folder must belong to us or root (unixsock.CheckSocketOwner) and so must the
// process that serves it (its peer credentials). It returns the bare connection, for
// callers that relay bytes; most callers want Dial. When the socket is missing or
// refuses connections the error wraps ErrNotRunning.
func DialConn(ctx context.Context, socket string) (*net.UnixConn, error) {
	if _, err := os.Lstat(socket); errors.Is(err, fs.ErrNotExist) {
		return nil, notRunning(socket, err)
	}
	if err := unixsock.CheckSocketOwner(socket); err != nil {
		if errors.Is(err, fs.ErrNotExist) {
			return nil, notRunning(socket, err)
		}
		return nil, fmt.Errorf("check the socket %s: %w", socket, err)
	}
	var d net.Dialer
	conn, err := d.DialContext(ctx, "unix", socket)
	if err != nil {
		if errors.Is(err, syscall.ENOENT) || errors.Is(err, syscall.ECONNREFUSED) {
			return nil, notRunning(socket, err)
		}
		return nil, fmt.Errorf("connect to %s: %w", socket, err)
	}
	uc, ok := conn.(*net.UnixConn)
	if !ok {
		conn.Close()
		return nil, fmt.Errorf("connect to %s: not a unix connection", socket)
	}
	uid, _, err := unixsock.PeerCredentials(uc)
	if err != nil {
		uc.Close()
		return nil, fmt.Errorf("read the credentials of the server at %s: %w", socket, err)
	}
	if me := os.Getuid(); uid != me && uid != 0 {
		uc.Close()
		return nil, fmt.Errorf("the server at %s runs as uid %d, neither ours (%d) nor root: refusing to talk to it", socket, uid, me)
	}
	return uc, nil
}

// Dial connects to the daemon's socket (see DialConn for the checks) and returns a
// client speaking newline-delimited JSON-RPC 2.0 on it.
func Dial(ctx context.Context, socket string) (*Client, error) {
	conn, err := DialConn(ctx, socket)
	if err != nil {
		return nil, err
	}
	return New(conn), nil
}

func notRunning(socket string, err error) error {
	return fmt.Errorf("%w (no socket at %s): %w", ErrNotRunning, socket, err)
}
