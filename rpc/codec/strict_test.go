package codec

import (
	"bytes"
	"encoding/json"
	"errors"
	"reflect"
	"spool/rpc"
	"testing"
	"time"

	"github.com/matryer/is"
)

// paramsError decodes raw into a fresh value of v's type and returns the error's code,
// field and reason.
func paramsError(t *testing.T, raw string, v any) (code int, field, reason string) {
	t.Helper()
	err := DecodeParams(json.RawMessage(raw), v)
	if err == nil {
		return 0, "", ""
	}
	var e *rpc.Error
	if !errors.As(err, &e) {
		t.Fatalf("error %v is not an *rpc.Error", err)
	}
	if e.Data == nil {
		return e.Code, "", ""
	}
	return e.Code, e.Data.Field, e.Data.Reason
}

func TestDecodeParamsUnknownFields(t *testing.T) {
	cases := []struct {
		name, raw string
		v         any
		field     string
	}{
		{"top level", `{"job": {"steps": []}, "jbo": 1}`, &rpc.SubmitParams{}, "jbo"},
		{"in a spec", `{"job": {"stpes": []}}`, &rpc.SubmitParams{}, "job.stpes"},
		{"in a step", `{"job": {"steps": [{"exec": {"argv": ["x"]}, "stpes": 1}]}}`, &rpc.SubmitParams{}, "job.steps[0].stpes"},
		{"in a step kind", `{"jobs": [{}, {}, {"steps": [{"sleep": {"duration": "1s"}}, {"exec": {"argvv": ["x"]}}]}]}`, &rpc.SubmitParams{}, "jobs[2].steps[1].exec.argvv"},
		{"in a retry", `{"job": {"steps": [{"retry": {"attempts": 2, "backof": "1s"}}]}}`, &rpc.SubmitParams{}, "job.steps[0].retry.backof"},
		{"in a map of structs", `{"name": "t", "spec": {"anything": 1}, "params": {"dir": {"requird": true}}}`, &rpc.TemplatePutParams{}, "params.dir.requird"},
		{"case differs", `{"job": {"Steps": []}}`, &rpc.SubmitParams{}, "job.Steps"},
		{"odd key", `{"job": {"a b": 1}}`, &rpc.SubmitParams{}, `job["a b"]`},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			is := is.New(t)
			code, field, reason := paramsError(t, c.raw, c.v)
			is.Equal(code, rpc.CodeInvalidParams) // an unknown field is invalid params
			is.Equal(field, c.field)              // named by its path
			is.Equal(reason, "unknown field")     // and said to be unknown
		})
	}
}

func TestDecodeParamsTypeErrors(t *testing.T) {
	cases := []struct {
		name, raw string
		v         any
		field     string
		reason    string
	}{
		{"string for integer", `{"job": {"priority": "high"}}`, &rpc.SubmitParams{}, "job.priority", "must be integer"},
		{"fraction for integer", `{"job": {"priority": 1.5}}`, &rpc.SubmitParams{}, "job.priority", "must be integer"},
		{"huge integer", `{"id": 1e400}`, &rpc.GetParams{}, "id", "must be integer"},
		{"out of range", `{"id": 99999999999999999999}`, &rpc.GetParams{}, "id", "integer out of range"},
		{"bad duration", `{"job": {"timeout": "2 hours"}}`, &rpc.SubmitParams{}, "job.timeout", `invalid duration "2 hours"`},
		{"number for duration", `{"id": 1, "timeout": 30}`, &rpc.WaitParams{}, "timeout", `must be a duration string such as "90s"`},
		{"bad time", `{"job": {"not_before": "tomorrow"}}`, &rpc.SubmitParams{}, "job.not_before", "must be an RFC 3339 time"},
		{"object for step", `{"id": 1, "step": {}}`, &rpc.LogsParams{}, "step", "must be a step name or index"},
		{"number for string", `{"job": {"steps": [{"exec": {"argv": ["a", 2]}}]}}`, &rpc.SubmitParams{}, "job.steps[0].exec.argv[1]", "must be string"},
		{"object for array", `{"job": {"steps": {}}}`, &rpc.SubmitParams{}, "job.steps", "must be array"},
		{"array for object", `{"job": []}`, &rpc.SubmitParams{}, "job", "must be object"},
		{"string for bool", `{"output": "yes"}`, &rpc.WatchParams{}, "output", "must be boolean"},
		{"map value", `{"job": {"labels": {"k": 1}}}`, &rpc.SubmitParams{}, "job.labels.k", "must be string"},
		{"negative for ids ok, string not", `{"ids": [1, "2"]}`, &rpc.RemoveParams{}, "ids[1]", "must be integer"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			is := is.New(t)
			code, field, reason := paramsError(t, c.raw, c.v)
			is.Equal(code, rpc.CodeInvalidParams) // a type error is invalid params
			is.Equal(field, c.field)              // named by its path
			is.Equal(reason, c.reason)            // with what is wrong
		})
	}
}

func TestDecodeParamsNotAnObject(t *testing.T) {
	for _, raw := range []string{`[1]`, `"x"`, `3`, `true`} {
		is := is.New(t)
		code, _, _ := paramsError(t, raw, &rpc.GetParams{})
		is.Equal(code, rpc.CodeInvalidParams) // params must be an object
	}
}

func TestDecodeParamsAbsent(t *testing.T) {
	for _, raw := range []string{``, `null`, ` null `, `{}`} {
		is := is.New(t)
		var p rpc.ListParams
		is.NoErr(DecodeParams(json.RawMessage(raw), &p)) // absent params are {}
		is.Equal(p.Limit, 0)                             // nothing set
	}
}

func TestDecodeParamsValid(t *testing.T) {
	is := is.New(t)
	raw := `{"job": {"name": "n", "priority": -3, "labels": {"a": "b"}, "after": [1, 2],
		"not_before": "2026-12-01T02:00:00+01:00", "timeout": "2h", "env": {"X": "y"},
		"steps": [
			{"name": "fetch", "http": {"method": "GET", "url": "http://x/", "expect_status": [200], "headers": null},
			 "retry": {"attempts": 5, "backoff": "1s", "max_backoff": "30s"}},
			{"exec": {"argv": ["make", "all"]}, "timeout": "30m", "result": "none"},
			{"sleep": {"duration": "10s"}, "retry": null}
		]}}`
	var p rpc.SubmitParams
	is.NoErr(DecodeParams(json.RawMessage(raw), &p))              // a full spec decodes
	is.Equal(p.Job.Priority, -3)                                  // integers
	is.Equal(p.Job.Timeout.D(), 2*time.Hour)                      // durations
	is.Equal(p.Job.Steps[0].Retry.MaxBackoff.D(), 30*time.Second) // nested durations
	is.Equal(p.Job.Steps[1].Exec.Argv, []string{"make", "all"})   // nested slices
	is.Equal(p.Job.NotBefore.UTC().Hour(), 1)                     // times with any offset

	var tp rpc.TemplatePutParams
	is.NoErr(DecodeParams(json.RawMessage(`{"name": "b", "spec": {"stpes": "{{x}}"}, "params": {"x": {"required": true, "default": null}}}`), &tp)) // a raw spec is not walked
	is.Equal(string(tp.Spec), `{"stpes": "{{x}}"}`)                                                                                                 // and kept as it is

	var lp rpc.LogsParams
	is.NoErr(DecodeParams(json.RawMessage(`{"id": 1, "step": 2}`), &lp))       // a step by index
	is.Equal(*lp.Step.Index, 2)                                                // the index
	is.NoErr(DecodeParams(json.RawMessage(`{"id": 1, "step": "build"}`), &lp)) // a step by name
	is.Equal(lp.Step.Name, "build")                                            // the name
}

// FuzzDecodeParams checks that DecodeParams never panics, fails only with -32602,
// and accepts nothing the stock strict decoder rejects,
// decoding to the same value when it accepts.
func FuzzDecodeParams(f *testing.F) {
	for _, s := range []string{
		`{}`, `null`, `[]`, `{"job": {"steps": [{"exec": {"argv": ["x"]}}]}}`,
		`{"jobs": [{"steps": [{"shell": {"script": "echo"}, "retry": {"attempts": 3, "backoff": "1s"}}], "after_index": [0]}]}`,
		`{"job": {"stpes": []}}`, `{"job": {"priority": 1.5}}`, `{"job": {"timeout": "x"}}`,
		`{"job": {"labels": {"a": "b"}, "not_before": "2026-12-01T02:00:00Z"}}`,
		`{"job": {"steps": [{"http": {"url": "http://x", "expect_status": [200, "x"]}}]}}`,
		`{"job": null, "jobs": null}`, `{"job": {"Steps": []}}`, `{"job": {"steps": [null]}}`,
		`{"job": {"priority": -0}}`, `{"job": {"priority": 1e2}}`, `{"job": {"steps": [{"exec": {"argv": []}}], "env": {"\u0041": "b"}}}`,
	} {
		f.Add([]byte(s))
	}
	f.Add([]byte(`{"u": 3, "f": 1.5e3, "arr": [1, 2, 3], "b": "aGk=", "bs": [1, 2], "m": {"1": "x"}, "a": {"k": [1, null]}, "raw": {"x": 1}, "t": "2026-01-02T03:04:05Z", "Inner": 4, "tx": null, "ptrs": [null, 1]}`))
	f.Add([]byte("{\"names\": {\"\xff\": [true]}, \"m\": {\"1\": \"\xfe\"}}"))
	f.Add([]byte(`{"u": -1, "arr": [1, 2, 3, 4, 5], "b": null, "m": {"x": "y"}, "raw": null, "t": null, "a": null}`))
	// A repeated key decodes into what the first one left.
	f.Add([]byte(`{"a":0,"arr":[0,0],"b":"0000","b":[null]}`))
	f.Add([]byte(`{"es": [{"a": 1}, {"a": 2}], "es": [{"b": 3}, null]}`))
	f.Fuzz(func(t *testing.T, raw []byte) {
		fuzzDecodeAs[rpc.SubmitParams](t, raw)
		fuzzDecodeAs[fuzzKinds](t, raw)
	})
}

// fuzzKinds has a field of each kind the strict decoder handles.
type fuzzKinds struct {
	U     uint8             `json:"u"`
	F     float32           `json:"f"`
	Arr   [3]int16          `json:"arr"`
	B     []byte            `json:"b"`
	Bs    []uint8           `json:"bs"`
	M     map[int]string    `json:"m"`
	A     any               `json:"a"`
	Raw   json.RawMessage   `json:"raw"`
	T     *time.Time        `json:"t"`
	Tx    time.Time         `json:"tx"`
	Ptrs  []*int            `json:"ptrs"`
	Names map[string][]bool `json:"names"`
	Es    []fuzzElem        `json:"es"`
	*fuzzInner
}

// fuzzElem is the element of a slice of structs in fuzzKinds.
type fuzzElem struct {
	A int `json:"a"`
	B int `json:"b"`
}

// fuzzInner is embedded by pointer in fuzzKinds.
type fuzzInner struct {
	Inner int
}

// fuzzDecodeAs checks DecodeParams into a T against the stock decoder: never a
// panic, only -32602, nothing the stock decoder rejects, the same value, and no
// refusal of what it takes but for a key in another case.
func fuzzDecodeAs[T any](t *testing.T, raw []byte) {
	var got T
	err := DecodeParams(raw, &got)
	var want T
	trimmed := bytes.TrimSpace(raw)
	if len(trimmed) == 0 || string(trimmed) == "null" {
		trimmed = []byte("{}")
	}
	dec := json.NewDecoder(bytes.NewReader(trimmed))
	dec.DisallowUnknownFields()
	stockErr := dec.Decode(&want)
	if stockErr == nil && !json.Valid(trimmed) {
		stockErr = errors.New("not one JSON value")
	}
	if err != nil {
		var e *rpc.Error
		if !errors.As(err, &e) || e.Code != rpc.CodeInvalidParams {
			t.Fatalf("error %v is not -32602", err)
		}
		if stockErr == nil && trimmed[0] == '{' && (e.Data == nil || e.Data.Reason != "unknown field") {
			t.Fatalf("DecodeParams refused %q, which the stock decoder takes: %v", raw, err)
		}
		return
	}
	if stockErr != nil {
		t.Fatalf("DecodeParams accepted %q, which the stock decoder rejects: %v", raw, stockErr)
	}
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("DecodeParams(%q) = %+v, stock decoder %+v", raw, got, want)
	}
}
