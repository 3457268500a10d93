package rpc

import (
	"bytes"
	"encoding/json"
	"math"
	"reflect"
	"testing"
	"time"

	"github.com/matryer/is"
)

// The plain types have the fields and tags of Job, Record and Event but not their
// methods: encoding/json encodes them by reflection, as it encoded the real types
// before they encoded themselves.
type (
	plainJob    Job
	plainEvent  Event
	plainRecord struct {
		plainJob
		Run RunState `json:"run"`
	}
)

func ptr[T any](v T) *T { return &v }

// oddStrings are strings that encoding/json escapes in every way it can.
var oddStrings = []string{
	"",
	"plain",
	`<script>alert("x&y")</script>`,
	"quote \" backslash \\ slash /",
	"controls \x00\x01\x07\b\f\n\r\t\x1f\x7f",
	"separators \u2028 and \u2029 end",
	"invalid \xff\xfe utf-8 \xe2\x80 cut \xed\xa0\x80 surrogate",
	"unicode é ü 漢字 😀 µs",
	"\xe2\x80\xa8",
	"tail \xe2",
}

// encodeTimes are times with and without nanoseconds, in UTC and other zones.
func encodeTimes() []time.Time {
	east := time.FixedZone("", 5*3600+30*60)
	west := time.FixedZone("X", -7*3600)
	return []time.Time{
		{},
		time.Date(2026, 11, 30, 16, 9, 17, 0, time.UTC),
		time.Date(2026, 11, 30, 16, 9, 17, 123456789, time.UTC),
		time.Date(2026, 11, 30, 16, 9, 17, 120000000, east),
		time.Date(1999, 1, 2, 3, 4, 5, 1, west),
		time.Date(2026, 1, 1, 0, 0, 0, 500, time.Local),
		time.Now(), // with a monotonic reading
	}
}

// encodeJobs are jobs with every field set and unset, nil and empty.
func encodeJobs() []Job {
	ts := encodeTimes()
	full := Job{
		ID:          -42,
		Name:        oddStrings[2],
		Key:         ptr(oddStrings[3]),
		Queue:       "default",
		Priority:    -7,
		Labels:      map[string]string{"b": oddStrings[4], "a": "1", "<&>": oddStrings[5], "\xff": "x", "é": "", "A": "z"},
		After:       []int64{1, -2, math.MaxInt64, math.MinInt64},
		NotBefore:   &ts[3],
		State:       StateRunning,
		Waiting:     ptr(oddStrings[6]),
		SubmittedAt: ts[2],
		StartedAt:   &ts[4],
		FinishedAt:  &ts[5],
		CurrentStep: 1,
		Steps: []StepStatus{
			{Name: "build", Kind: KindExec, State: StateSucceeded, Attempt: 2, RetryAt: &ts[1], StartedAt: &ts[2], FinishedAt: &ts[6], ExitCode: ptr(-1), Signal: ptr("SIGKILL"), Error: oddStrings[7], OutputTail: ptr(oddStrings[4]), Result: json.RawMessage(` { "a" : [1, 2.5e3, "x <y> & \u2028 \" \\ ` + "\u2028 \u2029" + `"], "b":null , "c" : true } `)},
			{Name: "", State: StatePending, OutputTail: ptr(""), Result: json.RawMessage(`"text"`)},
			{Name: "s", Result: json.RawMessage("\n\t42\r ")},
		},
		Progress:        &Progress{Done: ptr(int64(3)), Total: ptr(int64(-10)), Percent: ptr(33.333333333333336), Message: oddStrings[8], At: ts[1]},
		Result:          json.RawMessage(`[ "<&>" ]`),
		ResultTruncated: true,
		Error:           oddStrings[9],
		RetryOf:         ptr(int64(9)),
		Template:        &TemplateRef{Name: "t<1>", Params: map[string]string{"z": "1", "y": "\u2029"}},
		Spec:            &Spec{Name: "x<y>", Labels: map[string]string{"k": "v"}, Timeout: Duration(90 * time.Second), Steps: []Step{{Name: "a", Shell: &ShellStep{Script: "echo <&>"}, Retry: &Retry{Attempts: 3, Backoff: Duration(time.Second)}}}},
	}
	empty := Job{
		Labels:   map[string]string{},
		After:    []int64{},
		Steps:    []StepStatus{},
		Progress: &Progress{},
		Result:   json.RawMessage{},
		Template: &TemplateRef{Params: map[string]string{}},
	}
	jobs := []Job{{}, full, empty}
	for _, s := range oddStrings {
		jobs = append(jobs, Job{Name: s, Error: s, Key: ptr(s), Labels: map[string]string{s: s}})
	}
	for _, t := range ts {
		jobs = append(jobs, Job{SubmittedAt: t, StartedAt: &t, Steps: []StepStatus{{FinishedAt: &t}}, Progress: &Progress{At: t}})
	}
	for _, p := range []float64{0, math.Copysign(0, -1), 1, -1, 0.1, 1e-6, 9.99e-7, 1e-7, 123e-9, 1e20, 1e21, 1.5e300, -2.5e-10, 100} {
		jobs = append(jobs, Job{Progress: &Progress{Percent: ptr(p)}})
	}
	for _, raw := range []string{"null", "0", "-1.5e-3", `""`, `{}`, `[]`, ` [ { } , [ ] ] `, `"\u003c<"`, `"\\"`, `"a\"b"`, "\"\xff\"", `{"a":"\n"}`} {
		jobs = append(jobs, Job{Result: json.RawMessage(raw), Steps: []StepStatus{{Result: json.RawMessage(raw)}}})
	}
	many := map[string]string{}
	for i := range 40 {
		many[string(rune('a'+i%26))+string(rune('A'+i))] = "v"
	}
	jobs = append(jobs, Job{Labels: many})
	return jobs
}

// encodeEvents are events with every field set and unset.
func encodeEvents() []Event {
	ts := encodeTimes()
	full := Event{
		Seq: 7, Time: ts[2], Job: -3, Type: EventStepFinished, Step: ptr(0), StepName: oddStrings[2],
		State: StateFailed, Attempt: -2, ExitCode: ptr(0), Signal: ptr(""), Error: oddStrings[6],
		RetryAt: &ts[3], Result: json.RawMessage(` {"x" : "<>"} `),
		Progress: &Progress{Done: ptr(int64(1)), Percent: ptr(50.0), At: ts[4]},
		Elapsed:  Duration(1500 * time.Microsecond), LastLine: ptr(oddStrings[5]), Offset: ptr(int64(-1)), Data: ptr(oddStrings[4]),
		Schedule: oddStrings[3], Slot: &ts[5],
	}
	frozen := full
	frozen.Freeze()
	events := []Event{{}, full, frozen,
		{Type: EventHeartbeat, Time: ts[1]},
		{Seq: 1, Job: 1, Type: EventSubmitted, Time: ts[6]},
		{Type: EventDone, Result: json.RawMessage{}, Elapsed: Duration(-time.Hour), Signal: ptr("x")},
		{Type: EventProgress, Progress: &Progress{}},
	}
	for _, s := range oddStrings {
		events = append(events, Event{Type: s, StepName: s, Error: s, Data: ptr(s), State: State(s)})
	}
	for _, t := range ts {
		events = append(events, Event{Time: t, RetryAt: &t})
		id := int64(len(events))
		events = append(events, Event{Time: t, Type: EventOnFinish, Job: 1, FollowUp: &id})
	}
	return events
}

// encodeRecords are records around the jobs.
func encodeRecords() []Record {
	ts := encodeTimes()
	recs := []Record{
		{},
		{Run: RunState{Procs: []Proc{}}},
		{Job: encodeJobs()[1], Run: RunState{
			Procs:        []Proc{{Step: 1, PID: 100, PGID: 100, Start: math.MaxUint64}, {Step: -1, PID: -2}},
			CancelReason: ptr(oddStrings[2]), Deadline: &ts[3], Interrupted: true,
		}},
		{Run: RunState{Node: oddStrings[1], Epoch: math.MaxInt64}},
		{Run: RunState{Epoch: -1}},
		{Run: RunState{OnFinish: &OnFinish{Template: oddStrings[1]}, HookDepth: 3}},
		{Run: RunState{OnFinish: &OnFinish{Template: "t", Params: map[string]string{oddStrings[2]: oddStrings[1], "a": ""},
			States: []State{StateFailed, State(oddStrings[0])}}}},
		{Run: RunState{OnFinish: &OnFinish{Template: "t", Params: map[string]string{}, States: []State{}}, HookDepth: -1}},
	}
	for _, j := range encodeJobs() {
		recs = append(recs, Record{Job: j, Run: RunState{Deadline: &j.SubmittedAt}})
	}
	return recs
}

func TestEncodeJob(t *testing.T) {
	is := is.New(t)
	for i, j := range encodeJobs() {
		want, err := json.Marshal(plainJob(j))
		is.NoErr(err) // the plain job encodes
		got, err := j.AppendJSON([]byte("prefix"))
		is.NoErr(err)                                // the job encodes
		is.Equal(string(got), "prefix"+string(want)) // AppendJSON writes what encoding/json writes
		viaJSON, err := json.Marshal(j)
		is.NoErr(err)                           // json.Marshal takes MarshalJSON
		is.Equal(string(viaJSON), string(want)) // and gets the same bytes
		viaPtr, err := json.Marshal(&j)
		is.NoErr(err)                          // as does a pointer
		is.Equal(string(viaPtr), string(want)) // to the job
		if t.Failed() {
			t.Fatalf("job %d", i)
		}
	}
}

func TestEncodeRecord(t *testing.T) {
	is := is.New(t)
	for i, r := range encodeRecords() {
		want, err := json.Marshal(plainRecord{plainJob(r.Job), r.Run})
		is.NoErr(err) // the plain record encodes
		got, err := r.AppendJSON(nil)
		is.NoErr(err)                       // the record encodes
		is.Equal(string(got), string(want)) // AppendJSON writes the job's members flattened, then run
		viaJSON, err := json.Marshal(r)
		is.NoErr(err)                           // json.Marshal takes Record's MarshalJSON, not Job's
		is.Equal(string(viaJSON), string(want)) // and gets the same bytes
		viaPtr, err := json.Marshal(&r)
		is.NoErr(err)                          // as does a pointer
		is.Equal(string(viaPtr), string(want)) // to the record
		if t.Failed() {
			t.Fatalf("record %d", i)
		}
	}
}

func TestEncodeEvent(t *testing.T) {
	is := is.New(t)
	for i, e := range encodeEvents() {
		want, err := json.Marshal(plainEvent(e))
		is.NoErr(err) // the plain event encodes
		got, err := e.AppendJSON(nil)
		is.NoErr(err)                       // the event encodes
		is.Equal(string(got), string(want)) // AppendJSON writes what encoding/json writes
		viaJSON, err := json.Marshal(e)
		is.NoErr(err)                           // json.Marshal takes MarshalJSON
		is.Equal(string(viaJSON), string(want)) // and gets the same bytes
		own, err := e.JSON()
		is.NoErr(err)                       // JSON encodes
		is.Equal(string(own), string(want)) // the same bytes
		e.Freeze()
		frozen, err := e.JSON()
		is.NoErr(err)                          // a frozen event has its encoding
		is.Equal(string(frozen), string(want)) // which is the same
		if t.Failed() {
			t.Fatalf("event %d", i)
		}
	}
}

// TestEncodeContainers checks the types that hold jobs and records: each encodes
// as it did before Job and Record encoded themselves.
func TestEncodeContainers(t *testing.T) {
	is := is.New(t)
	jobs := encodeJobs()
	plain := make([]plainJob, len(jobs))
	for i, j := range jobs {
		plain[i] = plainJob(j)
	}

	got, err := json.Marshal(ListResult{Jobs: jobs, NextCursor: ptr("c")})
	is.NoErr(err) // a list encodes
	want, err := json.Marshal(struct {
		Jobs       []plainJob `json:"jobs"`
		NextCursor *string    `json:"next_cursor"`
	}{plain, ptr("c")})
	is.NoErr(err)                       // the plain list encodes
	is.Equal(string(got), string(want)) // a list of jobs encodes as before

	got, err = marshalResult(ListResult{Jobs: jobs, NextCursor: ptr("c")})
	is.NoErr(err)                       // a list encodes itself
	is.Equal(string(got), string(want)) // as encoding/json encoded it

	for _, page := range [][]Job{nil, {}} {
		got, err = marshalResult(ListResult{Jobs: page})
		is.NoErr(err) // an empty list encodes
		want, err = json.Marshal(struct {
			Jobs       []plainJob `json:"jobs"`
			NextCursor *string    `json:"next_cursor"`
		}{plain[:0:len(page)], nil})
		if page == nil {
			want = []byte(`{"jobs":null,"next_cursor":null}`)
		}
		is.NoErr(err)                       // the plain empty list encodes
		is.Equal(string(got), string(want)) // and so does the list
		got, err = marshalResult(SubmitResult{Jobs: page})
		is.NoErr(err)                        // an empty submit result encodes
		is.Equal(string(got), `{"jobs":[]}`) // as an empty list, nil or not
	}

	_, err = marshalResult(ListResult{Jobs: []Job{{SubmittedAt: time.Date(10000, 1, 1, 0, 0, 0, 0, time.UTC)}}})
	is.True(err != nil) // a list with a job that cannot be encoded is an error
	_, err = marshalResult(SubmitResult{Jobs: []Job{{SubmittedAt: time.Date(-1, 1, 1, 0, 0, 0, 0, time.UTC)}}})
	is.True(err != nil) // as is such a submit result

	got, err = marshalResult(SubmitResult{Jobs: jobs})
	is.NoErr(err) // a submit result of several jobs encodes
	want, err = json.Marshal(struct {
		Jobs []plainJob `json:"jobs"`
	}{plain})
	is.NoErr(err)                       // the plain jobs encode
	is.Equal(string(got), string(want)) // as {"jobs": [...]}

	got, err = marshalResult(SubmitResult{Job: &jobs[1]})
	is.NoErr(err) // a submit result of one job encodes
	want, err = json.Marshal(plain[1])
	is.NoErr(err)                       // the plain job encodes
	is.Equal(string(got), string(want)) // as the job

	got, err = marshalResult(&jobs[1])
	is.NoErr(err)                       // a job result encodes
	is.Equal(string(got), string(want)) // as the job, without compaction by encoding/json

	var none *Job
	got, err = marshalResult(none)
	is.NoErr(err)                 // a nil job result encodes
	is.Equal(string(got), "null") // as null

	var back SubmitResult
	is.NoErr(json.Unmarshal(want, &back)) // a job's encoding decodes as a submit result
	is.Equal(back.Job.Name, jobs[1].Name) // into the one job

	recs := encodeRecords()
	nj := NewJob{Record: recs[2], Event: encodeEvents()[1], Field: "job"}
	got, err = json.Marshal(nj)
	is.NoErr(err) // a new job encodes
	wantRec, _ := json.Marshal(plainRecord{plainJob(recs[2].Job), recs[2].Run})
	wantEv, _ := json.Marshal(plainEvent(nj.Event))
	is.Equal(string(got), `{"Record":`+string(wantRec)+`,"Event":`+string(wantEv)+`,"Field":"job"}`) // its record and event encode as before
}

// TestEncodeErrors checks that what encoding/json cannot encode is an error, and
// that AppendJSON then leaves the buffer as it was.
func TestEncodeErrors(t *testing.T) {
	is := is.New(t)
	bad := time.Date(10000, 1, 1, 0, 0, 0, 0, time.UTC)
	jobs := []Job{
		{SubmittedAt: bad},
		{Progress: &Progress{Percent: ptr(math.NaN())}},
		{Progress: &Progress{Percent: ptr(math.Inf(-1))}},
		{Result: json.RawMessage(`{"a":}`)},
		{Steps: []StepStatus{{Result: json.RawMessage{}}}},
		{Steps: []StepStatus{{Result: json.RawMessage(`1 2`)}}},
		{Steps: []StepStatus{{Result: json.RawMessage(`"a`)}}},
		{Steps: []StepStatus{{Result: json.RawMessage(`[1,]`)}}},
		{Steps: []StepStatus{{Result: json.RawMessage(`01`)}}},
		{Steps: []StepStatus{{Result: json.RawMessage("\"\x01\"")}}},
		{NotBefore: &bad},
	}
	for i, j := range jobs {
		_, werr := json.Marshal(plainJob(j))
		is.True(werr != nil) // encoding/json refuses the job
		got, err := j.AppendJSON([]byte("keep"))
		is.True(err != nil)           // and so does AppendJSON
		is.Equal(string(got), "keep") // leaving the buffer as it was
		_, err = json.Marshal(j)
		is.True(err != nil) // json.Marshal reports it
		if t.Failed() {
			t.Fatalf("job %d", i)
		}
	}
	e := Event{Time: bad}
	_, err := e.AppendJSON(nil)
	is.True(err != nil) // an event with a time out of range does not encode
	e.Freeze()
	_, err = e.JSON()
	is.True(err != nil) // nor freezes
}

// fuzzString picks one of the odd strings or the fuzzed one.
func fuzzString(s string, n uint64) string {
	if k := n % uint64(len(oddStrings)+1); k < uint64(len(oddStrings)) {
		return oddStrings[k]
	}
	return s
}

// fuzzTime makes a time from fuzzed seconds, nanoseconds and zone offset.
func fuzzTime(sec, nsec int64, off int32) time.Time {
	t := time.Unix(sec%(400*365*24*3600), nsec%1e9)
	switch off % 3 {
	case 0:
		return t.UTC()
	case 1:
		return t.In(time.FixedZone("", int(off%(30*3600))))
	}
	return t
}

// fuzzJob builds a job from fuzz input, with bits of mask choosing which fields
// are set.
func fuzzJob(s1, s2 string, raw []byte, n int64, nsec int64, off int32, mask uint64, pct float64) Job {
	bit := func(i uint) bool { return mask&(1<<i) != 0 }
	t := fuzzTime(n, nsec, off)
	j := Job{
		ID: n, Name: s1, Queue: s2, Priority: int(nsec), State: State(s2), SubmittedAt: t,
		CurrentStep: int(off), ResultTruncated: bit(0), Error: s2 + s1,
	}
	if bit(1) {
		j.Key = ptr(s1)
	}
	if bit(2) {
		j.Labels = map[string]string{s1: s2, s2: s1, "k": fuzzString(s1, mask>>40)}
	} else if bit(3) {
		j.Labels = map[string]string{}
	}
	if bit(4) {
		j.After = []int64{n, nsec, int64(off)}
	} else if bit(5) {
		j.After = []int64{}
	}
	if bit(6) {
		j.NotBefore = &t
	}
	if bit(7) {
		j.Waiting = ptr(s2)
	}
	if bit(8) {
		j.StartedAt = &t
	}
	if bit(9) {
		j.FinishedAt = ptr(t.Add(time.Duration(nsec)))
	}
	if bit(10) {
		st := StepStatus{Name: s1, Kind: s2, State: State(s1), Attempt: int(n), Error: s1}
		if bit(11) {
			st.RetryAt, st.StartedAt, st.FinishedAt = &t, &t, &t
		}
		if bit(12) {
			st.ExitCode, st.Signal = ptr(int(off)), ptr(s2)
		}
		if bit(13) {
			st.OutputTail = ptr(s1)
		}
		if bit(14) {
			st.Result = raw
		}
		j.Steps = []StepStatus{st, {Name: fuzzString(s2, mask>>32)}}
	} else if bit(15) {
		j.Steps = []StepStatus{}
	}
	if bit(16) {
		j.Progress = &Progress{Message: s1, At: t}
		if bit(17) {
			j.Progress.Done, j.Progress.Total, j.Progress.Percent = ptr(n), ptr(nsec), ptr(pct)
		}
	}
	if bit(18) {
		j.Result = raw
	}
	if bit(19) {
		j.RetryOf = ptr(n)
	}
	if bit(20) {
		j.Template = &TemplateRef{Name: s2}
		if bit(21) {
			j.Template.Params = map[string]string{s2: s1}
		}
	}
	if bit(22) {
		j.Spec = &Spec{Name: s1, Labels: map[string]string{s1: s2}}
	}
	return j
}

func FuzzEncodeJob(f *testing.F) {
	f.Add("job", "default", []byte(`{"a": [1, 2]}`), int64(1), int64(5), int32(3600), uint64(math.MaxUint64), 12.5)
	f.Add(oddStrings[2], oddStrings[6], []byte(" \"<\u2028>\" "), int64(-1), int64(-999999999), int32(-4), uint64(0x5555555555), 1e-9)
	f.Add("", "", []byte{}, int64(0), int64(0), int32(0), uint64(0), 0.0)
	f.Add("\u2029", "\x00", []byte("nul"), int64(math.MaxInt64), int64(math.MinInt64), int32(math.MaxInt32), uint64(0xAAAAAAAAAA), math.Inf(1))
	f.Fuzz(func(t *testing.T, s1, s2 string, raw []byte, n, nsec int64, off int32, mask uint64, pct float64) {
		j := fuzzJob(s1, s2, raw, n, nsec, off, mask, pct)
		r := Record{Job: j}
		if mask&(1<<23) != 0 {
			r.Run = RunState{Procs: []Proc{{Step: int(off), PID: int(n), PGID: int(nsec), Start: mask}}, CancelReason: ptr(s2), Deadline: &j.SubmittedAt, Interrupted: true}
		}
		want, werr := json.Marshal(plainRecord{plainJob(j), r.Run})
		got, err := r.AppendJSON(nil)
		if (werr != nil) != (err != nil) {
			t.Fatalf("encoding/json error %v, AppendJSON error %v", werr, err)
		}
		if err == nil && !bytes.Equal(got, want) {
			t.Fatalf("record:\n got %s\nwant %s", got, want)
		}
		want, werr = json.Marshal(plainJob(j))
		got, err = j.AppendJSON(nil)
		if (werr != nil) != (err != nil) {
			t.Fatalf("encoding/json error %v, AppendJSON error %v", werr, err)
		}
		if err == nil && !bytes.Equal(got, want) {
			t.Fatalf("job:\n got %s\nwant %s", got, want)
		}
	})
}

func FuzzEncodeEvent(f *testing.F) {
	f.Add("step_finished", "build", []byte(`"ok"`), int64(3), int64(5), int32(3600), uint64(math.MaxUint64), 12.5)
	f.Add(oddStrings[2], oddStrings[6], []byte(" [ \"&\" ] "), int64(-1), int64(-999999999), int32(-4), uint64(0x5555555555), 1e21)
	f.Add("", "", []byte{}, int64(0), int64(0), int32(0), uint64(0), 0.0)
	f.Fuzz(func(t *testing.T, s1, s2 string, raw []byte, n, nsec int64, off int32, mask uint64, pct float64) {
		bit := func(i uint) bool { return mask&(1<<i) != 0 }
		tm := fuzzTime(n, nsec, off)
		e := Event{Time: tm, Type: s1, StepName: s2, State: State(fuzzString(s1, mask>>40)), Error: s2 + s1}
		if bit(0) {
			e.Seq, e.Job, e.Attempt = n, nsec, int(off)
		}
		if bit(1) {
			e.Step = ptr(int(off))
		}
		if bit(2) {
			e.ExitCode, e.Signal = ptr(int(n)), ptr(s1)
		}
		if bit(3) {
			e.RetryAt = ptr(tm.Add(time.Duration(nsec)))
		}
		if bit(4) {
			e.Result = raw
		}
		if bit(5) {
			e.Progress = &Progress{Message: s2, At: tm}
			if bit(6) {
				e.Progress.Done, e.Progress.Percent = ptr(n), ptr(pct)
			}
		}
		if bit(7) {
			e.Elapsed = Duration(nsec)
		}
		if bit(8) {
			e.LastLine, e.Offset, e.Data = ptr(s2), ptr(n), ptr(fuzzString(s1, mask>>32))
		}
		want, werr := json.Marshal(plainEvent(e))
		got, err := e.AppendJSON(nil)
		if (werr != nil) != (err != nil) {
			t.Fatalf("encoding/json error %v, AppendJSON error %v", werr, err)
		}
		if err == nil && !bytes.Equal(got, want) {
			t.Fatalf("event:\n got %s\nwant %s", got, want)
		}
	})
}

// marshalResult encodes a method's result as the server does: through its own
// MarshalJSON when it has one, else with encoding/json.
func marshalResult(res any) ([]byte, error) {
	if m, ok := res.(json.Marshaler); ok {
		if v := reflect.ValueOf(res); v.Kind() != reflect.Pointer || !v.IsNil() {
			return m.MarshalJSON()
		}
	}
	return json.Marshal(res)
}
