package rpc

import (
	"encoding/json"
	"testing"
	"time"
)

// benchSink keeps what a benchmark encodes, so that its buffer is not optimized
// away.
var benchSink []byte

// typicalRecord is a typical stored record: a job of one step that succeeded.
func typicalRecord() Record {
	sub := time.Date(2026, 11, 30, 16, 9, 17, 123456789, time.UTC)
	start := sub.Add(1500 * time.Microsecond)
	end := start.Add(2*time.Second + 345*time.Microsecond)
	return Record{Job: Job{
		ID: 1234, Name: "nightly backup", Queue: "default", Labels: map[string]string{"env": "prod", "team": "ops"},
		State: StateSucceeded, SubmittedAt: sub, StartedAt: &start, FinishedAt: &end,
		Steps: []StepStatus{{
			Name: "dump", Kind: KindExec, State: StateSucceeded, Attempt: 1, StartedAt: &start, FinishedAt: &end,
			ExitCode: ptr(0), OutputTail: ptr("wrote 1532 rows to dump.sql\n"), Result: json.RawMessage(`"wrote 1532 rows to dump.sql"`),
		}},
		Result: json.RawMessage(`"wrote 1532 rows to dump.sql"`),
	}, Run: RunState{Deadline: &end}}
}

// typicalEvent is a typical stored event: a step that finished.
func typicalEvent() Event {
	return Event{
		Seq: 98765, Time: time.Date(2026, 11, 30, 16, 9, 19, 469123456, time.UTC), Job: 1234, Type: EventStepFinished,
		Step: ptr(0), StepName: "dump", State: StateSucceeded, Attempt: 1, ExitCode: ptr(0), Elapsed: Duration(2*time.Second + 345*time.Microsecond),
	}
}

func BenchmarkEncodeRecord(b *testing.B) {
	r := typicalRecord()
	b.Run("AppendJSON", func(b *testing.B) {
		b.ReportAllocs()
		var buf []byte
		for b.Loop() {
			buf, _ = r.AppendJSON(buf[:0])
		}
		b.SetBytes(int64(len(buf)))
	})
	b.Run("MarshalJSON", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			benchSink, _ = r.MarshalJSON() // a new buffer each time, as a reply gets
		}
	})
	b.Run("json.Marshal", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			_, _ = json.Marshal(&r)
		}
	})
	b.Run("encoding/json", func(b *testing.B) {
		b.ReportAllocs()
		p := plainRecord{plainJob(r.Job), r.Run}
		for b.Loop() {
			_, _ = json.Marshal(&p)
		}
	})
}

func BenchmarkEncodeEvent(b *testing.B) {
	e := typicalEvent()
	b.Run("AppendJSON", func(b *testing.B) {
		b.ReportAllocs()
		var buf []byte
		for b.Loop() {
			buf, _ = e.AppendJSON(buf[:0])
		}
		b.SetBytes(int64(len(buf)))
	})
	b.Run("MarshalJSON", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			benchSink, _ = e.MarshalJSON() // a new buffer each time, as a reply gets
		}
	})
	b.Run("encoding/json", func(b *testing.B) {
		b.ReportAllocs()
		p := plainEvent(e)
		for b.Loop() {
			_, _ = json.Marshal(&p)
		}
	})
}

// BenchmarkEncodeList encodes a page of 20 listed jobs as the server's reply path
// does, against encoding/json on the plain jobs. encoding/json compacts what each
// job's MarshalJSON returns once more.
func BenchmarkEncodeList(b *testing.B) {
	r := typicalRecord()
	r.Result = nil
	jobs := make([]Job, 20)
	plain := make([]plainJob, len(jobs))
	for i := range jobs {
		jobs[i] = r.Job
		jobs[i].ID = int64(i + 1)
		plain[i] = plainJob(jobs[i])
	}
	b.Run("encodeResult", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			_, _ = marshalResult(ListResult{Jobs: jobs})
		}
	})
	b.Run("encoding/json", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			_, _ = json.Marshal(struct {
				Jobs       []plainJob `json:"jobs"`
				NextCursor *string    `json:"next_cursor"`
			}{plain, nil})
		}
	})
}

// BenchmarkEncodeSubmitResult encodes job.submit's reply of one job, as the server
// does.
func BenchmarkEncodeSubmitResult(b *testing.B) {
	r := typicalRecord()
	b.Run("encodeResult", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			_, _ = marshalResult(SubmitResult{Job: &r.Job})
		}
	})
	b.Run("encoding/json", func(b *testing.B) {
		b.ReportAllocs()
		p := plainJob(r.Job)
		for b.Loop() {
			_, _ = json.Marshal(&p)
		}
	})
}
