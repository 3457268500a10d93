package codec

import (
	"encoding/json"
	"errors"
	"reflect"
	"spool/rpc"
	"strings"
	"testing"
	"time"

	"github.com/matryer/is"
)

// unknownMembers are members no type of the protocol has, one of each kind of
// JSON value, as a newer server might add them.
const unknownMembers = `"zz_obj": {"a": [1, {"b": "c\"\\\u00e9"}], "n": null, "": {}},
	"zz_arr": [[], {}, "x", -1.5e3, true, false, null, [[[0]]]],
	"zz_str": "esc \" \\ \/ \b \f \n \r \t \u2028 \ud83d\ude00 é",
	"zz_num": -0.5E+10, "zz_int": 12345678901234567890123, "zz_zero": 0,
	"zz_true": true, "zz_false": false, "zz_null": null, "zz_empty": ""`

// withUnknown puts the unknown members first in the JSON object obj.
func withUnknown(obj string) string {
	return "{" + unknownMembers + ", " + strings.TrimPrefix(strings.TrimSpace(obj), "{")
}

// sampleEvent is a step_finished event as the daemon writes it.
func sampleEvent(t testing.TB) string {
	t.Helper()
	code := 0
	step := 1
	ev := rpc.Event{
		Seq: 123456, Time: time.Date(2026, 3, 4, 5, 6, 7, 890123456, time.UTC), Job: 42,
		Type: rpc.EventStepFinished, Step: &step, StepName: "build", State: rpc.StateSucceeded,
		ExitCode: &code, Elapsed: rpc.Duration(1500 * time.Millisecond),
		Result: json.RawMessage(`{"ok":true,"files":["a.out","b.out"],"n":3}`),
	}
	b, err := json.Marshal(&ev)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

// sampleJob is a job with every field set, as job.get answers.
func sampleJob(t testing.TB) string {
	t.Helper()
	at := time.Date(2026, 1, 2, 3, 4, 5, 6, time.UTC)
	key, waiting, signal, tail := "k", "after", "SIGTERM", "last line\n"
	code, done, total, pct, retryOf := 2, int64(3), int64(10), 30.5, int64(7)
	j := rpc.Job{
		ID: 9, Name: "nightly", Key: &key, Queue: "default", Priority: -2,
		Labels: map[string]string{"team": "a", "é": "\u2028"}, After: []int64{1, 2},
		NotBefore: &at, State: rpc.StateFailed, Waiting: &waiting, SubmittedAt: at,
		StartedAt: &at, FinishedAt: &at, CurrentStep: 1,
		Steps: []rpc.StepStatus{
			{Name: "fetch", Kind: rpc.KindHTTP, State: rpc.StateSucceeded, Attempt: 1, StartedAt: &at, FinishedAt: &at, Result: json.RawMessage(`"text"`)},
			{Name: "build", Kind: rpc.KindExec, State: rpc.StateFailed, Attempt: 3, RetryAt: &at, ExitCode: &code, Signal: &signal, Error: "exit status 2", OutputTail: &tail},
		},
		Progress:        &rpc.Progress{Done: &done, Total: &total, Percent: &pct, Message: "m", At: at},
		Result:          json.RawMessage(`[1,2,{"x":null}]`),
		ResultTruncated: true, Error: "step build failed", RetryOf: &retryOf,
		Template: &rpc.TemplateRef{Name: "t", Params: map[string]string{"dir": "/src"}},
		Spec: &rpc.Spec{Name: "nightly", Queue: "default", Timeout: rpc.Duration(time.Hour), Steps: []rpc.Step{
			{Name: "fetch", HTTP: &rpc.HTTPStep{Method: "GET", URL: "http://x/", ExpectStatus: []int{200}}},
			{Name: "build", Exec: &rpc.ExecStep{Argv: []string{"make", "-j2"}}, Retry: &rpc.Retry{Attempts: 3, Backoff: rpc.Duration(time.Second)}},
		}},
	}
	b, err := json.Marshal(&j)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

// sameAsUnmarshal decodes raw into a fresh T with Lenient and with
// encoding/json.Unmarshal: both accept it or both refuse it, to equal values. It
// reports whether they accepted it.
func sameAsUnmarshal[T any](t *testing.T, d *Decoder, raw string) bool {
	t.Helper()
	var got, want T
	err := d.Lenient([]byte(raw), &got)
	stockErr := json.Unmarshal([]byte(raw), &want)
	switch {
	case err != nil && stockErr == nil:
		t.Fatalf("Lenient refused %q, which encoding/json takes: %v", raw, err)
	case err == nil && stockErr != nil:
		t.Fatalf("Lenient accepted %q, which encoding/json refuses: %v", raw, stockErr)
	case err != nil:
		var e *rpc.Error
		if errors.As(err, &e) {
			t.Fatalf("Lenient's error %v is an *Error: a client would take it for the server's", err)
		}
		return false
	}
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("Lenient(%q) = %+v, encoding/json %+v", raw, got, want)
	}
	return true
}

func TestLenientLikeUnmarshal(t *testing.T) {
	ev, job := sampleEvent(t), sampleJob(t)
	jobs := `{"jobs": [` + job + `, ` + withUnknown(job) + `], "next_cursor": "c1"}`
	cases := []struct {
		name   string
		raw    string
		decode func(*testing.T, *Decoder, string) bool
	}{
		{"event", ev, sameAsUnmarshal[rpc.Event]},
		{"event, unknown members first", withUnknown(ev), sameAsUnmarshal[rpc.Event]},
		{"event, unknown members last", strings.TrimSuffix(ev, "}") + ", " + unknownMembers + "}", sameAsUnmarshal[rpc.Event]},
		{"event, unknown members in progress", `{"type": "progress", "job": 1, "progress": ` + withUnknown(`{"done": 1, "total": null, "message": "m"}`) + `}`, sameAsUnmarshal[rpc.Event]},
		{"event, unknown members only", "{" + unknownMembers + "}", sameAsUnmarshal[rpc.Event]},
		{"event, keys in other cases", `{"TYPE": "output", "Step_Name": "b", "exit_CODE": 3, "ſeq": 4, "data": "x", "Data": "y"}`, sameAsUnmarshal[rpc.Event]},
		{"event, exact key after a folded one", `{"Type": "a", "type": "b"}`, sameAsUnmarshal[rpc.Event]},
		{"event, nulls", `{"seq": null, "step": null, "exit_code": null, "result": null, "elapsed": null, "progress": null}`, sameAsUnmarshal[rpc.Event]},
		{"event, escaped keys and values", `{"\u0074ype": "st\u0065p", "step_name": "\ud83d\ude00", "el\u0061psed": "1\u006ds"}`, sameAsUnmarshal[rpc.Event]},
		{"event, white space", " \n\t{ \"type\" :\r\"x\" , \"zz\" : [ 1 , { } ] } \n", sameAsUnmarshal[rpc.Event]},
		{"event, empty object", `{}`, sameAsUnmarshal[rpc.Event]},
		{"event, null", `null`, sameAsUnmarshal[rpc.Event]},
		{"job", job, sameAsUnmarshal[rpc.Job]},
		{"job, unknown members at the top", withUnknown(job), sameAsUnmarshal[rpc.Job]},
		{"job, unknown members in nested structs", `{"id": 1, "steps": [` + withUnknown(`{"name": "a", "exit_code": 0}`) + `], "progress": ` + withUnknown(`{"done": 2}`) +
			`, "template": ` + withUnknown(`{"name": "t"}`) + `, "spec": {"steps": [{"exec": ` + withUnknown(`{"argv": ["x"]}`) + `, "retry": ` + withUnknown(`{"attempts": 2}`) + `}]}}`, sameAsUnmarshal[rpc.Job]},
		{"job, unknown members in maps are entries", `{"labels": {"a": "b", "zz": "y"}}`, sameAsUnmarshal[rpc.Job]},
		{"submit result, one job", withUnknown(job), sameAsUnmarshal[rpc.SubmitResult]},
		{"submit result, jobs", `{"jobs": [` + withUnknown(job) + `], "zz": {"jobs": 1}}`, sameAsUnmarshal[rpc.SubmitResult]},
		{"list result", jobs, sameAsUnmarshal[rpc.ListResult]},
		{"list result, unknown members", withUnknown(jobs), sameAsUnmarshal[rpc.ListResult]},
		{"list result, empty", `{"jobs": [], "next_cursor": null}`, sameAsUnmarshal[rpc.ListResult]},
	}
	d := NewDecoder()
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			is := is.New(t)
			is.True(c.decode(t, d, c.raw)) // the server's JSON decodes, as encoding/json decodes it
		})
	}

	is := is.New(t)
	var e rpc.Event
	is.NoErr(d.Lenient([]byte(withUnknown(ev)), &e))                          // unknown members are skipped
	is.Equal(e.Type, rpc.EventStepFinished)                                   // and the known ones decoded
	is.Equal(e.Elapsed.D(), 1500*time.Millisecond)                            // durations too
	is.Equal(*e.ExitCode, 0)                                                  // pointers too
	is.Equal(string(e.Result), `{"ok":true,"files":["a.out","b.out"],"n":3}`) // raw results as sent
}

func TestLenientRefusesWhatUnmarshalRefuses(t *testing.T) {
	malformed := []string{
		``, ` `, `{`, `}`, `{"type": "x"`, `{"type": "x",}`, `{"type" "x"}`, `{"type": "x"} x`, `{} {}`,
		`{"zz": [1,}`, `{"zz": [1 2]}`, `{"zz": {"a" 1}}`, `{"zz": {"a": 1,}}`, `{"zz": {1: 2}}`,
		`{"zz": tru}`, `{"zz": nul}`, `{"zz": falsy}`, `{"zz": True}`,
		`{"zz": "\x"}`, `{"zz": "\u12"}`, `{"zz": "\u12g4"}`, "{\"zz\": \"a\nb\"}", `{"zz": "a`,
		`{"zz": 01}`, `{"zz": 1.}`, `{"zz": .5}`, `{"zz": -}`, `{"zz": +1}`, `{"zz": 1e}`, `{"zz": NaN}`, `{"zz": 0x1}`,
		`{"zz": }`, `{"zz"}`, `{zz: 1}`, `{'zz': 1}`,
		`{"zz": ` + strings.Repeat("[", 10001) + strings.Repeat("]", 10001) + `}`,
		`{"progress": {"zz": [}}`,
	}
	wrongType := []string{
		`{"seq": "1"}`, `{"step": 1.5}`, `{"job": true}`, `{"type": 3}`, `{"time": "yesterday"}`, `{"time": 5}`,
		`{"elapsed": 5}`, `{"elapsed": "-1s"}`, `{"elapsed": "soon"}`, `{"progress": []}`, `{"exit_code": "0"}`,
		`{"seq": 99999999999999999999}`, `[]`, `"event"`, `3`, `true`,
	}
	d := NewDecoder()
	for _, raw := range append(malformed, wrongType...) {
		t.Run(raw[:min(len(raw), 40)], func(t *testing.T) {
			is := is.New(t)
			is.True(!sameAsUnmarshal[rpc.Event](t, d, raw)) // refused, as encoding/json refuses it
		})
	}
}

func TestLenientNeedsAPointer(t *testing.T) {
	is := is.New(t)
	var e rpc.Event
	is.True(NewDecoder().Lenient([]byte(`{}`), e) != nil)                 // not a pointer
	is.True(NewDecoder().Lenient([]byte(`{}`), (*rpc.Event)(nil)) != nil) // a nil pointer
}

// TestStrictStillRefusesUnknown checks that a Decoder used leniently stays strict
// for params: the two modes share plans, not rules.
func TestStrictStillRefusesUnknown(t *testing.T) {
	is := is.New(t)
	d := NewDecoder()
	var e rpc.Event
	is.NoErr(d.Lenient([]byte(`{"Type": "x", "zz": 1}`), &e)) // lenient first, so the plan is built
	err := d.Strict([]byte(`{"type": "x", "zz": 1}`), &e, "event")
	var re *rpc.Error
	is.True(errors.As(err, &re))        // strict still refuses
	is.Equal(re.Data.Field, "event.zz") // the unknown field
	err = d.Strict([]byte(`{"Type": "x"}`), &e, "event")
	is.True(errors.As(err, &re))              // and keys in another case
	is.Equal(re.Data.Reason, "unknown field") // as unknown
}

// FuzzLenient checks Lenient against encoding/json.Unmarshal on events and jobs:
// never a panic, the same inputs accepted, and equal values decoded.
func FuzzLenient(f *testing.F) {
	f.Add([]byte(sampleEvent(f)))
	f.Add([]byte(withUnknown(sampleEvent(f))))
	f.Add([]byte(sampleJob(f)))
	f.Add([]byte(withUnknown(sampleJob(f))))
	for _, s := range []string{
		`{}`, `null`, `[]`, `{"type": "heartbeat", "time": "2026-01-01T00:00:00Z"}`,
		`{"type": "output", "job": 3, "step": 0, "offset": 120, "data": "line\n", "zz": {"a": [1, "b", null]}}`,
		`{"type": "progress", "progress": {"done": 1, "total": 3, "percent": 33.3, "message": "m", "at": "2026-01-01T00:00:00.5+02:00"}}`,
		`{"TYPE": "x", "Step_Name": "y", "ſeq": 1, "K": 2}`, `{"elapsed": "1\u006ds", "retry_at": null}`,
		`{"zz": "\ud800", "type": "\xff"}`, `{"zz": 1e400, "seq": -0}`, `{"steps": [{"name": "a", "zz": [true]}], "labels": {"a": null}}`,
		`{"zz": [1,}`, `{"seq": 1.5}`, `{"elapsed": -5}`,
	} {
		f.Add([]byte(s))
	}
	d := NewDecoder()
	f.Fuzz(func(t *testing.T, raw []byte) {
		sameAsUnmarshal[rpc.Event](t, d, string(raw))
		sameAsUnmarshal[rpc.Job](t, d, string(raw))
	})
}
