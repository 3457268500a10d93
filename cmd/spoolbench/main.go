// Command spoolbench measures spool side by side with the floor of the machine and
// with task-spooler, in one run: it builds spoold and spool, starts a real spoold
// with a fresh state folder for each figure, drives it through the client package
// (or the CLI), and prints one table of figures, baselines, ratios and targets.
//
//	go run ./cmd/spoolbench [-quick] [-only NAME,...] [-jobs N] [-held N] [-bin DIR] [-dir DIR] [-keep] [-profile DIR]
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"runtime"
	"slices"
	"strings"
	"syscall"
	"time"
)

// options are the harness's flags.
type options struct {
	quick     bool
	only      []string // figures to run; with onlyGiven and none, the floors alone
	onlyGiven bool
	bin       string
	keep      bool
	profile   string
	dir       string
	size      sizes
}

// sizes are how much work each figure does.
type sizes struct {
	floorN         int // rounds of each floor timing
	bulkCalls      int // job.submit calls of 1,000 jobs
	concurrentJobs int // single-job submits per client count
	writerPuts     int // puts per writer of the 64-writer bbolt floor
	loneN          int // submits of the lone client
	e2eJobs        int // `true` jobs at --max-parallel 2
	stepJobs       int // sleep 1ms jobs at --max-parallel 256
	cliJobs        int // spool submit -- true from a shell loop
	scaleJobs      int // final jobs stored for the scale figures
	scaleGets      int
	scaleLists     int
	watchers       int
	watchJobs      int
	memWatchers    int // watchers of the memory figure, per group
	memJobs        int // jobs they watch run
	envJobs        int // jobs submitted from one shell's environment
	envCLI         int // spool submit runs with that environment, and as many without
	heldJobs       int // jobs queued in a paused queue by the held and queued-memory figures
	pgbenchTx      int // pgbench transactions per client of one job each
	pgbenchBatchTx int // pgbench transactions per client of 16 jobs each
	clusterJobs    int // sleep 1ms jobs run through each cluster
	clusterSubmits int // single-job submits timed on a cluster
	clusterWatch   int // submitted events timed from one daemon to another
}

func fullSizes() sizes {
	return sizes{floorN: 200, bulkCalls: 20, concurrentJobs: 16000, writerPuts: 250, loneN: 500, e2eJobs: 1000,
		stepJobs: 1000, cliJobs: 300, scaleJobs: 1_000_000, scaleGets: 5000, scaleLists: 100,
		watchers: 100, watchJobs: 1000, memWatchers: 1000, memJobs: 1000, envJobs: 100_000, envCLI: 200,
		heldJobs: 1_000_000, pgbenchTx: 750, pgbenchBatchTx: 200, clusterJobs: 10000, clusterSubmits: 500, clusterWatch: 300}
}

func quickSizes() sizes {
	return sizes{floorN: 50, bulkCalls: 5, concurrentJobs: 4000, writerPuts: 100, loneN: 200, e2eJobs: 1000,
		stepJobs: 1000, cliJobs: 300, scaleJobs: 20000, scaleGets: 1000, scaleLists: 30,
		watchers: 100, watchJobs: 1000, memWatchers: 1000, memJobs: 300, envJobs: 5000, envCLI: 50,
		heldJobs: 50_000, pgbenchTx: 250, pgbenchBatchTx: 150, clusterJobs: 2000, clusterSubmits: 200, clusterWatch: 100}
}

// figure is one group of rows of the table.
type figure struct {
	name string
	doc  string
	run  func(ctx context.Context, b *bench, f *floors) ([]row, error)
}

func figures() []figure {
	return []figure{
		{"bulk", "job.submit with 1,000 jobs per call", runBulk},
		{"concurrent", "single-job submits from 8 and 16 clients; a lone client's latency", runConcurrent},
		{"e2e", "1,000 `true` jobs at --max-parallel 2 against xargs -P2", runE2E},
		{"steps", "1,000 `sleep 1ms` jobs at --max-parallel 256", runSteps},
		{"cli", "a shell loop of `spool submit -- true` against task-spooler", runCLI},
		{"scale", "job.get, job.list, restart and RSS with many final jobs stored", runScale},
		{"shellenv", "100,000 jobs submitted from one shell: database size and spool submit time", runShellEnv},
		{"watch", "event delivery latency to 100 watchers while 1,000 jobs run", runWatch},
		{"memory", "spoold's RssAnon idle, under 1,000 watchers of all events while 1,000 jobs run, and after", runMemory},
		{"held", "1,000 `true` jobs at --max-parallel 2 beside 1,000,000 queued in a paused queue, against none", runHeld},
		{"queued-memory", "spoold's RssAnon with 1,000,000 queued jobs, submitted and after a restart", runQueuedMemory},
		{"cluster", "1, 2 and 3 spoold on one PostgreSQL (fsync on) against pgbench's claim + finish; latencies; rescue after kill -9", runCluster},
	}
}

func main() {
	os.Exit(realMain(os.Args[1:], os.Stdout, os.Stderr))
}

func realMain(args []string, stdout, stderr io.Writer) int {
	o, err := parseFlags(args, stderr)
	if errors.Is(err, flag.ErrHelp) {
		return 0
	}
	if err != nil {
		fmt.Fprintf(stderr, "spoolbench: %v\n", err)
		return 2
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := run(ctx, o, stdout, stderr); err != nil {
		fmt.Fprintf(stderr, "spoolbench: %v\n", err)
		return 1
	}
	return 0
}

func parseFlags(args []string, stderr io.Writer) (options, error) {
	fs := flag.NewFlagSet("spoolbench", flag.ContinueOnError)
	fs.SetOutput(stderr)
	var o options
	var only string
	jobs := fs.Int("jobs", 0, "final jobs stored for the scale figures (default 1,000,000; 20,000 with -quick)")
	held := fs.Int("held", 0, "jobs queued by the held and queued-memory figures (default 1,000,000; 50,000 with -quick)")
	fs.BoolVar(&o.quick, "quick", false, "small sizes: about a minute")
	fs.StringVar(&only, "only", "", "run only these figures (comma-separated): floors always run; "+names())
	fs.StringVar(&o.bin, "bin", "", "take spoold and spool from this folder instead of building them")
	fs.BoolVar(&o.keep, "keep", false, "keep the work folder (state folders, daemon logs)")
	fs.StringVar(&o.profile, "profile", "", "record each daemon with `perf record -g` into this folder")
	fs.StringVar(&o.dir, "dir", "", "make the work folder (state folders, floors) in `DIR`, e.g. /dev/shm to see the cost without disk syncs (default: the system's temporary folder)")
	fs.Usage = func() {
		fmt.Fprintf(stderr, "usage: spoolbench [flags]\n\nfigures:\n")
		for _, f := range figures() {
			fmt.Fprintf(stderr, "  %-13s %s\n", f.name, f.doc)
		}
		fmt.Fprintf(stderr, "\nflags:\n")
		fs.PrintDefaults()
	}
	if err := fs.Parse(args); err != nil {
		return o, err
	}
	if fs.NArg() > 0 {
		return o, fmt.Errorf("unexpected argument %q", fs.Arg(0))
	}
	o.size = fullSizes()
	if o.quick {
		o.size = quickSizes()
	}
	if *jobs > 0 {
		o.size.scaleJobs = *jobs
	}
	if *held > 0 {
		o.size.heldJobs = *held
	}
	if only != "" {
		o.onlyGiven = true
		for _, n := range strings.Split(only, ",") {
			n = strings.TrimSpace(n)
			if n == "floors" {
				continue
			}
			if !slices.ContainsFunc(figures(), func(f figure) bool { return f.name == n }) {
				return o, fmt.Errorf("-only: no figure %q (figures: %s)", n, names())
			}
			o.only = append(o.only, n)
		}
	}
	if o.profile != "" {
		if err := os.MkdirAll(o.profile, 0o755); err != nil {
			return o, fmt.Errorf("-profile: %w", err)
		}
	}
	return o, nil
}

func names() string {
	var n []string
	for _, f := range figures() {
		n = append(n, f.name)
	}
	return strings.Join(n, ", ")
}

func run(ctx context.Context, o options, stdout, stderr io.Writer) error {
	start, load0 := time.Now(), loadAvg()
	b, err := newBench(ctx, o, stderr)
	if err != nil {
		return err
	}
	defer b.close()
	b.logf("binaries ready; measuring the floors")
	f, rows, err := measureFloors(ctx, b)
	if err != nil {
		return err
	}
	for _, fig := range figures() {
		if o.onlyGiven && !slices.Contains(o.only, fig.name) {
			continue
		}
		if err := ctx.Err(); err != nil {
			return err
		}
		b.logf("%s: %s", fig.name, fig.doc)
		t := time.Now()
		r, err := fig.run(ctx, b, f)
		rows = append(rows, r...)
		if err != nil {
			rows = append(rows, row{figure: fig.name, value: "error", verdict: notMet, note: err.Error()})
			b.logf("%s: %v", fig.name, err)
		}
		b.logf("%s: done in %s", fig.name, time.Since(t).Round(time.Millisecond))
	}
	fmt.Fprintf(stdout, "\nspoolbench: %s, %d CPUs, %s/%s, load average at start %s, %s in all\n\n",
		mode(o), runtime.NumCPU(), runtime.GOOS, runtime.GOARCH, load0, time.Since(start).Round(time.Second))
	printTable(stdout, rows)
	fmt.Fprintf(stdout, "\nload average at the end: %s\n", loadAvg())
	return nil
}

func mode(o options) string {
	if o.quick {
		return "quick run"
	}
	return "full run"
}

// loadAvg reads the 1, 5 and 15 minute load averages.
func loadAvg() string {
	b, err := os.ReadFile("/proc/loadavg")
	if err != nil {
		return "unknown"
	}
	f := strings.Fields(string(b))
	if len(f) < 3 {
		return "unknown"
	}
	return strings.Join(f[:3], " ")
}
