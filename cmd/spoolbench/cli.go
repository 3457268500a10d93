package main

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"time"
)

// The shell loops of the CLI figure: each submits N `true` jobs, keeping the ids
// the command prints, then waits until all are done.
const (
	spoolLoop = `set -e
ids=""
i=0
while [ "$i" -lt "$N" ]; do
	id=$("$SPOOL" submit -- true)
	ids="$ids $id"
	i=$((i+1))
done
"$SPOOL" wait $ids >/dev/null
`
	tspLoop = `set -e
i=0
while [ "$i" -lt "$N" ]; do
	id=$(tsp true)
	i=$((i+1))
done
tsp -w >/dev/null
`
)

// rounds is how many times each loop runs; the best time counts.
const rounds = 2

// runCLI times a shell loop of `spool submit -- true` against the same loop with
// task-spooler.
func runCLI(ctx context.Context, b *bench, f *floors) ([]row, error) {
	n := b.opts.size.cliJobs
	state, err := b.newState("cli")
	if err != nil {
		return nil, err
	}
	d, _, err := b.startDaemon(ctx, "cli", state, "--max-parallel", "2")
	if err != nil {
		return nil, err
	}
	defer d.stop()

	tsp, how := findTsp(ctx)
	b.logf("cli: task-spooler %s", how)
	var tspEnv []string
	if tsp {
		dir := filepath.Join(b.work, "tsp")
		if err := os.MkdirAll(filepath.Join(dir, "tmp"), 0o700); err != nil {
			return nil, fmt.Errorf("cli: %w", err)
		}
		tspEnv = append(os.Environ(), "TS_SOCKET="+filepath.Join(dir, "socket"), "TMPDIR="+filepath.Join(dir, "tmp"), "N="+strconv.Itoa(n))
		// Start its server before timing, as spoold is started before timing.
		if out, err := shell(ctx, "tsp -S 1", tspEnv); err != nil {
			return nil, fmt.Errorf("cli: start task-spooler: %w: %s", err, out)
		}
		defer shell(context.WithoutCancel(ctx), "tsp -K", tspEnv)
	}
	spoolEnv := append(os.Environ(), "SPOOL="+b.spool, "SPOOL_SOCKET="+d.socket, "N="+strconv.Itoa(n))

	var spoolBest, tspBest time.Duration
	c0, _ := d.commits()
	cpu0, _ := cpuTime(d.pid())
	for range rounds {
		t := time.Now()
		if out, err := shell(ctx, spoolLoop, spoolEnv); err != nil {
			return nil, fmt.Errorf("cli: spool loop: %w: %s", err, out)
		}
		if el := time.Since(t); spoolBest == 0 || el < spoolBest {
			spoolBest = el
		}
		if !tsp {
			continue
		}
		t = time.Now()
		if out, err := shell(ctx, tspLoop, tspEnv); err != nil {
			return nil, fmt.Errorf("cli: tsp loop: %w: %s", err, out)
		}
		if el := time.Since(t); tspBest == 0 || el < tspBest {
			tspBest = el
		}
	}
	c1, _ := d.commits()
	cpu1, _ := cpuTime(d.pid())
	jobs := n * rounds

	// Where a submit's time goes: starting the CLI, then dialing and one request
	// that stores nothing.
	per := func(script string) (time.Duration, error) {
		const m = 100
		t := time.Now()
		if out, err := shell(ctx, script, append(spoolEnv, "M="+strconv.Itoa(m))); err != nil {
			return 0, fmt.Errorf("cli: %w: %s", err, out)
		}
		return time.Since(t) / m, nil
	}
	startOnly, err := per(`i=0; while [ "$i" -lt "$M" ]; do v=$("$SPOOL" version); i=$((i+1)); done`)
	if err != nil {
		return nil, err
	}
	infoOnly, err := per(`i=0; while [ "$i" -lt "$M" ]; do v=$("$SPOOL" info); i=$((i+1)); done`)
	if err != nil {
		return nil, err
	}
	trueOnly, err := per(`i=0; while [ "$i" -lt "$M" ]; do v=$(true); /bin/true; i=$((i+1)); done`)
	if err != nil {
		return nil, err
	}
	// The floor of a CLI in Go: a program that prints one line and exits.
	var rows []row
	var helloOnly time.Duration
	if hello, err := buildHello(ctx, filepath.Join(b.work, "hello")); err != nil {
		b.logf("cli: no Go hello-world floor: %v", err)
	} else {
		spoolEnv = append(spoolEnv, "HELLO="+hello)
		if helloOnly, err = per(`i=0; while [ "$i" -lt "$M" ]; do v=$("$HELLO"); i=$((i+1)); done`); err != nil {
			return nil, err
		}
		var proc durations
		for range b.opts.size.floorN {
			t := time.Now()
			if err := exec.CommandContext(ctx, hello).Run(); err != nil {
				return nil, fmt.Errorf("cli: run the Go hello-world: %w", err)
			}
			proc = append(proc, time.Since(t))
		}
		rows = append(rows, row{figure: "floor: v=$(Go hello-world) in a shell loop, per turn", value: ms(helloOnly),
			note: fmt.Sprintf("the process alone, started from Go: p50 %s; the issue's reference machine: %.1f ms, as much as its whole tsp turn (%.1f ms)",
				ms(proc.pct(50)), refHello, refTspTurn)})
	}
	note := fmt.Sprintf("best of %d rounds; spool %.2f ms per job; %.2f commits per job; spoold CPU %.0f µs/job",
		rounds, float64(spoolBest)/float64(time.Millisecond)/float64(n), float64(c1-c0)/float64(jobs),
		float64((cpu1-cpu0)/time.Microsecond)/float64(jobs))
	note += fmt.Sprintf("; one loop turn of v=$(spool version): %s, of v=$(spool info): %s, of v=$(true) plus /bin/true: %s",
		ms(startOnly), ms(infoOnly), ms(trueOnly))
	if helloOnly > 0 {
		note += fmt.Sprintf(", of v=$(Go hello-world): %s (a spool submit turn is %.2f of it)",
			ms(helloOnly), float64(spoolBest)/float64(n)/float64(helloOnly))
	}
	r := row{
		figure: fmt.Sprintf("CLI: %d x spool submit -- true, all done", n),
		value:  ms(spoolBest),
		target: ">= 1.0 of task-spooler",
		note:   note,
	}
	if tsp {
		r.baseline = "task-spooler " + ms(tspBest)
		r.ratio = float64(tspBest) / float64(spoolBest)
		r.verdict = check(spoolBest <= tspBest)
		r.note += fmt.Sprintf("; tsp %.2f ms per job (the issue's reference machine: %.1f ms)", float64(tspBest)/float64(time.Millisecond)/float64(n), refTspTurn)
	} else {
		r.baseline = "task-spooler absent (" + how + ")"
	}
	return append(rows, r), nil
}

// buildHello builds, in dir, a Go program that prints one line, as make build
// builds spool (no cgo), and returns its path.
func buildHello(ctx context.Context, dir string) (string, error) {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return "", err
	}
	src := "package main\n\nimport \"os\"\n\nfunc main() { os.Stdout.WriteString(\"hello\\n\") }\n"
	if err := os.WriteFile(filepath.Join(dir, "main.go"), []byte(src), 0o600); err != nil {
		return "", err
	}
	if err := os.WriteFile(filepath.Join(dir, "go.mod"), []byte("module hello\n"), 0o600); err != nil {
		return "", err
	}
	cmd := exec.CommandContext(ctx, "go", "build", "-o", "hello", ".")
	cmd.Dir = dir
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0", "GOWORK=off", "GOFLAGS=")
	if out, err := cmd.CombinedOutput(); err != nil {
		return "", fmt.Errorf("build: %w: %s", err, out)
	}
	return filepath.Join(dir, "hello"), nil
}

// findTsp looks for task-spooler and, as root, installs it when missing.
func findTsp(ctx context.Context) (bool, string) {
	if _, err := exec.LookPath("tsp"); err == nil {
		return true, "found"
	}
	if os.Geteuid() != 0 {
		return false, "tsp not found; install task-spooler"
	}
	env := append(os.Environ(), "DEBIAN_FRONTEND=noninteractive")
	if _, err := shell(ctx, "apt-get install -y task-spooler || (apt-get update && apt-get install -y task-spooler)", env); err != nil {
		return false, "tsp not found and apt-get could not install task-spooler"
	}
	if _, err := exec.LookPath("tsp"); err != nil {
		return false, "task-spooler installed but tsp not on PATH"
	}
	return true, "installed with apt-get"
}

// shell runs script with sh and env, returning its combined output.
func shell(ctx context.Context, script string, env []string) ([]byte, error) {
	cmd := exec.CommandContext(ctx, "sh", "-c", script)
	cmd.Env = env
	return cmd.CombinedOutput()
}
