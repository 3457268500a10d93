package main

import (
	"encoding/json"
	"fmt"
	"strconv"
	"strings"
	"testing"

	"github.com/matryer/is"

	"spool/rpc"
)

// invalidCase is a request that breaks a rule of the protocol, and the field its
// -32602 must name.
type invalidCase struct {
	method, params, field string
}

// jobWith is a valid job spec with extra fields (JSON members, without braces).
func jobWith(extra string) string {
	if extra != "" {
		extra += ","
	}
	return `{` + extra + `"steps":[{"shell":{"script":"true"}}]}`
}

// stepWith is a submit of one job whose one step is given.
func stepWith(step string) string {
	return `{"job":{"steps":[` + step + `]}}`
}

func jsonArray(n int, elem func(i int) string) string {
	parts := make([]string, n)
	for i := range parts {
		parts[i] = elem(i)
	}
	return "[" + strings.Join(parts, ",") + "]"
}

func jsonObject(n int, member func(i int) string) string {
	parts := make([]string, n)
	for i := range parts {
		parts[i] = member(i)
	}
	return "{" + strings.Join(parts, ",") + "}"
}

func invalidCases() []invalidCase {
	long := func(n int) string { return strconv.Quote(strings.Repeat("x", n)) }
	sub := func(extra string) string { return `{"job":` + jobWith(extra) + `}` }
	sleep := `"sleep":{"duration":"1s"}`
	shell := `"shell":{"script":"true"}`
	labels65 := jsonObject(65, func(i int) string { return fmt.Sprintf(`"k%d":"v"`, i) })
	ids := func(n int) string { return jsonArray(n, func(i int) string { return strconv.Itoa(i + 1) }) }
	return []invalidCase{
		// job.submit: the job's fields.
		{"job.submit", sub(`"name":` + long(201)), "job.name"},
		{"job.submit", sub(`"key":` + long(201)), "job.key"},
		{"job.submit", sub(`"queue":"Upper"`), "job.queue"},
		{"job.submit", sub(`"queue":` + long(65)), "job.queue"},
		{"job.submit", sub(`"labels":` + labels65), "job.labels"},
		{"job.submit", sub(`"labels":{"k":` + long(257) + `}`), "job.labels.k"},
		{"job.submit", sub(`"labels":{"":"v"}`), "job.labels"},
		{"job.submit", sub(`"after":[0]`), "job.after[0]"},
		{"job.submit", sub(`"after":[-3]`), "job.after[0]"},
		{"job.submit", sub(`"after":[999999]`), "job.after[0]"},
		{"job.submit", sub(`"after_index":[0]`), "job.after_index[0]"},
		{"job.submit", sub(`"not_before":"tomorrow"`), "job.not_before"},
		{"job.submit", sub(`"timeout":"0s"`), "job.timeout"},
		{"job.submit", sub(`"timeout":"-1s"`), "job.timeout"},
		{"job.submit", sub(`"timeout":"1x"`), "job.timeout"},
		{"job.submit", sub(`"dir":"relative"`), "job.dir"},
		{"job.submit", sub(`"dir":"/tmp/a\u0000b"`), "job.dir"},
		{"job.submit", sub(`"env":{"A=B":"1"}`), `job.env["A=B"]`},
		{"job.submit", sub(`"env":{"SPOOL_X":"1"}`), "job.env.SPOOL_X"},
		{"job.submit", sub(`"env":{"":"1"}`), "job.env"},
		{"job.submit", sub(`"env":{"A\u0000":"1"}`), `job.env["A\u0000"]`},
		{"job.submit", sub(`"env":{"A":"x\u0000"}`), "job.env.A"},
		{"job.submit", sub(`"env":{"A":` + long(128<<10+1) + `}`), "job.env.A"},
		{"job.submit", sub(`"stpes":[]`), "job.stpes"},
		{"job.submit", `{"job":{"steps":[]}}`, "job.steps"},
		{"job.submit", `{"job":{"steps":` + jsonArray(1001, func(int) string { return `{` + sleep + `}` }) + `}}`, "job.steps"},
		{"job.submit", `{"jobs":[]}`, "jobs"},
		{"job.submit", `{}`, "job"},
		{"job.submit", `{"job":` + jobWith("") + `,"jobs":[` + jobWith("") + `]}`, "jobs"},
		{"job.submit", `{"jobs":` + jsonArray(10001, func(int) string { return `{"steps":[{` + sleep + `}]}` }) + `}`, "jobs"},
		{"job.submit", `{"jobs":[` + jobWith("") + `,` + jobWith(`"after_index":[1]`) + `]}`, "jobs[1].after_index[0]"},
		{"job.submit", `{"jobs":[` + jobWith(`"after_index":[-1]`) + `]}`, "jobs[0].after_index[0]"},
		{"job.submit", `{"jobs":[` + jobWith("") + `,` + jobWith(`"queue":"A"`) + `]}`, "jobs[1].queue"},
		// job.submit: the steps.
		{"job.submit", stepWith(`{"name":"123",` + sleep + `}`), "job.steps[0].name"},
		{"job.submit", stepWith(`{"name":"a b",` + sleep + `}`), "job.steps[0].name"},
		{"job.submit", stepWith(`{"name":` + long(65) + `,` + sleep + `}`), "job.steps[0].name"},
		{"job.submit", stepWith(`{"name":"a",` + sleep + `},{"name":"a",` + sleep + `}`), "job.steps[1].name"},
		{"job.submit", stepWith(`{` + sleep + `,` + shell + `}`), "job.steps[0]"},
		{"job.submit", stepWith(`{"name":"nothing"}`), "job.steps[0]"},
		{"job.submit", stepWith(`{"exec":{"argv":[]}}`), "job.steps[0].exec.argv"},
		{"job.submit", stepWith(`{"exec":{"argv":[""]}}`), "job.steps[0].exec.argv[0]"},
		{"job.submit", stepWith(`{"exec":{"argv":["echo","a\u0000b"]}}`), "job.steps[0].exec.argv[1]"},
		{"job.submit", stepWith(`{"exec":{"argv":[` + long(128<<10+1) + `]}}`), "job.steps[0].exec.argv[0]"},
		{"job.submit", stepWith(`{"exec":{"argv":["true"],"dir":"rel"}}`), "job.steps[0].exec.dir"},
		{"job.submit", stepWith(`{"exec":{"argv":["true"],"dir":"/\u0000"}}`), "job.steps[0].exec.dir"},
		{"job.submit", stepWith(`{"exec":{"argv":["true"],"env":{"SPOOL_JOB_ID":"1"}}}`), "job.steps[0].exec.env.SPOOL_JOB_ID"},
		{"job.submit", stepWith(`{"shell":{"script":""}}`), "job.steps[0].shell.script"},
		{"job.submit", stepWith(`{"shell":{"script":"echo \u0000"}}`), "job.steps[0].shell.script"},
		{"job.submit", stepWith(`{"shell":{"script":"true","dir":"/a\u0000"}}`), "job.steps[0].shell.dir"},
		{"job.submit", stepWith(`{"shell":{"script":"true","env":{"B=":"1"}}}`), `job.steps[0].shell.env["B="]`},
		{"job.submit", stepWith(`{"shell":{"script":"true","env":{"B":"\u0000"}}}`), "job.steps[0].shell.env.B"},
		{"job.submit", stepWith(`{"sleep":{"duration":"0s"}}`), "job.steps[0].sleep.duration"},
		{"job.submit", stepWith(`{"sleep":{}}`), "job.steps[0].sleep.duration"},
		{"job.submit", stepWith(`{` + shell + `,"timeout":"0s"}`), "job.steps[0].timeout"},
		{"job.submit", stepWith(`{` + shell + `,"timeout":"-5m"}`), "job.steps[0].timeout"},
		{"job.submit", stepWith(`{` + shell + `,"retry":{"attempts":0}}`), "job.steps[0].retry.attempts"},
		{"job.submit", stepWith(`{` + shell + `,"retry":{"attempts":1001}}`), "job.steps[0].retry.attempts"},
		{"job.submit", stepWith(`{` + shell + `,"retry":{"attempts":2,"backoff":"0s"}}`), "job.steps[0].retry.backoff"},
		{"job.submit", stepWith(`{` + shell + `,"retry":{"attempts":2,"backoff":"-1s"}}`), "job.steps[0].retry.backoff"},
		{"job.submit", stepWith(`{` + shell + `,"retry":{"attempts":2,"backoff":"1000h"}}`), "job.steps[0].retry.backoff"},
		{"job.submit", stepWith(`{` + shell + `,"retry":{"attempts":2,"max_backoff":"1000h"}}`), "job.steps[0].retry.max_backoff"},
		{"job.submit", stepWith(`{` + shell + `,"retry":{"attempts":2,"backoff":"10s","max_backoff":"1s"}}`), "job.steps[0].retry.max_backoff"},
		{"job.submit", stepWith(`{` + shell + `,"result":"xml"}`), "job.steps[0].result"},
		{"job.submit", stepWith(`{` + shell + `,"on_interrupt":"ignore"}`), "job.steps[0].on_interrupt"},
		{"job.submit", stepWith(`{"http":{"method":"get","url":"http://x/"}}`), "job.steps[0].http.method"},
		{"job.submit", stepWith(`{"http":{"method":` + strconv.Quote(strings.Repeat("A", 33)) + `,"url":"http://x/"}}`), "job.steps[0].http.method"},
		{"job.submit", stepWith(`{"http":{"url":"ftp://x/"}}`), "job.steps[0].http.url"},
		{"job.submit", stepWith(`{"http":{"url":""}}`), "job.steps[0].http.url"},
		{"job.submit", stepWith(`{"http":{"url":"http://"}}`), "job.steps[0].http.url"},
		{"job.submit", stepWith(`{"http":{"url":"http://x/\u0000"}}`), "job.steps[0].http.url"},
		{"job.submit", stepWith(`{"http":{"url":"http://x/","headers":{"Bad Name":"v"}}}`), `job.steps[0].http.headers["Bad Name"]`},
		{"job.submit", stepWith(`{"http":{"url":"http://x/","headers":{"X-A:":"v"}}}`), `job.steps[0].http.headers["X-A:"]`},
		{"job.submit", stepWith(`{"http":{"url":"http://x/","headers":{"":"v"}}}`), "job.steps[0].http.headers"},
		{"job.submit", stepWith(`{"http":{"url":"http://x/","headers":{"X-A":"a\r\nB: c"}}}`), "job.steps[0].http.headers.X-A"},
		{"job.submit", stepWith(`{"http":{"url":"http://x/","headers":{"X-A":"a\u0000"}}}`), "job.steps[0].http.headers.X-A"},
		{"job.submit", stepWith(`{"http":{"url":"http://x/","headers":{"X-A":"a\u0001"}}}`), "job.steps[0].http.headers.X-A"},
		{"job.submit", stepWith(`{"http":{"url":"http://x/","expect_status":[200,99]}}`), "job.steps[0].http.expect_status[1]"},
		{"job.submit", stepWith(`{"http":{"url":"http://x/","expect_status":[600]}}`), "job.steps[0].http.expect_status[0]"},
		{"job.submit", stepWith(`{"http":{"url":"http://x/","max_body":-1}}`), "job.steps[0].http.max_body"},
		{"job.submit", stepWith(`{"http":{"url":"http://x/","max_body":2147483648}}`), "job.steps[0].http.max_body"},
		{"job.submit", stepWith(`{"http":{"url":"http://x/","body":"\u0000"}}`), "job.steps[0].http.body"},

		// The other methods.
		{"job.get", `{}`, "id"},
		{"job.get", `{"id":-1}`, "id"},
		{"job.cancel", `{"id":0}`, "id"},
		{"job.cancel", `{"id":1,"reason":` + long(1025) + `}`, "reason"},
		{"job.wait", `{"id":0}`, "id"},
		{"job.wait", `{"id":1,"timeout":"0s"}`, "timeout"},
		{"job.retry", `{"id":0}`, "id"},
		{"job.list", `{"limit":-1}`, "limit"},
		{"job.list", `{"limit":1001}`, "limit"},
		{"job.list", `{"order":"up"}`, "order"},
		{"job.list", `{"state":["running","done"]}`, "state[1]"},
		{"job.list", `{"queue":"Upper"}`, "queue"},
		{"job.list", `{"labels":` + labels65 + `}`, "labels"},
		{"job.list", `{"cursor":"nope"}`, "cursor"},
		{"job.logs", `{"id":0}`, "id"},
		{"job.logs", `{"id":1,"offset":-1}`, "offset"},
		{"job.logs", `{"id":1,"limit":-1}`, "limit"},
		{"job.logs", `{"id":1,"limit":2097152}`, "limit"},
		{"job.logs", `{"id":1,"encoding":"hex"}`, "encoding"},
		{"job.logs", `{"id":1,"step":-1}`, "step"},
		{"job.logs", `{"id":1,"step":7}`, "step"},
		{"job.logs", `{"id":1,"step":"nope"}`, "step"},
		{"job.remove", `{"ids":[]}`, "ids"},
		{"job.remove", `{}`, "ids"},
		{"job.remove", `{"ids":[1,0]}`, "ids[1]"},
		{"job.remove", `{"ids":` + ids(10001) + `}`, "ids"},
		{"job.prune", `{}`, "states"},
		{"job.prune", `{"states":[]}`, "states"},
		{"job.prune", `{"states":["running"]}`, "states[0]"},
		{"job.prune", `{"states":["nope"]}`, "states[0]"},
		{"job.prune", `{"older_than":"0s"}`, "older_than"},
		{"job.prune", `{"older_than":"-1h"}`, "older_than"},
		{"job.watch", `{"heartbeat":"50ms"}`, "heartbeat"},
		{"job.watch", `{"heartbeat":"0s"}`, "heartbeat"},
		{"job.watch", `{"jobs":[0]}`, "jobs[0]"},
		{"job.watch", `{"jobs":` + ids(10001) + `}`, "jobs"},
		{"job.watch", `{"token":` + long(257) + `}`, "token"},
		{"queue.set", `{"name":"Upper"}`, "name"},
		{"queue.set", `{"name":""}`, "name"},
		{"queue.set", `{"name":"q","parallel":-1}`, "parallel"},
		{"template.put", `{"name":"a b","spec":` + jobWith("") + `}`, "name"},
		{"template.put", `{"name":"t2"}`, "spec"},
		{"template.put", `{"name":"t2","spec":` + jobWith("") + `,"params":{"a-b":{}}}`, "params.a-b"},
		{"template.put", `{"name":"t2","spec":` + jobWith("") + `,"params":{"dir":{},"DIR":{}}}`, "params.dir"},
		{"template.put", `{"name":"t2","spec":` + jobWith("") + `,"params":{"x":{"required":true,"default":"1"}}}`, "params.x"},
		{"template.put", `{"name":"t2","spec":` + jobWith("") + `,"params":{"x":{"default":"a\u0000"}}}`, "params.x.default"},
		{"template.put", `{"name":"t2","spec":` + jobWith("") + `,"params":` + jsonObject(101, func(i int) string { return fmt.Sprintf(`"p%d":{}`, i) }) + `}`, "params"},
		{"template.put", `{"name":"t2","spec":{"steps":[{"shell":{"script":"echo {{x}}"}}]},"params":{"x":{}}}`, "spec.steps[0].shell.script"},
		{"template.put", `{"name":"t2","spec":` + jobWith(`"dir":"{{d}}"`) + `,"params":{"d":{"default":"rel"}}}`, "spec.dir"},
		{"template.put", `{"name":"t2","spec":` + jobWith(`"timeout":"{{t}}"`) + `,"params":{"t":{"default":"0s"}}}`, "spec.timeout"},
		{"template.put", `{"name":"t2","spec":` + jobWith(`"stpes":1`) + `}`, "spec.stpes"},
		{"template.run", `{"name":"t","params":{"levle":"1"}}`, "params.levle"},
		{"template.run", `{"name":"t","params":{}}`, "params.dir"},
		{"template.run", `{"name":"t","params":{"dir":"/a\u0000"}}`, "params.dir"},
		{"template.run", `{"name":"t","params":{"dir":"relative"}}`, "job.dir"},
		{"template.run", `{"name":"t","params":{"dir":"/"},"queue":"Upper"}`, "queue"},
		{"template.run", `{"name":"t","params":{"dir":"/"},"after":[0]}`, "after[0]"},
		{"template.run", `{"name":"t","params":{"dir":"/"},"after":[999999]}`, "job.after[0]"},
		{"template.run", `{"name":"t","params":{"dir":"/"},"key":` + long(201) + `}`, "key"},
		{"template.run", `{"name":"t","params":{"dir":"/"},"labels":` + labels65 + `}`, "labels"},
	}
}

// storedState is what a refused request must leave as it was.
type storedState struct {
	lastSeq   int64
	counts    map[rpc.State]int
	templates []string
	queues    []string
}

func readStoredState(t *testing.T, r *rawConn) storedState {
	t.Helper()
	var st storedState
	m := r.call(1, "daemon.info", `{}`)
	var info rpc.Info
	if m.Error != nil || json.Unmarshal(m.Result, &info) != nil {
		t.Fatalf("daemon.info: %+v", m.Error)
	}
	st.lastSeq, st.counts = info.LastSeq, info.Counts
	var tl rpc.TemplateListResult
	if m = r.call(2, "template.list", `{}`); m.Error != nil || json.Unmarshal(m.Result, &tl) != nil {
		t.Fatalf("template.list: %+v", m.Error)
	}
	for _, tp := range tl.Templates {
		st.templates = append(st.templates, tp.Name+" "+string(tp.Spec))
	}
	var ql rpc.QueueListResult
	if m = r.call(3, "queue.list", `{}`); m.Error != nil || json.Unmarshal(m.Result, &ql) != nil {
		t.Fatalf("queue.list: %+v", m.Error)
	}
	for _, q := range ql.Queues {
		st.queues = append(st.queues, fmt.Sprintf("%s %v %v", q.Name, q.Parallel, q.Paused))
	}
	return st
}

// TestE2EInvalidParams sends, over the socket of a real daemon, requests that
// break each rule of the protocol's ranges: each is answered -32602 naming the
// field, and leaves the store as it was (no event, no job, template or queue).
func TestE2EInvalidParams(t *testing.T) {
	p := newDaemon(t, "--max-message", "4MiB")
	r := p.raw()
	// A job and a template for the cases that need them.
	if m := r.call(1, "job.submit", `{"job":{"steps":[{"shell":{"script":"true"}}]}}`); m.Error != nil {
		t.Fatalf("submit: %+v", m.Error)
	}
	tpl := `{"name":"t","spec":` + jobWith(`"dir":"{{dir}}"`) + `,"params":{"dir":{"required":true}}}`
	if m := r.call(2, "template.put", tpl); m.Error != nil {
		t.Fatalf("template.put: %+v", m.Error)
	}
	m := r.call(3, "job.wait", `{"id":1}`)
	if m.Error != nil {
		t.Fatalf("wait: %+v", m.Error)
	}
	for i, c := range invalidCases() {
		name := c.method + " " + c.field
		t.Run(name, func(t *testing.T) {
			is := is.New(t)
			before := readStoredState(t, r)
			m := r.call(100+i, c.method, c.params)
			if m.Error == nil {
				short := c.params
				if len(short) > 300 {
					short = short[:300] + "..."
				}
				t.Fatalf("%s %s: accepted: %s", c.method, short, m.Result)
			}
			is.Equal(m.Error.Code, rpc.CodeInvalidParams) // -32602
			is.True(m.Error.Data != nil)                  // with data
			is.Equal(m.Error.Data.Field, c.field)         // naming the field
			is.True(m.Error.Data.Reason != "")            // and saying what is allowed
			is.Equal(readStoredState(t, r), before)       // nothing was stored
		})
	}
}
