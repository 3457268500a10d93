package daemon

import (
	"fmt"
	"os"
	"os/exec"
	"os/signal"
	"runtime"
	"strconv"
	"strings"
	"syscall"
	"time"

	"golang.org/x/sys/unix"

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

// procStat reads the state, parent, process group and start time of a process
// from /proc.
func procStat(pid int) (state byte, ppid, pgid int, start uint64, ok bool) {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return 0, 0, 0, 0, false
	}
	// The command name may hold spaces and parentheses: fields start after the last ')'.
	s := string(b)
	k := strings.LastIndexByte(s, ')')
	if k < 0 {
		return 0, 0, 0, 0, false
	}
	f := strings.Fields(s[k+1:])
	// f[0] is field 3 of the line (state); field 22 is the start time.
	if len(f) < 20 || len(f[0]) != 1 {
		return 0, 0, 0, 0, false
	}
	ppid, _ = strconv.Atoi(f[1])
	pgid, _ = strconv.Atoi(f[2])
	start, _ = strconv.ParseUint(f[19], 10, 64)
	return f[0][0], ppid, pgid, start, true
}

// eachProc calls fn with the pid of every process in /proc.
func eachProc(fn func(pid int)) {
	d, err := os.Open("/proc")
	if err != nil {
		return
	}
	defer d.Close()
	names, _ := d.Readdirnames(-1)
	for _, n := range names {
		if pid, err := strconv.Atoi(n); err == nil {
			fn(pid)
		}
	}
}

// groupHasLiving reports whether a process group has a member that is not a zombie.
func groupHasLiving(pgid int) bool {
	found := false
	eachProc(func(pid int) {
		if found {
			return
		}
		if st, _, g, _, ok := procStat(pid); ok && g == pgid && st != 'Z' && st != 'X' {
			found = true
		}
	})
	return found
}

// becomeSubreaper makes the daemon the parent of orphaned descendants, so that
// what its jobs leave behind stays in its tree, and starts reaping those orphans.
// Children the daemon started itself are left to their exec.Cmd.Wait.
func (s *spawner) becomeSubreaper(log func(string, ...any)) {
	if err := unix.Prctl(unix.PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0); err != nil {
		log("cannot become a child subreaper", "err", err)
		return
	}
	sig := make(chan os.Signal, 1)
	signal.Notify(sig, syscall.SIGCHLD)
	go func() {
		defer signal.Stop(sig)
		me := os.Getpid()
		for {
			select {
			case <-sig:
			case <-s.done:
				return
			}
			s.reapOrphans(me)
			// At most a few scans a second, however many children exit.
			select {
			case <-time.After(200 * time.Millisecond):
			case <-s.done:
				return
			}
		}
	}()
}

// reapOrphans waits for zombie children that no exec.Cmd waits for. The daemon
// starts every process as the leader of its own group, so a child that is not a
// group leader came to it as an orphan.
func (s *spawner) reapOrphans(me int) {
	eachProc(func(pid int) {
		st, ppid, pgid, _, ok := procStat(pid)
		if !ok || ppid != me || st != 'Z' || pgid == pid {
			return
		}
		var ws syscall.WaitStatus
		_, _ = syscall.Wait4(pid, &ws, syscall.WNOHANG, nil)
	})
}

// procStartTime reads a process's start time in clock ticks since boot, or 0.
func procStartTime(pid int) uint64 {
	_, _, _, start, ok := procStat(pid)
	if !ok {
		return 0
	}
	return start
}
