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
type spawner struct {
	done    chan struct{}
	devNull *os.File // the stdin of processes that are given none
}

func newSpawner() (*spawner, error) {
	null, err := openDevNull()
	if err != nil {
		return nil, err
	}
	return &spawner{done: make(chan struct{}), devNull: null}, nil
}

func (s *spawner) start(cmd *exec.Cmd) (rpc.Proc, func() error, error) {
	select {
	case <-s.done:
		return rpc.Proc{}, nil, fmt.Errorf("the daemon is stopping")
	default:
	}
	if cmd.Stdin == nil {
		cmd.Stdin = s.devNull
	}
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := cmd.Start(); err != nil {
		return rpc.Proc{}, nil, err
	}
	pid := cmd.Process.Pid
	return rpc.Proc{PID: pid, PGID: pid}, cmd.Wait, nil
}

func (s *spawner) close() {
	close(s.done)
	s.devNull.Close()
}

// pipe makes a pipe for a child's output.
func pipe() (r, w *os.File, err error) { return os.Pipe() }

// becomeSubreaper is Linux only.
func (s *spawner) becomeSubreaper(log func(string, ...any)) {}

// groupHasLiving cannot tell zombies here: a group that answers signals is alive.
func groupHasLiving(pgid int) bool { return true }

// procStartTime is not known on this system; 0 makes the start-up check rely on
// the process group alone.
func procStartTime(pid int) uint64 { return 0 }
