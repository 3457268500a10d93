package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/spf13/pflag"

	"spool/client"
	"spool/rpc"
)

// logChunk is how much of a log one job.logs call asks for.
const logChunk = 64 << 10

// logPoll is how long logs -f waits for an event before it reads the log
// anyway: on a cluster, a step that runs on another daemon sends no output
// events to this one, whose job.logs reads the log that daemon ships to the
// store.
const logPoll = time.Second

func defineWatch(a *app, fs *pflag.FlagSet) runner {
	return func(ctx context.Context, args []string) error {
		ids, err := parseIDs(args)
		if err != nil {
			return err
		}
		if len(ids) == 0 {
			// No ids: every job. An empty list would name no job, and the watch
			// would end at once.
			ids = nil
		}
		c, err := a.client(ctx)
		if err != nil {
			return a.cutShort(ctx, err, ids, "watch", exitFailure)
		}
		params := rpc.WatchParams{Jobs: ids}
		if a.term.tty && !a.json {
			// Heartbeats keep the live lines of running jobs up to date (elapsed
			// time, last output line) when they report no progress.
			params.Heartbeat = rpc.Duration(time.Second)
		}
		w, err := c.Watch(ctx, params)
		if err != nil {
			if ctx.Err() != nil {
				a.goesOn(ids, "watch")
				return &exitError{code: exitFailure}
			}
			return err
		}
		defer w.Close()
		bar := &progressLine{a: a, titles: map[int64]string{}}
		bar.title = func(id int64) string {
			if t, ok := bar.titles[id]; ok {
				return t
			}
			t := ""
			if j, err := c.Get(ctx, rpc.GetParams{ID: id}); err == nil {
				t = jobTitle(j)
			}
			bar.titles[id] = t
			return t
		}
		final := map[int64]rpc.State{}
		// interrupted ends a watch cut short by Ctrl-C: the jobs go on.
		interrupted := func() error {
			bar.clear()
			if len(ids) == 0 {
				fmt.Fprintf(a.stderr, "spool: stopped watching; the jobs go on (spool status lists them)\n")
				return nil
			}
			var left []int64
			for _, id := range ids {
				if _, ok := final[id]; !ok {
					left = append(left, id)
				}
			}
			a.goesOn(left, "watch")
			return &exitError{code: exitFailure}
		}
		if !a.json {
			// Say where the unfinished jobs are now: their earlier events are not
			// replayed.
			current, err := a.unfinished(ctx, c, ids)
			if err != nil {
				if ctx.Err() != nil {
					return interrupted()
				}
				return err
			}
			for _, j := range current {
				if j.Name != "" || j.Spec != nil {
					// A listed job has no spec: the title reads it when its
					// live line is first drawn, rather than say "step-0 (exec)".
					bar.titles[j.ID] = jobTitle(j)
				}
				a.printf("%s\n", a.eventLine(statusEvent(j, a.now())))
			}
		}
		for {
			ev, err := w.Next(ctx)
			if errors.Is(err, io.EOF) {
				break
			}
			if err != nil {
				bar.clear()
				if ctx.Err() != nil {
					return interrupted()
				}
				return err
			}
			switch ev.Type {
			case rpc.EventSucceeded, rpc.EventFailed, rpc.EventCancelled:
				final[ev.Job] = rpc.State(ev.Type)
			case rpc.EventRemoved:
				final[ev.Job] = rpc.State(rpc.EventRemoved)
			}
			if a.json {
				if err := a.printJSONLine(ev); err != nil {
					return err
				}
				continue
			}
			a.showEvent(bar, ev)
		}
		bar.clear()
		ok := true
		for _, id := range ids {
			st, seen := final[id]
			if !seen { // final before the watch began
				j, err := c.Get(ctx, rpc.GetParams{ID: id})
				if err != nil {
					a.fail(err)
					ok = false
					continue
				}
				st = j.State
				if !a.json {
					a.printOutcome(j)
				}
			}
			if st != rpc.StateSucceeded {
				ok = false
			}
		}
		if !ok {
			return &exitError{code: exitFailure}
		}
		return nil
	}
}

// unfinished is the jobs of ids that are not final, or with no ids every running
// and queued job (the newest 1000 at most), oldest first.
func (a *app) unfinished(ctx context.Context, c *client.Client, ids []int64) ([]*rpc.Job, error) {
	var out []*rpc.Job
	if len(ids) > 0 {
		for _, id := range ids {
			j, err := c.Get(ctx, rpc.GetParams{ID: id})
			if err != nil {
				return nil, err
			}
			if !j.Final() {
				out = append(out, j)
			}
		}
		return out, nil
	}
	r, err := c.List(ctx, rpc.ListParams{State: []rpc.State{rpc.StateRunning, rpc.StateQueued}, Limit: 1000, Order: "asc"})
	if err != nil {
		return nil, err
	}
	for i := range r.Jobs {
		out = append(out, &r.Jobs[i])
	}
	return out, nil
}

// cutShort is the error of a waiting command that ended with err: when an
// interrupt cut it short, it says the jobs go on and ends with code.
func (a *app) cutShort(ctx context.Context, err error, ids []int64, command string, code int) error {
	if ctx.Err() == nil {
		return err
	}
	if len(ids) == 0 {
		fmt.Fprintf(a.stderr, "spool: stopped watching; the jobs go on (spool status lists them)\n")
	} else {
		a.goesOn(ids, command)
	}
	if code == exitOK {
		return nil
	}
	return &exitError{code: code}
}

// goesOn tells, after an interrupt, that the jobs the command waited for go on,
// and how to follow them again.
func (a *app) goesOn(ids []int64, command string) {
	if len(ids) == 0 {
		return
	}
	list := make([]string, len(ids))
	for i, id := range ids {
		list[i] = strconv.FormatInt(id, 10)
	}
	if len(ids) == 1 {
		fmt.Fprintf(a.stderr, "spool: interrupted; job %s goes on (spool %s %s to follow it)\n", list[0], command, list[0])
		return
	}
	fmt.Fprintf(a.stderr, "spool: interrupted; jobs %s go on (spool %s %s to follow them)\n",
		strings.Join(list, ", "), command, strings.Join(list, " "))
}

// statusEvent is a line for watch that says where a job is now.
func statusEvent(j *rpc.Job, now time.Time) *rpc.Event {
	ev := &rpc.Event{Time: now, Job: j.ID, Type: "status", State: j.State}
	if j.State == rpc.StateRunning && j.CurrentStep >= 0 && j.CurrentStep < len(j.Steps) {
		ev.StepName = j.Steps[j.CurrentStep].Name
	}
	return ev
}

// showEvent prints an event for people: one line per stored event; progress and
// heartbeats only on a terminal, as live lines under the events, redrawn in place.
func (a *app) showEvent(bar *progressLine, ev *rpc.Event) {
	switch ev.Type {
	case rpc.EventProgress, rpc.EventHeartbeat:
		if a.term.tty {
			bar.show(ev)
		}
		return
	case rpc.EventOutput, rpc.EventDone:
		return
	}
	bar.clear()
	a.printf("%s\n", a.eventLine(ev))
	switch ev.Type {
	case rpc.EventStepStarted, rpc.EventSucceeded, rpc.EventFailed, rpc.EventCancelled, rpc.EventRemoved, rpc.EventInterrupted:
		// The job's live line said what its last step did, or the job is over.
		bar.drop(ev.Job)
	}
	bar.redraw()
}

// eventLine is one event as a line: time, job, type, step, state and what else it
// says.
func (a *app) eventLine(ev *rpc.Event) string {
	t := a.term
	step := ev.StepName
	if step == "" && ev.Step != nil {
		step = "step " + strconv.Itoa(*ev.Step)
	}
	state := ev.State
	switch ev.Type {
	case rpc.EventSucceeded, rpc.EventFailed, rpc.EventCancelled:
		if state == "" {
			state = rpc.State(ev.Type)
		}
	}
	var extra []string
	switch ev.Type {
	case rpc.EventStepStarted:
		if ev.Attempt > 1 {
			extra = append(extra, "attempt "+strconv.Itoa(ev.Attempt))
		}
	case rpc.EventStepRetrying:
		msg := fmt.Sprintf("attempt %d failed", ev.Attempt)
		if ev.Error != "" {
			msg += ": " + oneLine(ev.Error)
		}
		extra = append(extra, msg)
		if ev.RetryAt != nil {
			extra = append(extra, "retry at "+ev.RetryAt.Local().Format("15:04:05"))
		}
	case rpc.EventScheduleFired:
		extra = append(extra, "schedule "+ev.Schedule)
		if ev.Slot != nil {
			extra = append(extra, "slot "+ev.Slot.Local().Format("2006-01-02 15:04:05"))
		}
	default:
		if ev.ExitCode != nil {
			extra = append(extra, "exit "+strconv.Itoa(*ev.ExitCode))
		} else if ev.Signal != nil {
			extra = append(extra, *ev.Signal)
		}
		if ev.Error != "" {
			extra = append(extra, t.paint(styleRed, oneLine(ev.Error)))
		}
	}
	line := fmt.Sprintf("%s  %-5d  %-13s  %-12s  %s",
		t.paint(styleDim, ev.Time.Local().Format("15:04:05")), ev.Job, ev.Type, step,
		t.paint(stateStyle(state), fmt.Sprintf("%-9s", state)))
	if len(extra) > 0 {
		line += "  " + strings.Join(extra, "  ")
	}
	return strings.TrimRight(line, " ")
}

// maxLiveLines bounds the live lines drawn at once; the rest are counted.
const maxLiveLines = 8

// progressLine is the block at the bottom of a terminal with a line per running
// job that reported progress or a heartbeat: each update redraws the block in
// place; the block is cleared before other output and drawn again after it.
type progressLine struct {
	a      *app
	title  func(id int64) string // the job's name (or command) for its line; may be nil
	titles map[int64]string      // what title found, by job
	order  []int64               // jobs in the order their first line came
	text   map[int64]string      // each job's line
	drawn  int                   // lines of the block on the screen now
}

// show sets the job's line from a progress or heartbeat event and redraws.
func (p *progressLine) show(ev *rpc.Event) {
	text := fmt.Sprintf("%-5d  ", ev.Job)
	if p.title != nil {
		if t := p.title(ev.Job); t != "" {
			text += cut(t, 24) + "  "
		}
	}
	prog := ev.Progress
	if prog != nil {
		if pc := progressPercent(prog); pc >= 0 {
			text += progressBar(pc, 20) + " "
		}
		text += progressText(prog)
	} else if ev.Type == rpc.EventHeartbeat {
		step := ev.StepName
		if step == "" && ev.Step != nil {
			step = "step " + strconv.Itoa(*ev.Step)
		}
		text += strings.TrimSpace(fmt.Sprintf("%s %s %s", ev.State, step, humanDuration(ev.Elapsed.D())))
		if ev.LastLine != nil && *ev.LastLine != "" {
			text += ": " + *ev.LastLine
		}
	} else {
		return
	}
	if p.text == nil {
		p.text = map[int64]string{}
	}
	if _, ok := p.text[ev.Job]; !ok {
		p.order = append(p.order, ev.Job)
	}
	p.text[ev.Job] = text
	p.redraw()
}

// drop forgets a job's line (the block is redrawn by the next redraw).
func (p *progressLine) drop(job int64) {
	if _, ok := p.text[job]; !ok {
		return
	}
	delete(p.text, job)
	for i, id := range p.order {
		if id == job {
			p.order = append(p.order[:i], p.order[i+1:]...)
			break
		}
	}
}

// erase is what takes the block off the screen: the cursor ends at the start of
// the block's first line.
func (p *progressLine) erase(b *strings.Builder) {
	if p.drawn == 0 {
		return
	}
	b.WriteString("\r\x1b[K")
	for i := 1; i < p.drawn; i++ {
		b.WriteString("\x1b[1A\x1b[K")
	}
	p.drawn = 0
}

// redraw replaces the block on the screen with the current lines, in one write.
// The cursor stays at the end of the last line, so that the block never scrolls.
func (p *progressLine) redraw() {
	var b strings.Builder
	p.erase(&b)
	width := p.a.term.width
	if width <= 0 {
		width = 80
	}
	var lines []string
	for i, id := range p.order {
		if i == maxLiveLines-1 && len(p.order) > maxLiveLines {
			lines = append(lines, fmt.Sprintf("… and %d more running", len(p.order)-i))
			break
		}
		lines = append(lines, cut(oneLine(p.text[id]), width-1))
	}
	b.WriteString(strings.Join(lines, "\n"))
	p.drawn = len(lines)
	if b.Len() > 0 {
		io.WriteString(p.a.stdout, b.String())
	}
}

// clear takes the block off the screen; redraw brings it back.
func (p *progressLine) clear() {
	var b strings.Builder
	p.erase(&b)
	if b.Len() > 0 {
		io.WriteString(p.a.stdout, b.String())
	}
}

func defineLogs(a *app, fs *pflag.FlagSet) runner {
	follow := fs.BoolP("follow", "f", false, "follow the log as it grows, until the step ends (or without STEP, the job ends)")
	lines, stderr := logsFlags(fs)
	return func(ctx context.Context, args []string) error {
		if len(args) < 1 || len(args) > 2 {
			return usagef("usage: spool logs [-f] [-n N] [--stderr] ID [STEP]")
		}
		if fs.Changed("lines") && *lines < 1 {
			return usagef("--lines %d: must be 1 or more (the last N lines)", *lines)
		}
		ids, err := parseIDs(args[:1])
		if err != nil {
			return err
		}
		var ref rpc.StepRef
		if len(args) == 2 {
			// Step names are never all digits: digits are an index.
			if n, err := strconv.Atoi(args[1]); err == nil && n >= 0 {
				ref.Index = &n
			} else {
				ref.Name = args[1]
			}
		}
		c, err := a.client(ctx)
		if err != nil {
			if *follow {
				return a.cutShort(ctx, err, ids, "logs -f", exitOK)
			}
			return err
		}
		l := &logFollower{a: a, c: c, id: ids[0], step: -1, shown: -1, lines: *lines}
		if *stderr {
			l.stream = rpc.StreamStderr
		}
		if !*follow {
			return l.print(ctx, ref)
		}
		err = l.follow(ctx, ref)
		if err != nil && ctx.Err() != nil {
			// Interrupted: a normal way to stop following; the job is not cancelled.
			a.goesOn([]int64{ids[0]}, "logs -f")
			return nil
		}
		return err
	}
}

// logFollower reads one job's logs with job.logs, and follows them through a watch.
type logFollower struct {
	a      *app
	c      *client.Client
	id     int64
	step   int   // the step being read; -1 until the daemon said which
	offset int64 // how much of its log was printed
	all    strings.Builder
	// steps: the job's steps, when following all of them (a header before each);
	// shown: the step whose header was printed last.
	steps []rpc.StepStatus
	shown int
	// lines: the first read starts at the last lines of the log (logs --lines),
	// then 0; stream: the log read (logs --stderr), "" for the merged one.
	lines  int
	stream string
}

// header prints the header of the step being followed, once, when following
// every step of a job that has several.
func (l *logFollower) header() {
	if l.a.json || len(l.steps) < 2 || l.step < 0 || l.step == l.shown || l.step >= len(l.steps) {
		return
	}
	l.shown = l.step
	l.a.printf("%s\n", l.a.term.paint(styleBold, fmt.Sprintf("==> step %d/%d: %s <==", l.step+1, len(l.steps), l.steps[l.step].Name)))
}

// print writes the step's log from its start to what there is now.
func (l *logFollower) print(ctx context.Context, ref rpc.StepRef) error {
	eof, err := l.drain(ctx, ref, -1, false)
	if err != nil {
		return err
	}
	if l.a.json {
		return l.a.printJSON(rpc.LogsResult{Data: l.all.String(), Offset: l.offset, EOF: eof, Step: max(l.step, 0)})
	}
	return nil
}

// drain reads the log from l.offset until there is no more for now (or until the
// offset until, when not negative), and prints it. stream: in JSON, one document
// per chunk (otherwise the chunks are kept for one document at the end).
func (l *logFollower) drain(ctx context.Context, ref rpc.StepRef, until int64, stream bool) (eof bool, err error) {
	for {
		p := rpc.LogsParams{ID: l.id, Step: ref, Offset: l.offset, Limit: logChunk, Encoding: "text", Stream: l.stream}
		if l.step >= 0 {
			idx := l.step
			p.Step = rpc.StepRef{Index: &idx}
		}
		if l.lines > 0 && until < 0 {
			// The daemon finds where the last lines start, reading the log
			// from its end.
			p.Lines, p.Offset = l.lines, 0
			l.lines = 0
		}
		if until >= 0 {
			if until <= l.offset {
				return false, nil
			}
			p.Limit = int(min(until-l.offset, logChunk))
		}
		r, err := l.c.Logs(ctx, p)
		if err != nil {
			return false, err
		}
		if l.step < 0 {
			l.step = r.Step
		}
		if err := l.emit(r.Data, r.Offset, stream); err != nil {
			return false, err
		}
		progressed := r.Offset > l.offset
		if progressed {
			l.offset = r.Offset
		}
		if r.EOF {
			return true, nil
		}
		if !progressed {
			return false, nil
		}
	}
}

// emit prints a chunk of the log that ends at offset next.
func (l *logFollower) emit(data string, next int64, stream bool) error {
	if data == "" {
		return nil
	}
	switch {
	case !l.a.json:
		l.header()
		_, err := io.WriteString(l.a.stdout, data)
		return err
	case stream:
		return l.a.printJSONLine(rpc.LogsResult{Data: data, Offset: next, Step: l.step})
	}
	l.all.WriteString(data)
	return nil
}

// follow prints what the log holds, then what the watch brings, until the step
// ends. Without a step named it follows the job's steps one after the other until
// the job ends.
func (l *logFollower) follow(ctx context.Context, ref rpc.StepRef) error {
	// Watch first, so that nothing that happens after the first read is missed.
	w, err := l.c.Watch(ctx, rpc.WatchParams{Jobs: []int64{l.id}, Output: true})
	if err != nil {
		return err
	}
	defer w.Close()
	job, err := l.c.Get(ctx, rpc.GetParams{ID: l.id})
	if err != nil {
		return err
	}
	whole := ref.IsZero()
	steps := len(job.Steps)
	if whole {
		// The whole job: from its first step, each under a header.
		l.steps = job.Steps
		if steps > 0 {
			l.step = 0
			if l.lines > 0 {
				// The last lines of the step under way, then the steps after it.
				l.step = min(max(job.CurrentStep, 0), steps-1)
			}
		}
	}
	ended, err := l.drain(ctx, ref, -1, true)
	if err != nil {
		return err
	}
	for {
		if ended {
			if !whole || l.step+1 >= steps {
				return nil
			}
			l.step++
			l.offset = 0
			l.header()
			if ended, err = l.drain(ctx, ref, -1, true); err != nil {
				return err
			}
			continue
		}
		nctx, cancel := context.WithTimeout(ctx, logPoll)
		ev, err := w.Next(nctx)
		cancel()
		if err != nil && ctx.Err() == nil && errors.Is(err, context.DeadlineExceeded) {
			// A quiet watch: read what the log holds now.
			if ended, err = l.drain(ctx, ref, -1, true); err != nil {
				return err
			}
			continue
		}
		if errors.Is(err, io.EOF) {
			// The job is final: print what is left of this step (and, following the
			// whole job, of the steps after it).
			for {
				if _, err := l.drain(ctx, ref, -1, true); err != nil {
					return err
				}
				if !whole || l.step+1 >= steps {
					return nil
				}
				l.step++
				l.offset = 0
				l.header()
			}
		}
		if err != nil {
			return err
		}
		switch ev.Type {
		case rpc.EventOutput:
			if l.stream != "" && ev.Step != nil && *ev.Step == l.step {
				// Output events carry the merged log: the stderr log holds
				// its part of them already, read it from there.
				if _, err := l.drain(ctx, ref, -1, true); err != nil {
					return err
				}
				continue
			}
			if ev.Step != nil && *ev.Step == l.step && ev.Offset != nil && ev.Data != nil {
				if err := l.output(ctx, ref, *ev.Offset, *ev.Data); err != nil {
					return err
				}
			}
		case rpc.EventStepFinished:
			if ev.Step != nil && *ev.Step == l.step {
				if _, err := l.drain(ctx, ref, -1, true); err != nil {
					return err
				}
				ended = true
			}
		case rpc.EventRemoved:
			return nil
		}
	}
}

// output prints a chunk of live output at offset off, first reading from the log
// what came before it and was not printed (a chunk the watch dropped, or output
// written before the watch began), and skipping what was printed already.
func (l *logFollower) output(ctx context.Context, ref rpc.StepRef, off int64, data string) error {
	if off > l.offset {
		if _, err := l.drain(ctx, ref, off, true); err != nil {
			return err
		}
	}
	end := off + int64(len(data))
	if end <= l.offset {
		return nil
	}
	if skip := l.offset - off; skip > 0 {
		data = data[skip:]
	}
	if err := l.emit(data, end, true); err != nil {
		return err
	}
	l.offset = end
	return nil
}

func defineRPC(a *app, fs *pflag.FlagSet) runner {
	return func(ctx context.Context, args []string) error {
		if len(args) > 0 {
			return usagef("rpc takes no arguments: it relays standard input and output")
		}
		conn, err := client.DialConn(ctx, a.socketPath())
		if err != nil {
			return &unreachableError{err: err}
		}
		defer conn.Close()
		fromDaemon := make(chan error, 1)
		go func() {
			_, err := io.Copy(a.stdout, conn)
			fromDaemon <- err
		}()
		fromInput := make(chan error, 1)
		go func() {
			_, err := io.Copy(conn, a.stdin)
			conn.CloseWrite()
			fromInput <- err
		}()
		select {
		case err := <-fromDaemon:
			return relayError(err)
		case err := <-fromInput:
			if err != nil {
				return fmt.Errorf("relay standard input: %w", err)
			}
			// Standard input ended: the daemon still answers what it was sent, then
			// closes.
			select {
			case err := <-fromDaemon:
				return relayError(err)
			case <-ctx.Done():
				return nil
			}
		case <-ctx.Done():
			return nil
		}
	}
}

func relayError(err error) error {
	if err == nil || errors.Is(err, syscall.EPIPE) {
		return nil
	}
	return fmt.Errorf("relay the daemon's output: %w", err)
}
