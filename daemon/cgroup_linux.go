//go:build linux

package daemon

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strconv"
	"strings"
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
	dir string
}

// openCgroupTree makes (or reuses) the folder name under the daemon's own cgroup
// of the v2 hierarchy and checks that step cgroups can be made and killed in it.
func openCgroupTree(name string) (*cgroupTree, error) {
	own, err := ownCgroup2()
	if err != nil {
		return nil, err
	}
	dir := filepath.Join(own, name)
	if err := os.Mkdir(dir, 0o755); err != nil && !errors.Is(err, fs.ErrExist) {
		return nil, fmt.Errorf("make cgroup %s: %w", dir, err)
	}
	probe := filepath.Join(dir, "probe")
	if err := os.Mkdir(probe, 0o755); err != nil && !errors.Is(err, fs.ErrExist) {
		return nil, fmt.Errorf("make a cgroup in %s: %w", dir, err)
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
	return &cgroupTree{dir: dir}, nil
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
	if errors.Is(err, fs.ErrExist) {
		killCgroup(path)
		err = nil
	}
	if err != nil {
		return "", fmt.Errorf("make cgroup %s: %w", path, err)
	}
	return path, nil
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

// signalCgroup sends sig to every process of a cgroup.
func signalCgroup(path string, sig syscall.Signal) {
	for _, pid := range cgroupPids(path) {
		_ = syscall.Kill(pid, sig)
	}
}

// killCgroup kills every process of a cgroup and its descendants at once.
func killCgroup(path string) {
	_ = os.WriteFile(filepath.Join(path, "cgroup.kill"), []byte("1"), 0)
}

// cgroupPopulated reports whether a live process is in the cgroup. A cgroup that
// is gone is empty.
func cgroupPopulated(path string) bool {
	f, err := os.Open(filepath.Join(path, "cgroup.events"))
	if err != nil {
		return false
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if v, ok := strings.CutPrefix(sc.Text(), "populated "); ok {
			return v != "0"
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
	err := os.Remove(path)
	return err == nil || errors.Is(err, fs.ErrNotExist)
}

// sweep kills and removes every step cgroup left in the tree (by a crashed run,
// made before its start could be stored) and reports those that would not go.
func (t *cgroupTree) sweep(wait time.Duration) (stuck []string) {
	ents, err := os.ReadDir(t.dir)
	if err != nil {
		return nil
	}
	for _, e := range ents {
		if !e.IsDir() {
			continue
		}
		p := filepath.Join(t.dir, e.Name())
		if !removeCgroup(p, wait) {
			stuck = append(stuck, p)
		}
	}
	return stuck
}

// close removes the tree's folder when it is empty.
func (t *cgroupTree) close() { _ = os.Remove(t.dir) }
