//go:build !linux

package daemon

import (
	"errors"
	"fmt"
	"os"
	"os/exec"
	"syscall"
	"time"

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

func (s *spawner) start(cmd *exec.Cmd, cgroupFD int) (rpc.Proc, func() error, error) {
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

// cgroupTree is Linux only: elsewhere steps are contained by process groups.
type cgroupTree struct{ dir string }

func openCgroupTree(name string) (*cgroupTree, error) {
	return nil, errors.New("cgroups are a Linux feature")
}

func (t *cgroupTree) create(name string) (string, error) {
	return "", errors.New("cgroups are a Linux feature")
}
func (t *cgroupTree) take() (string, error) {
	return "", errors.New("cgroups are a Linux feature")
}
func (t *cgroupTree) put(path string)                   {}
func (t *cgroupTree) sweep(wait time.Duration) []string { return nil }
func (t *cgroupTree) close()                            {}

func (s *spawner) probeCgroup(tree *cgroupTree) error {
	return errors.New("cgroups are a Linux feature")
}

func openCgroup(path string) (int, error) {
	return -1, errors.New("cgroups are a Linux feature")
}
func signalCgroup(path string, sig syscall.Signal)      {}
func killCgroup(path string)                            {}
func cgroupPopulated(path string) bool                  { return false }
func removeCgroup(path string, wait time.Duration) bool { return true }
func (s *spawner) orphans() []int                       { return nil }
func envHas(pid int, kv string) bool                    { return false }
func procsWithEnvPrefix(prefix string) []int            { return nil }
