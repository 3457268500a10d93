package store

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"math"
	"time"

	"go.etcd.io/bbolt"

	"spool/rpc"
	"spool/rpc/codec"
)

// Bucket names. The layout is version schemaVersion of the database.
const (
	// bMeta holds the schema version, the store id and the per-state counts.
	bMeta = "meta"
	// bJobs maps id (8 bytes big endian) to the record JSON, without its spec.
	bJobs = "jobs"
	// bSpecs maps id to the spec, written once at submit: its JSON, or its
	// JSON without its env and a reference to the env in bEnvs (envs.go).
	bSpecs = "specs"
	// bQueueIndex held unfinished jobs keyed by queue, then priority
	// descending, then id ascending, with their state (schemas 1 and 2; bReady
	// took its place).
	bQueueIndex = "queue_index"
	// bUnfinished mapped the id of every queued or running job to its state
	// (schemas 1 and 2; bByState's queued and running ranges took its place).
	bUnfinished = "unfinished"
	// bByState holds state|0|id for every job, for listing by state; its
	// queued and running ranges are the index of unfinished jobs.
	bByState = "by_state"
	// bKeys maps an idempotency key to the id of its job.
	bKeys = "keys"
	// bDependents holds dep id|dependent id for every unfinished dependent.
	bDependents = "dependents"
	// bEvents maps seq (8 bytes big endian) to the event JSON; its bucket
	// sequence is the last seq ever given.
	bEvents = "events"
	// bQueues maps a queue name to its settings JSON.
	bQueues = "queues"
	// bTemplates maps a template name to its JSON.
	bTemplates = "templates"
	// bEnvs maps the SHA-256 of an environment's canonical JSON to that JSON
	// (schema 2; see envs.go).
	bEnvs = "envs"
	// bEnvRefs maps the same key to the number of stored specs that refer to
	// it (8 bytes big endian), never 0: the last reference deletes both.
	bEnvRefs = "env_refs"
	// bReady holds the queued jobs that Claim may take (every dependency
	// succeeded, the not_before, if any, due when Claim last looked): a
	// bucket per queue (named by queuePrefix) keyed by prioKey, so that the
	// jobs of one queue, however many, cost the claims of another nothing. A
	// queue with none has no bucket (schema 3).
	bReady = "ready"
	// bTimers holds the queued jobs whose dependencies all succeeded and that
	// have a not_before, keyed by not_before (see timeKey) then id; Claim moves
	// the due ones to bReady (schema 3). A queued job in neither bucket waits
	// for a dependency; bDependents finds it when that one ends.
	bTimers = "timers"
	// bQueueCounts maps a queue name to its numbers of queued and running jobs
	// (8 bytes big endian each); a queue with neither has no entry (schema 3).
	bQueueCounts = "queue_counts"
	// bCancels holds the id of every unfinished job with a cancel stored
	// (Run.CancelReason), for Renew (schema 3).
	bCancels = "cancels"
	// bSchedules maps a schedule name to its JSON, with its last fired slot
	// (schema 4; see schedules.go).
	bSchedules = "schedules"
)

// bucketNames lists every bucket of the layout.
func bucketNames() []string { return bucketsOf(schemaVersion) }

// bucketsOf lists the buckets of schema version v.
func bucketsOf(v int) []string {
	names := []string{bMeta, bJobs, bSpecs, bByState, bKeys, bDependents, bEvents, bQueues, bTemplates}
	if v < 3 {
		names = append(names, bQueueIndex, bUnfinished)
	}
	if v >= 2 {
		names = append(names, bEnvs, bEnvRefs)
	}
	if v >= 3 {
		names = append(names, bReady, bTimers, bQueueCounts, bCancels)
	}
	if v >= 4 {
		names = append(names, bSchedules)
	}
	return names
}

// Keys of the meta bucket.
const (
	metaVersion = "version"
	metaStoreID = "store_id"
	// metaCount is the prefix of the per-state job counts (8 bytes big endian).
	metaCount = "count:"
	// metaEpoch is the last epoch Join gave (8 bytes big endian; schema 3).
	metaEpoch = "epoch"
)

// jobStates are the states a job can be in, in the order Counts reports them.
func jobStates() []rpc.State {
	return []rpc.State{rpc.StateQueued, rpc.StateRunning, rpc.StateSucceeded, rpc.StateFailed, rpc.StateCancelled}
}

// finalStates are the final job states, the ones Prune considers by default.
func finalStates() []rpc.State {
	return []rpc.State{rpc.StateSucceeded, rpc.StateFailed, rpc.StateCancelled}
}

// txb is a transaction's handles on every bucket.
type txb struct {
	tx         *bbolt.Tx
	meta       *bbolt.Bucket
	jobs       *bbolt.Bucket
	specs      *bbolt.Bucket
	byState    *bbolt.Bucket
	keys       *bbolt.Bucket
	dependents *bbolt.Bucket
	events     *bbolt.Bucket
	queues     *bbolt.Bucket
	templates  *bbolt.Bucket
	envs       *bbolt.Bucket
	envRefs    *bbolt.Bucket
	ready      *bbolt.Bucket
	timers     *bbolt.Bucket
	qcounts    *bbolt.Bucket
	cancels    *bbolt.Bucket
	schedules  *bbolt.Bucket
	// dec decodes stored JSON (records, specs, events): the store's decoder.
	dec *codec.Decoder
}

// buckets opens every bucket of tx; Open made sure that they exist.
func buckets(tx *bbolt.Tx) (*txb, error) {
	b := &txb{tx: tx}
	for _, p := range []struct {
		name string
		dst  **bbolt.Bucket
	}{
		{bMeta, &b.meta}, {bJobs, &b.jobs}, {bSpecs, &b.specs}, {bByState, &b.byState}, {bKeys, &b.keys},
		{bDependents, &b.dependents}, {bEvents, &b.events}, {bQueues, &b.queues}, {bTemplates, &b.templates},
		{bEnvs, &b.envs}, {bEnvRefs, &b.envRefs},
		{bReady, &b.ready}, {bTimers, &b.timers}, {bQueueCounts, &b.qcounts}, {bCancels, &b.cancels},
		{bSchedules, &b.schedules},
	} {
		*p.dst = tx.Bucket([]byte(p.name))
		if *p.dst == nil {
			return nil, fmt.Errorf("bucket %q is missing", p.name)
		}
	}
	// Ids and seqs only grow: pages of these buckets fill up and are rarely
	// split again, so fill them well (bbolt's default leaves half of each empty).
	b.jobs.FillPercent = 0.9
	b.specs.FillPercent = 0.9
	b.events.FillPercent = 0.9
	return b, nil
}

// itob encodes an id or seq as 8 bytes big endian, so that keys sort by number.
func itob(v int64) []byte {
	b := make([]byte, 8)
	binary.BigEndian.PutUint64(b, uint64(v))
	return b
}

// btoi decodes 8 bytes big endian.
func btoi(b []byte) int64 { return int64(binary.BigEndian.Uint64(b)) }

// statePrefix is the prefix of a state's entries in bByState.
func statePrefix(st rpc.State) []byte {
	p := make([]byte, 0, len(st)+9)
	p = append(p, st...)
	return append(p, 0)
}

// stateKey is the bByState key of job id in state st.
func stateKey(st rpc.State, id int64) []byte { return append(statePrefix(st), itob(id)...) }

// queuePrefix names a queue's bucket in bReady: the name's length (2 bytes) and
// the name, never empty as a bucket's name must not be.
func queuePrefix(queue string) ([]byte, error) {
	if len(queue) > math.MaxUint16 {
		return nil, fmt.Errorf("queue name of %d bytes is too long", len(queue))
	}
	p := make([]byte, 2, 2+len(queue)+16)
	binary.BigEndian.PutUint16(p, uint16(len(queue)))
	return append(p, queue...), nil
}

// prioKey is a job's key in its queue's bucket of bReady: priority descending,
// then id ascending, so that the first key is the job to claim next.
func prioKey(priority int, id int64) []byte {
	k := make([]byte, 0, 16)
	// Flipping the sign bit orders signed numbers as unsigned; inverting all the
	// bits then makes the order descending.
	k = binary.BigEndian.AppendUint64(k, ^(uint64(int64(priority)) ^ (1 << 63)))
	return append(k, itob(id)...)
}

// depKey is the bDependents key saying that job id waits for job dep.
func depKey(dep, id int64) []byte { return append(itob(dep), itob(id)...) }

// countKey is the meta key of the number of jobs in state st.
func countKey(st rpc.State) []byte { return []byte(metaCount + string(st)) }

// hasPrefix reports whether bucket b holds a key starting with prefix.
func hasPrefix(b *bbolt.Bucket, prefix []byte) bool {
	k, _ := b.Cursor().Seek(prefix)
	return k != nil && bytes.HasPrefix(k, prefix)
}

// idsWithPrefix returns the ids that end the keys of b starting with prefix
// (prefix followed by 8 bytes).
func idsWithPrefix(b *bbolt.Bucket, prefix []byte) []int64 {
	var ids []int64
	c := b.Cursor()
	for k, _ := c.Seek(prefix); k != nil && bytes.HasPrefix(k, prefix); k, _ = c.Next() {
		if len(k) == len(prefix)+8 {
			ids = append(ids, btoi(k[len(prefix):]))
		}
	}
	return ids
}

// timeKey is the bTimers key of job id whose not_before is at: the time in
// nanoseconds since 1970 with the sign bit flipped (so that keys sort by time),
// then the id. Times outside what an int64 of nanoseconds holds are clamped.
func timeKey(at time.Time, id int64) []byte {
	k := make([]byte, 0, 16)
	k = binary.BigEndian.AppendUint64(k, uint64(unixNano(at))^(1<<63))
	return append(k, itob(id)...)
}

// unixNano is at in nanoseconds since 1970, clamped to an int64.
func unixNano(at time.Time) int64 {
	switch {
	case at.Before(minTime):
		return math.MinInt64
	case at.After(maxTime):
		return math.MaxInt64
	}
	return at.UnixNano()
}

// The times an int64 of nanoseconds since 1970 holds.
var (
	minTime = time.Unix(0, math.MinInt64)
	maxTime = time.Unix(0, math.MaxInt64)
)

// keyTime is the time of a bTimers key.
func keyTime(k []byte) time.Time {
	return time.Unix(0, int64(binary.BigEndian.Uint64(k)^(1<<63))).UTC()
}

// queueOfName is the queue a bucket of bReady is named after; ok is false for a
// name of another layout.
func queueOfName(k []byte) (name string, ok bool) {
	if len(k) < 2 || int(binary.BigEndian.Uint16(k)) != len(k)-2 {
		return "", false
	}
	return string(k[2:]), true
}
