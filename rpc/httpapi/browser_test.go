package httpapi_test

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/chromedp"
	"github.com/matryer/is"

	"spool/rpc"
)

// findChromium returns the path of a Chromium, or skips the test saying how to
// get one.
func findChromium(t *testing.T) string {
	t.Helper()
	for _, name := range []string{"chromium", "chromium-browser", "google-chrome"} {
		if p, err := exec.LookPath(name); err == nil {
			return p
		}
	}
	t.Skip("no Chromium: install Debian's chromium package (apt-get install chromium) to test the dashboard in a browser")
	return ""
}

// TestDashboardInBrowser drives the dashboard in headless Chromium against a real
// daemon: it signs in with a token, sees a job submitted through the API appear
// live, submits one through the page, sees its progress move and its log follow,
// and cancels it from the page. What it checks it reads from the DOM; the
// screenshots are kept as test artifacts (go test -artifacts) and, with
// SPOOL_SCREENSHOT=1, as testdata/dashboard.png for the README.
func TestDashboardInBrowser(t *testing.T) {
	chromium := findChromium(t)
	if testing.Short() {
		t.Skip("the browser test starts Chromium; skipped with -short")
	}
	is := is.New(t)
	h := newHarness(t, harnessOpts{})
	opts := []chromedp.ExecAllocatorOption{
		chromedp.ExecPath(chromium),
		chromedp.Flag("headless", true),
		chromedp.NoSandbox,
		chromedp.DisableGPU,
		chromedp.NoFirstRun,
		chromedp.Flag("disable-quic", true),
		chromedp.Flag("disable-background-networking", true),
		chromedp.Flag("disable-component-update", true),
		chromedp.Flag("disable-sync", true),
		chromedp.UserDataDir(t.TempDir()),
		chromedp.WindowSize(1400, 900),
	}
	actx, acancel := chromedp.NewExecAllocator(tctx(t), opts...)
	defer acancel()
	ctx, cancel := chromedp.NewContext(actx)
	defer cancel()
	ctx, tcancel := context.WithTimeout(ctx, 3*time.Minute)
	defer tcancel()
	run := func(what string, actions ...chromedp.Action[chromedp.Void]) {
		t.Helper()
		if err := chromedp.Do(ctx, actions...); err != nil {
			t.Fatalf("%s: %v", what, err)
		}
	}
	text := func(sel string) string {
		t.Helper()
		s, err := chromedp.Run(ctx, chromedp.Text(sel))
		if err != nil {
			t.Fatalf("read %s: %v", sel, err)
		}
		return s
	}
	waitJS := func(what, expr string) {
		t.Helper()
		if _, err := chromedp.Run(ctx, chromedp.Poll[bool](expr, chromedp.WithPollingTimeout(90*time.Second), chromedp.WithPollingInterval(50*time.Millisecond))); err != nil {
			t.Fatalf("%s: %v", what, err)
		}
	}

	run("open the page and sign in",
		chromedp.Navigate(h.srv.URL+"/"),
		chromedp.WaitVisible("#token"),
		chromedp.SendKeys("#token", writeToken),
		chromedp.Click("#connect"),
		chromedp.WaitVisible("#jobs"),
	)
	waitJS("the event stream is live", `document.querySelector('#live').textContent === 'live'`)

	// A job submitted elsewhere appears without a reload.
	api := h.submit(`{"name":"from-the-api","queue":"builds","steps":[{"sleep":{"duration":"50ms"}}]}`)
	waitJS("the API's job appears", `!!document.querySelector('#jobs tr[data-id="`+itoa(api.ID)+`"]')`)
	waitJS("and finishes live", `(document.querySelector('#jobs tr[data-id="`+itoa(api.ID)+`"]')||{}).textContent.includes('succeeded')`)
	waitJS("its queue is listed", `!!document.querySelector('#queues tr[data-queue="builds"]')`)

	// A job submitted through the page: progress moves, the log follows.
	script := `for i in $(seq 1 300); do echo "$i/300 working" >&$SPOOL_PROGRESS_FD; echo "line $i"; sleep 0.1; done`
	run("submit through the page",
		chromedp.SendKeys("#submit-name", "from-the-page"),
		chromedp.SendKeys("#submit-script", script),
		chromedp.Click("#submit"),
	)
	waitJS("the page's job is shown", `document.querySelector('#job-title').textContent.includes('from-the-page')`)
	waitJS("it runs", `document.querySelector('#job-state').textContent === 'running'`)
	waitJS("progress shows", `/^\d+% working/.test(document.querySelector('#progress-text').textContent)`)
	first := percentOf(t, text("#progress-text"))
	waitJS("progress moves", `parseInt(document.querySelector('#progress-text').textContent) > `+strconv.Itoa(first))
	waitJS("the log follows live", `/line [5-9]\d*\n/.test(document.querySelector('#log').textContent)`)
	waitJS("a heartbeat shows", `document.querySelector('#heartbeat').textContent.includes('♥')`)
	id, err := strconv.ParseInt(strings.TrimPrefix(strings.Fields(text("#job-title"))[0], "#"), 10, 64)
	is.NoErr(err) // the job's id is in its title

	shot := func() []byte {
		t.Helper()
		png, err := chromedp.Run(ctx, chromedp.FullScreenshot(100))
		if err != nil {
			t.Fatalf("screenshot: %v", err)
		}
		return png
	}
	png := shot()
	is.NoErr(os.WriteFile(filepath.Join(t.ArtifactDir(), "dashboard-running.png"), png, 0o644))
	if os.Getenv("SPOOL_SCREENSHOT") == "1" {
		is.NoErr(os.WriteFile(filepath.Join("testdata", "dashboard.png"), png, 0o644))
	}

	run("cancel from the page", chromedp.Click("#cancel"))
	waitJS("the page shows it cancelled", `document.querySelector('#job-state').textContent === 'cancelled'`)
	var j rpc.Job
	h.call("job.get", `{"id":`+itoa(id)+`}`, &j)
	is.Equal(j.State, rpc.StateCancelled)                // the cancel reached the daemon
	is.Equal(j.Error, "cancelled from the dashboard")    // with the page's reason
	is.True(!strings.Contains(text("#log"), "line 300")) // it was stopped midway
	waitJS("the list shows it", `(document.querySelector('#jobs tr[data-id="`+itoa(id)+`"]')||{}).textContent.includes('cancelled')`)
	png = shot()
	is.NoErr(os.WriteFile(filepath.Join(t.ArtifactDir(), "dashboard-cancelled.png"), png, 0o644))

	// Retry from the page makes a new job that the page then shows.
	run("retry from the page", chromedp.Click("#retry"))
	waitJS("the retry is shown", `document.querySelector('#job-title').textContent.startsWith('#`+itoa(id+1)+` ')`)
	var retry rpc.Job
	h.call("job.get", `{"id":`+itoa(id+1)+`}`, &retry)
	is.Equal(*retry.RetryOf, id) // a retry of the cancelled job
	h.call("job.cancel", `{"id":`+itoa(id+1)+`}`, nil)
}

// percentOf reads the percent a progress text starts with.
func percentOf(t *testing.T, s string) int {
	t.Helper()
	n, err := strconv.Atoi(strings.TrimSpace(strings.SplitN(s, "%", 2)[0]))
	if err != nil {
		t.Fatalf("progress %q: %v", s, err)
	}
	return n
}
