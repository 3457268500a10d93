package daemon

import (
	"context"
	"time"

	"spool/rpc"
	"spool/rpc/machine"
)

// Store is what the daemon needs from storage. Each mutating call is one durable
// transaction (committed and synced before it returns) and returns the events it
// stored with their seq, consecutive within the call. Errors are *rpc.Error values
// where the protocol names the cause (-32602, 1001, 1002, 1008), and 1004 for a
// storage failure, in which case nothing was applied.
type Store interface {
	// StoreID is the random id made with the database.
	StoreID() string

	// Submit stores new jobs, all or none. The store assigns ids in order, resolves
	// each spec's AfterIndex into Job.After, checks that every id in After exists
	// (-32602 naming NewJob.Field + ".after[i]"), and for a job whose key is already
	// stored returns the stored job instead when the specs are equal, 1008 when they
	// differ. A new job with a dependency that is final but did not succeed fails
	// in the same transaction (machine.EndUnstarted, machine.DependencyFailed). It
	// returns the records in the order given (with Spec set) and the events of the
	// jobs it created.
	Submit(ctx context.Context, jobs []rpc.NewJob) ([]rpc.Record, []rpc.Event, error)

	// Apply stores transitions in one transaction: each replaces the record of an
	// existing job whose stored state is still From (and, when the transition
	// names an Epoch, whose stored Run.Epoch is still that one) and appends its
	// events. If any job is missing, not in its From state or owned by another
	// epoch, nothing is applied and the error is 1001 or 1002 (with the state
	// found). A stored cancel request (Run.CancelReason) is kept when the new
	// record has none. The store keeps its own bookkeeping in the same
	// transaction: queue counts; a job that became final other than succeeded
	// fails its queued dependents (machine.EndUnstarted with
	// machine.DependencyFailed, transitively, their records and events added to
	// what Apply returns); one that succeeded makes runnable the dependents
	// whose dependencies have all succeeded.
	Apply(ctx context.Context, ts []rpc.Transition) ([]rpc.Event, error)

	// Get reads one job, with its spec; 1001 when unknown. Get and List fill
	// Waiting for a queued job from what the store knows: "after" (a dependency
	// is unfinished), "not_before", "paused", "capacity" (its queue's parallel
	// limit is reached), or nil (the daemon says "capacity" when its own
	// limit is).
	Get(ctx context.Context, id int64) (*rpc.Record, error)
	// List reads a page of jobs without their specs, filtered as p says.
	List(ctx context.Context, p rpc.ListParams) (*rpc.ListResult, error)
	// Unfinished reads every queued or running job (with its spec), from the index of
	// unfinished jobs: its cost grows with unfinished jobs, not with history.
	Unfinished(ctx context.Context) ([]rpc.Record, error)
	// Running reads every running job, with its spec.
	Running(ctx context.Context) ([]rpc.Record, error)
	// Counts is the number of stored jobs in each state.
	Counts(ctx context.Context) (map[rpc.State]int, error)

	// Events reads up to limit stored events with seq > after, in seq order.
	Events(ctx context.Context, after int64, limit int) ([]rpc.Event, error)
	// Bounds returns the oldest and last stored seq; with no events stored, oldest
	// is last+1.
	Bounds(ctx context.Context) (oldest, last int64, err error)
	// TrimEvents removes events older than before, from the oldest end only.
	TrimEvents(ctx context.Context, before time.Time) (int, error)

	// Remove removes final jobs, all or none, adding a removed event for each
	// (unknown ids are ignored). A job that is not final answers 1002 with its state,
	// one that an unfinished job depends on 1002 with needed_by.
	Remove(ctx context.Context, ids []int64, now time.Time) ([]int64, []rpc.Event, error)
	// Prune removes final jobs in one of states (any final state when empty) that
	// finished before cutoff (any time when zero), keeping those that unfinished jobs
	// depend on. It returns the removed ids and their removed events.
	Prune(ctx context.Context, states []rpc.State, cutoff time.Time, now time.Time) ([]int64, []rpc.Event, error)

	// Queues reads every queue that has settings or ever had jobs, in name
	// order, with its settings and its counts of queued and running jobs.
	Queues(ctx context.Context) ([]rpc.Queue, error)
	// PutQueue stores a queue's settings (name, parallel, paused), keeping its
	// counts.
	PutQueue(ctx context.Context, q rpc.Queue) error

	// Join makes node a member and returns its owner identity, with an epoch
	// greater than any the store gave before. With bbolt the lease is the boot:
	// it never expires while the store is open, and every running job of an
	// epoch not joined since the store was opened is left for Reap.
	Join(ctx context.Context, node string, now time.Time) (machine.Owner, error)
	// Renew extends o's lease and returns the ids of the running jobs it owns
	// that have a cancel stored. A lease that is gone answers 1002: its owner
	// must stop every job it runs and record nothing more.
	Renew(ctx context.Context, o machine.Owner, now time.Time) ([]int64, error)
	// Reap takes the running jobs whose owner's lease is gone: each gets
	// machine.Interrupt (queued again at its first unfinished step with its
	// attempts kept, or failed as its step's on_interrupt says, its queued
	// dependents failed with it). It returns the jobs' records as stored and the
	// events.
	Reap(ctx context.Context, now time.Time) ([]rpc.Record, []rpc.Event, error)
	// Claim moves up to max runnable jobs to running with machine.Claim, owned
	// by o, in one transaction: queued jobs whose dependencies all succeeded,
	// whose not_before is not after now, of queues that are not paused, within
	// each queue's parallel limit counted across every owner; the highest
	// priority first, then the lowest id, across queues. It returns the claimed
	// records with their specs and their events. A lease that is gone answers
	// 1002 and claims nothing.
	Claim(ctx context.Context, o machine.Owner, max int, now time.Time) ([]rpc.Record, []rpc.Event, error)
	// Cancel asks for job id to end as cancelled with reason. A queued job
	// becomes final at once (machine.EndUnstarted) with its queued dependents
	// failed in the same transaction; the records stored and the events are
	// returned. A running job gets the request stored on its record
	// (Run.CancelReason; a later transition keeps it) and its owner is told
	// through Renew; nothing else changes and no event is stored: the owner
	// stores the outcome. A final job answers 1002 with its state, an unknown
	// one 1001. A second cancel of a running job keeps the first reason.
	Cancel(ctx context.Context, id int64, reason string, now time.Time) (rpc.State, []rpc.Record, []rpc.Event, error)
	// CancelMany cancels the jobs ids in one transaction, each as Cancel
	// does; unknown and final ones are skipped (they ended since the caller
	// chose them). It returns the records it changed, with the dependents it
	// failed, and the events (none when only requests were stored).
	CancelMany(ctx context.Context, ids []int64, reason string, now time.Time) ([]rpc.Record, []rpc.Event, error)
	// NextNotBefore is the earliest not_before of the queued jobs that wait
	// only for it, or the zero time when there is none: the scheduler arms one
	// timer for it.
	NextNotBefore(ctx context.Context) (time.Time, error)
	// Changed receives, lossily (a buffer of one), after each commit that stored
	// events or changed what Claim would give: a job queued or made runnable, a
	// slot given back, queue settings. The tailer and the scheduler wait on it.
	Changed() <-chan struct{}

	// PutTemplate stores a template, replacing one of the same name.
	PutTemplate(ctx context.Context, t rpc.Template) error
	// Template reads a template; 1003 when unknown.
	Template(ctx context.Context, name string) (*rpc.Template, error)
	// Templates reads every template in name order.
	Templates(ctx context.Context) ([]rpc.Template, error)
	// RemoveTemplate removes a template; 1003 when unknown.
	RemoveTemplate(ctx context.Context, name string) error

	// Hold, Release and Edit change a queued job in one transaction each,
	// with its event (held, released, edited), and return the record as
	// stored, with its spec; a running or final job answers 1002 with its
	// state, an unknown one 1001. A change that changes nothing (a hold of a
	// held job, a release of one that is not, an edit to the values the job
	// has) stores nothing and no event. A held job is claimed by no Claim
	// until it is released; it keeps its priority and id, so that a release
	// files it where it was. Edit applies machine.Edit; the ids of a new after
	// must be stored jobs, none final without success, none waiting for this
	// job through its own dependencies (-32602 naming after[i]).
	Hold(ctx context.Context, id int64, now time.Time) (*rpc.Record, []rpc.Event, error)
	Release(ctx context.Context, id int64, now time.Time) (*rpc.Record, []rpc.Event, error)
	Edit(ctx context.Context, p rpc.EditParams, now time.Time) (*rpc.Record, []rpc.Event, error)
	// PutSchedule stores a schedule, replacing one of the same name but keeping
	// its created_at, last_slot and last_job; it returns it as stored.
	PutSchedule(ctx context.Context, sc rpc.Schedule) (*rpc.Schedule, error)
	// Schedule reads a schedule; 1001 when unknown.
	Schedule(ctx context.Context, name string) (*rpc.Schedule, error)
	// Schedules reads every schedule in name order.
	Schedules(ctx context.Context) ([]rpc.Schedule, error)
	// RemoveSchedule removes a schedule; 1001 when unknown.
	RemoveSchedule(ctx context.Context, name string) error
	// PauseSchedule sets a schedule's paused flag and its updated_at to now;
	// 1001 when unknown. It returns it as stored.
	PauseSchedule(ctx context.Context, name string, paused bool, now time.Time) (*rpc.Schedule, error)
	// FireSchedule fires a slot in one transaction: it submits job as Submit
	// does, appends a schedule_fired event (schedule, slot, job) and sets the
	// schedule's last_slot and last_job. An unknown schedule answers 1001; a
	// paused one, or one whose last_slot is not before slot, 1002 and nothing
	// is stored: a slot fires once, whichever daemon tries.
	FireSchedule(ctx context.Context, name string, slot time.Time, job rpc.NewJob) (rpc.Record, []rpc.Event, error)

	// Resume lets a queued paused job go (machine.Resume: a job paused while it
	// ran, queued again by Reap with its paused_at kept, which Claim never
	// takes) and makes it claimable. It returns the record stored and the
	// resumed event; a job that is not queued and paused answers 1002.
	Resume(ctx context.Context, id int64, now time.Time) (*rpc.Record, []rpc.Event, error)
}

// EarlyClaimer is a Store that can tell which jobs a claim takes before its
// commit, so that the daemon starts them while the commit runs (bbolt: the
// commit's sync is then off the path from a free slot to the next process).
// picked is called at most once, before ClaimEarly returns, with the records
// it will return if the commit succeeds; if ClaimEarly fails, none of them was
// claimed and whatever was started for them must stop, storing nothing. A
// daemon that dies before the commit lands leaves processes of jobs still
// queued in the store: the next start kills them before anything resumes, so
// no step runs twice at once.
type EarlyClaimer interface {
	ClaimEarly(ctx context.Context, o machine.Owner, max int, now time.Time, picked func([]rpc.Record)) ([]rpc.Record, []rpc.Event, error)
}

// ApplyClaimer is an EarlyClaimer that can also store a runner's transitions
// and a claim in one transaction: the end of a job and the start of the next in
// one commit where two would be. When the transitions fail, nothing is stored
// and nothing claimed.
type ApplyClaimer interface {
	EarlyClaimer
	ApplyClaim(ctx context.Context, ts []rpc.Transition, o machine.Owner, max int, now time.Time, picked func([]rpc.Record)) ([]rpc.Event, []rpc.Record, []rpc.Event, error)
}

// ExpiringLeases is a Store whose leases expire: a lease lasts LeaseTTL after
// the start of the Join or Renew that last succeeded, by the store's clock,
// and then any daemon's Reap may take its owner's running jobs and give them
// to another. A daemon on such a store stops its jobs' processes itself once
// it could not renew for most of that time (Config.LeaseFence), before anyone
// may rescue them. A store whose lease is the boot (bbolt) does not implement
// it.
type ExpiringLeases interface {
	LeaseTTL() time.Duration
}

// CancelNotifier is a Store that can tell when a cancel request was stored for
// a running job, by any daemon: the daemon then renews its lease at once
// (Renew returns its jobs' requests) rather than at its next renewal, so a
// cancel sent to another daemon stops the job within a round trip.
type CancelNotifier interface {
	CancelRequested() <-chan struct{}
}

// LogStore is a Store that also keeps the steps' logs, for daemons that share
// it: each daemon ships the logs of the steps it runs as they grow, and
// job.logs reads a log from the store when this host has no file of it. A log
// is named by its job, step and stream (rpc.StreamAll or rpc.StreamStderr) and
// holds bytes at the offsets of the file of the host that wrote them. bbolt
// does not implement it: with one host, the file is the truth.
type LogStore interface {
	// AppendLog stores data at offset off of a log, durably, when off is the
	// log's end. At an offset already stored it does nothing (the bytes are
	// there: a retry after a commit whose answer was lost is harmless, and a
	// late daemon never writes over another's); past the end (a gap) it
	// fails. A chunk of a job that is no longer stored is dropped.
	AppendLog(ctx context.Context, job int64, step int, stream string, off int64, data []byte) error
	// ReadLog reads up to limit bytes of a log from off (none when limit is
	// 0) and returns them with size, the bytes stored so far for that log (0
	// for a log of which nothing is stored). size is read after data: it is
	// never less than the end of the bytes returned.
	ReadLog(ctx context.Context, job int64, step int, stream string, off int64, limit int) (data []byte, size int64, err error)
}

// LiveRelay is a Store that carries live events between the daemons that
// share it: each daemon relays the progress of the steps it runs, and
// publishes what the others relay to its own watchers, so that a watcher of
// any daemon sees every running job's progress. Delivery is best effort, as
// live events are anywhere: a relay that cannot keep up drops some.
type LiveRelay interface {
	// RelayLive sends a live event of a step this daemon runs; it never
	// blocks.
	RelayLive(ev rpc.Event)
	// Live receives the live events the other daemons relayed.
	Live() <-chan rpc.Event
}
