package daemon

import (
	"bytes"
	"fmt"
	"os"
	"os/exec"
	"os/signal"
	"runtime"
	"strconv"
	"sync"
	"syscall"
	"time"

	"golang.org/x/sys/unix"

	"spool/rpc"
)

// spawner starts processes from one goroutine locked to its OS thread for the
// daemon's life: the parent-death signal follows the thread that forked, so the
// thread must outlive every child.
type spawner struct {
	reqs    chan spawnReq
	done    chan struct{}
	devNull *os.File // the stdin of processes that are given none
	// pidfd says the kernel gives a process file descriptor that can be polled
	// and waited on (Linux 5.4).
	pidfd bool

	// mine holds the pids of the processes the daemon started and has not waited
	// for yet: every other child is an orphan it adopted as a subreaper. mu is held
	// from a start until its pid is in mine, so that the reaper never takes a child
	// of the daemon's for an orphan.
	mu        sync.Mutex
	mine      map[int]bool
	subreaper bool
}

type spawnReq struct {
	cmd   *exec.Cmd
	reply chan error
}

func newSpawner() (*spawner, error) {
	null, err := openDevNull()
	if err != nil {
		return nil, err
	}
	s := &spawner{reqs: make(chan spawnReq), done: make(chan struct{}), pidfd: pidfdWorks(), devNull: null, mine: map[int]bool{}}
	ready := make(chan struct{})
	go func() {
		// Never unlocked: when this goroutine returns, its thread exits with it.
		runtime.LockOSThread()
		close(ready)
		for {
			select {
			case r := <-s.reqs:
				s.mu.Lock()
				err := r.cmd.Start()
				if err == nil {
					s.mine[r.cmd.Process.Pid] = true
				}
				s.mu.Unlock()
				r.reply <- err
			case <-s.done:
				return
			}
		}
	}()
	<-ready
	return s, nil
}

// pidfdWorks reports whether the daemon can wait for a child through a pidfd.
func pidfdWorks() bool {
	fd, err := unix.PidfdOpen(os.Getpid(), 0)
	if err != nil {
		return false
	}
	defer unix.Close(fd)
	// The daemon is not its own child: a kernel that knows P_PIDFD says ECHILD.
	return unix.Waitid(unix.P_PIDFD, fd, nil, unix.WEXITED|unix.WNOHANG, nil) == unix.ECHILD
}

// start starts cmd in a process group of its own, with SIGKILL as its
// parent-death signal and, when cgroupFD is not -1, cloned straight into that
// cgroup. It returns its identity and the function that waits for it (cmd.Wait,
// once the process is gone).
func (s *spawner) start(cmd *exec.Cmd, cgroupFD int) (rpc.Proc, func() error, error) {
	pidfd := -1
	if cmd.Stdin == nil {
		cmd.Stdin = s.devNull
	}
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	if cgroupFD >= 0 {
		cmd.SysProcAttr.UseCgroupFD = true
		cmd.SysProcAttr.CgroupFD = cgroupFD
	}
	if s.pidfd {
		cmd.SysProcAttr.PidFD = &pidfd
	}
	reply := make(chan error, 1)
	select {
	case s.reqs <- spawnReq{cmd: cmd, reply: reply}:
	case <-s.done:
		return rpc.Proc{}, nil, fmt.Errorf("the daemon is stopping")
	}
	if err := <-reply; err != nil {
		return rpc.Proc{}, nil, err
	}
	pid := cmd.Process.Pid
	return rpc.Proc{PID: pid, PGID: pid, Start: procStartTime(pid)}, func() error {
		waitExit(pidfd)
		err := cmd.Wait()
		s.mu.Lock()
		delete(s.mine, pid)
		s.mu.Unlock()
		return err
	}, nil
}

// waitExit waits until the process of pidfd has exited, without reaping it, and
// closes pidfd. The wait is on the network poller rather than in a system call
// that holds a thread for the life of the process. Without a pidfd, or when it
// cannot be polled, it returns at once and cmd.Wait waits.
func waitExit(pidfd int) {
	if pidfd < 0 {
		return
	}
	// A pidfd has no other file status flag to keep.
	if _, err := unix.FcntlInt(uintptr(pidfd), unix.F_SETFL, unix.O_NONBLOCK); err != nil {
		unix.Close(pidfd)
		return
	}
	f := os.NewFile(uintptr(pidfd), "pidfd")
	defer f.Close()
	rc, err := f.SyscallConn()
	if err != nil {
		return
	}
	_ = rc.Read(func(fd uintptr) bool {
		var info unix.Siginfo
		err := unix.Waitid(unix.P_PIDFD, int(fd), &info, unix.WEXITED|unix.WNOHANG|unix.WNOWAIT, nil)
		// si_signo is SIGCHLD when the process is waitable, 0 while it runs.
		return err != nil || info.Signo != 0
	})
}

// pipe makes a pipe for a child's output: the read end is the daemon's, polled,
// the write end blocking, as a child expects; both close on exec.
func pipe() (r, w *os.File, err error) {
	var p [2]int
	if err := unix.Pipe2(p[:], unix.O_CLOEXEC|unix.O_NONBLOCK); err != nil {
		return nil, nil, err
	}
	// The write end is the child's: blocking, as a child expects.
	if _, err := unix.FcntlInt(uintptr(p[1]), unix.F_SETFL, 0); err != nil {
		unix.Close(p[0])
		unix.Close(p[1])
		return nil, nil, err
	}
	return os.NewFile(uintptr(p[0]), "|0"), os.NewFile(uintptr(p[1]), "|1"), nil
}

// close stops the spawner. Processes still running keep their parent-death
// signal only while the daemon process lives; Run stops them before.
func (s *spawner) close() {
	close(s.done)
	s.devNull.Close()
}

// procStat reads the state, parent, process group and start time of a process
// from /proc, with three system calls.
func procStat(pid int) (state byte, ppid, pgid int, start uint64, ok bool) {
	var buf [2048]byte
	b, ok := readSmall("/proc/"+strconv.Itoa(pid)+"/stat", buf[:], true)
	if !ok {
		return 0, 0, 0, 0, false
	}
	return parseStat(b)
}

// parseStat reads the fields procStat needs from a /proc stat line.
func parseStat(b []byte) (state byte, ppid, pgid int, start uint64, ok bool) {
	// The command name may hold spaces and parentheses: fields start after the last ')'.
	k := bytes.LastIndexByte(b, ')')
	if k < 0 {
		return 0, 0, 0, 0, false
	}
	// Field 3 of the line (state) comes first; field 22 is the start time.
	field := 3
	rest := b[k+1:]
	for field <= 22 {
		rest = bytes.TrimLeft(rest, " ")
		if len(rest) == 0 {
			return 0, 0, 0, 0, false
		}
		end := bytes.IndexAny(rest, " \n")
		if end < 0 {
			end = len(rest)
		}
		f := rest[:end]
		rest = rest[end:]
		switch field {
		case 3:
			if len(f) != 1 {
				return 0, 0, 0, 0, false
			}
			state = f[0]
		case 4:
			ppid = int(atou(f))
		case 5:
			pgid = int(atou(f))
		case 22:
			start = atou(f)
		}
		field++
	}
	return state, ppid, pgid, start, true
}

// atou reads a decimal number, 0 if there is none.
func atou(b []byte) uint64 {
	var n uint64
	for _, c := range b {
		if c < '0' || c > '9' {
			return 0
		}
		n = n*10 + uint64(c-'0')
	}
	return n
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
	s.subreaper = true
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

// reapOrphans waits for the zombie children that no exec.Cmd waits for: the
// orphans the daemon adopted, whether or not they lead a group or a session.
func (s *spawner) reapOrphans(me int) {
	reap := func(pid int) {
		st, ppid, _, _, ok := procStat(pid)
		if !ok || ppid != me || st != 'Z' {
			return
		}
		s.mu.Lock()
		defer s.mu.Unlock()
		if s.mine[pid] {
			return
		}
		var ws syscall.WaitStatus
		_, _ = syscall.Wait4(pid, &ws, syscall.WNOHANG, nil)
	}
	if !eachChild(reap) {
		eachProc(reap)
	}
}

// orphans lists the living processes the daemon adopted as a subreaper: what a
// step left when its parent died (double forks, setsid children). Without the
// subreaper role they go to init and the list is empty.
func (s *spawner) orphans() []int {
	if !s.subreaper {
		return nil
	}
	me := os.Getpid()
	var out []int
	// The kernel gives an orphan to the first live thread of its subreaper: the
	// daemon's main thread, which lives as long as the daemon. The spawner's
	// children are its own thread's.
	var buf [4096]byte
	b, ok := readChildren("/proc/self/task/"+strconv.Itoa(me)+"/children", buf[:])
	if !ok {
		s.mu.Lock()
		defer s.mu.Unlock()
		adopted := func(pid int) {
			if s.mine[pid] {
				return
			}
			if st, ppid, _, _, ok := procStat(pid); ok && ppid == me && st != 'Z' && st != 'X' {
				out = append(out, pid)
			}
		}
		if !eachChild(adopted) {
			// The kernel lists no children: look at every process.
			out = out[:0]
			eachProc(adopted)
		}
		return out
	}
	for f := range bytes.FieldsSeq(b) {
		pid := int(atou(f))
		if pid <= 0 {
			continue
		}
		s.mu.Lock()
		mine := s.mine[pid]
		s.mu.Unlock()
		if mine {
			continue
		}
		if st, ppid, _, _, ok := procStat(pid); ok && ppid == me && st != 'Z' && st != 'X' {
			out = append(out, pid)
		}
	}
	return out
}

// envHas reports whether a living process has the variable kv ("NAME=value") in
// the environment it started with.
func envHas(pid int, kv string) bool {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/environ")
	if err != nil {
		return false
	}
	for len(b) > 0 {
		i := bytes.IndexByte(b, 0)
		if i < 0 {
			i = len(b)
		}
		if string(b[:i]) == kv {
			return true
		}
		b = b[min(i+1, len(b)):]
	}
	return false
}

// procsWithEnvPrefix lists the living processes (not zombies) with a variable
// that starts with prefix ("NAME=value...") in the environment they started with.
// It reads every process of the system: it is for start-up.
func procsWithEnvPrefix(prefix string) []int {
	var out []int
	me := os.Getpid()
	eachProc(func(pid int) {
		if pid == me {
			return
		}
		st, _, _, _, ok := procStat(pid)
		if !ok || st == 'Z' || st == 'X' {
			return
		}
		b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/environ")
		if err != nil {
			return
		}
		for len(b) > 0 {
			i := bytes.IndexByte(b, 0)
			if i < 0 {
				i = len(b)
			}
			if bytes.HasPrefix(b[:i], []byte(prefix)) {
				out = append(out, pid)
				return
			}
			b = b[min(i+1, len(b)):]
		}
	})
	return out
}

// eachChild calls fn with the pid of every child of the daemon's threads, from
// /proc: far fewer files than a scan of every process. It reports false when the
// kernel does not list children.
func eachChild(fn func(pid int)) bool {
	d, err := os.Open("/proc/self/task")
	if err != nil {
		return false
	}
	tids, _ := d.Readdirnames(-1)
	d.Close()
	var buf [4096]byte
	for _, tid := range tids {
		b, ok := readChildren("/proc/self/task/"+tid+"/children", buf[:])
		if !ok {
			if _, err := os.Stat("/proc/self/task/" + tid); err == nil {
				return false // the thread lives but its children are not listed
			}
			continue // the thread is gone
		}
		for _, f := range bytes.Fields(b) {
			if pid := int(atou(f)); pid > 0 {
				fn(pid)
			}
		}
	}
	return true
}

// readChildren reads a children file of /proc: into buf when it fits, else
// whole. A step that leaves hundreds of orphans makes the daemon's list longer
// than any fixed buffer, and an orphan cut off the list would be one the daemon
// never stops.
func readChildren(path string, buf []byte) ([]byte, bool) {
	b, ok := readSmall(path, buf, false)
	if !ok || len(b) < len(buf) {
		return b, ok
	}
	all, err := os.ReadFile(path)
	if err != nil {
		return nil, false
	}
	return all, true
}

// readSmall reads a file of /proc into buf; a file larger than buf is cut. With
// line, a read that ends a line is taken as the end of the file, which spares the
// read that says so.
func readSmall(path string, buf []byte, line bool) ([]byte, bool) {
	fd, err := unix.Open(path, unix.O_RDONLY|unix.O_CLOEXEC, 0)
	if err != nil {
		return nil, false
	}
	defer unix.Close(fd)
	n := 0
	for n < len(buf) {
		k, err := unix.Read(fd, buf[n:])
		if err == unix.EINTR {
			continue
		}
		if err != nil {
			return nil, false
		}
		if k <= 0 {
			break
		}
		n += k
		if line && buf[n-1] == '\n' {
			break
		}
	}
	return buf[:n], true
}

// procStartTime reads a process's start time in clock ticks since boot, or 0.
func procStartTime(pid int) uint64 {
	_, _, _, start, ok := procStat(pid)
	if !ok {
		return 0
	}
	return start
}

// probeCgroup starts /bin/sh in a new cgroup of tree, to learn whether this
// kernel clones a process straight into a cgroup (Linux 5.7).
func (s *spawner) probeCgroup(tree *cgroupTree) error {
	path, err := tree.create("probe-start")
	if err != nil {
		return err
	}
	defer removeCgroup(path, time.Second)
	fd, err := openCgroup(path)
	if err != nil {
		return err
	}
	defer unix.Close(fd)
	cmd := exec.Command("/bin/sh", "-c", ":")
	_, wait, err := s.start(cmd, fd)
	if err != nil {
		return fmt.Errorf("start a process in a cgroup: %w", err)
	}
	if err := wait(); err != nil {
		return fmt.Errorf("run a process in a cgroup: %w", err)
	}
	return nil
}
