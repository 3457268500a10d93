package daemon

import (
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"syscall"
	"time"

	"spool/rpc"
)

// Containment modes of Config.Containment.
const (
	// ContainAuto uses a cgroup per step where the daemon has a writable cgroup v2
	// subtree, and process groups elsewhere. It is the default.
	ContainAuto = "auto"
	// ContainCgroup requires a cgroup per step: the daemon refuses to start
	// without a writable cgroup v2 subtree.
	ContainCgroup = "cgroup"
	// ContainGroup uses process groups, the subreaper role and the environment
	// mark of each job's processes, without cgroups.
	ContainGroup = "group"
)

// stepProcs reaches every process of one attempt of a step. With a cgroup that is
// the cgroup; without, the main process's group, plus the orphans the daemon
// adopted as a subreaper whose environment carries the job's mark.
type stepProcs struct {
	cgroup string // the attempt's cgroup, "" without
	pgid   int    // the main process's group, once it runs
	mark   string // "SPOOL_RESULTS_DIR=<folder>": in the environment of each of the job's processes
	// released is set once the cgroup went back to the tree: a later look at the
	// step must not reach whatever uses it next.
	released bool
	// again says the attempt starts again: the daemon stopped while it ran.
	again bool
	// hurry is closed once the lease of the step's job is lost: what is left
	// of the step is killed at once, grace or not.
	hurry <-chan struct{}
	// killed is set once cgroup.kill was written: the kernel then kills every
	// process cloned into that cgroup later, so it is never used again.
	killed bool
	// pause says whether job.pause stopped the processes.
	pause procsPause
}

// releaseStep gives the step's cgroup back to the tree once its processes are
// all gone, once.
func (d *Daemon) releaseStep(sp *stepProcs) {
	if sp.cgroup == "" || sp.released {
		return
	}
	sp.released = true
	if sp.killed {
		_ = removeCgroup(sp.cgroup, time.Second)
		return
	}
	d.cgroups.put(sp.cgroup)
}

// setupContainment picks the containment in force, as cfg.Containment asks.
func (d *Daemon) setupContainment() error {
	mode := d.cfg.Containment
	switch mode {
	case "", ContainAuto, ContainCgroup:
	case ContainGroup:
		d.setContainment(ContainGroup, "process groups, as --containment group asks")
		return nil
	default:
		return fmt.Errorf("containment %q: must be auto, cgroup or group", mode)
	}
	tree, err := openCgroupTree(d.treeName())
	if err != nil {
		if mode == ContainCgroup {
			return fmt.Errorf("containment cgroup: %w", err)
		}
		d.setContainment(ContainGroup, "process groups: no writable cgroup v2 subtree ("+err.Error()+"); run spoold as root or under systemd with Delegate=yes")
		d.log.Warn("steps are contained by process groups only: a process that leaves its group and resets its environment can outlive its step",
			"reason", err)
		return nil
	}
	if err := d.spawn.probeCgroup(tree); err != nil {
		tree.close()
		if mode == ContainCgroup {
			return fmt.Errorf("containment cgroup: %w", err)
		}
		d.setContainment(ContainGroup, "process groups: starting a process in a cgroup failed ("+err.Error()+")")
		d.log.Warn("steps are contained by process groups only", "reason", err)
		return nil
	}
	d.cgroups = tree
	d.setContainment(ContainCgroup, "a cgroup per step under "+tree.dir)
	return nil
}

// treeName names the daemon's folder of step cgroups: one per state folder. The
// store's id alone is not enough: a copy of a state folder (a backup restored
// beside the original) has the same id, and a daemon on the copy would sweep,
// and make again under the same names, the step cgroups of the daemon on the
// original while they run. The folder is told by its device and inode, not its
// path: a daemon restarted on the same folder through a symbolic link, or after
// a move, must find the cgroups of its crashed run.
func (d *Daemon) treeName() string {
	where := d.cfg.StateDir
	if fi, err := os.Stat(d.cfg.StateDir); err == nil {
		if st, ok := fi.Sys().(*syscall.Stat_t); ok {
			where = fmt.Sprint(st.Dev, ":", st.Ino)
		}
	}
	h := sha256.Sum256([]byte(d.store.StoreID() + "\x00" + where))
	return "spool-" + hex.EncodeToString(h[:12])
}

// setContainment records the containment in force for daemon.info.
func (d *Daemon) setContainment(mode, note string) {
	d.mu.Lock()
	d.containment, d.containNote = mode, note
	d.mu.Unlock()
}

// newStepProcs makes what will reach the processes of the attempt of step i of
// rec that is about to start: its cgroup, made now, before the start is stored.
func (d *Daemon) newStepProcs(rec *rpc.Record, i int) (*stepProcs, error) {
	sp := &stepProcs{mark: "SPOOL_RESULTS_DIR=" + d.jobResultDir(rec.ID)}
	if d.cgroups == nil {
		return sp, nil
	}
	path, err := d.cgroups.take()
	if err != nil {
		return nil, err
	}
	sp.cgroup = path
	return sp, nil
}

// signal sends sig to every process of the step.
func (d *Daemon) signalStep(sp *stepProcs, sig syscall.Signal) {
	if sp.cgroup != "" {
		if sig == syscall.SIGKILL {
			sp.killed = true
			killCgroup(sp.cgroup)
			return
		}
		signalCgroup(sp.cgroup, sig)
		return
	}
	killGroup(sp.pgid, sig)
	for _, pid := range d.escaped(sp) {
		_ = syscall.Kill(pid, sig)
		// An orphan that leads a group of its own (setsid) takes that group along.
		killGroup(pid, sig)
	}
}

// stepAlive reports whether a process of the step still lives.
func (d *Daemon) stepAlive(sp *stepProcs) bool {
	if sp.cgroup != "" {
		return cgroupPopulated(sp.cgroup)
	}
	return groupAlive(sp.pgid) || len(d.escaped(sp)) > 0
}

// escaped lists the step's processes that left its group and were adopted by the
// daemon when their parent died.
func (d *Daemon) escaped(sp *stepProcs) []int {
	var out []int
	for _, pid := range d.spawn.orphans() {
		if envHas(pid, sp.mark) {
			out = append(out, pid)
		}
	}
	return out
}

// stopStepProcs ends what is left of a step once its main process is gone: SIGTERM
// to every process now, SIGKILL to those still there after grace (at once when
// grace is 0, or as soon as hurry is closed: the lease of the step's job is
// lost), then the cgroup is removed. It returns a channel closed once none is
// left (or, for a process that would not die, once it gave up and logged it).
func (d *Daemon) stopStepProcs(sp *stepProcs, grace time.Duration, hurry <-chan struct{}) <-chan struct{} {
	d.endPause(sp)
	done := make(chan struct{})
	if sp.released || !d.stepAlive(sp) {
		d.releaseStep(sp)
		close(done)
		return done
	}
	if grace <= 0 {
		d.signalStep(sp, syscall.SIGKILL)
	} else {
		d.signalStep(sp, syscall.SIGTERM)
	}
	d.bg.Add(1)
	go func() {
		defer d.bg.Done()
		defer close(done)
		d.endStepProcs(sp, time.Now().Add(grace), hurry)
	}()
	return done
}

// endStepProcs waits until the step's processes are gone, SIGKILLs them once the
// deadline passed or hurry is closed (nil: never), and removes the step's
// cgroup.
func (d *Daemon) endStepProcs(sp *stepProcs, deadline time.Time, hurry <-chan struct{}) {
	killed := false
	giveUp := time.Time{}
	for d.stepAlive(sp) {
		now := time.Now()
		hurried := false
		select {
		case <-hurry:
			hurried = true
		default:
		}
		if !killed && (hurried || !now.Before(deadline)) {
			killed = true
			giveUp = now.Add(10 * time.Second)
		}
		if killed {
			// Again each round: orphans that a kill made show up only after it.
			d.signalStep(sp, syscall.SIGKILL)
			if now.After(giveUp) {
				d.log.Error("processes of a step would not die", "cgroup", sp.cgroup, "pgid", sp.pgid)
				break
			}
		} else {
			// Orphans adopted since the last round get their SIGTERM too.
			for _, pid := range d.escaped(sp) {
				_ = syscall.Kill(pid, syscall.SIGTERM)
			}
		}
		time.Sleep(20 * time.Millisecond)
	}
	d.releaseStep(sp)
}

// killLeftovers stops, before anything resumes, every process an earlier run
// left: the stored cgroups and process groups of its running jobs, every step
// cgroup of the tree (made for a start that was not stored yet), and every
// process whose environment carries the mark of one of this state folder's jobs
// (what left its group where there is no cgroup, or started before its start was
// stored). It waits until they are gone.
//
// What the store names is killed only when it is this state folder's: a store
// copied from a running daemon's names that daemon's cgroups and groups.
func (d *Daemon) killLeftovers(recs []rpc.Record) {
	var ours map[int]bool // the groups with a process of this state folder's jobs
	if runtime.GOOS == "linux" {
		ours = map[int]bool{}
		for _, pid := range d.markedLeftovers() {
			if g, err := syscall.Getpgid(pid); err == nil {
				ours[g] = true
			}
		}
	}
	tree := d.treeName()
	var cgroups []string
	for _, rec := range recs {
		for _, p := range rec.Run.Procs {
			if p.Cgroup != "" {
				if filepath.Base(filepath.Dir(p.Cgroup)) == tree {
					cgroups = append(cgroups, p.Cgroup)
				} else {
					d.log.Warn("not killing a stored step cgroup of another state folder", "id", rec.ID, "cgroup", p.Cgroup)
				}
			}
			if ours != nil && !ours[p.PGID] {
				// No process of the group carries this folder's mark: the group is
				// gone, or another daemon's (a copy's) and not to be touched.
				continue
			}
			d.killLeftover(p)
		}
	}
	for _, cg := range cgroups {
		if !removeCgroup(cg, 10*time.Second) {
			d.log.Error("a leftover step cgroup would not empty", "cgroup", cg)
		} else {
			d.log.Info("killed a leftover step cgroup", "cgroup", cg)
		}
	}
	if d.cgroups != nil {
		for _, cg := range d.cgroups.sweep(10 * time.Second) {
			d.log.Error("a leftover step cgroup would not empty", "cgroup", cg)
		}
	}
	deadline := time.Now().Add(10 * time.Second)
	for {
		pids := d.markedLeftovers()
		if len(pids) == 0 {
			return
		}
		if time.Now().After(deadline) {
			d.log.Error("leftover processes would not die", "count", len(pids))
			return
		}
		for _, pid := range pids {
			d.log.Info("killing a leftover process", "pid", pid)
			_ = syscall.Kill(pid, syscall.SIGKILL)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// markedLeftovers lists the living processes that carry the mark of one of this
// state folder's jobs: a SPOOL_RESULTS_DIR in its results folder. The folder is
// compared as a file, not as a path: the run that started them may have reached
// the state folder through another path (a symbolic link, before a move), and a
// copy of the state folder (another daemon's) is another folder.
func (d *Daemon) markedLeftovers() []int {
	const name = "SPOOL_RESULTS_DIR="
	prefix := name + d.resDir + string(filepath.Separator)
	res, err := os.Stat(d.resDir)
	if err != nil {
		return procsWithEnvPrefix(prefix)
	}
	var out []int
	for _, pid := range procsWithEnvPrefix(name) {
		b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/environ")
		if err != nil {
			continue
		}
		for kv := range strings.SplitSeq(string(b), "\x00") {
			v, ok := strings.CutPrefix(kv, name)
			if !ok {
				continue
			}
			if strings.HasPrefix(kv, prefix) {
				out = append(out, pid)
			} else if fi, err := os.Stat(filepath.Dir(v)); err == nil && os.SameFile(fi, res) {
				out = append(out, pid)
			}
			break
		}
	}
	return out
}
