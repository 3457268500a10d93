package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"slices"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/spf13/pflag"

	"spool/client"
	"spool/rpc"
)

func defineQueue(a *app, fs *pflag.FlagSet) runner {
	parallel := fs.IntP("parallel", "p", 0, "run at most `N` of the queue's jobs at once (0: no limit of its own)")
	pause := fs.Bool("pause", false, "start none of the queue's jobs until --resume")
	resume := fs.Bool("resume", false, "start the queue's jobs again")
	var hook hookFlags
	hook.register(fs)
	fs.Lookup("on-finish").Usage = "when a job of the queue without a hook of its own ends, submit a follow-up job from `TEMPLATE` (\"\" removes the queue's hook)"
	return func(ctx context.Context, args []string) error {
		if len(args) > 1 {
			return usagef("queue takes at most one queue name")
		}
		if *pause && *resume {
			return usagef("--pause and --resume exclude each other")
		}
		onFinish, err := hook.hook(fs)
		if err != nil {
			return err
		}
		parallelSet := fs.Changed("parallel")
		if parallelSet && *parallel < 0 {
			return usagef("--parallel must not be negative")
		}
		name := ""
		if len(args) == 1 {
			name = args[0]
		}
		c, err := a.client(ctx)
		if err != nil {
			return err
		}
		if parallelSet || *pause || *resume || onFinish != nil {
			if name == "" {
				return usagef("name the queue to change: spool queue NAME ...")
			}
			p := rpc.QueueSetParams{Name: name}
			if parallelSet {
				p.Parallel = parallel
			}
			if *pause || *resume {
				paused := *pause
				p.Paused = &paused
			}
			p.OnFinish = onFinish
			q, err := c.QueueSet(ctx, p)
			if err != nil {
				return err
			}
			if a.json {
				return a.printJSON(q)
			}
			queuesTable([]rpc.Queue{*q}).render(a.stdout, a.term)
			return nil
		}
		r, err := c.QueueList(ctx)
		if err != nil {
			return err
		}
		if name != "" {
			i := slices.IndexFunc(r.Queues, func(q rpc.Queue) bool { return q.Name == name })
			if i < 0 {
				return fmt.Errorf("no queue %q (a queue is made by its first job or by queue.set)", name)
			}
			if a.json {
				return a.printJSON(r.Queues[i])
			}
			queuesTable(r.Queues[i:i+1]).render(a.stdout, a.term)
			return nil
		}
		if a.json {
			if r.Queues == nil {
				r.Queues = []rpc.Queue{}
			}
			return a.printJSON(r)
		}
		if len(r.Queues) == 0 {
			a.printf("no queues\n")
			return nil
		}
		queuesTable(r.Queues).render(a.stdout, a.term)
		return nil
	}
}

func queuesTable(qs []rpc.Queue) *table {
	tb := &table{headers: []string{"QUEUE", "PARALLEL", "PAUSED", "QUEUED", "RUNNING"}, flex: -1}
	for _, q := range qs {
		parallel := "-"
		if q.Parallel != nil && *q.Parallel > 0 {
			parallel = strconv.Itoa(*q.Parallel)
		}
		paused := cell{text: "no"}
		if q.Paused {
			paused = cell{text: "yes", style: styleYellow}
		}
		tb.rows = append(tb.rows, []cell{{text: q.Name}, {text: parallel}, paused,
			{text: strconv.Itoa(q.Queued)}, {text: strconv.Itoa(q.Running)}})
	}
	return tb
}

func defineTemplate(a *app, fs *pflag.FlagSet) runner {
	return func(ctx context.Context, args []string) error {
		if len(args) == 0 {
			return usagef("template: say put, get, list or rm")
		}
		sub, args := args[0], args[1:]
		want := func(n int, synopsis string) error {
			if len(args) != n {
				return usagef("usage: spool template %s", synopsis)
			}
			return nil
		}
		switch sub {
		case "put":
			if err := want(2, "put NAME FILE"); err != nil {
				return err
			}
			p, err := a.readTemplate(args[0], args[1])
			if err != nil {
				return err
			}
			c, err := a.client(ctx)
			if err != nil {
				return err
			}
			t, err := c.TemplatePut(ctx, *p)
			if err != nil {
				return err
			}
			return a.result(t, func() { a.printf("template %s stored\n", t.Name) })
		case "get", "show":
			if err := want(1, "get NAME"); err != nil {
				return err
			}
			c, err := a.client(ctx)
			if err != nil {
				return err
			}
			t, err := c.TemplateGet(ctx, rpc.TemplateNameParams{Name: args[0]})
			if err != nil {
				return err
			}
			return a.result(t, func() { a.printTemplate(t) })
		case "list", "ls":
			if err := want(0, "list"); err != nil {
				return err
			}
			c, err := a.client(ctx)
			if err != nil {
				return err
			}
			r, err := c.TemplateList(ctx)
			if err != nil {
				return err
			}
			if a.json {
				if r.Templates == nil {
					r.Templates = []rpc.Template{}
				}
				return a.printJSON(r)
			}
			if len(r.Templates) == 0 {
				a.printf("no templates\n")
				return nil
			}
			tb := &table{headers: []string{"TEMPLATE", "PARAMS", "UPDATED"}, flex: 1}
			for _, t := range r.Templates {
				tb.rows = append(tb.rows, []cell{{text: t.Name}, {text: paramsSummary(t.Params)},
					{text: humanAge(t.UpdatedAt, a.now()), style: styleDim}})
			}
			tb.render(a.stdout, a.term)
			return nil
		case "rm", "remove":
			if err := want(1, "rm NAME"); err != nil {
				return err
			}
			c, err := a.client(ctx)
			if err != nil {
				return err
			}
			if err := c.TemplateRemove(ctx, rpc.TemplateNameParams{Name: args[0]}); err != nil {
				return err
			}
			if a.json {
				return a.printJSON(rpc.Empty{})
			}
			a.printf("template %s removed\n", args[0])
			return nil
		}
		return usagef("template: unknown subcommand %q (put, get, list, rm)", sub)
	}
}

// readTemplate reads template put's file: {"spec": ..., "params": ...}.
func (a *app) readTemplate(name, file string) (*rpc.TemplatePutParams, error) {
	var data []byte
	var err error
	if file == "-" {
		data, err = io.ReadAll(a.stdin)
	} else {
		data, err = os.ReadFile(file)
	}
	if err != nil {
		return nil, fmt.Errorf("read the template: %w", err)
	}
	var body struct {
		Spec   json.RawMessage              `json:"spec"`
		Params map[string]rpc.TemplateParam `json:"params"`
	}
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&body); err != nil {
		return nil, fmt.Errorf("%s: decode the template (want {\"spec\": {...}, \"params\": {...}}): %w", file, err)
	}
	if len(body.Spec) == 0 || bytes.Equal(body.Spec, []byte("null")) {
		return nil, fmt.Errorf("%s: the template has no \"spec\"", file)
	}
	if body.Params == nil {
		body.Params = map[string]rpc.TemplateParam{}
	}
	return &rpc.TemplatePutParams{Name: name, Spec: body.Spec, Params: body.Params}, nil
}

// paramsSummary lists a template's params: "dir*" for required ones, "level=3" for
// those with a default.
func paramsSummary(params map[string]rpc.TemplateParam) string {
	names := make([]string, 0, len(params))
	for k := range params {
		names = append(names, k)
	}
	sort.Strings(names)
	for i, k := range names {
		p := params[k]
		switch {
		case p.Required:
			names[i] = k + "*"
		case p.Default != nil:
			names[i] = k + "=" + quoteArg(*p.Default)
		}
	}
	return strings.Join(names, " ")
}

func (a *app) printTemplate(t *rpc.Template) {
	a.printf("%s  %s\n", a.term.paint(styleBold, "template "+t.Name), a.term.paint(styleDim, "updated "+humanAge(t.UpdatedAt, a.now())))
	if len(t.Params) > 0 {
		a.printf("params     %s  %s\n", paramsSummary(t.Params), a.term.paint(styleDim, "(* required)"))
	}
	var spec bytes.Buffer
	if json.Indent(&spec, t.Spec, "", "  ") != nil {
		spec.Reset()
		spec.Write(t.Spec)
	}
	a.printf("spec\n%s\n", spec.String())
}

func defineRun(a *app, fs *pflag.FlagSet) runner {
	var labels pairsFlag
	var after idsFlag
	queue := fs.StringP("queue", "q", "", "run in `QUEUE` instead of the template's")
	priority := fs.IntP("priority", "p", 0, "the job's `PRIORITY` instead of the template's")
	key := fs.StringP("key", "k", "", "idempotency `KEY`")
	fs.VarP(&labels, "label", "l", "a label `k=v` (repeatable)")
	fs.VarP(&after, "after", "a", "run after job `ID` succeeded (repeatable)")
	var when whenFlags
	when.register(fs)
	notify := fs.Bool("notify", false, "show a desktop notification (notify-send) when the job is final; a background spool wait --notify waits for it")
	return func(ctx context.Context, args []string) error {
		if len(args) == 0 {
			return usagef("run takes a template name, then its params as k=v")
		}
		p := rpc.TemplateRunParams{Name: args[0], Params: map[string]string{}, Labels: labels.m, After: []int64(after)}
		var err error
		if p.NotBefore, err = a.notBefore(&when); err != nil {
			return err
		}
		if *notify {
			if _, err := a.findNotifySend(); err != nil {
				return err
			}
		}
		for _, kv := range args[1:] {
			k, v, ok := strings.Cut(kv, "=")
			if !ok || k == "" {
				return usagef("run: %q is not a param of the form k=v", kv)
			}
			p.Params[k] = v
		}
		fs.Visit(func(f *pflag.Flag) {
			switch f.Name {
			case "queue":
				p.Queue = queue
			case "priority":
				p.Priority = priority
			case "key":
				p.Key = key
			}
		})
		c, err := a.client(ctx)
		if err != nil {
			return err
		}
		j, err := c.TemplateRun(ctx, p)
		if err != nil {
			return err
		}
		if err := a.result(j, func() { a.printf("%d\n", j.ID) }); err != nil {
			return err
		}
		if *notify {
			return a.notifyLater([]int64{j.ID})
		}
		return nil
	}
}

func defineInfo(a *app, fs *pflag.FlagSet) runner {
	return func(ctx context.Context, args []string) error {
		if len(args) > 0 {
			return usagef("info takes no arguments")
		}
		c, err := a.client(ctx)
		if err != nil {
			return err
		}
		info, err := c.Info(ctx)
		if err != nil {
			return err
		}
		if a.json {
			return a.printJSON(info)
		}
		var b strings.Builder
		row := func(k, v string) { fmt.Fprintf(&b, "%-13s%s\n", k, v) }
		row("daemon", fmt.Sprintf("spoold %s (protocol %d), pid %d", info.Version, info.Protocol, info.PID))
		row("started", a.localTime(&info.StartedAt))
		row("socket", info.Socket)
		row("state dir", info.StateDir)
		if info.Store != "" {
			row("store", info.Store)
		}
		row("store id", info.StoreID)
		if info.Node != "" {
			row("node", fmt.Sprintf("%s, epoch %d", info.Node, info.Epoch))
		}
		if info.Containment != "" {
			row("containment", info.Containment)
		}
		row("max parallel", strconv.Itoa(info.MaxParallel))
		var counts []string
		for _, s := range []rpc.State{rpc.StateQueued, rpc.StateRunning, rpc.StateSucceeded, rpc.StateFailed, rpc.StateCancelled} {
			counts = append(counts, fmt.Sprintf("%d %s", info.Counts[s], s))
		}
		row("jobs", strings.Join(counts, ", "))
		if info.LastSeq < info.OldestSeq {
			row("events", "none yet")
		} else {
			row("events", fmt.Sprintf("seq %d to %d", info.OldestSeq, info.LastSeq))
		}
		io.WriteString(a.stdout, b.String())
		return nil
	}
}

func defineVersion(a *app, fs *pflag.FlagSet) runner {
	return func(ctx context.Context, args []string) error {
		if len(args) > 0 {
			return usagef("version takes no arguments")
		}
		v := rpc.BuildVersion()
		var info *rpc.Info
		ictx, cancel := context.WithTimeout(ctx, 5*time.Second)
		defer cancel()
		var derr error
		if c, err := a.client(ictx); err == nil {
			info, derr = c.Info(ictx)
		} else {
			derr = err
		}
		if a.json {
			return a.printJSON(struct {
				Version  string    `json:"version"`
				Protocol int       `json:"protocol"`
				Daemon   *rpc.Info `json:"daemon"`
			}{v, rpc.ProtocolVersion, info})
		}
		a.printf("spool %s (protocol %d)\n", v, rpc.ProtocolVersion)
		switch {
		case info != nil:
			a.printf("spoold %s (protocol %d)\n", info.Version, info.Protocol)
		case errors.Is(derr, client.ErrNotRunning):
			a.printf("spoold not running\n")
		default:
			a.printf("spoold unknown: %v\n", derr)
		}
		return nil
	}
}
