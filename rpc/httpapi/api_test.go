package httpapi_test

import (
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"strings"
	"testing"

	"github.com/matryer/is"

	"spool/rpc"
)

// TestEveryMethod calls every method of the protocol over HTTP, job.watch as an
// event stream, against a real daemon and store.
func TestEveryMethod(t *testing.T) {
	is := is.New(t)
	h := newHarness(t, harnessOpts{})

	var info rpc.Info
	h.call("daemon.info", "", &info)
	is.Equal(info.Protocol, 1) // daemon.info with an empty body

	j := h.submit(`{"name":"one","queue":"web","env":{"TOKEN":"s3cret"},"steps":[{"shell":{"script":"echo hello; echo 1/2 half >&$SPOOL_PROGRESS_FD"}}]}`)
	is.Equal(j.Name, "one")                 // job.submit answers the job
	is.Equal(j.Spec.Env["TOKEN"], "s3cret") // a write token sees the env it sent
	var batch struct{ Jobs []rpc.Job }
	h.call("job.submit", `{"jobs":[{"steps":[{"sleep":{"duration":"10ms"}}]},{"steps":[{"sleep":{"duration":"10ms"}}],"after_index":[0]}]}`, &batch)
	is.Equal(len(batch.Jobs), 2) // a batch answers every job

	done := h.wait(j.ID)
	is.Equal(done.State, rpc.StateSucceeded) // job.wait answers once final
	var got rpc.Job
	h.call("job.get", `{"id":`+itoa(j.ID)+`}`, &got)
	is.Equal(string(got.Result), `"hello"`) // job.get carries the result

	var list rpc.ListResult
	h.call("job.list", `{"queue":"web","order":"asc"}`, &list)
	is.Equal(len(list.Jobs), 1) // job.list filters by queue

	var logs rpc.LogsResult
	h.call("job.logs", `{"id":`+itoa(j.ID)+`,"step":0}`, &logs)
	is.Equal(logs.Data, "hello\n") // job.logs reads the step's log
	is.True(logs.EOF)              // the step is over

	// A stream of the job's events, replayed from the start: ids are seqs.
	code, s, _ := h.watch(tctx(t), readToken, "jobs="+itoa(j.ID)+"&since=0", "")
	is.Equal(code, http.StatusOK) // job.watch as SSE
	first, err := s.next()
	is.NoErr(err)
	is.Equal(first.event, "watch") // the watch's result comes first
	var types []string
	for {
		m, err := s.next()
		if errors.Is(err, io.EOF) {
			break
		}
		is.NoErr(err)
		ev := m.ev(t)
		if ev.Stored() {
			is.Equal(m.id, itoa(ev.Seq)) // a stored event's id is its seq
		} else {
			is.Equal(m.id, "") // a live event has no id
		}
		types = append(types, ev.Type)
	}
	s.close()
	is.Equal(types[0], rpc.EventSubmitted)                           // replayed from the start
	is.Equal(types[len(types)-1], rpc.EventDone)                     // the stream ends with done
	is.True(strings.Contains(strings.Join(types, " "), "succeeded")) // the outcome is there

	// cancel and retry.
	g := h.gate("g1")
	run := h.submit(`{"steps":[{"shell":{"script":` + jsonStr(g.wait()) + `}}]}`)
	eventually(t, "job running", func() bool {
		var j rpc.Job
		h.call("job.get", `{"id":`+itoa(run.ID)+`}`, &j)
		return j.State == rpc.StateRunning
	})
	var cancelled rpc.Job
	h.call("job.cancel", `{"id":`+itoa(run.ID)+`,"reason":"test"}`, &cancelled)
	is.Equal(cancelled.State, rpc.StateCancelled) // job.cancel answers the final job
	var retried rpc.Job
	h.call("job.retry", `{"id":`+itoa(run.ID)+`}`, &retried)
	is.Equal(*retried.RetryOf, run.ID) // job.retry makes a new job
	g.open(t)
	is.Equal(h.wait(retried.ID).State, rpc.StateSucceeded) // the retry ran

	var removed rpc.RemoveResult
	h.call("job.remove", `{"ids":[`+itoa(run.ID)+`]}`, &removed)
	is.Equal(removed.Removed, 1) // job.remove
	h.wait(batch.Jobs[1].ID)
	h.call("job.prune", `{"states":["succeeded"]}`, &removed)
	is.True(removed.Removed >= 3) // job.prune removed the finished ones

	var q rpc.Queue
	h.call("queue.set", `{"name":"web","parallel":2,"paused":true}`, &q)
	is.Equal(*q.Parallel, 2) // queue.set
	var ql rpc.QueueListResult
	h.call("queue.list", "{}", &ql)
	found := false
	for _, x := range ql.Queues {
		found = found || (x.Name == "web" && x.Paused)
	}
	is.True(found) // queue.list shows the change

	var tp rpc.Template
	h.call("template.put", `{"name":"greet","spec":{"steps":[{"shell":{"script":"echo hi $SPOOL_PARAM_WHO"}}]},"params":{"who":{"default":"you"}}}`, &tp)
	is.Equal(tp.Name, "greet") // template.put
	h.call("template.get", `{"name":"greet"}`, &tp)
	var tl rpc.TemplateListResult
	h.call("template.list", "", &tl)
	is.Equal(len(tl.Templates), 1) // template.list
	var tj rpc.Job
	h.call("template.run", `{"name":"greet","params":{"who":"me"}}`, &tj)
	is.Equal(h.wait(tj.ID).State, rpc.StateSucceeded) // template.run
	h.call("template.remove", `{"name":"greet"}`, nil)
	code, b := h.post(writeToken, "template.get", `{"name":"greet"}`)
	is.Equal(code, http.StatusNotFound)               // removed
	is.Equal(apiError(t, b).Code, rpc.CodeNoTemplate) // 1003

	// job.unwatch ends an open stream by its token.
	code, s, _ = h.watch(tctx(t), writeToken, "token=mine", "")
	is.Equal(code, http.StatusOK)
	first, err = s.next()
	is.NoErr(err)
	is.True(strings.Contains(first.data, `"token":"mine"`)) // the token given is the watch's
	h.call("job.unwatch", `{"token":"mine"}`, nil)
	for err == nil {
		_, err = s.next()
	}
	is.True(errors.Is(err, io.EOF)) // the stream ended
	s.close()

	h.call("daemon.shutdown", `{"drain":false}`, nil)
	<-h.d.Stopped() // daemon.shutdown stops the daemon
}

// TestErrorCodes checks the protocol's errors and their HTTP statuses.
func TestErrorCodes(t *testing.T) {
	h := newHarness(t, harnessOpts{maxMessage: 4096})
	done := h.submit(`{"key":"k1","steps":[{"sleep":{"duration":"10ms"}}]}`)
	h.wait(done.ID)
	cases := []struct {
		name, method, body string
		status, code       int
		field              string
	}{
		{"malformed JSON", "job.get", `{"id":`, 400, rpc.CodeParseError, ""},
		{"params not an object", "job.get", `[1]`, 400, rpc.CodeInvalidParams, ""},
		{"unknown field", "job.submit", `{"job":{"stpes":[]}}`, 400, rpc.CodeInvalidParams, "job.stpes"},
		{"bad value", "job.list", `{"limit":5000}`, 400, rpc.CodeInvalidParams, "limit"},
		{"too large", "job.submit", `{"job":{"name":"` + strings.Repeat("x", 5000) + `","steps":[]}}`, 413, rpc.CodeInvalidRequest, ""},
		{"unknown method", "job.frobnicate", `{}`, 404, rpc.CodeMethodNotFound, ""},
		{"no such job", "job.get", `{"id":999}`, 404, rpc.CodeNotFound, ""},
		{"final job", "job.cancel", `{"id":` + itoa(done.ID) + `}`, 409, rpc.CodeBadState, ""},
		{"no template", "template.run", `{"name":"nope"}`, 404, rpc.CodeNoTemplate, ""},
		{"key reused", "job.submit", `{"job":{"key":"k1","steps":[{"sleep":{"duration":"20ms"}}]}}`, 409, rpc.CodeKeyConflict, ""},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			is := is.New(t)
			code, b := h.post(writeToken, c.method, c.body)
			is.Equal(code, c.status) // the status follows from the code
			e := apiError(t, b)
			is.Equal(e.Code, c.code) // the protocol's code
			if c.field != "" {
				is.Equal(e.Data.Field, c.field) // the field is named
			}
		})
	}
	t.Run("since outside the log", func(t *testing.T) {
		is := is.New(t)
		code, _, b := h.watch(tctx(t), writeToken, "since=100000", "")
		is.Equal(code, http.StatusRequestedRangeNotSatisfiable) // 416
		e := apiError(t, b)
		is.Equal(e.Code, rpc.CodeSinceOutside) // 1007
		is.True(e.Data.LastSeq != nil)         // with the log's bounds
	})
	t.Run("unknown query field", func(t *testing.T) {
		is := is.New(t)
		code, _, b := h.watch(tctx(t), writeToken, "sinse=1", "")
		is.Equal(code, 400)                          // strict as the socket
		is.Equal(apiError(t, b).Data.Field, "sinse") // names the field
	})
	t.Run("unknown job watched", func(t *testing.T) {
		is := is.New(t)
		code, _, b := h.watch(tctx(t), writeToken, "jobs=12345", "")
		is.Equal(code, 404)                             // 1001 is 404
		is.Equal(apiError(t, b).Code, rpc.CodeNotFound) // 1001
	})
	t.Run("wrong HTTP method", func(t *testing.T) {
		is := is.New(t)
		req, _ := http.NewRequest(http.MethodGet, h.srv.URL+"/api/v1/job.get", nil)
		req.Header.Set("Authorization", "Bearer "+writeToken)
		res, err := h.srv.Client().Do(req)
		is.NoErr(err)
		res.Body.Close()
		is.Equal(res.StatusCode, http.StatusMethodNotAllowed) // methods are POSTed
	})
	t.Run("nothing changed", func(t *testing.T) {
		is := is.New(t)
		var l rpc.ListResult
		h.call("job.list", "", &l)
		is.Equal(len(l.Jobs), 1) // refused submits stored nothing
	})
}

// TestReadTokenRedacts checks the read/write split: a read token reads jobs with
// env and header values hidden, and may change nothing.
func TestReadTokenRedacts(t *testing.T) {
	is := is.New(t)
	h := newHarness(t, harnessOpts{})
	j := h.submit(`{"env":{"API_KEY":"s3cret"},"steps":[{"exec":{"argv":["true"],"env":{"PW":"hunter2"}}},{"http":{"url":"http://127.0.0.1:1/","headers":{"Authorization":"Bearer xyz"}}}]}`)
	h.call("template.put", `{"name":"t","spec":{"env":{"K":"v1"},"steps":[{"shell":{"script":"true","env":{"S":"v2"}}}]},"params":{"p":{"default":"v3"}}}`, nil)

	for _, m := range []struct{ method, body string }{
		{"job.get", `{"id":` + itoa(j.ID) + `}`},
		{"job.wait", `{"id":` + itoa(j.ID) + `,"timeout":"100ms"}`},
		{"template.get", `{"name":"t"}`},
		{"template.list", `{}`},
	} {
		code, b := h.post(readToken, m.method, m.body)
		is.Equal(code, 200) // a read token reads
		for _, secret := range []string{"s3cret", "hunter2", "xyz", "v1", "v2", "v3"} {
			is.True(!strings.Contains(string(b), secret)) // no env or header value reaches a read token
		}
		is.True(strings.Contains(string(b), "[redacted]")) // names stay, values are redacted
	}
	var full rpc.Job
	h.call("job.get", `{"id":`+itoa(j.ID)+`}`, &full)
	is.Equal(full.Spec.Env["API_KEY"], "s3cret") // a write token sees them

	for _, m := range []string{"job.submit", "job.cancel", "job.retry", "job.remove", "job.prune", "queue.set", "template.put", "template.remove", "template.run", "daemon.shutdown"} {
		code, b := h.post(readToken, m, `{}`)
		is.Equal(code, http.StatusForbidden) // a read token changes nothing
		is.True(strings.Contains(apiError(t, b).Message, "forbidden"))
	}
	var after rpc.Template
	h.call("template.get", `{"name":"t"}`, &after)
	is.Equal(after.Name, "t") // still there
	select {
	case <-h.d.Stopped():
		t.Fatal("a read token stopped the daemon")
	default:
	}
	var raw map[string]any
	_, b := h.post(readToken, "job.get", `{"id":`+itoa(j.ID)+`}`)
	is.NoErr(json.Unmarshal(b, &raw))
}
