package httpapi_test

import (
	"net/http"
	"testing"

	"github.com/matryer/is"
	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
)

// scrape reads /metrics with the Prometheus text parser and sums each family's
// samples by name (counters, gauges, and a histogram's count).
func scrape(t *testing.T, h *harness) map[string]float64 {
	t.Helper()
	req, _ := http.NewRequest(http.MethodGet, h.srv.URL+"/metrics", nil)
	req.Header.Set("Authorization", "Bearer "+readToken)
	res, err := h.srv.Client().Do(req)
	if err != nil {
		t.Fatalf("scrape: %v", err)
	}
	defer res.Body.Close()
	if res.StatusCode != 200 {
		t.Fatalf("scrape: status %d", res.StatusCode)
	}
	p := expfmt.NewTextParser(model.UTF8Validation)
	fams, err := p.TextToMetricFamilies(res.Body)
	if err != nil {
		t.Fatalf("parse metrics: %v", err)
	}
	out := map[string]float64{}
	for name, f := range fams {
		for _, m := range f.GetMetric() {
			switch f.GetType() {
			case dto.MetricType_COUNTER:
				out[name] += m.GetCounter().GetValue()
			case dto.MetricType_GAUGE:
				out[name] += m.GetGauge().GetValue()
			case dto.MetricType_HISTOGRAM:
				out[name] += float64(m.GetHistogram().GetSampleCount())
			}
		}
	}
	return out
}

// TestMetricsMove scrapes /metrics while jobs run and after, and sees the figures
// move.
func TestMetricsMove(t *testing.T) {
	is := is.New(t)
	h := newHarness(t, harnessOpts{})
	before := scrape(t, h)
	for _, name := range []string{"spool_store_commits_total", "spool_store_commit_seconds", "spool_watchers", "spool_http_connections", "spool_http_watch_streams", "go_goroutines"} {
		_, ok := before[name]
		is.True(ok) // every family is there from the start
	}

	g := h.gate("m")
	running := h.submit(`{"queue":"q1","steps":[{"shell":{"script":` + jsonStr(g.wait()) + `}}]}`)
	eventually(t, "a running job shows", func() bool { return scrape(t, h)["spool_jobs"] >= 1 })
	// The start is counted from the event stream, a moment after the store
	// shows the job running.
	eventually(t, "the start was counted", func() bool {
		return scrape(t, h)["spool_job_starts_total"] >= before["spool_job_starts_total"]+1
	})
	g.open(t)
	h.wait(running.ID)
	failed := h.submit(`{"steps":[{"shell":{"script":"exit 3"}}]}`)
	h.wait(failed.ID)

	eventually(t, "outcomes counted", func() bool {
		return scrape(t, h)["spool_job_outcomes_total"] >= before["spool_job_outcomes_total"]+2
	})
	after := scrape(t, h)
	is.True(after["spool_store_commits_total"] > before["spool_store_commits_total"])          // commits counted
	is.True(after["spool_store_commit_seconds"] > before["spool_store_commit_seconds"])        // commit latency observed
	is.True(after["spool_job_duration_seconds"] >= before["spool_job_duration_seconds"]+2)     // durations observed
	is.True(after["spool_job_queue_wait_seconds"] >= before["spool_job_queue_wait_seconds"]+2) // queue waits observed
	is.Equal(after["spool_jobs_stored"], float64(2))                                           // jobs by state
	is.True(after["spool_watchers"] >= 1)                                                      // the metrics' own watch at least
	is.True(after["spool_http_requests_total"] > before["spool_http_requests_total"])          // API calls counted
}
