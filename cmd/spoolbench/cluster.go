package main

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/jackc/pgx/v5"

	"spool/client"
	"spool/rpc"
	"spool/store/postgres/pgtest"
)

// pgbenchClients is how many clients the pgbench floor runs.
const pgbenchClients = 4

// pgbenchRounds is how many times each pgbench floor runs.
const pgbenchRounds = 3

// pgbenchBatch is how many jobs the batched pgbench floor claims and finishes
// per transaction.
const pgbenchBatch = 16

// clusterParallel is each daemon's --max-parallel in the cluster figures.
const clusterParallel = 256

// clusterLease is the daemons' --lease: spoold's default.
const clusterLease = 10 * time.Second

// rescueTarget is the bound on a rescue with the default lease.
const rescueTarget = 15 * time.Second

// pgbenchSchema is the pgbench floor's tables: jobs, their events, a
// gap-free counter row numbering the events, and a queue row that counts
// running jobs against a limit. jobs_queued is what a claim scans.
const pgbenchSchema = `
CREATE TABLE meta (id int PRIMARY KEY, last_seq bigint NOT NULL);
INSERT INTO meta VALUES (1, 0);
CREATE TABLE queues (name text PRIMARY KEY, parallel int NOT NULL, running int NOT NULL);
INSERT INTO queues VALUES ('bench', 1000000, 0);
CREATE TABLE jobs (
	id bigint PRIMARY KEY,
	queue text NOT NULL,
	priority int NOT NULL DEFAULT 0,
	state smallint NOT NULL,   -- 0 queued, 1 running, 2 succeeded
	owner int,
	epoch int,
	spec jsonb NOT NULL
);
CREATE INDEX jobs_queued ON jobs (priority DESC, id) WHERE state = 0;
CREATE TABLE events (
	seq bigint PRIMARY KEY,
	job bigint NOT NULL,
	type text NOT NULL,
	at timestamptz NOT NULL DEFAULT now()
);
`

// pgbenchFill queues $1 jobs for the pgbench floor.
const pgbenchFill = `INSERT INTO jobs (id, queue, state, spec)
SELECT g, 'bench', 0, '{"steps":[{"sleep":"1ms"}]}' FROM generate_series(1, $1) g`

// pgbenchScript is the design note's claim + finish of :n jobs, one pgbench
// transaction: a claim transaction (FOR UPDATE SKIP LOCKED, the jobs marked
// this client's under an epoch, a started event each numbered from the
// counter row, then the queue limit checked at the end) and a finish
// transaction (the jobs fenced by owner and epoch, a succeeded event each, the
// queue row counted down). The queue's limit is never reached: a refused claim
// would fail \gset and stop the client.
const pgbenchScript = `BEGIN;
WITH c AS (
	SELECT id FROM jobs WHERE state = 0 ORDER BY priority DESC, id LIMIT :n FOR UPDATE SKIP LOCKED
), u AS (
	UPDATE jobs SET state = 1, owner = :client_id, epoch = 1 FROM c WHERE jobs.id = c.id RETURNING jobs.id
), r AS (
	SELECT id, row_number() OVER (ORDER BY id) AS i, count(*) OVER () AS k FROM u
), s AS (
	UPDATE meta SET last_seq = last_seq + (SELECT count(*) FROM u) WHERE id = 1 RETURNING last_seq
)
INSERT INTO events (seq, job, type) SELECT s.last_seq - r.k + r.i, r.id, 'started' FROM r, s;
UPDATE queues SET running = running + :n WHERE name = 'bench' AND running + :n <= parallel RETURNING running \gset
COMMIT;
BEGIN;
WITH u AS (
	UPDATE jobs SET state = 2 WHERE owner = :client_id AND epoch = 1 AND state = 1 RETURNING id
), r AS (
	SELECT id, row_number() OVER (ORDER BY id) AS i, count(*) OVER () AS k FROM u
), s AS (
	UPDATE meta SET last_seq = last_seq + (SELECT count(*) FROM u) WHERE id = 1 RETURNING last_seq
)
INSERT INTO events (seq, job, type) SELECT s.last_seq - r.k + r.i, r.id, 'succeeded' FROM r, s;
UPDATE queues SET running = running - :n WHERE name = 'bench';
COMMIT;
`

// pgFloor is one run of the pgbench floor.
type pgFloor struct {
	perTx  int     // jobs per transaction
	jobs   int     // jobs claimed and finished
	rate   float64 // jobs/s
	lat    string  // pgbench's average latency of one claim + finish
	stats  pgStats // the database's counters over the run
	events int64   // events written
}

// pgStats are a database's counters: what a run cost in transactions and WAL
// flushes.
type pgStats struct {
	xids     int64 // transactions that wrote (transaction ids assigned)
	commits  int64 // pg_stat_database.xact_commit: every transaction, reads too
	walSyncs int64 // pg_stat_wal.wal_sync: WAL flushes to disk, the whole server
}

// sub is s less o.
func (s pgStats) sub(o pgStats) pgStats {
	return pgStats{xids: s.xids - o.xids, commits: s.commits - o.commits, walSyncs: s.walSyncs - o.walSyncs}
}

// per describes the counters per job.
func (s pgStats) per(jobs int) string {
	n := float64(jobs)
	return fmt.Sprintf("%.2f writing transactions, %.2f commits, %.2f WAL flushes per job",
		float64(s.xids)/n, float64(s.commits)/n, float64(s.walSyncs)/n)
}

// readPGStats reads the counters of the database conn is on. The statistics
// reach the shared counters within a second of a backend going idle: callers
// wait that long after the work they measure.
func readPGStats(ctx context.Context, conn *pgx.Conn) (pgStats, error) {
	var s pgStats
	// A new snapshot: pg_stat_* are cached for the rest of a transaction.
	if _, err := conn.Exec(ctx, "SELECT pg_stat_clear_snapshot()"); err != nil {
		return s, fmt.Errorf("read statistics: %w", err)
	}
	err := conn.QueryRow(ctx, `SELECT pg_snapshot_xmax(pg_current_snapshot())::text::bigint,
		(SELECT xact_commit FROM pg_stat_database WHERE datname = current_database()),
		(SELECT wal_sync FROM pg_stat_wal)`).Scan(&s.xids, &s.commits, &s.walSyncs)
	if err != nil {
		return s, fmt.Errorf("read statistics: %w", err)
	}
	return s, nil
}

// statsSettle is how long the statistics take to reach the shared counters.
const statsSettle = 1500 * time.Millisecond

// runCluster measures several spoold on one PostgreSQL (fsync on) beside the
// pgbench floor of the design note's claim + finish, on the same server.
func runCluster(ctx context.Context, b *bench, _ *floors) ([]row, error) {
	pgbench, err := pgbenchPath()
	if err != nil {
		return nil, err
	}
	b.logf("cluster: starting PostgreSQL 15 (fsync on)")
	srv, err := pgtest.Start(ctx, pgtest.Options{Fsync: true})
	if err != nil {
		return nil, fmt.Errorf("cluster: start PostgreSQL: %w", err)
	}
	defer func() {
		if err := srv.Stop(); err != nil {
			b.logf("cluster: stop PostgreSQL: %v", err)
		}
	}()
	dir := filepath.Join(b.work, "cluster")
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("cluster: %w", err)
	}

	var rows []row
	var fl []*pgFloor
	for _, perTx := range []int{1, pgbenchBatch} {
		// A run lasts a second or two, so a neighbour's burst on a shared
		// machine can halve it: the best of pgbenchRounds counts, as with
		// xargs, and the note gives every round.
		var f *pgFloor
		var each []string
		for range pgbenchRounds {
			r, err := runPgbench(ctx, b, srv, pgbench, dir, perTx)
			if err != nil {
				return rows, err
			}
			each = append(each, strings.TrimSpace(rate(r.rate, "")))
			if f == nil || r.rate > f.rate {
				f = r
			}
		}
		fl = append(fl, f)
		rows = append(rows, row{
			figure: fmt.Sprintf("floor: pgbench claim+finish, %d job(s)/transaction, %d clients", perTx, pgbenchClients),
			value:  rate(f.rate, "jobs/s"),
			note: fmt.Sprintf("best of %d rounds (jobs/s: %s); best: %d jobs, %s per claim + finish of %d; %s; fsync on, counter row gap-free, queue limit checked at the end of the claim",
				pgbenchRounds, strings.Join(each, ", "), f.jobs, f.lat, perTx, f.stats.per(f.jobs)),
		})
	}
	single, batched := fl[0], fl[1]
	floor := batched.rate

	for n := 1; n <= 3; n++ {
		r, err := clusterThroughput(ctx, b, srv, n)
		if err != nil {
			return rows, fmt.Errorf("cluster of %d: %w", n, err)
		}
		jobs := b.opts.size.clusterJobs
		v := perSec(jobs, r.elapsed)
		note := fmt.Sprintf("%d jobs in %s (stored beforehand in a paused queue, submitted in %s), counted from the queue's resume, %.2f of the 1-job floor (%s); %s; database sessions not idle, on average: %s",
			jobs, ms(r.elapsed), ms(r.submit), v/single.rate, rate(single.rate, "jobs/s"), r.stats.per(jobs), r.waits)
		if r.failed > 0 {
			note += fmt.Sprintf("; %d jobs did not succeed", r.failed)
		}
		rows = append(rows, row{
			figure:   fmt.Sprintf("cluster: %d spoold, %d sleep 1ms, --max-parallel %d each", n, jobs, clusterParallel),
			value:    rate(v, "jobs/s"),
			baseline: "pgbench 16/tx " + rate(floor, "jobs/s"),
			ratio:    v / floor,
			target:   "≥ 0.5 of the batched pgbench floor",
			verdict:  check(v >= 0.5*floor && r.failed == 0),
			note:     note,
		})
	}

	lrows, err := clusterLatency(ctx, b, srv)
	rows = append(rows, lrows...)
	if err != nil {
		return rows, err
	}
	rrows, err := clusterRescue(ctx, b, srv)
	rows = append(rows, rrows...)
	return rows, err
}

// pgbenchPath finds pgbench as pgtest finds initdb: pg_config --bindir, else
// PostgreSQL 15's folder in Debian's layout, else the PATH.
func pgbenchPath() (string, error) {
	if out, err := exec.Command("pg_config", "--bindir").Output(); err == nil {
		p := filepath.Join(strings.TrimSpace(string(out)), "pgbench")
		if isRegular(p) {
			return p, nil
		}
	}
	if p := "/usr/lib/postgresql/15/bin/pgbench"; isRegular(p) {
		return p, nil
	}
	p, err := exec.LookPath("pgbench")
	if err != nil {
		return "", fmt.Errorf("cluster: find pgbench: %w", err)
	}
	return p, nil
}

// isRegular reports whether path names an existing regular file.
func isRegular(path string) bool {
	fi, err := os.Stat(path)
	return err == nil && fi.Mode().IsRegular()
}

// tpsLine and latLine are pgbench's report of throughput and latency.
var (
	tpsLine = regexp.MustCompile(`(?m)^tps = ([0-9.]+) \(without initial connection time\)`)
	latLine = regexp.MustCompile(`(?m)^latency average = ([0-9.]+ ms)`)
)

// runPgbench runs the claim + finish script with perTx jobs per transaction on
// a fresh database of srv, from pgbenchClients clients.
func runPgbench(ctx context.Context, b *bench, srv *pgtest.Server, pgbench, dir string, perTx int) (*pgFloor, error) {
	tx := b.opts.size.pgbenchTx
	if perTx > 1 {
		tx = b.opts.size.pgbenchBatchTx
	}
	jobs := pgbenchClients * tx * perTx
	dsn, err := srv.NewDB(ctx)
	if err != nil {
		return nil, fmt.Errorf("pgbench floor: %w", err)
	}
	conn, err := pgx.Connect(ctx, dsn)
	if err != nil {
		return nil, fmt.Errorf("pgbench floor: connect: %w", err)
	}
	defer conn.Close(context.WithoutCancel(ctx))
	if _, err := conn.Exec(ctx, pgbenchSchema); err != nil {
		return nil, fmt.Errorf("pgbench floor: schema: %w", err)
	}
	if _, err := conn.Exec(ctx, pgbenchFill, jobs); err != nil {
		return nil, fmt.Errorf("pgbench floor: queue jobs: %w", err)
	}
	if _, err := conn.Exec(ctx, "VACUUM ANALYZE jobs"); err != nil {
		return nil, fmt.Errorf("pgbench floor: vacuum: %w", err)
	}
	script := filepath.Join(dir, "claim-finish.sql")
	if err := os.WriteFile(script, []byte(pgbenchScript), 0o644); err != nil {
		return nil, fmt.Errorf("pgbench floor: %w", err)
	}
	time.Sleep(statsSettle)
	s0, err := readPGStats(ctx, conn)
	if err != nil {
		return nil, err
	}
	cmd := exec.CommandContext(ctx, pgbench, "-n", "-M", "prepared", "-f", script,
		"-c", strconv.Itoa(pgbenchClients), "-j", strconv.Itoa(pgbenchClients),
		"-t", strconv.Itoa(tx), "-D", "n="+strconv.Itoa(perTx), dsn)
	cmd.Env = environWithoutPG()
	out, err := cmd.CombinedOutput()
	if err != nil {
		return nil, fmt.Errorf("pgbench: %w\n%s", err, out)
	}
	time.Sleep(statsSettle)
	s1, err := readPGStats(ctx, conn)
	if err != nil {
		return nil, err
	}
	m := tpsLine.FindSubmatch(out)
	if m == nil {
		return nil, fmt.Errorf("pgbench: no tps in its output:\n%s", out)
	}
	tps, err := strconv.ParseFloat(string(m[1]), 64)
	if err != nil {
		return nil, fmt.Errorf("pgbench: tps: %w", err)
	}
	f := &pgFloor{perTx: perTx, jobs: jobs, rate: tps * float64(perTx), stats: s1.sub(s0)}
	if m := latLine.FindSubmatch(out); m != nil {
		f.lat = string(m[1])
	}
	// Every job claimed and finished once, every event numbered without a gap.
	var done, events, last int64
	err = conn.QueryRow(ctx, `SELECT (SELECT count(*) FROM jobs WHERE state = 2),
		(SELECT count(*) FROM events), (SELECT last_seq FROM meta)`).Scan(&done, &events, &last)
	if err != nil {
		return nil, fmt.Errorf("pgbench floor: check: %w", err)
	}
	if done != int64(jobs) || events != 2*int64(jobs) || last != events {
		return nil, fmt.Errorf("pgbench floor: %d of %d jobs finished, %d events, last seq %d", done, jobs, events, last)
	}
	f.events = events
	return f, nil
}

// environWithoutPG is this process's environment less the PG* variables that
// would point pgbench at another server.
func environWithoutPG() []string {
	var env []string
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, "PG") {
			env = append(env, kv)
		}
	}
	return env
}

// cluster is several spoold sharing one database.
type cluster struct {
	dsn     string
	daemons []*daemon
	clients []*client.Client
	stats   *pgx.Conn // a connection of the harness's own, for statistics
}

// startCluster starts n spoold (nodes a, b, c...) on a fresh database of srv,
// each with its own state folder and socket, and dials each.
func startCluster(ctx context.Context, b *bench, srv *pgtest.Server, name string, n int, args ...string) (*cluster, error) {
	dsn, err := srv.NewDB(ctx)
	if err != nil {
		return nil, err
	}
	c := &cluster{dsn: dsn}
	for i := range n {
		if _, err := c.add(ctx, b, fmt.Sprintf("%s-%c", name, 'a'+i), args...); err != nil {
			c.stop(ctx)
			return nil, err
		}
	}
	if c.stats, err = pgx.Connect(ctx, dsn); err != nil {
		c.stop(ctx)
		return nil, fmt.Errorf("connect for statistics: %w", err)
	}
	return c, nil
}

// add starts one more spoold of the cluster, named node, and dials it.
func (c *cluster) add(ctx context.Context, b *bench, node string, args ...string) (*daemon, error) {
	state, err := b.newState(node)
	if err != nil {
		return nil, err
	}
	argv := append([]string{"--store", c.dsn, "--node", node, "--lease", clusterLease.String()}, args...)
	d, _, err := b.startDaemon(ctx, node, state, argv...)
	if err != nil {
		return nil, err
	}
	cl, err := d.dial(ctx)
	if err != nil {
		d.stop()
		return nil, err
	}
	c.daemons = append(c.daemons, d)
	c.clients = append(c.clients, cl)
	return d, nil
}

// stop closes the connections and stops every daemon.
func (c *cluster) stop(ctx context.Context) {
	for _, cl := range c.clients {
		cl.Close()
	}
	for _, d := range c.daemons {
		d.stop()
	}
	if c.stats != nil {
		c.stats.Close(context.WithoutCancel(ctx))
	}
}

// clusterResult is what running the jobs through a cluster cost.
type clusterResult struct {
	elapsed time.Duration // from the first submit to the last final event
	submit  time.Duration // until the last submit answered
	failed  int
	stats   pgStats
	waits   string // where the daemons' database sessions waited
}

// clusterThroughput runs the sleep 1ms jobs through n daemons: submitted in
// batches of 100, round-robin, counted final by a watcher of the first daemon.
func clusterThroughput(ctx context.Context, b *bench, srv *pgtest.Server, n int) (*clusterResult, error) {
	c, err := startCluster(ctx, b, srv, fmt.Sprintf("cluster%d", n), n, "--max-parallel", strconv.Itoa(clusterParallel))
	if err != nil {
		return nil, err
	}
	defer c.stop(ctx)
	w, err := c.clients[0].Watch(ctx, rpc.WatchParams{})
	if err != nil {
		return nil, fmt.Errorf("watch: %w", err)
	}
	defer w.Close()
	jobs := b.opts.size.clusterJobs
	const per = 100
	specs := make([]rpc.Spec, per)
	for i := range specs {
		specs[i] = sleepSpec(benchQueue, time.Millisecond)
	}
	// The jobs wait in a paused queue until all are stored: what is timed
	// then is what the pgbench floor does, claims and ends, not the submits
	// (timed apart).
	paused, running := true, false
	if _, err := c.clients[0].QueueSet(ctx, rpc.QueueSetParams{Name: benchQueue, Paused: &paused}); err != nil {
		return nil, fmt.Errorf("pause the bench queue: %w", err)
	}
	t0 := time.Now()
	for i := 0; i*per < jobs; i++ {
		k := min(per, jobs-i*per)
		if _, err := c.clients[i%n].Submit(ctx, rpc.SubmitParams{Jobs: specs[:k]}); err != nil {
			return nil, fmt.Errorf("submit through daemon %d: %w", i%n, err)
		}
	}
	r := &clusterResult{submit: time.Since(t0)}
	time.Sleep(statsSettle)
	s0, err := readPGStats(ctx, c.stats)
	if err != nil {
		return nil, err
	}
	sctx, stopSampling := context.WithCancel(ctx)
	defer stopSampling()
	waits := make(chan string, 1)
	go func() { waits <- sampleWaits(sctx, c.dsn) }()
	t := time.Now()
	if _, err := c.clients[0].QueueSet(ctx, rpc.QueueSetParams{Name: benchQueue, Paused: &running}); err != nil {
		return nil, fmt.Errorf("resume the bench queue: %w", err)
	}
	wctx, cancel := context.WithTimeout(ctx, 5*time.Minute)
	defer cancel()
	final := 0
	for final < jobs {
		ev, err := w.Next(wctx)
		if err != nil {
			return nil, fmt.Errorf("watch (%d of %d jobs final): %w", final, jobs, err)
		}
		switch ev.Type {
		case rpc.EventSucceeded, rpc.EventFailed, rpc.EventCancelled:
			// A fresh database: every final event is one of these jobs.
			final++
			if ev.State != rpc.StateSucceeded {
				r.failed++
			}
		}
	}
	r.elapsed = time.Since(t)
	stopSampling()
	r.waits = <-waits
	time.Sleep(statsSettle)
	s1, err := readPGStats(ctx, c.stats)
	if err != nil {
		return nil, err
	}
	r.stats = s1.sub(s0)
	b.logf("cluster: %d spoold: %s", n, rate(perSec(jobs, r.elapsed), "jobs/s"))
	return r, nil
}

// clusterLatency measures, on a cluster of three, single-job submits through
// one daemon, and how long a submitted event takes from the submit's answer on
// daemon a to a watcher on daemon b. The jobs go to a paused queue: nothing
// runs meanwhile.
func clusterLatency(ctx context.Context, b *bench, srv *pgtest.Server) ([]row, error) {
	c, err := startCluster(ctx, b, srv, "latency", 3, "--max-parallel", strconv.Itoa(clusterParallel))
	if err != nil {
		return nil, err
	}
	defer c.stop(ctx)
	paused := true
	if _, err := c.clients[0].QueueSet(ctx, rpc.QueueSetParams{Name: benchQueue, Paused: &paused}); err != nil {
		return nil, fmt.Errorf("pause the bench queue: %w", err)
	}
	spec := sleepSpec(benchQueue, time.Millisecond)
	for range 20 { // warm up
		if _, err := c.clients[0].Submit(ctx, rpc.SubmitParams{Job: &spec}); err != nil {
			return nil, fmt.Errorf("submit: %w", err)
		}
	}
	var sub durations
	for range b.opts.size.clusterSubmits {
		t := time.Now()
		if _, err := c.clients[0].Submit(ctx, rpc.SubmitParams{Job: &spec}); err != nil {
			return nil, fmt.Errorf("submit: %w", err)
		}
		sub = append(sub, time.Since(t))
	}

	// The watcher on b hands each submitted event's job and arrival over.
	type arrival struct {
		job int64
		at  time.Time
	}
	w, err := c.clients[1].Watch(ctx, rpc.WatchParams{})
	if err != nil {
		return nil, fmt.Errorf("watch: %w", err)
	}
	defer w.Close()
	wctx, cancel := context.WithCancel(ctx)
	defer cancel()
	arrivals := make(chan arrival, 1024)
	watchErr := make(chan error, 1)
	go func() {
		for {
			ev, err := w.Next(wctx)
			if err != nil {
				watchErr <- err
				return
			}
			if ev.Type == rpc.EventSubmitted {
				arrivals <- arrival{ev.Job, time.Now()}
			}
		}
	}()
	var lat durations
	early := 0
	for range b.opts.size.clusterWatch {
		res, err := c.clients[0].Submit(ctx, rpc.SubmitParams{Job: &spec})
		if err != nil {
			return nil, fmt.Errorf("submit: %w", err)
		}
		answered := time.Now()
		timeout := time.NewTimer(10 * time.Second)
	wait:
		for {
			select {
			case a := <-arrivals:
				if a.job != res.Job.ID {
					continue
				}
				d := a.at.Sub(answered)
				if d < 0 { // arrived at b before the answer reached the harness
					early++
					d = 0
				}
				lat = append(lat, d)
				break wait
			case err := <-watchErr:
				timeout.Stop()
				return nil, fmt.Errorf("watch on b: %w", err)
			case <-timeout.C:
				return nil, fmt.Errorf("job %d's submitted event did not reach b within 10 s", res.Job.ID)
			}
		}
		timeout.Stop()
	}
	return []row{
		{
			figure: fmt.Sprintf("cluster: job.submit of 1 job via 1 of 3 spoold, p50 / p99 (%d)", len(sub)),
			value:  ms(sub.pct(50)) + " / " + ms(sub.pct(99)),
			note:   fmt.Sprintf("max %s; into a paused queue, one call at a time", ms(sub.pct(100))),
		},
		{
			figure: fmt.Sprintf("cluster: submitted on a, seen by a watcher on b, p50 / p99 (%d)", len(lat)),
			value:  ms(lat.pct(50)) + " / " + ms(lat.pct(99)),
			note:   fmt.Sprintf("from the submit's answer to the event's arrival at b; max %s; %d arrived before the answer (counted 0)", ms(lat.pct(100)), early),
		},
	}, nil
}

// clusterRescue runs a job of a sleep 60 shell step on daemon a (alone when
// it starts), starts daemon b, kills a with SIGKILL and times the job's
// interrupted event and its start on b, as a watcher on b sees them.
func clusterRescue(ctx context.Context, b *bench, srv *pgtest.Server) ([]row, error) {
	c, err := startCluster(ctx, b, srv, "rescue", 1, "--max-parallel", "4")
	if err != nil {
		return nil, err
	}
	defer c.stop(ctx)
	// The step's shells write their pids: the one on a outlives a's kill, and
	// the harness ends it.
	pids := filepath.Join(b.work, "cluster", "rescue.pids")
	defer killListed(pids)
	spec := rpc.Spec{Name: "rescue", Steps: []rpc.Step{{Shell: &rpc.ShellStep{
		Script: fmt.Sprintf("echo $$ >> %s; exec sleep 60", pids)}}}}
	res, err := c.clients[0].Submit(ctx, rpc.SubmitParams{Job: &spec})
	if err != nil {
		return nil, fmt.Errorf("submit: %w", err)
	}
	id := res.Job.ID
	if err := awaitRunning(ctx, c.clients[0], id); err != nil {
		return nil, err
	}
	if _, err := c.add(ctx, b, "rescue-b", "--max-parallel", "4"); err != nil {
		return nil, err
	}
	w, err := c.clients[1].Watch(ctx, rpc.WatchParams{Jobs: []int64{id}})
	if err != nil {
		return nil, fmt.Errorf("watch on b: %w", err)
	}
	defer w.Close()
	a := c.daemons[0]
	killed := time.Now()
	if err := a.cmd.Process.Kill(); err != nil {
		return nil, fmt.Errorf("kill -9 a: %w", err)
	}
	<-a.exited
	wctx, cancel := context.WithTimeout(ctx, 2*clusterLease+30*time.Second)
	defer cancel()
	var interrupted, running time.Duration
	for running == 0 {
		ev, err := w.Next(wctx)
		if err != nil {
			return nil, fmt.Errorf("watch on b (interrupted after %s, running after %s): %w", ms(interrupted), ms(running), err)
		}
		switch {
		case ev.Job != id:
		case ev.Type == rpc.EventInterrupted:
			interrupted = time.Since(killed)
		case interrupted > 0 && (ev.Type == rpc.EventStarted || ev.Type == rpc.EventStepStarted):
			running = time.Since(killed) // b is the only daemon left
		}
	}
	if _, err := c.clients[1].Cancel(ctx, rpc.CancelParams{ID: id, Reason: "measured"}); err != nil {
		b.logf("cluster: cancel the rescued job: %v", err)
	}
	b.logf("cluster: rescue: interrupted after %s, running on b after %s", ms(interrupted), ms(running))
	lease := fmt.Sprintf("--lease %s", clusterLease)
	return []row{
		{
			figure: "cluster: rescue, kill -9 of a to the job's interrupted event",
			value:  fmt.Sprintf("%.2f s", interrupted.Seconds()), baseline: lease,
			target: "< 15 s", verdict: check(interrupted < rescueTarget),
			note: "a sleep 60 shell step running on a; a watcher on b sees the event",
		},
		{
			figure: "cluster: rescue, kill -9 of a to the job running on b",
			value:  fmt.Sprintf("%.2f s", running.Seconds()), baseline: lease,
			target: "< 15 s", verdict: check(running < rescueTarget),
			note: "until the job's next started (or step_started) event, b being the only daemon left",
		},
	}, nil
}

// awaitRunning polls job.get until job id runs.
func awaitRunning(ctx context.Context, cl *client.Client, id int64) error {
	deadline := time.Now().Add(30 * time.Second)
	for {
		j, err := cl.Get(ctx, rpc.GetParams{ID: id})
		if err != nil {
			return fmt.Errorf("get job %d: %w", id, err)
		}
		if j.State == rpc.StateRunning {
			return nil
		}
		if j.Final() || time.Now().After(deadline) {
			return fmt.Errorf("job %d is %s, not running", id, j.State)
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(10 * time.Millisecond):
		}
	}
}

// killListed sends SIGKILL to every pid listed in file, one a line: the
// processes of the harness's own jobs that outlived their daemon.
func killListed(file string) {
	b, err := os.ReadFile(file)
	if err != nil {
		return
	}
	for _, f := range strings.Fields(string(b)) {
		pid, err := strconv.Atoi(f)
		if err != nil || pid <= 1 {
			continue
		}
		_ = syscall.Kill(pid, syscall.SIGKILL) // gone already: ESRCH
	}
}

// sampleWaits samples, every 5 ms until ctx ends, what the sessions on the
// database of dsn other than its own are doing (pg_stat_activity's wait
// events; "CPU" when active and waiting on nothing; "idle in transaction"
// while the transaction waits for its client's next statement), and describes
// the mean number of sessions in each, most first.
func sampleWaits(ctx context.Context, dsn string) string {
	conn, err := pgx.Connect(ctx, dsn)
	if err != nil {
		return "not sampled: " + err.Error()
	}
	defer conn.Close(context.WithoutCancel(ctx))
	const q = `SELECT CASE WHEN state <> 'active' THEN state
			ELSE coalesce(wait_event_type || ':' || wait_event, 'CPU') END, count(*)
		FROM pg_stat_activity
		WHERE datname = current_database() AND pid <> pg_backend_pid() AND state <> 'idle'
		GROUP BY 1`
	sum := map[string]int64{}
	samples := 0
	tick := time.NewTicker(5 * time.Millisecond)
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
		case <-tick.C:
			rows, err := conn.Query(ctx, q)
			if err != nil {
				continue // ctx ended mid-query
			}
			for rows.Next() {
				var k string
				var n int64
				if rows.Scan(&k, &n) == nil {
					sum[k] += n
				}
			}
			rows.Close()
			samples++
			continue
		}
		break
	}
	if samples == 0 {
		return "no samples"
	}
	keys := make([]string, 0, len(sum))
	for k := range sum {
		keys = append(keys, k)
	}
	sort.Slice(keys, func(i, j int) bool { return sum[keys[i]] > sum[keys[j]] })
	parts := make([]string, 0, len(keys))
	for _, k := range keys[:min(len(keys), 4)] {
		parts = append(parts, fmt.Sprintf("%s %.1f", k, float64(sum[k])/float64(samples)))
	}
	return fmt.Sprintf("%s (%d samples)", strings.Join(parts, ", "), samples)
}
