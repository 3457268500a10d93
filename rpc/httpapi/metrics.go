package httpapi

import (
	"context"
	"errors"
	"io"
	"net"
	"net/http"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"spool/rpc"
)

// Stats is what metrics read from the daemon beyond the protocol.
type Stats struct {
	// Watchers is the number of watches open, over every transport (the metrics'
	// own watch included).
	Watchers int
}

// MetricsConfig says where metrics come from.
type MetricsConfig struct {
	// Service is read on each scrape (queue.list, daemon.info) and followed for
	// starts and outcomes.
	Service rpc.Service
	// Stats reads the daemon's own figures; nil: none.
	Stats func() Stats
	// Commits counts the store's write transactions; nil: none.
	Commits func() uint64
}

// Metrics is spool's Prometheus registry. Make it with NewMetrics before the
// daemon, so that ObserveCommit can time the store; Follow counts job starts and
// outcomes from the event log.
type Metrics struct {
	cfg MetricsConfig
	reg *prometheus.Registry

	commitSeconds prometheus.Histogram
	starts        *prometheus.CounterVec
	outcomes      *prometheus.CounterVec
	duration      *prometheus.HistogramVec
	queueWait     *prometheus.HistogramVec
	streams       prometheus.Gauge
	conns         prometheus.Gauge
	requests      *prometheus.CounterVec
}

// NewMetrics builds the registry. cfg.Service and cfg.Stats may be set later
// with SetService, before serving.
func NewMetrics(cfg MetricsConfig) *Metrics {
	reg := prometheus.NewRegistry()
	m := &Metrics{cfg: cfg, reg: reg}
	m.commitSeconds = prometheus.NewHistogram(prometheus.HistogramOpts{
		Name: "spool_store_commit_seconds", Help: "Time of the daemon's durable store writes (commit and sync, group-commit wait included).",
		Buckets: []float64{.0005, .001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5},
	})
	m.starts = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "spool_job_starts_total", Help: "Job starts (again after a restart included), by queue.",
	}, []string{"queue"})
	m.outcomes = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "spool_job_outcomes_total", Help: "Jobs that became final, by queue and outcome.",
	}, []string{"queue", "outcome"})
	m.duration = prometheus.NewHistogramVec(prometheus.HistogramOpts{
		Name: "spool_job_duration_seconds", Help: "Time from a job's first start to its end, by queue and outcome.",
		Buckets: prometheus.ExponentialBuckets(0.01, 4, 12),
	}, []string{"queue", "outcome"})
	m.queueWait = prometheus.NewHistogramVec(prometheus.HistogramOpts{
		Name: "spool_job_queue_wait_seconds", Help: "Time from a job's submit to its first start, by queue.",
		Buckets: prometheus.ExponentialBuckets(0.001, 4, 12),
	}, []string{"queue"})
	m.streams = prometheus.NewGauge(prometheus.GaugeOpts{Name: "spool_http_watch_streams", Help: "Watch streams (SSE) open now."})
	m.conns = prometheus.NewGauge(prometheus.GaugeOpts{Name: "spool_http_connections", Help: "HTTP connections open now."})
	m.requests = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "spool_http_requests_total", Help: "HTTP API calls answered, by method and status code.",
	}, []string{"method", "code"})
	reg.MustRegister(m.commitSeconds, m.starts, m.outcomes, m.duration, m.queueWait, m.streams, m.conns, m.requests,
		collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}),
		scrapeCollector{m})
	if cfg.Commits != nil {
		reg.MustRegister(prometheus.NewCounterFunc(prometheus.CounterOpts{
			Name: "spool_store_commits_total", Help: "Write transactions committed by the store (rate() gives commits per second).",
		}, func() float64 { return float64(cfg.Commits()) }))
	}
	return m
}

// SetService sets the service read by scrapes and Follow, and the daemon's own
// figures (nil: none). Call it before serving.
func (m *Metrics) SetService(svc rpc.Service, stats func() Stats) {
	m.cfg.Service, m.cfg.Stats = svc, stats
}

// ObserveCommit records the time of one durable store write.
func (m *Metrics) ObserveCommit(d time.Duration) { m.commitSeconds.Observe(d.Seconds()) }

// Registry is the registry served on /metrics.
func (m *Metrics) Registry() *prometheus.Registry { return m.reg }

func (m *Metrics) handler() http.Handler {
	return promhttp.HandlerFor(m.reg, promhttp.HandlerOpts{ErrorHandling: promhttp.ContinueOnError})
}

// ConnState counts open HTTP connections; set it as http.Server.ConnState.
func (m *Metrics) ConnState(_ net.Conn, st http.ConnState) {
	switch st {
	case http.StateNew:
		m.conns.Inc()
	case http.StateClosed, http.StateHijacked:
		m.conns.Dec()
	}
}

var (
	jobsDesc   = prometheus.NewDesc("spool_jobs", "Jobs queued or running now, by queue and state.", []string{"queue", "state"}, nil)
	storedDesc = prometheus.NewDesc("spool_jobs_stored", "Jobs stored, by state.", []string{"state"}, nil)
	limitDesc  = prometheus.NewDesc("spool_queue_parallel", "A queue's own limit of running jobs (absent: none).", []string{"queue"}, nil)
	pausedDesc = prometheus.NewDesc("spool_queue_paused", "1 when a queue is paused.", []string{"queue"}, nil)
	seqDesc    = prometheus.NewDesc("spool_events_last_seq", "The seq of the last stored event.", nil, nil)
	watchDesc  = prometheus.NewDesc("spool_watchers", "Watches open now, over the socket and HTTP (the metrics' own included).", nil, nil)
)

// scrapeCollector reads the queues and counts on each scrape.
type scrapeCollector struct{ m *Metrics }

func (c scrapeCollector) Describe(ch chan<- *prometheus.Desc) {
	ch <- jobsDesc
	ch <- storedDesc
	ch <- limitDesc
	ch <- pausedDesc
	ch <- seqDesc
	ch <- watchDesc
}

func (c scrapeCollector) Collect(ch chan<- prometheus.Metric) {
	if c.m.cfg.Stats != nil {
		ch <- prometheus.MustNewConstMetric(watchDesc, prometheus.GaugeValue, float64(c.m.cfg.Stats().Watchers))
	}
	svc := c.m.cfg.Service
	if svc == nil {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if ql, err := svc.QueueList(ctx); err == nil {
		for _, q := range ql.Queues {
			ch <- prometheus.MustNewConstMetric(jobsDesc, prometheus.GaugeValue, float64(q.Queued), q.Name, string(rpc.StateQueued))
			ch <- prometheus.MustNewConstMetric(jobsDesc, prometheus.GaugeValue, float64(q.Running), q.Name, string(rpc.StateRunning))
			if q.Parallel != nil {
				ch <- prometheus.MustNewConstMetric(limitDesc, prometheus.GaugeValue, float64(*q.Parallel), q.Name)
			}
			paused := 0.0
			if q.Paused {
				paused = 1
			}
			ch <- prometheus.MustNewConstMetric(pausedDesc, prometheus.GaugeValue, paused, q.Name)
		}
	}
	if info, err := svc.Info(ctx); err == nil {
		for st, n := range info.Counts {
			ch <- prometheus.MustNewConstMetric(storedDesc, prometheus.GaugeValue, float64(n), string(st))
		}
		ch <- prometheus.MustNewConstMetric(seqDesc, prometheus.GaugeValue, float64(info.LastSeq))
	}
}

// Follow counts starts and outcomes from the event log until ctx is done: it
// watches every stored event from now on and reads the job of each start and
// each end (for its queue and times). When the watch ends it starts again from
// where it was.
func (m *Metrics) Follow(ctx context.Context) error {
	svc := m.cfg.Service
	var since *int64
	for ctx.Err() == nil {
		if since == nil {
			info, err := svc.Info(ctx)
			if err == nil {
				since = rpc.Since(info.LastSeq)
			}
		}
		if since != nil {
			last, err := m.follow(ctx, svc, *since)
			since = &last
			var e *rpc.Error
			if errors.As(err, &e) && e.Code == rpc.CodeSinceOutside {
				since = nil // the log was trimmed past us: start from now
			}
		}
		select {
		case <-ctx.Done():
		case <-time.After(time.Second):
		}
	}
	return nil
}

// follow runs one watch from since and returns the last seq it counted.
func (m *Metrics) follow(ctx context.Context, svc rpc.Service, since int64) (int64, error) {
	w, err := svc.Watch(ctx, rpc.WatchParams{Since: &since})
	if err != nil {
		return since, err
	}
	defer w.Close()
	for {
		ev, err := w.Next(ctx)
		if err != nil {
			if errors.Is(err, io.EOF) {
				return since, nil
			}
			return since, err
		}
		if !ev.Stored() {
			continue
		}
		since = ev.Seq
		switch ev.Type {
		case rpc.EventStarted, rpc.EventSucceeded, rpc.EventFailed, rpc.EventCancelled:
		default:
			continue
		}
		j, err := svc.Get(ctx, rpc.GetParams{ID: ev.Job})
		if err != nil {
			continue // removed since
		}
		if ev.Type == rpc.EventStarted {
			m.starts.WithLabelValues(j.Queue).Inc()
			if j.StartedAt != nil {
				m.queueWait.WithLabelValues(j.Queue).Observe(j.StartedAt.Sub(j.SubmittedAt).Seconds())
			}
			continue
		}
		m.outcomes.WithLabelValues(j.Queue, ev.Type).Inc()
		if j.StartedAt != nil && j.FinishedAt != nil {
			m.duration.WithLabelValues(j.Queue, ev.Type).Observe(j.FinishedAt.Sub(*j.StartedAt).Seconds())
		}
	}
}

// countRequest notes one API call answered.
func (m *Metrics) countRequest(method string, code int) {
	if m != nil {
		m.requests.WithLabelValues(method, itoa(code)).Inc()
	}
}
