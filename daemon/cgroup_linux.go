//go:build linux

package daemon

import (
	"bytes"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// cgroupTree is the daemon's folder of step cgroups in the cgroup v2 hierarchy:
// one child cgroup per attempt of a process step, made before its process is
// cloned into it, killed as a whole with cgroup.kill and removed once empty. It
// enables no controller: cgroup.kill and cgroup.procs are core files, so the tree
// works where no controller is delegated (the hybrid layout) and keeps the "no
// internal processes" rule out of the way.
type cgroupTree struct {
	dir   string
	owner string // the owner marker, an empty cgroup

	// idle holds empty step cgroups to use again: making and removing a cgroup
	// costs more than the check that one is empty.
	mu   sync.Mutex
	idle []string
	next int64
}

// maxIdleCgroups is how many empty step cgroups the tree keeps for reuse.
const maxIdleCgroups = 64

// openCgroupTree makes (or reuses) the folder name under the daemon's own cgroup
// of the v2 hierarchy and checks that step cgroups can be made and killed in it.
func openCgroupTree(name string) (*cgroupTree, error) {
	own, err := ownCgroup2()
	if err != nil {
		return nil, err
	}
	dir := filepath.Join(own, name)
	// Trees of daemons that are gone stay behind when their daemon could not
	// remove them (kill -9). One whose owner marker names a process that is gone,
	// and in which no process lives, is removed whole; one with no marker only
	// when it is empty (a live daemon makes its tree again when it needs it).
	if ents, err := os.ReadDir(own); err == nil {
		for _, e := range ents {
			if !e.IsDir() || !strings.HasPrefix(e.Name(), "spool-") || e.Name() == name {
				continue
			}
			p := filepath.Join(own, e.Name())
			if marked, alive := treeOwner(p); marked && !alive && !cgroupPopulated(p) {
				_ = removeCgroupDirs(p)
				continue
			}
			_ = os.Remove(p)
		}
	}
	probe := filepath.Join(dir, "probe")
	// Another daemon starting beside this one removes an empty tree it takes
	// for one left behind, this one's too between its two mkdirs: make it again.
	for try := 0; ; try++ {
		if err := os.Mkdir(dir, 0o755); err != nil && !errors.Is(err, fs.ErrExist) {
			return nil, fmt.Errorf("make cgroup %s: %w", dir, err)
		}
		err := os.Mkdir(probe, 0o755)
		if errors.Is(err, fs.ErrNotExist) && try < 10 {
			continue
		}
		if err != nil && !errors.Is(err, fs.ErrExist) {
			return nil, fmt.Errorf("make a cgroup in %s: %w", dir, err)
		}
		break
	}
	defer os.Remove(probe)
	if _, err := os.Stat(filepath.Join(probe, "cgroup.kill")); err != nil {
		return nil, fmt.Errorf("cgroup.kill is missing (Linux 5.14 or later is needed): %w", err)
	}
	f, err := os.OpenFile(filepath.Join(probe, "cgroup.procs"), os.O_WRONLY, 0)
	if err != nil {
		return nil, fmt.Errorf("cgroup %s is not writable: %w", dir, err)
	}
	f.Close()
	// The owner marker: an empty cgroup named after this process, so that a
	// daemon starting later can tell this tree's owner is gone. Markers of an
	// earlier run on this tree go.
	if ents, err := os.ReadDir(dir); err == nil {
		for _, e := range ents {
			if strings.HasPrefix(e.Name(), ownerPrefix) {
				_ = os.Remove(filepath.Join(dir, e.Name()))
			}
		}
	}
	me := os.Getpid()
	owner := filepath.Join(dir, ownerPrefix+strconv.Itoa(me)+"-"+strconv.FormatUint(procStartTime(me), 10))
	if err := os.Mkdir(owner, 0o755); err != nil && !errors.Is(err, fs.ErrExist) {
		return nil, fmt.Errorf("make cgroup %s: %w", owner, err)
	}
	return &cgroupTree{dir: dir, owner: owner}, nil
}

// ownerPrefix starts the name of the empty cgroup by which a tree names the
// daemon that owns it: owner-<pid>-<start time in clock ticks>.
const ownerPrefix = "owner-"

// treeOwner reads a tree's owner marker: marked says it has one, alive that the
// process it names still runs (the same pid with the same start time).
func treeOwner(tree string) (marked, alive bool) {
	ents, err := os.ReadDir(tree)
	if err != nil {
		return false, false
	}
	for _, e := range ents {
		rest, ok := strings.CutPrefix(e.Name(), ownerPrefix)
		if !ok {
			continue
		}
		marked = true
		pid, start, _ := strings.Cut(rest, "-")
		n, err1 := strconv.Atoi(pid)
		st, err2 := strconv.ParseUint(start, 10, 64)
		if err1 == nil && err2 == nil && n > 0 && procStartTime(n) == st {
			alive = true
		}
	}
	return marked, alive
}

// ownCgroup2 finds the v2 hierarchy in /proc/self/mountinfo (never assumed to be
// at /sys/fs/cgroup: hybrid layouts mount it at /sys/fs/cgroup/unified) and
// returns the folder of the daemon's own cgroup in it.
func ownCgroup2() (string, error) {
	mi, err := os.ReadFile("/proc/self/mountinfo")
	if err != nil {
		return "", fmt.Errorf("read mountinfo: %w", err)
	}
	mount, root := "", ""
	for line := range strings.SplitSeq(string(mi), "\n") {
		pre, post, ok := strings.Cut(line, " - ")
		if !ok || !strings.HasPrefix(post, "cgroup2 ") {
			continue
		}
		f := strings.Fields(pre)
		if len(f) < 5 {
			continue
		}
		mount, root = unescapeMount(f[4]), unescapeMount(f[3])
		break
	}
	if mount == "" {
		return "", errors.New("no cgroup v2 hierarchy is mounted")
	}
	cg, err := os.ReadFile("/proc/self/cgroup")
	if err != nil {
		return "", fmt.Errorf("read /proc/self/cgroup: %w", err)
	}
	for line := range strings.SplitSeq(string(cg), "\n") {
		if path, ok := strings.CutPrefix(line, "0::"); ok {
			rel, ok := strings.CutPrefix(path, root)
			if root == "/" {
				rel, ok = path, true
			}
			if !ok {
				return "", fmt.Errorf("the daemon's cgroup %s is outside the mounted v2 tree %s", path, root)
			}
			return filepath.Join(mount, rel), nil
		}
	}
	return "", errors.New("the daemon has no cgroup in the v2 hierarchy")
}

// unescapeMount undoes the octal escapes of a mountinfo field (\040 for a space).
func unescapeMount(s string) string {
	if !strings.Contains(s, `\`) {
		return s
	}
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		if s[i] == '\\' && i+3 < len(s) {
			if n, err := strconv.ParseUint(s[i+1:i+4], 8, 8); err == nil {
				b.WriteByte(byte(n))
				i += 3
				continue
			}
		}
		b.WriteByte(s[i])
	}
	return b.String()
}

// create makes the cgroup name in the tree and returns its path. One left by a
// crashed run under the same name is emptied first.
func (t *cgroupTree) create(name string) (string, error) {
	path := filepath.Join(t.dir, name)
	err := os.Mkdir(path, 0o755)
	if errors.Is(err, fs.ErrNotExist) {
		// Another daemon took the tree for one left behind: make it again.
		if err := os.Mkdir(t.dir, 0o755); err != nil && !errors.Is(err, fs.ErrExist) {
			return "", fmt.Errorf("make cgroup %s: %w", t.dir, err)
		}
		err = os.Mkdir(path, 0o755)
	}
	if errors.Is(err, fs.ErrExist) {
		// A killed cgroup kills what is cloned into it later: make it anew.
		if !removeCgroup(path, 10*time.Second) {
			return "", fmt.Errorf("cgroup %s is left from an earlier run and would not empty", path)
		}
		err = os.Mkdir(path, 0o755)
	}
	if err != nil {
		return "", fmt.Errorf("make cgroup %s: %w", path, err)
	}
	return path, nil
}

// take returns an empty step cgroup: an idle one, or a new one.
func (t *cgroupTree) take() (string, error) {
	t.mu.Lock()
	for n := len(t.idle); n > 0; n-- {
		path := t.idle[n-1]
		t.idle = t.idle[:n-1]
		// The tree may have been removed under the daemon (by hand, or by a
		// tool that cleans up empty cgroups): a cgroup that is gone is dropped.
		if _, err := os.Stat(path + "/cgroup.procs"); err == nil {
			t.mu.Unlock()
			return path, nil
		}
	}
	t.next++
	name := "step-" + strconv.FormatInt(t.next, 10)
	t.mu.Unlock()
	return t.create(name)
}

// put gives back a step cgroup whose processes are all gone and that was never
// killed through cgroup.kill: it is kept for the next step, or removed when
// enough are kept.
func (t *cgroupTree) put(path string) {
	if hasDescendants(path) {
		// The step made cgroups inside its own: the next step must not find
		// them in its cgroup.
		_ = removeCgroupDirs(path)
		return
	}
	t.mu.Lock()
	if len(t.idle) < maxIdleCgroups {
		t.idle = append(t.idle, path)
		t.mu.Unlock()
		return
	}
	t.mu.Unlock()
	_ = removeCgroupDirs(path)
}

// hasDescendants reports whether a cgroup has cgroups inside it, from its
// cgroup.stat.
func hasDescendants(path string) bool {
	var buf [256]byte
	b, ok := readSmall(path+"/cgroup.stat", buf[:], false)
	if !ok {
		return false
	}
	for line := range bytes.SplitSeq(b, []byte{'\n'}) {
		if v, ok := bytes.CutPrefix(line, []byte("nr_descendants ")); ok {
			return string(v) != "0"
		}
	}
	return false
}

// openCgroup opens a cgroup's folder for cloning a process into it.
func openCgroup(path string) (int, error) {
	fd, err := unix.Open(path, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		return -1, fmt.Errorf("open cgroup %s: %w", path, err)
	}
	return fd, nil
}

// cgroupPids lists the processes in a cgroup.
func cgroupPids(path string) []int {
	b, err := os.ReadFile(filepath.Join(path, "cgroup.procs"))
	if err != nil {
		return nil
	}
	var pids []int
	for f := range bytes.FieldsSeq(b) {
		if pid := int(atou(f)); pid > 0 {
			pids = append(pids, pid)
		}
	}
	return pids
}

// signalCgroup sends sig to every process of a cgroup and of the cgroups a step
// made inside it (a container runtime's): cgroup.procs lists only the
// processes directly in a cgroup, and those below would get no SIGTERM, only
// the SIGKILL of cgroup.kill after the kill grace.
func signalCgroup(path string, sig syscall.Signal) {
	for _, pid := range cgroupPids(path) {
		_ = syscall.Kill(pid, sig)
	}
	ents, err := os.ReadDir(path)
	if err != nil {
		return
	}
	for _, e := range ents {
		if e.IsDir() {
			signalCgroup(filepath.Join(path, e.Name()), sig)
		}
	}
}

// killCgroup kills every process of a cgroup and its descendants at once.
func killCgroup(path string) {
	_ = os.WriteFile(filepath.Join(path, "cgroup.kill"), []byte("1"), 0)
}

// cgroupPopulated reports whether a live process is in the cgroup or its
// children, from its cgroup.events. A cgroup that is gone is empty.
func cgroupPopulated(path string) bool {
	var buf [256]byte
	b, ok := readSmall(path+"/cgroup.events", buf[:], false)
	if !ok {
		return false
	}
	for line := range bytes.SplitSeq(b, []byte{'\n'}) {
		if v, ok := bytes.CutPrefix(line, []byte("populated ")); ok {
			return string(v) != "0"
		}
	}
	return false
}

// removeCgroup kills what is in a cgroup, waits up to wait for it to be empty and
// removes it. It reports whether the cgroup is gone.
func removeCgroup(path string, wait time.Duration) bool {
	if cgroupPopulated(path) {
		killCgroup(path)
		deadline := time.Now().Add(wait)
		for cgroupPopulated(path) && time.Now().Before(deadline) {
			time.Sleep(5 * time.Millisecond)
		}
	}
	return removeCgroupDirs(path) == nil
}

// removeCgroupDirs removes an empty cgroup and the cgroups a step made inside it
// (a container runtime, a spoold run by a job), the deepest first: rmdir of a
// cgroup with a child cgroup fails, and a step cgroup that cannot be removed
// blocks its name at the next start.
func removeCgroupDirs(path string) error {
	err := os.Remove(path)
	if err == nil || errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	ents, rerr := os.ReadDir(path)
	if rerr != nil {
		return err
	}
	for _, e := range ents {
		if e.IsDir() {
			_ = removeCgroupDirs(filepath.Join(path, e.Name()))
		}
	}
	if err := os.Remove(path); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return err
	}
	return nil
}

// sweep kills and removes every step cgroup left in the tree (by a crashed run,
// made before its start could be stored) and reports those that would not go.
func (t *cgroupTree) sweep(wait time.Duration) (stuck []string) {
	ents, err := os.ReadDir(t.dir)
	if err != nil {
		return nil
	}
	for _, e := range ents {
		if !e.IsDir() || strings.HasPrefix(e.Name(), ownerPrefix) {
			continue
		}
		p := filepath.Join(t.dir, e.Name())
		if !removeCgroup(p, wait) {
			stuck = append(stuck, p)
		}
	}
	return stuck
}

// close removes the idle cgroups, and the tree's folder when it is empty.
func (t *cgroupTree) close() {
	t.mu.Lock()
	idle := t.idle
	t.idle = nil
	t.mu.Unlock()
	for _, p := range idle {
		_ = removeCgroupDirs(p)
	}
	_ = os.Remove(t.owner)
	_ = os.Remove(t.dir)
}
