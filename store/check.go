package store

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"

	"go.etcd.io/bbolt"

	"spool/rpc"
)

// maxProblems bounds how many problems Check reports.
const maxProblems = 50

// Check verifies the database without changing it: bbolt's own consistency check,
// then spool's invariants: every record has its spec and exactly its index
// entries (by state, dependents, key), the stored
// counts match the records, the scheduling buckets hold exactly what the records
// say (a queued job whose dependencies all succeeded is claimable or waits for
// its not_before, one with an unfinished dependency is in neither, none has a
// failed one; each queue's queued and running jobs; the cancels of unfinished
// jobs; an epoch counter at least every stored epoch), and the events run without
// a gap from the oldest to the last seq given. It returns every problem found (up to a bound), joined.
func (s *Store) Check(ctx context.Context) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	if s.closed() {
		return rpc.ShuttingDown()
	}
	var problems []error
	report := func(format string, args ...any) {
		if len(problems) < maxProblems {
			problems = append(problems, fmt.Errorf(format, args...))
		}
	}
	err := s.db.View(func(tx *bbolt.Tx) error {
		for err := range tx.Check() {
			report("bbolt: %w", err)
		}
		b, err := buckets(tx)
		if err != nil {
			return err
		}
		b.dec = s.dec
		checkMeta(b, report)
		if err := checkJobs(ctx, b, report); err != nil {
			return err
		}
		checkEvents(b, report)
		checkSchedules(b, report)
		return nil
	})
	if err != nil {
		return fmt.Errorf("check store: %w", err)
	}
	if len(problems) > 0 {
		return fmt.Errorf("check store: %w", errors.Join(problems...))
	}
	return nil
}

// checkMeta checks the schema version and the store id.
func checkMeta(b *txb, report func(string, ...any)) {
	if v := string(b.meta.Get([]byte(metaVersion))); v != strconv.Itoa(schemaVersion) {
		report("meta: schema version %q, want %d", v, schemaVersion)
	}
	if len(b.meta.Get([]byte(metaStoreID))) != 32 {
		report("meta: store id %q is not 16 bytes in hex", b.meta.Get([]byte(metaStoreID)))
	}
	if len(b.meta.Get([]byte(metaEpoch))) != 8 {
		report("meta: epoch %x is not 8 bytes", b.meta.Get([]byte(metaEpoch)))
	}
}

// schedCheck accumulates what the records say the scheduling buckets hold.
type schedCheck struct {
	ready, timers, cancels int
	queues                 map[string][2]int64
	maxEpoch               int64
}

// checkSched checks the scheduling entries of unfinished job rec.
func checkSched(b *txb, rec *rpc.Record, sc *schedCheck, report func(string, ...any)) {
	id := rec.ID
	sc.maxEpoch = max(sc.maxEpoch, rec.Run.Epoch)
	n := sc.queues[rec.Queue]
	if rec.State == rpc.StateQueued {
		n[0]++
	} else {
		n[1]++
	}
	sc.queues[rec.Queue] = n
	if rec.Run.CancelReason != nil {
		sc.cancels++
		if b.cancels.Get(itob(id)) == nil {
			report("job %d: cancel stored, not in the cancels", id)
		}
	}
	if rec.State != rpc.StateQueued {
		return
	}
	inReady := b.readyHas(rec.Queue, rec.Priority, id)
	inTimers := rec.NotBefore != nil && b.timers.Get(timeKey(*rec.NotBefore, id)) != nil
	if inReady {
		sc.ready++
	}
	if inTimers {
		sc.timers++
	}
	failed, waiting, err := b.deps(rec.After)
	switch {
	case err != nil:
		report("job %d: %v", id, err)
	case failed != 0:
		report("job %d: queued, its dependency %d did not succeed", id, failed)
	case rec.Run.Held && (inReady || inTimers):
		report("job %d: held, yet claimable (ready %v, timer %v)", id, inReady, inTimers)
	case rec.Run.Held:
	case rec.PausedAt != nil && (inReady || inTimers):
		report("job %d: paused, yet claimable (ready %v, timer %v)", id, inReady, inTimers)
	case rec.PausedAt != nil:
	case waiting && (inReady || inTimers):
		report("job %d: waits for a dependency, yet claimable (ready %v, timer %v)", id, inReady, inTimers)
	case !waiting && inReady == inTimers:
		report("job %d: its dependencies succeeded, ready %v, timer %v: want one", id, inReady, inTimers)
	}
}

// checkSchedTotals checks the scheduling buckets against what checkSched saw:
// no entry more.
func checkSchedTotals(b *txb, sc *schedCheck, report func(string, ...any)) {
	ready := 0
	b.ready.ForEach(func(k, v []byte) error {
		qb := b.ready.Bucket(k)
		if _, ok := queueOfName(k); !ok || v != nil || qb == nil {
			report("ready: %x is not a queue's bucket", k)
			return nil
		}
		n := 0
		qb.ForEach(func(k, _ []byte) error {
			if n++; len(k) != 16 {
				report("ready: bad key %x", k)
			}
			return nil
		})
		if n == 0 {
			report("ready: the bucket of %x is empty", k)
		}
		ready += n
		return nil
	})
	if ready != sc.ready {
		report("ready: %d entries for %d claimable jobs", ready, sc.ready)
	}
	if n := b.timers.Stats().KeyN; n != sc.timers {
		report("timers: %d entries for %d jobs waiting for their not_before", n, sc.timers)
	}
	if n := b.cancels.Stats().KeyN; n != sc.cancels {
		report("cancels: %d entries for %d unfinished jobs with a cancel", n, sc.cancels)
	}
	b.qcounts.ForEach(func(k, v []byte) error {
		q, r := countsOf(v)
		if want := sc.queues[string(k)]; int64(q) != want[0] || int64(r) != want[1] {
			report("queue %q: counts say %d queued, %d running; records %d, %d", k, q, r, want[0], want[1])
		}
		return nil
	})
	for name, want := range sc.queues {
		if b.qcounts.Get([]byte(name)) == nil {
			report("queue %q: no counts, records say %d queued, %d running", name, want[0], want[1])
		}
	}
	if v := b.meta.Get([]byte(metaEpoch)); len(v) == 8 && btoi(v) < sc.maxEpoch {
		report("meta: epoch %d below the stored epoch %d", btoi(v), sc.maxEpoch)
	}
}

// checkJobs checks every record against its spec, indexes and counts, then every
// index entry against the records.
func checkJobs(ctx context.Context, b *txb, report func(string, ...any)) error {
	count := make(map[rpc.State]int64)
	keyed := 0
	deps := 0
	var maxID int64
	// refs counts the specs that refer to each environment, by key.
	refs := make(map[string]int64)
	sc := &schedCheck{queues: make(map[string][2]int64)}
	c := b.jobs.Cursor()
	n := 0
	for k, v := c.First(); k != nil; k, v = c.Next() {
		if n++; n%4096 == 0 {
			if err := ctx.Err(); err != nil {
				return err
			}
		}
		if len(k) != 8 {
			report("jobs: key %x is not 8 bytes", k)
			continue
		}
		id := btoi(k)
		maxID = max(maxID, id)
		var rec rpc.Record
		if err := json.Unmarshal(v, &rec); err != nil {
			report("job %d: decode: %v", id, err)
			continue
		}
		if rec.ID != id {
			report("job %d: record says id %d", id, rec.ID)
		}
		if rec.Spec != nil {
			report("job %d: record carries its spec", id)
		}
		if raw := b.specs.Get(k); raw == nil {
			report("job %d: no spec", id)
		} else if key, body, err := envRef(raw); err != nil {
			report("job %d: %v", id, err)
		} else {
			var spec rpc.Spec
			if err := json.Unmarshal(body, &spec); err != nil {
				report("job %d: decode spec: %v", id, err)
			} else if key != nil && spec.Env != nil {
				report("job %d: spec refers to an environment and carries one", id)
			}
			if key != nil {
				refs[string(key)]++
			}
		}
		count[rec.State]++
		if b.byState.Get(stateKey(rec.State, id)) == nil {
			report("job %d: not in the by-state index as %s", id, rec.State)
		}
		if !rec.State.Final() {
			checkSched(b, &rec, sc, report)
			for _, dep := range rec.After {
				deps++
				if b.dependents.Get(depKey(dep, id)) == nil {
					report("job %d: dependency on %d not in the dependents index", id, dep)
				}
				if b.jobs.Get(itob(dep)) == nil {
					report("job %d: unfinished, depends on %d, which is not stored", id, dep)
				}
			}
		}
		if rec.Key != nil && *rec.Key != "" {
			keyed++
			if v := b.keys.Get([]byte(*rec.Key)); v == nil || btoi(v) != id {
				report("job %d: key %q not indexed to it", id, *rec.Key)
			}
		}
	}
	if seq := int64(b.jobs.Sequence()); seq < maxID {
		report("jobs: sequence %d below the highest id %d", seq, maxID)
	}

	for _, st := range jobStates() {
		var stored int64
		if v := b.meta.Get(countKey(st)); v != nil {
			stored = btoi(v)
		}
		if stored != count[st] {
			report("counts: %s is %d, records say %d", st, stored, count[st])
		}
	}
	for st, n := range count {
		if !isJobState(st) {
			report("counts: %d jobs in unknown state %q", n, st)
		}
	}

	if n := b.specs.Stats().KeyN; n != b.jobs.Stats().KeyN {
		report("specs: %d specs for %d jobs", n, b.jobs.Stats().KeyN)
	}
	byState := 0
	b.byState.ForEach(func(k, _ []byte) error {
		byState++
		i := bytes.IndexByte(k, 0)
		if i < 0 || len(k) != i+9 {
			report("by-state: bad key %x", k)
			return nil
		}
		id := btoi(k[i+1:])
		var rec struct {
			State rpc.State `json:"state"`
		}
		if raw := b.jobs.Get(k[i+1:]); raw == nil {
			report("by-state: job %d is not stored", id)
		} else if json.Unmarshal(raw, &rec) == nil && string(rec.State) != string(k[:i]) {
			report("by-state: job %d listed as %s, is %s", id, k[:i], rec.State)
		}
		return nil
	})
	if byState != b.jobs.Stats().KeyN {
		report("by-state: %d entries for %d jobs", byState, b.jobs.Stats().KeyN)
	}
	if n := b.dependents.Stats().KeyN; n != deps {
		report("dependents: %d entries for %d dependencies of unfinished jobs", n, deps)
	}
	if n := b.keys.Stats().KeyN; n != keyed {
		report("keys: %d entries for %d jobs with a key", n, keyed)
	}
	checkEnvs(b, refs, report)
	checkSchedTotals(b, sc, report)
	return nil
}

// checkEnvs checks the stored environments against refs, the number of specs
// that refer to each: every one is stored once, under the SHA-256 of its content,
// with its count of references; none is stored that no spec refers to.
func checkEnvs(b *txb, refs map[string]int64, report func(string, ...any)) {
	b.envRefs.ForEach(func(k, v []byte) error {
		if len(v) != 8 {
			report("environment %x: reference count of %d bytes", k, len(v))
			return nil
		}
		if n := btoi(v); n != refs[string(k)] {
			report("environment %x: %d references counted, %d specs refer to it", k, n, refs[string(k)])
		}
		if b.envs.Get(k) == nil {
			report("environment %x: counted but not stored", k)
		}
		return nil
	})
	for k, n := range refs {
		if b.envRefs.Get([]byte(k)) == nil {
			report("environment %x: %d specs refer to it, no count", k, n)
		}
	}
	b.envs.ForEach(func(k, v []byte) error {
		if sum := sha256.Sum256(v); !bytes.Equal(k, sum[:]) {
			report("environment %x: its content's SHA-256 is %x", k, sum)
		}
		var env map[string]string
		if err := json.Unmarshal(v, &env); err != nil {
			report("environment %x: decode: %v", k, err)
		} else if len(env) == 0 {
			report("environment %x: empty", k)
		}
		if refs[string(k)] == 0 {
			report("environment %x: stored, no spec refers to it", k)
		}
		return nil
	})
}

// isJobState reports whether st is a state a job can be in.
func isJobState(st rpc.State) bool {
	for _, s := range jobStates() {
		if s == st {
			return true
		}
	}
	return false
}

// checkEvents checks that the events run without a gap up to the last seq given.
func checkEvents(b *txb, report func(string, ...any)) {
	last := int64(b.events.Sequence())
	var prev int64
	c := b.events.Cursor()
	for k, v := c.First(); k != nil; k, v = c.Next() {
		seq := btoi(k)
		if prev != 0 && seq != prev+1 {
			report("events: gap between %d and %d", prev, seq)
		}
		prev = seq
		var ev rpc.Event
		if err := json.Unmarshal(v, &ev); err != nil {
			report("event %d: decode: %v", seq, err)
		} else if ev.Seq != seq {
			report("event %d: says seq %d", seq, ev.Seq)
		}
	}
	if prev != 0 && prev != last {
		report("events: last stored %d, last given %d", prev, last)
	}
}
