package httpapi_test

import (
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/matryer/is"

	"spool/rpc"
)

// TestWatchResumeAfterDrop drops an event stream in the middle of a job and
// resumes it with Last-Event-ID: together the two streams give every stored event
// of the job once, in order, as a replay from the start does.
func TestWatchResumeAfterDrop(t *testing.T) {
	is := is.New(t)
	h := newHarness(t, harnessOpts{})
	g := h.gate("resume")
	steps := []string{}
	for i := range 6 {
		script := "sleep 0.05"
		if i == 2 {
			script = g.wait()
		}
		steps = append(steps, `{"shell":{"script":`+jsonStr(script)+`}}`)
	}
	j := h.submit(`{"steps":[` + strings.Join(steps, ",") + `]}`)

	var seqs []int64
	code, s, _ := h.watch(tctx(t), readToken, "jobs="+itoa(j.ID)+"&since=0", "")
	is.Equal(code, http.StatusOK) // the first stream
	lastID := ""
	for len(seqs) < 5 { // submitted, started, two steps' start and end: the job then waits at its gate
		m, err := s.next()
		is.NoErr(err)
		if m.id != "" {
			seqs = append(seqs, m.ev(t).Seq)
			lastID = m.id
		}
	}
	s.close() // dropped while the job runs
	g.open(t) // events go on while nobody watches
	eventually(t, "job final", func() bool {
		var x rpc.Job
		h.call("job.get", `{"id":`+itoa(j.ID)+`}`, &x)
		return x.Final()
	})

	code, s, _ = h.watch(tctx(t), readToken, "jobs="+itoa(j.ID), lastID)
	is.Equal(code, http.StatusOK) // resumed with Last-Event-ID
	for {
		m, err := s.next()
		if errors.Is(err, io.EOF) {
			break
		}
		is.NoErr(err)
		if m.id != "" {
			seqs = append(seqs, m.ev(t).Seq)
		}
	}
	s.close()

	var all []int64
	code, s, _ = h.watch(tctx(t), readToken, "jobs="+itoa(j.ID)+"&since=0", "")
	is.Equal(code, http.StatusOK)
	for {
		m, err := s.next()
		if errors.Is(err, io.EOF) {
			break
		}
		is.NoErr(err)
		if m.id != "" {
			all = append(all, m.ev(t).Seq)
		}
	}
	s.close()
	is.Equal(len(all), 2+2*6+1)                 // submitted, started, 6 steps' start and end, succeeded
	is.Equal(fmt.Sprint(seqs), fmt.Sprint(all)) // none lost, none repeated, in order
	is.True(len(seqs) > 5 && seqs[5] > seqs[4]) // the resumed part came after the dropped part
	id, _ := strconv.ParseInt(lastID, 10, 64)
	is.Equal(id, seqs[4]) // Last-Event-ID was the seq of the last stored event received
}

// TestWatchClientNeverReads opens a stream of a job's output and never reads it:
// other requests are served meanwhile, the job runs to its end, and the stream is
// closed once its writes have been blocked for the write stall.
func TestWatchClientNeverReads(t *testing.T) {
	is := is.New(t)
	h := newHarness(t, harnessOpts{writeStall: 300 * time.Millisecond})
	// About 40 MB of output over a few seconds: more than every buffer between
	// the handler and a client that reads nothing.
	chatty := h.submit(`{"steps":[{"shell":{"script":"for i in $(seq 1 400); do head -c 100000 /dev/zero | tr '\\\\0' x; echo; done"}}]}`)

	d := net.Dialer{Control: func(_, _ string, c syscall.RawConn) error {
		var serr error
		err := c.Control(func(fd uintptr) { serr = syscall.SetsockoptInt(int(fd), syscall.SOL_SOCKET, syscall.SO_RCVBUF, 4096) })
		if err != nil {
			return err
		}
		return serr
	}}
	conn, err := d.Dial("tcp", strings.TrimPrefix(h.srv.URL, "http://"))
	is.NoErr(err)
	defer conn.Close()
	_, err = fmt.Fprintf(conn, "GET /api/v1/watch?jobs=%d&since=0&output=true HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer %s\r\n\r\n", chatty.ID, readToken)
	is.NoErr(err)
	// ...and never read from conn.

	streams := func() float64 { return scrape(t, h)["spool_http_watch_streams"] }
	eventually(t, "the stream opens", func() bool { return streams() == 1 })
	other := h.submit(`{"steps":[{"shell":{"script":"echo fine"}}]}`)
	is.Equal(h.wait(other.ID).State, rpc.StateSucceeded)  // the daemon serves others
	is.Equal(h.wait(chatty.ID).State, rpc.StateSucceeded) // the watched job is not held up
	eventually(t, "the stalled stream is closed", func() bool { return streams() == 0 })
	var info rpc.Info
	h.call("daemon.info", "", &info)
	is.Equal(info.Counts[rpc.StateSucceeded], 2) // both jobs done
}
