package daemon_test

import (
	"fmt"
	"net/http"
	"net/http/httptest"
	"testing"
	"time"

	"github.com/matryer/is"
	"go.uber.org/goleak"

	"spool/rpc"
)

// TestNoGoroutineOutlivesTheDaemon runs every step kind with watchers, progress,
// retries and a cancel, then stops the daemon: nothing it started may be left.
func TestNoGoroutineOutlivesTheDaemon(t *testing.T) {
	is := is.New(t)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { fmt.Fprint(w, "ok") }))
	defer srv.Close()
	ignore := goleak.IgnoreCurrent()
	dir := t.TempDir()
	h := start(t, dir, nil)
	w, err := h.d.Watch(ctxT(t), rpc.WatchParams{Heartbeat: dur(100 * time.Millisecond), Output: true})
	is.NoErr(err)
	go func() {
		for {
			if _, err := w.Next(ctxT(t)); err != nil {
				return
			}
		}
	}()
	res, err := h.d.Submit(ctxT(t), rpc.SubmitParams{Jobs: []rpc.Spec{
		{Steps: []rpc.Step{shell(`echo "1/2 x" >&3; echo out; sleep 0.2; echo "2/2 y" >&3`), {HTTP: &rpc.HTTPStep{URL: srv.URL}}, {Sleep: &rpc.SleepStep{Duration: dur(50 * time.Millisecond)}}}},
		{Steps: []rpc.Step{{Shell: &rpc.ShellStep{Script: "exit 1"}, Retry: &rpc.Retry{Attempts: 2, Backoff: dur(10 * time.Millisecond), MaxBackoff: dur(10 * time.Millisecond)}}}},
		{Steps: []rpc.Step{shell("sleep 30")}},
		{Steps: []rpc.Step{{Sleep: &rpc.SleepStep{Duration: dur(time.Hour)}}}},
	}})
	is.NoErr(err)
	wait(t, h.d, res.Jobs[0].ID)
	wait(t, h.d, res.Jobs[1].ID)
	eventually(t, "the long one runs", func() bool { return get(t, h.d, res.Jobs[2].ID).State == rpc.StateRunning })
	_, err = h.d.Cancel(ctxT(t), rpc.CancelParams{ID: res.Jobs[2].ID})
	is.NoErr(err)
	h.shutdown() // the hour-long sleep is interrupted
	srv.CloseClientConnections()
	goleak.VerifyNone(t, ignore)
}
