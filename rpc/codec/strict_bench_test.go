package codec

import (
	"encoding/json"
	"spool/rpc"
	"strings"
	"testing"
)

// submitBatch is job.submit params with n jobs shaped like a typical CLI submit.
func submitBatch(n int) json.RawMessage {
	job := `{"name": "build", "queue": "default", "priority": 2, "labels": {"team": "a"}, "timeout": "1h",
		"steps": [{"exec": {"argv": ["make", "-j2", "test"], "dir": "/src"}, "retry": {"attempts": 3, "backoff": "1s"}}]}`
	if n == 1 {
		return json.RawMessage(`{"job": ` + job + `}`)
	}
	return json.RawMessage(`{"jobs": [` + strings.TrimSuffix(strings.Repeat(job+",", n), ",") + `]}`)
}

// benchDecode decodes raw into SubmitParams with decode, b.N times.
func benchDecode(b *testing.B, raw json.RawMessage, decode func(json.RawMessage, any) error) {
	b.SetBytes(int64(len(raw)))
	b.ReportAllocs()
	for b.Loop() {
		var p rpc.SubmitParams
		if err := decode(raw, &p); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkDecodeParamsSubmitOne(b *testing.B) {
	benchDecode(b, submitBatch(1), NewDecoder().Params)
}

func BenchmarkDecodeParamsSubmit1000(b *testing.B) {
	benchDecode(b, submitBatch(1000), NewDecoder().Params)
}

// BenchmarkUnmarshalSubmit1000 is the baseline: encoding/json alone, no checks.
func BenchmarkUnmarshalSubmit1000(b *testing.B) {
	benchDecode(b, submitBatch(1000), func(raw json.RawMessage, v any) error { return json.Unmarshal(raw, v) })
}

// benchEvent decodes a typical step_finished event, as a watcher receives it, into
// an Event with decode, b.N times.
func benchEvent(b *testing.B, decode func([]byte, any) error) {
	raw := []byte(sampleEvent(b))
	b.SetBytes(int64(len(raw)))
	b.ReportAllocs()
	for b.Loop() {
		var e rpc.Event
		if err := decode(raw, &e); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkLenientEvent(b *testing.B) {
	benchEvent(b, NewDecoder().Lenient)
}

// BenchmarkUnmarshalEvent is the baseline: encoding/json.Unmarshal.
func BenchmarkUnmarshalEvent(b *testing.B) {
	benchEvent(b, json.Unmarshal)
}
