package main

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"sort"
	"strings"
	"time"

	"spool/rpc"
)

// Shape of the environment of the shell the shellenv figure submits from: a
// login shell's, about a hundred variables and several KiB.
const (
	shellEnvVars  = 100
	shellEnvBytes = 6 << 10
)

// shellEnviron is the harness's own environment grown to the shape of a login
// shell's: padding variables are added until it has shellEnvVars variables and
// shellEnvBytes bytes. Names starting with SPOOL_ are left out, as spool submit
// leaves them out.
func shellEnviron() []string {
	var env []string
	size := 0
	for _, kv := range os.Environ() {
		if strings.HasPrefix(kv, "SPOOL_") {
			continue
		}
		env = append(env, kv)
		size += len(kv)
	}
	for i := 0; len(env) < shellEnvVars || size < shellEnvBytes; i++ {
		kv := fmt.Sprintf("SHELL_PAD_%03d=/usr/local/share/pad/%03d:/opt/tool-%03d/bin:/home/user/.local/lib/%03d", i, i, i, i)
		env = append(env, kv)
		size += len(kv)
	}
	sort.Strings(env)
	return env
}

// envMap is environ as the map spool submit makes of it.
func envMap(environ []string) map[string]string {
	m := make(map[string]string, len(environ))
	for _, kv := range environ {
		if k, v, ok := strings.Cut(kv, "="); ok && k != "" {
			m[k] = v
		}
	}
	return m
}

// runShellEnv stores envJobs jobs as `spool submit -- true` sends them from one
// shell (the same environment, directory and command each time), one job.submit
// after another, into a paused queue; then it reports the database's size and
// times spool submit itself, with the shell's environment and with --no-env,
// alternately, on that database.
func runShellEnv(ctx context.Context, b *bench, f *floors) ([]row, error) {
	n := b.opts.size.envJobs
	environ := shellEnviron()
	envBytes := 0
	for _, kv := range environ {
		envBytes += len(kv) + 1
	}
	cwd, err := os.Getwd()
	if err != nil {
		return nil, fmt.Errorf("shellenv: %w", err)
	}
	d, err := pausedDaemon(ctx, b, "shellenv")
	if err != nil {
		return nil, err
	}
	defer d.stop()
	c, err := d.dial(ctx)
	if err != nil {
		return nil, err
	}
	defer c.Close()

	spec := rpc.Spec{Queue: benchQueue, Dir: cwd, Env: envMap(environ), Labels: map[string]string{}, After: []int64{},
		Steps: []rpc.Step{{Exec: &rpc.ExecStep{Argv: []string{"true"}}}}}
	b.logf("shellenv: submitting %s jobs with an environment of %d variables, %d bytes", thousands(int64(n)), len(environ), envBytes)
	size0, blocks0 := fileSize(d.dbPath())
	lat := make(durations, 0, n)
	start := time.Now()
	for i := range n {
		t := time.Now()
		if _, err := c.SubmitIDs(ctx, rpc.SubmitParams{Job: &spec}); err != nil {
			return nil, fmt.Errorf("shellenv: submit %d: %w", i, err)
		}
		lat = append(lat, time.Since(t))
	}
	fillTime := time.Since(start)
	size1, blocks1 := fileSize(d.dbPath())

	// spool submit, with the environment and without, one run of each in turn.
	runs := b.opts.size.envCLI
	var withEnv, noEnv durations
	cmdEnv := append(environ, "SPOOL_SOCKET="+d.socket)
	for range runs {
		for _, no := range []bool{false, true} {
			args := []string{"submit", "-q", benchQueue}
			if no {
				args = append(args, "--no-env")
			}
			cmd := exec.CommandContext(ctx, b.spool, append(args, "--", "true")...)
			cmd.Env = cmdEnv
			t := time.Now()
			if out, err := cmd.CombinedOutput(); err != nil {
				return nil, fmt.Errorf("shellenv: spool submit: %w: %s", err, out)
			}
			if no {
				noEnv = append(noEnv, time.Since(t))
			} else {
				withEnv = append(withEnv, time.Since(t))
			}
		}
	}

	figure := fmt.Sprintf("shellenv (%s jobs, one shell)", thousands(int64(n)))
	perJob := float64(blocks1-blocks0) / float64(n)
	return []row{
		{
			figure: figure + ": database size",
			value:  fmt.Sprintf("%.1f MiB", mib(blocks1)),
			note: fmt.Sprintf("disk blocks of spool.db after the submits (%.1f MiB before them, %.0f bytes per job); file size %.1f MiB (%.1f before; bbolt reserves room ahead); environment of %d variables, %d bytes",
				mib(blocks0), perJob, mib(size1), mib(size0), len(environ), envBytes),
		},
		{
			figure: figure + ": job.submit p50",
			value:  ms(lat.pct(50)),
			note: fmt.Sprintf("one job per call, one call after another through the client (each its own commit): p99 %s, %s in all, %s jobs/s",
				ms(lat.pct(99)), fillTime.Round(time.Millisecond), thousands(int64(perSec(n, fillTime)))),
		},
		{
			figure:   figure + ": spool submit p50",
			value:    ms(withEnv.pct(50)),
			baseline: "--no-env " + ms(noEnv.pct(50)),
			ratio:    float64(noEnv.pct(50)) / float64(withEnv.pct(50)),
			note: fmt.Sprintf("%d runs each, alternating, on the database of %s jobs: with the environment p99 %s; --no-env p99 %s",
				runs, thousands(int64(n)), ms(withEnv.pct(99)), ms(noEnv.pct(99))),
		},
	}, nil
}
