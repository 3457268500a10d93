package codec

import (
	"encoding/json"
	"errors"
	"fmt"
	"regexp"
	"spool/rpc"
	"strings"
	"testing"
	"unicode/utf8"
)

// FuzzSpec runs submit params through the strict decoder and the spec validator,
// as the daemon does: neither panics; every refusal is -32602 naming a field under
// the spec's path; an accepted spec keeps the protocol's limits, normalizing it
// again changes nothing, and it survives being written as JSON and read back
// (what the store and job.retry do).
func FuzzSpec(f *testing.F) {
	for _, s := range []string{
		`{"job": {"steps": [{"exec": {"argv": ["make", "all"]}}]}}`,
		`{"job": {"name": "nightly", "key": "k", "queue": "q.1_-", "priority": -3, "labels": {"a": "b"},
		  "after": [1, 2], "not_before": "2026-12-01T02:00:00+01:00", "timeout": "2h", "dir": "/tmp",
		  "env": {"GOFLAGS": "-mod=mod"}, "steps": [
		  {"name": "fetch", "http": {"method": "GET", "url": "http://127.0.0.1:8080/m", "expect_status": [200], "headers": {"X-A": "b"}},
		   "retry": {"attempts": 5, "backoff": "1s", "max_backoff": "30s"}},
		  {"name": "build", "exec": {"argv": ["make"], "dir": "/", "env": {"A": "1"}, "stdin": "x"}, "timeout": "30m"},
		  {"name": "settle", "sleep": {"duration": "10s"}},
		  {"name": "report", "shell": {"script": "git rev-parse HEAD"}, "result": "json", "on_interrupt": "fail"}]}}`,
		`{"jobs": [{"steps": [{"shell": {"script": "true"}}]}, {"after_index": [0], "steps": [{"sleep": {"duration": "1ms"}}]}]}`,
		`{"job": {"steps": [{"exec": {"argv": []}}]}}`,
		`{"job": {"steps": [{"exec": {"argv": ["a"]}, "shell": {"script": "b"}}]}}`,
		`{"job": {"steps": [{"name": "123", "sleep": {"duration": "1s"}}]}}`,
		`{"job": {"steps": [{"name": "a", "sleep": {"duration": "1s"}}, {"name": "a", "sleep": {"duration": "1s"}}]}}`,
		`{"job": {"queue": "UPPER", "steps": [{"sleep": {"duration": "1s"}}]}}`,
		`{"job": {"env": {"SPOOL_X": "1"}, "steps": [{"sleep": {"duration": "1s"}}]}}`,
		`{"job": {"env": {"A=B": "1"}, "steps": [{"sleep": {"duration": "1s"}}]}}`,
		`{"job": {"dir": "relative", "steps": [{"sleep": {"duration": "1s"}}]}}`,
		`{"job": {"steps": [{"http": {"url": "ftp://x"}}]}}`,
		`{"job": {"steps": [{"http": {"url": "http://x", "headers": {"Bad Name": "v"}}}]}}`,
		`{"job": {"steps": [{"http": {"url": "http://x", "max_body": -1}}]}}`,
		`{"job": {"steps": [{"sleep": {"duration": "-1s"}}]}}`,
		`{"job": {"steps": [{"shell": {"script": "x"}, "retry": {"attempts": 2, "backoff": "10s", "max_backoff": "1s"}}]}}`,
		`{"job": {"steps": [{"shell": {"script": "x"}, "result": "xml"}]}}`,
		`{"job": {"after": [0], "steps": [{"shell": {"script": "x"}}]}}`,
		`{"jobs": [{"after_index": [-1], "steps": [{"shell": {"script": "x"}}]}]}`,
		`{"job": {"labels": {"": "x"}, "steps": [{"shell": {"script": "x"}}]}}`,
		`{"job": {"name": "\u0000", "steps": [{"shell": {"script": "\u0000"}}]}}`,
		`{"job": {"steps": [{"shell": {"script": "é"}, "name": "é"}]}}`,
		`{"job": {"steps": []}}`, `{"job": {}}`, `{"jobs": []}`, `{}`, `[]`, `null`, `{"job": null}`,
		`{"job": {"stpes": []}}`, `{"job": {"steps": [{"shell": {"script": "x", "sript": 1}}]}}`,
		`{"job": {"priority": 1.5, "steps": [{"shell": {"script": "x"}}]}}`,
		`{"job": {"timeout": "1h", "steps": [{"shell": {"script": "x"}, "timeout": "1x"}]}}`,
		`{"job": {"not_before": "yesterday", "steps": [{"shell": {"script": "x"}}]}}`,
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, raw []byte) {
		var p rpc.SubmitParams
		if err := DecodeParams(raw, &p); err != nil {
			mustBeInvalidParams(t, err, "")
			return
		}
		var specs []rpc.Spec
		var fields []string
		if p.Job != nil {
			specs, fields = append(specs, *p.Job), append(fields, "job")
		}
		for i := range p.Jobs {
			specs, fields = append(specs, p.Jobs[i]), append(fields, fmt.Sprintf("jobs[%d]", i))
		}
		for i := range specs {
			s := specs[i]
			if err := rpc.NormalizeSpec(fields[i], &s); err != nil {
				mustBeInvalidParams(t, err, fields[i])
				continue
			}
			checkLimits(t, &s)
			once := mustJSON(t, s)

			again := s
			if err := rpc.NormalizeSpec(fields[i], &again); err != nil {
				t.Fatalf("a normalized spec is refused when normalized again: %v\n%s", err, once)
			}
			if twice := mustJSON(t, again); twice != once {
				t.Fatalf("normalizing twice changed the spec:\n%s\n%s", once, twice)
			}

			var back rpc.SubmitParams
			if err := DecodeParams([]byte(`{"job":`+once+`}`), &back); err != nil {
				t.Fatalf("a normalized spec written as JSON does not decode: %v\n%s", err, once)
			}
			if err := rpc.NormalizeSpec("job", back.Job); err != nil {
				t.Fatalf("a normalized spec read back is refused: %v\n%s", err, once)
			}
			if round := mustJSON(t, *back.Job); round != once {
				t.Fatalf("the spec changed through JSON:\n%s\n%s", once, round)
			}
		}
	})
}

func mustJSON(t *testing.T, v any) string {
	t.Helper()
	b, err := json.Marshal(v)
	if err != nil {
		t.Fatalf("marshal %+v: %v", v, err)
	}
	return string(b)
}

// mustBeInvalidParams checks that err is -32602 with a field under prefix.
func mustBeInvalidParams(t *testing.T, err error, prefix string) {
	t.Helper()
	var e *rpc.Error
	if !errors.As(err, &e) || e.Code != rpc.CodeInvalidParams {
		t.Fatalf("error %v is not -32602", err)
	}
	if prefix == "" {
		return
	}
	if e.Data == nil || !strings.HasPrefix(e.Data.Field, prefix) {
		t.Fatalf("error %v does not name a field under %q (data %+v)", err, prefix, e.Data)
	}
}

// checkLimits checks what the protocol promises of an accepted spec.
func checkLimits(t *testing.T, s *rpc.Spec) {
	t.Helper()
	if utf8.RuneCountInString(s.Name) > rpc.MaxNameLen || utf8.RuneCountInString(s.Key) > rpc.MaxNameLen {
		t.Fatalf("name or key over %d characters", rpc.MaxNameLen)
	}
	if !queueNameRE.MatchString(s.Queue) {
		t.Fatalf("accepted queue %q", s.Queue)
	}
	if len(s.Steps) < 1 || len(s.Steps) > rpc.MaxSteps {
		t.Fatalf("accepted %d steps", len(s.Steps))
	}
	if s.Dir != "" && !strings.HasPrefix(s.Dir, "/") {
		t.Fatalf("accepted a relative dir %q", s.Dir)
	}
	for k := range s.Env {
		if k == "" || strings.ContainsAny(k, "=\x00") || strings.HasPrefix(k, "SPOOL_") {
			t.Fatalf("accepted env name %q", k)
		}
	}
	names := map[string]bool{}
	for i, st := range s.Steps {
		if names[st.Name] {
			t.Fatalf("step %d: duplicate name %q", i, st.Name)
		}
		names[st.Name] = true
		if !stepNameRE.MatchString(st.Name) || strings.Trim(st.Name, "0123456789") == "" {
			t.Fatalf("step %d: accepted name %q", i, st.Name)
		}
		kinds := 0
		for _, set := range []bool{st.Exec != nil, st.Shell != nil, st.Sleep != nil, st.HTTP != nil} {
			if set {
				kinds++
			}
		}
		if kinds != 1 {
			t.Fatalf("step %d: %d kinds", i, kinds)
		}
		if st.Exec != nil && (len(st.Exec.Argv) == 0 || st.Exec.Argv[0] == "") {
			t.Fatalf("step %d: empty argv", i)
		}
		if st.Shell != nil && strings.TrimSpace(st.Shell.Script) == "" {
			t.Fatalf("step %d: empty script", i)
		}
		if st.Sleep != nil && st.Sleep.Duration <= 0 {
			t.Fatalf("step %d: sleep of %v", i, st.Sleep.Duration)
		}
		if st.Result != rpc.ResultText && st.Result != rpc.ResultJSON && st.Result != rpc.ResultNone {
			t.Fatalf("step %d: result %q", i, st.Result)
		}
		if st.OnInterrupt != rpc.OnInterruptRetry && st.OnInterrupt != rpc.OnInterruptFail {
			t.Fatalf("step %d: on_interrupt %q", i, st.OnInterrupt)
		}
		if r := st.Retry; r != nil && (r.Attempts < 1 || r.Attempts > rpc.MaxAttempts || r.MaxBackoff < r.Backoff) {
			t.Fatalf("step %d: retry %+v", i, *r)
		}
	}
}

// The names the protocol allows, written as the spec writes them.
var (
	queueNameRE = regexp.MustCompile(`^[a-z0-9._-]{1,64}$`)
	stepNameRE  = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$`)
)
