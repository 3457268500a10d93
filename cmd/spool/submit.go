package main

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"
	"time"

	"github.com/spf13/pflag"

	"spool/rpc"
)

// submitOptions are the flags of submit.
type submitOptions struct {
	name     string
	key      string
	queue    string
	priority int
	after    idsFlag
	labels   pairsFlag
	timeout  time.Duration
	retry    int
	env      stringsFlag
	noEnv    bool
	file     string
	when     whenFlags
	notify   bool
	hook     hookFlags
}

func (o *submitOptions) register(fs *pflag.FlagSet) {
	fs.StringVarP(&o.name, "name", "n", "", "a `NAME` for people")
	fs.StringVarP(&o.key, "key", "k", "", "idempotency `KEY`: submitting it again returns the stored job")
	fs.StringVarP(&o.queue, "queue", "q", "", "the `QUEUE` to run in (default \"default\")")
	fs.IntVarP(&o.priority, "priority", "p", 0, "the job's `PRIORITY`: higher runs first")
	fs.VarP(&o.after, "after", "a", "run after job `ID` succeeded (repeatable)")
	fs.VarP(&o.labels, "label", "l", "a label `k=v` (repeatable)")
	durationVarP(fs, &o.timeout, "timeout", "t", "limit the whole job to `D`, e.g. 90s, 2m, 1h30m")
	fs.IntVarP(&o.retry, "retry", "r", 0, "`N` tries in all for the command")
	fs.VarP(&o.env, "env", "e", "set `K=V` in the job's environment (repeatable)")
	fs.BoolVar(&o.noEnv, "no-env", false, "do not pass this shell's environment to the job")
	fs.StringVarP(&o.file, "file", "f", "", "submit the job spec (or array of specs) in `FILE` (- for standard input)")
	o.when.register(fs)
	fs.BoolVar(&o.notify, "notify", false, "show a desktop notification (notify-send) when the job is final; a background spool wait --notify waits for it")
	o.hook.register(fs)
}

func defineSubmit(a *app, fs *pflag.FlagSet) runner {
	var o submitOptions
	o.register(fs)
	return func(ctx context.Context, args []string) error {
		params, err := a.submitParams(fs, &o, args)
		if err != nil {
			return err
		}
		if o.notify {
			// Said before anything is submitted.
			if _, err := a.findNotifySend(); err != nil {
				return err
			}
		}
		c, err := a.client(ctx)
		if err != nil {
			return err
		}
		if a.json {
			res, err := c.Submit(ctx, *params)
			if err != nil {
				return err
			}
			if err := a.printJSON(res); err != nil {
				return err
			}
			if o.notify {
				return a.notifyLater(submittedIDs(res))
			}
			return nil
		}
		ids, err := c.SubmitIDs(ctx, *params)
		if err != nil {
			return err
		}
		for _, id := range ids {
			a.printf("%d\n", id)
		}
		if o.notify {
			return a.notifyLater(ids)
		}
		return nil
	}
}

// submitParams builds job.submit's params from the flags and arguments.
func (a *app) submitParams(fs *pflag.FlagSet, o *submitOptions, args []string) (*rpc.SubmitParams, error) {
	if o.file != "" {
		var others []string
		fs.Visit(func(f *pflag.Flag) {
			if f.Name != "file" && f.Name != "json" && f.Name != "socket" && f.Name != "notify" {
				others = append(others, "--"+f.Name)
			}
		})
		if len(args) > 0 {
			others = append(others, "a command")
		}
		if len(others) > 0 {
			return nil, usagef("submit -f: the file holds the whole spec; do not also give %s", strings.Join(others, ", "))
		}
		return a.readSpecs(o.file)
	}
	if len(args) == 0 {
		return nil, usagef("submit: no command given (spool submit [flags] -- CMD [ARG...], or submit -f FILE)")
	}
	cwd, err := a.getwd()
	if err != nil {
		return nil, fmt.Errorf("find the current directory: %w", err)
	}
	var environ []string
	if !o.noEnv {
		environ = a.environ()
	}
	spec, err := buildSpec(o, args, environ, cwd)
	if err != nil {
		return nil, err
	}
	if spec.NotBefore, err = a.notBefore(&o.when); err != nil {
		return nil, err
	}
	if spec.OnFinish, err = o.hook.hook(fs); err != nil {
		return nil, err
	}
	return &rpc.SubmitParams{Job: spec}, nil
}

// buildSpec makes the spec of submit: one exec step running argv in cwd, with the
// given environment (NAME=value entries) and the --env ones over it.
func buildSpec(o *submitOptions, argv, environ []string, cwd string) (*rpc.Spec, error) {
	if o.retry < 0 {
		return nil, usagef("--retry must not be negative")
	}
	if o.timeout < 0 {
		return nil, usagef("--timeout must not be negative")
	}
	env := inheritEnv(environ)
	for _, kv := range o.env {
		k, v, ok := strings.Cut(kv, "=")
		if !ok {
			return nil, usagef("--env %q is not of the form K=V", kv)
		}
		if !envNameOK(k) {
			return nil, usagef("--env %q: the name must be non-empty, without = or NUL, and not start with SPOOL_", kv)
		}
		if strings.IndexByte(v, 0) >= 0 {
			return nil, usagef("--env %q: the value must not contain NUL", k)
		}
		env[k] = v
	}
	spec := &rpc.Spec{
		Name:     o.name,
		Key:      o.key,
		Queue:    o.queue,
		Priority: o.priority,
		Labels:   o.labels.m,
		After:    []int64(o.after),
		Timeout:  rpc.Duration(o.timeout),
		Dir:      cwd,
		Env:      env,
		Steps:    []rpc.Step{{Exec: &rpc.ExecStep{Argv: append([]string(nil), argv...)}}},
	}
	if spec.Labels == nil {
		spec.Labels = map[string]string{}
	}
	if spec.After == nil {
		spec.After = []int64{}
	}
	if o.retry > 0 {
		spec.Steps[0].Retry = &rpc.Retry{Attempts: o.retry}
	}
	return spec, nil
}

// inheritEnv turns NAME=value entries into the job's env, leaving out what the
// protocol refuses: names starting with SPOOL_ (the daemon's own), names that are
// empty or hold = or NUL, values with NUL or longer than a string may be.
func inheritEnv(environ []string) map[string]string {
	env := make(map[string]string, len(environ))
	for _, kv := range environ {
		k, v, ok := strings.Cut(kv, "=")
		if !ok || !envNameOK(k) || strings.IndexByte(v, 0) >= 0 || len(v) > rpc.MaxStringBytes {
			continue
		}
		env[k] = v
	}
	return env
}

func envNameOK(k string) bool {
	return k != "" && !strings.ContainsAny(k, "=\x00") && !strings.HasPrefix(k, "SPOOL_")
}

// readSpecs reads submit -f's file: a spec, or an array of specs. Unknown fields are
// refused here already, so that a typo fails before anything is sent.
func (a *app) readSpecs(name string) (*rpc.SubmitParams, error) {
	var data []byte
	var err error
	if name == "-" {
		data, err = io.ReadAll(a.stdin)
	} else {
		data, err = os.ReadFile(name)
	}
	if err != nil {
		return nil, fmt.Errorf("read the spec: %w", err)
	}
	params, err := decodeSpecs(data)
	if err == nil {
		err = checkDirs(data, params)
	}
	if err != nil {
		if name == "-" {
			name = "standard input"
		}
		var se *specError
		if errors.As(err, &se) {
			return nil, fmt.Errorf("%s:%w", name, err) // file:line:col: ...
		}
		return nil, fmt.Errorf("%s: %w", name, err)
	}
	return params, nil
}

// decodeSpecs decodes a spec object, or an array of them, strictly, as the daemon
// does; a mistake says its line, column and field.
func decodeSpecs(data []byte) (*rpc.SubmitParams, error) {
	trimmed := bytes.TrimSpace(data)
	if len(trimmed) == 0 {
		return nil, errors.New("empty: want a job spec or an array of job specs")
	}
	var p rpc.SubmitParams
	if trimmed[0] == '[' {
		if err := decodeSpecFile(data, &p.Jobs); err != nil {
			return nil, err
		}
		if len(p.Jobs) == 0 {
			return nil, errors.New("the array holds no job spec")
		}
	} else {
		p.Job = new(rpc.Spec)
		if err := decodeSpecFile(data, p.Job); err != nil {
			return nil, err
		}
	}
	return &p, nil
}

// checkDirs checks that the working folder of each spec exists, so that a missing
// one fails here, naming it, rather than as a program that cannot start (the
// daemon runs on this machine and checks again when the job starts).
func checkDirs(data []byte, p *rpc.SubmitParams) error {
	check := func(spec *rpc.Spec, path string) error {
		if spec == nil || spec.Dir == "" {
			return nil
		}
		fi, err := os.Stat(spec.Dir)
		reason := ""
		switch {
		case errors.Is(err, os.ErrNotExist):
			reason = fmt.Sprintf("the folder %s does not exist: create it, or change %q (the job's steps run there)", spec.Dir, "dir")
		case err != nil:
			reason = fmt.Sprintf("cannot use the folder %s: %v", spec.Dir, err)
		case !fi.IsDir():
			reason = fmt.Sprintf("%s is not a folder", spec.Dir)
		default:
			return nil
		}
		_, val := locate(data, path)
		line, col := lineCol(data, val)
		return &specError{line: line, col: col, field: path, reason: reason}
	}
	if err := check(p.Job, "dir"); err != nil {
		return err
	}
	for i := range p.Jobs {
		if err := check(&p.Jobs[i], fmt.Sprintf("[%d].dir", i)); err != nil {
			return err
		}
	}
	return nil
}
