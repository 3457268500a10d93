package daemon

import (
	"fmt"
	"os"
	"os/exec"
	"runtime"
	"strconv"
	"strings"
	"syscall"

	"spool/rpc"
)

// spawner starts processes from one goroutine locked to its OS thread for the
// daemon's life: the parent-death signal follows the thread that forked, so the
// thread must outlive every child.
type spawner struct {
	reqs chan spawnReq
	done chan struct{}
}

type spawnReq struct {
	cmd   *exec.Cmd
	reply chan error
}

func newSpawner() (*spawner, error) {
	s := &spawner{reqs: make(chan spawnReq), done: make(chan struct{})}
	ready := make(chan struct{})
	go func() {
		// Never unlocked: when this goroutine returns, its thread exits with it.
		runtime.LockOSThread()
		close(ready)
		for {
			select {
			case r := <-s.reqs:
				r.reply <- r.cmd.Start()
			case <-s.done:
				return
			}
		}
	}()
	<-ready
	return s, nil
}

// start starts cmd in a process group of its own, with SIGKILL as its
// parent-death signal, and returns its identity.
func (s *spawner) start(cmd *exec.Cmd) (rpc.Proc, error) {
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	reply := make(chan error, 1)
	select {
	case s.reqs <- spawnReq{cmd: cmd, reply: reply}:
	case <-s.done:
		return rpc.Proc{}, fmt.Errorf("the daemon is stopping")
	}
	if err := <-reply; err != nil {
		return rpc.Proc{}, err
	}
	pid := cmd.Process.Pid
	return rpc.Proc{PID: pid, PGID: pid, Start: procStartTime(pid)}, nil
}

// close stops the spawner. Processes still running keep their parent-death
// signal only while the daemon process lives; Run stops them before.
func (s *spawner) close() { close(s.done) }

// procStartTime reads a process's start time in clock ticks since boot, or 0.
func procStartTime(pid int) uint64 {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return 0
	}
	// The command name may hold spaces and parentheses: fields start after the last ')'.
	s := string(b)
	k := strings.LastIndexByte(s, ')')
	if k < 0 {
		return 0
	}
	f := strings.Fields(s[k+1:])
	// Field 22 of the whole line is the start time; f[0] is field 3.
	if len(f) < 20 {
		return 0
	}
	v, err := strconv.ParseUint(f[19], 10, 64)
	if err != nil {
		return 0
	}
	return v
}
