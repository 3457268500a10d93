package daemon

import (
	"context"
	"time"

	"spool/rpc"
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
	// differ. It returns the records in the order given (with Spec set) and the
	// submitted events of the jobs it created.
	Submit(ctx context.Context, jobs []rpc.NewJob) ([]rpc.Record, []rpc.Event, error)

	// Apply stores transitions in one transaction: each replaces the record of an
	// existing job whose stored state is still From and appends its events. If any
	// job is missing or not in its From state, nothing is applied and the error is
	// 1001 or 1002 (with the state found).
	Apply(ctx context.Context, ts []rpc.Transition) ([]rpc.Event, error)

	// Get reads one job, with its spec; 1001 when unknown.
	Get(ctx context.Context, id int64) (*rpc.Record, error)
	// List reads a page of jobs without their specs, filtered as p says.
	List(ctx context.Context, p rpc.ListParams) (*rpc.ListResult, error)
	// Unfinished reads every queued or running job (with its spec), from the index of
	// unfinished jobs: its cost grows with unfinished jobs, not with history.
	Unfinished(ctx context.Context) ([]rpc.Record, error)
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

	// Queues reads the stored queue settings.
	Queues(ctx context.Context) ([]rpc.Queue, error)
	// PutQueue stores a queue's settings (name, parallel, paused).
	PutQueue(ctx context.Context, q rpc.Queue) error

	// PutTemplate stores a template, replacing one of the same name.
	PutTemplate(ctx context.Context, t rpc.Template) error
	// Template reads a template; 1003 when unknown.
	Template(ctx context.Context, name string) (*rpc.Template, error)
	// Templates reads every template in name order.
	Templates(ctx context.Context) ([]rpc.Template, error)
	// RemoveTemplate removes a template; 1003 when unknown.
	RemoveTemplate(ctx context.Context, name string) error
}
