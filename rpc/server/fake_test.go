package server

import (
	"context"
	"io"
	"spool/rpc"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

// fakeService is a Service for the server's tests: jobs in a map, a Wait that blocks
// until released, watches that replay a script, and a method that panics.
type fakeService struct {
	mu     sync.Mutex
	jobs   map[int64]*rpc.Job
	nextID int64

	// release ends every pending Wait with the job.
	release chan struct{}
	// waiting receives the id of each Wait as it starts blocking.
	waiting chan int64
	// waitEnded receives the error of each Wait that ended by its context.
	waitEnded chan error
	// onShutdown runs in Shutdown.
	onShutdown func()
	// holdSubmits, when set, makes Submit announce itself on submitting and block
	// until its context ends, as a submit caught by a stop.
	holdSubmits atomic.Bool
	submitting  chan struct{}

	// watchers are the watches started, in order.
	watchers []*fakeWatcher
	// script is what each new watch replays before it blocks.
	script []*rpc.Event
}

func newFakeService() *fakeService {
	return &fakeService{
		jobs:       map[int64]*rpc.Job{},
		release:    make(chan struct{}),
		waiting:    make(chan int64, 16),
		waitEnded:  make(chan error, 16),
		submitting: make(chan struct{}, 16),
	}
}

func (f *fakeService) Submit(ctx context.Context, p rpc.SubmitParams) (*rpc.SubmitResult, error) {
	if f.holdSubmits.Load() {
		f.submitting <- struct{}{}
		<-ctx.Done()
		return nil, ctx.Err()
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	add := func(s rpc.Spec) rpc.Job {
		f.nextID++
		j := &rpc.Job{ID: f.nextID, Name: s.Name, Queue: "default", State: rpc.StateQueued, SubmittedAt: time.Unix(0, 0).UTC(), Spec: &s}
		f.jobs[j.ID] = j
		return *j
	}
	if p.Job != nil {
		j := add(*p.Job)
		return &rpc.SubmitResult{Job: &j}, nil
	}
	res := &rpc.SubmitResult{}
	for _, s := range p.Jobs {
		res.Jobs = append(res.Jobs, add(s))
	}
	return res, nil
}

func (f *fakeService) Get(ctx context.Context, p rpc.GetParams) (*rpc.Job, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	j, ok := f.jobs[p.ID]
	if !ok {
		return nil, rpc.NotFound(p.ID)
	}
	c := *j
	return &c, nil
}

func (f *fakeService) List(ctx context.Context, p rpc.ListParams) (*rpc.ListResult, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	res := &rpc.ListResult{Jobs: []rpc.Job{}}
	for _, j := range f.jobs {
		res.Jobs = append(res.Jobs, *j)
	}
	return res, nil
}

func (f *fakeService) Cancel(ctx context.Context, p rpc.CancelParams) (*rpc.Job, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	j, ok := f.jobs[p.ID]
	if !ok {
		return nil, rpc.NotFound(p.ID)
	}
	if j.Final() {
		return nil, rpc.BadState(j.ID, j.State, "already final")
	}
	j.State, j.Error = rpc.StateCancelled, p.Reason
	c := *j
	return &c, nil
}

func (f *fakeService) Wait(ctx context.Context, p rpc.WaitParams) (*rpc.Job, error) {
	f.waiting <- p.ID
	select {
	case <-f.release:
		return f.Get(ctx, rpc.GetParams{ID: p.ID})
	case <-ctx.Done():
		f.waitEnded <- ctx.Err()
		return nil, ctx.Err()
	}
}

func (f *fakeService) Logs(ctx context.Context, p rpc.LogsParams) (*rpc.LogsResult, error) {
	return &rpc.LogsResult{Data: "log of " + p.Step.Name, EOF: true}, nil
}

func (f *fakeService) Retry(ctx context.Context, p rpc.RetryParams) (*rpc.Job, error) {
	return nil, rpc.NotFound(p.ID)
}

func (f *fakeService) Remove(ctx context.Context, p rpc.RemoveParams) (*rpc.RemoveResult, error) {
	return &rpc.RemoveResult{Removed: len(p.IDs)}, nil
}

func (f *fakeService) Prune(ctx context.Context, p rpc.PruneParams) (*rpc.RemoveResult, error) {
	return &rpc.RemoveResult{}, nil
}

func (f *fakeService) Watch(ctx context.Context, p rpc.WatchParams) (rpc.Watcher, error) {
	for _, id := range p.Jobs {
		if _, err := f.Get(ctx, rpc.GetParams{ID: id}); err != nil {
			return nil, err
		}
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	w := &fakeWatcher{
		res:    rpc.WatchResult{Token: p.Token, Seq: int64(len(f.script)), StoreID: "store"},
		script: f.script,
		closed: make(chan struct{}),
	}
	if p.Output {
		// An endless stream of big output events, for clients that do not read.
		w.endless = strings.Repeat("x", 64<<10)
	}
	f.watchers = append(f.watchers, w)
	return w, nil
}

func (f *fakeService) watcher(i int) *fakeWatcher {
	f.mu.Lock()
	defer f.mu.Unlock()
	if i >= len(f.watchers) {
		return nil
	}
	return f.watchers[i]
}

func (f *fakeService) QueueList(ctx context.Context) (*rpc.QueueListResult, error) {
	return &rpc.QueueListResult{Queues: []rpc.Queue{{Name: "default"}}}, nil
}

func (f *fakeService) QueueSet(ctx context.Context, p rpc.QueueSetParams) (*rpc.Queue, error) {
	return &rpc.Queue{Name: p.Name, Parallel: p.Parallel}, nil
}

func (f *fakeService) TemplatePut(ctx context.Context, p rpc.TemplatePutParams) (*rpc.Template, error) {
	return &rpc.Template{Name: p.Name, Spec: p.Spec, Params: p.Params}, nil
}

func (f *fakeService) TemplateGet(ctx context.Context, p rpc.TemplateNameParams) (*rpc.Template, error) {
	if p.Name == "boom" {
		panic("the template store exploded")
	}
	return nil, rpc.NoTemplate(p.Name)
}

func (f *fakeService) TemplateList(ctx context.Context) (*rpc.TemplateListResult, error) {
	return &rpc.TemplateListResult{Templates: []rpc.Template{}}, nil
}

func (f *fakeService) TemplateRemove(ctx context.Context, p rpc.TemplateNameParams) error { return nil }

func (f *fakeService) TemplateRun(ctx context.Context, p rpc.TemplateRunParams) (*rpc.Job, error) {
	return nil, rpc.NoTemplate(p.Name)
}

func (f *fakeService) Info(ctx context.Context) (*rpc.Info, error) {
	return &rpc.Info{Version: "test", Protocol: rpc.ProtocolVersion, StoreID: "store"}, nil
}

func (f *fakeService) Shutdown(ctx context.Context, p rpc.ShutdownParams) error {
	if f.onShutdown != nil {
		f.onShutdown()
	}
	return nil
}

// fakeWatcher replays a script of events, then blocks until closed; or, when
// endless is set, returns big output events forever.
type fakeWatcher struct {
	res     rpc.WatchResult
	script  []*rpc.Event
	endless string
	next    atomic.Int64 // events returned
	closed  chan struct{}
	once    sync.Once
}

func (w *fakeWatcher) Result() rpc.WatchResult { return w.res }

func (w *fakeWatcher) Next(ctx context.Context) (*rpc.Event, error) {
	select {
	case <-w.closed:
		return nil, io.EOF
	default:
	}
	if n := w.next.Load(); n < int64(len(w.script)) {
		w.next.Add(1)
		return w.script[n], nil
	}
	if w.endless != "" {
		n := w.next.Add(1)
		return &rpc.Event{Type: rpc.EventOutput, Job: 1, Offset: &n, Data: &w.endless}, nil
	}
	select {
	case <-w.closed:
		return nil, io.EOF
	case <-ctx.Done():
		return nil, ctx.Err()
	}
}

// Buffered makes the fake a BufferedWatcher: what is left of the script is ready.
func (w *fakeWatcher) Buffered() int {
	if n := int64(len(w.script)) - w.next.Load(); n > 0 {
		return int(n)
	}
	if w.endless != "" {
		return 1
	}
	return 0
}

func (w *fakeWatcher) Close() error {
	w.once.Do(func() { close(w.closed) })
	return nil
}

func (w *fakeWatcher) isClosed() bool {
	select {
	case <-w.closed:
		return true
	default:
		return false
	}
}
