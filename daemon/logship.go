package daemon

import (
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"time"

	"spool/rpc"
)

// Shipping a step's logs into a LogStore, so that a client of any daemon
// reads the log of a step that ran on another host.
//
// The local file stays the truth of the host that runs the step (written and
// capped as ever, --max-log and its marker included): the shipper copies what
// the file holds into the store at the same offsets, so that an offset means
// the same bytes whichever daemon a client reads from. It ships the bytes
// written since its last shipment every shipEvery, and once more when the
// step's attempt is over, before its outcome is stored: a client elsewhere
// that sees the step final reads its whole log (unless the store was out of
// reach for shipWait then; the step does not wait longer, and a warning
// says so). A shipment that fails is tried again at the next tick from what
// the store holds: chunks already stored at an offset are kept as they are.
//
// A step that runs again (a retry, or an attempt resumed after its daemon
// stopped) goes on writing the same log, after what earlier attempts wrote.
// When that happens on another host (a rescue) the log does not start anew
// there: before the attempt writes anything, the shipper copies into the new
// host's file what the store holds of it, so that the attempt's output goes
// on from where the shipped log ended, at the same offsets everywhere. What
// the host that stopped had written but not shipped is not in the store: it
// is read on that host only, and lost to the others. A host whose file is
// longer than the store's copy ships the difference (its own last shipment
// failed).

const (
	// shipEvery is how often a running step's logs are shipped.
	shipEvery = time.Second
	// shipChunk is the most bytes one AppendLog carries.
	shipChunk = 256 << 10
	// shipWait bounds each shipment's wait for the store, and the last one's
	// tries at the step's end.
	shipWait = 5 * time.Second
	// shipRetry is the pause between the last shipment's tries.
	shipRetry = 200 * time.Millisecond
)

// shippedLog is one log file of a step and how much of it the store holds.
type shippedLog struct {
	stream string
	path   string
	// sent is how many bytes of the file the store holds, when known: a
	// failed append leaves it unknown until the store is asked again.
	sent  int64
	known bool
}

// logShipper ships the logs of one attempt of a step while it runs.
type logShipper struct {
	d    *Daemon
	ls   LogStore
	job  int64
	step int
	logs []*shippedLog
	// stepCtx is the attempt's context: a cause of errLeaseLost or
	// errJobOver means another daemon may write the log now, and this one
	// ships no more.
	stepCtx context.Context
	// base is the context of the store calls: the attempt's values, not its
	// end (a cancelled step ships its last bytes too).
	base context.Context
	// stopTicks ends the tick in flight when the attempt is over.
	stopTicks context.CancelFunc
	ticks     context.Context
	stop      chan struct{}
	done      chan struct{}
}

// shipLogs starts shipping the logs of step i of rec, when the store is a
// LogStore (nil otherwise), and first, for an attempt that follows others,
// makes the local log files hold what the store holds of them. Call finish
// once the attempt's logs are closed and before its outcome is stored.
func (d *Daemon) shipLogs(ctx context.Context, rec *rpc.Record, i int) *logShipper {
	ls, ok := d.store.(LogStore)
	if !ok {
		return nil
	}
	base := context.WithoutCancel(ctx)
	ticks, stopTicks := context.WithCancel(base)
	s := &logShipper{d: d, ls: ls, job: rec.ID, step: i, stepCtx: ctx, base: base,
		ticks: ticks, stopTicks: stopTicks, stop: make(chan struct{}), done: make(chan struct{})}
	streams := []string{rpc.StreamAll}
	if !d.cfg.NoStderrLog {
		streams = append(streams, rpc.StreamStderr)
	}
	// Only an attempt after another can find a log already written, here or
	// on another host: the first attempt's logs start empty, asking nothing.
	earlier := rec.Steps[i].Attempt > 1 || rec.Run.Resumed
	for _, stream := range streams {
		l := &shippedLog{stream: stream, path: d.streamLogPath(rec.ID, i, stream), known: true}
		s.logs = append(s.logs, l)
		local, err := fileSize(l.path)
		if err != nil {
			d.log.Warn("read a step log's size", "id", rec.ID, "step", i, "err", err)
			l.known = false
			continue
		}
		if earlier || local > 0 {
			if err := s.catchUp(l, local); err != nil {
				d.log.Warn("continue a step log from the store", "id", rec.ID, "step", i, "stream", stream, "err", err)
				l.known = false
			}
		}
	}
	go s.loop()
	return s
}

// catchUp makes a log's file hold what the store holds of it, before the
// attempt writes: the bytes the store has beyond the file's end (written on
// another host) are appended to the file. It sets what the store holds.
func (s *logShipper) catchUp(l *shippedLog, local int64) error {
	ctx, cancel := context.WithTimeout(s.base, shipWait)
	defer cancel()
	_, size, err := s.ls.ReadLog(ctx, s.job, s.step, l.stream, 0, 0)
	if err != nil {
		return fmt.Errorf("read the stored log's size: %w", err)
	}
	l.sent = size
	if size <= local {
		return nil
	}
	if err := os.MkdirAll(s.d.jobLogDir(s.job), 0o700); err != nil {
		return fmt.Errorf("create log folder: %w", err)
	}
	f, err := os.OpenFile(l.path, os.O_WRONLY|os.O_CREATE|os.O_APPEND, 0o600)
	if err != nil {
		return fmt.Errorf("open step log: %w", err)
	}
	defer f.Close()
	for local < size {
		data, _, err := s.ls.ReadLog(ctx, s.job, s.step, l.stream, local, int(min(size-local, shipChunk)))
		if err != nil {
			return fmt.Errorf("read the stored log: %w", err)
		}
		if len(data) == 0 {
			return fmt.Errorf("the stored log ends at %d bytes of %d", local, size)
		}
		if _, err := f.Write(data); err != nil {
			return fmt.Errorf("write step log: %w", err)
		}
		local += int64(len(data))
	}
	return nil
}

// loop ships at each tick until the attempt is over, then ships the rest.
func (s *logShipper) loop() {
	defer close(s.done)
	t := time.NewTicker(shipEvery)
	defer t.Stop()
	failing := false
	for {
		select {
		case <-t.C:
			ctx, cancel := context.WithTimeout(s.ticks, shipWait)
			err := s.ship(ctx)
			cancel()
			if err != nil && !failing && s.ticks.Err() == nil {
				s.d.log.Warn("ship a step's log; trying again", "id", s.job, "step", s.step, "err", err)
			}
			failing = err != nil
		case <-s.stop:
			s.last()
			return
		}
	}
}

// last ships what is left, trying again while the store fails, for shipWait
// at most.
func (s *logShipper) last() {
	ctx, cancel := context.WithTimeout(s.base, shipWait)
	defer cancel()
	for {
		err := s.ship(ctx)
		if err == nil {
			return
		}
		select {
		case <-ctx.Done():
			s.d.log.Warn("the end of a step's log is not in the store: other daemons read it short",
				"id", s.job, "step", s.step, "err", err)
			return
		case <-time.After(shipRetry):
		}
	}
}

// finish ships what the attempt's logs hold and ends the shipper. It returns
// within shipWait or so, whether or not the store took the logs.
func (s *logShipper) finish() {
	s.stopTicks()
	close(s.stop)
	<-s.done
}

// fenced reports whether this daemon may no longer write the job: its lease
// is gone or the job was taken from it.
func (s *logShipper) fenced() bool {
	c := context.Cause(s.stepCtx)
	return errors.Is(c, errLeaseLost) || errors.Is(c, errJobOver)
}

// ship appends to the store what each log's file holds beyond what the store
// has.
func (s *logShipper) ship(ctx context.Context) error {
	var first error
	for _, l := range s.logs {
		if err := s.shipLog(ctx, l); err != nil && first == nil {
			first = err
		}
	}
	return first
}

// shipLog appends to the store what l's file holds beyond what the store has,
// shipChunk bytes at most per append.
func (s *logShipper) shipLog(ctx context.Context, l *shippedLog) error {
	size, err := fileSize(l.path)
	if err != nil {
		return err
	}
	if !l.known {
		if size == 0 {
			return nil
		}
		_, stored, err := s.ls.ReadLog(ctx, s.job, s.step, l.stream, 0, 0)
		if err != nil {
			return fmt.Errorf("read the stored log's size: %w", err)
		}
		l.sent, l.known = stored, true
	}
	if l.sent >= size {
		return nil
	}
	f, err := os.Open(l.path)
	if err != nil {
		return fmt.Errorf("open step log: %w", err)
	}
	defer f.Close()
	buf := make([]byte, min(size-l.sent, shipChunk))
	for l.sent < size {
		if s.fenced() {
			return nil
		}
		n, err := f.ReadAt(buf[:min(size-l.sent, int64(len(buf)))], l.sent)
		if n == 0 {
			if err == nil || err == io.EOF {
				err = io.ErrUnexpectedEOF
			}
			return fmt.Errorf("read step log: %w", err)
		}
		if err := s.ls.AppendLog(ctx, s.job, s.step, l.stream, l.sent, buf[:n]); err != nil {
			l.known = false
			return fmt.Errorf("append to the stored log: %w", err)
		}
		l.sent += int64(n)
	}
	return nil
}

// fileSize is the size of a file, 0 when there is none.
func fileSize(path string) (int64, error) {
	fi, err := os.Stat(path)
	if errors.Is(err, fs.ErrNotExist) {
		return 0, nil
	}
	if err != nil {
		return 0, fmt.Errorf("stat step log: %w", err)
	}
	return fi.Size(), nil
}

// logSource is a log job.logs reads: this host's file or the store's copy.
type logSource interface {
	io.ReaderAt
	// Size is the bytes the log holds now.
	Size() (int64, error)
}

// fileLog is a log file of this host.
type fileLog struct{ f *os.File }

func (l fileLog) ReadAt(p []byte, off int64) (int, error) { return l.f.ReadAt(p, off) }

func (l fileLog) Size() (int64, error) {
	fi, err := l.f.Stat()
	if err != nil {
		return 0, fmt.Errorf("stat step log: %w", err)
	}
	return fi.Size(), nil
}

// storedLog is the copy of a log in a LogStore; its size is the one the
// store gave with the last read.
type storedLog struct {
	ctx    context.Context
	ls     LogStore
	job    int64
	step   int
	stream string
	size   int64
}

func (l *storedLog) ReadAt(p []byte, off int64) (int, error) {
	data, size, err := l.ls.ReadLog(l.ctx, l.job, l.step, l.stream, off, len(p))
	if err != nil {
		return 0, fmt.Errorf("read the stored step log: %w", err)
	}
	l.size = size
	n := copy(p, data)
	if n < len(p) {
		return n, io.EOF
	}
	return n, nil
}

func (l *storedLog) Size() (int64, error) { return l.size, nil }

// storedLogSource is the store's copy of a step's log when job.logs must read
// it rather than this host's file, or nil. It reads it when the store is a
// LogStore that holds some of the log and this host has no file of it (the
// step ran on another host), or has a shorter one while the step does not run
// here (it went on on another host after this one ran it).
func (d *Daemon) storedLogSource(ctx context.Context, id int64, step int, stream string) (logSource, error) {
	ls, ok := d.store.(LogStore)
	if !ok {
		return nil, nil
	}
	if stream != rpc.StreamStderr {
		stream = rpc.StreamAll
	}
	local := int64(-1)
	fi, err := os.Stat(d.streamLogPath(id, step, stream))
	switch {
	case err == nil:
		d.mu.Lock()
		js := d.jobs[id]
		here := js != nil && js.rec.CurrentStep == step
		d.mu.Unlock()
		if here {
			// The step runs here: what the store has came from this file.
			return nil, nil
		}
		local = fi.Size()
	case !errors.Is(err, fs.ErrNotExist):
		return nil, fmt.Errorf("stat step log: %w", err)
	}
	_, size, err := ls.ReadLog(ctx, id, step, stream, 0, 0)
	if err != nil {
		return nil, fmt.Errorf("read the stored step log's size: %w", err)
	}
	if size == 0 || size <= local {
		return nil, nil
	}
	return &storedLog{ctx: ctx, ls: ls, job: id, step: step, stream: stream, size: size}, nil
}
