package rpc

import (
	"fmt"
	"os"
	"path/filepath"
)

// DefaultSocketPath is the socket path of section 1: $XDG_RUNTIME_DIR/spool/spoold.sock,
// or /tmp/spool-<uid>/spoold.sock where XDG_RUNTIME_DIR is unset. getenv is os.Getenv
// in production; tests pass their own.
func DefaultSocketPath(getenv func(string) string) string {
	if dir := getenv("XDG_RUNTIME_DIR"); dir != "" {
		return filepath.Join(dir, "spool", "spoold.sock")
	}
	return filepath.Join("/tmp", fmt.Sprintf("spool-%d", os.Getuid()), "spoold.sock")
}

// ClientSocketPath is the socket a client dials: flag (when not empty), then
// SPOOL_SOCKET, then the default.
func ClientSocketPath(flag string, getenv func(string) string) string {
	if flag != "" {
		return flag
	}
	if p := getenv("SPOOL_SOCKET"); p != "" {
		return p
	}
	return DefaultSocketPath(getenv)
}

// DefaultStateDir is $XDG_STATE_HOME/spool, or ~/.local/state/spool.
func DefaultStateDir(getenv func(string) string) (string, error) {
	if dir := getenv("XDG_STATE_HOME"); dir != "" {
		return filepath.Join(dir, "spool"), nil
	}
	home := getenv("HOME")
	if home == "" {
		h, err := os.UserHomeDir()
		if err != nil {
			return "", fmt.Errorf("find the state folder: %w", err)
		}
		home = h
	}
	return filepath.Join(home, ".local", "state", "spool"), nil
}
