//go:build !linux

package daemon

import (
	"fmt"
	"os"
	"os/exec"
	"syscall"

	"spool/rpc"
)

// spawner starts processes in groups of their own. Without a parent-death signal
// (macOS), the start-up kill of recorded groups covers a crashed daemon.
type spawner struct{ done chan struct{} }

func newSpawner() (*spawner, error) { return &spawner{done: make(chan struct{})}, nil }

func (s *spawner) start(cmd *exec.Cmd) (rpc.Proc, func() error, error) {
	select {
	case <-s.done:
		return rpc.Proc{}, nil, fmt.Errorf("the daemon is stopping")
	default:
	}
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := cmd.Start(); err != nil {
		return rpc.Proc{}, nil, err
	}
	pid := cmd.Process.Pid
	return rpc.Proc{PID: pid, PGID: pid}, cmd.Wait, nil
}

func (s *spawner) close() { close(s.done) }

// pipe makes a pipe for a child's output.
func pipe() (r, w *os.File, err error) { return os.Pipe() }

// becomeSubreaper is Linux only.
func (s *spawner) becomeSubreaper(log func(string, ...any)) {}

// groupHasLiving cannot tell zombies here: a group that answers signals is alive.
func groupHasLiving(pgid int) bool { return true }

// procStartTime is not known on this system; 0 makes the start-up check rely on
// the process group alone.
func procStartTime(pid int) uint64 { return 0 }
