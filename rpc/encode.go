package rpc

// Hand-written JSON encoders of the values the daemon encodes most: jobs, records
// (stored for each change of a job) and events (stored, and sent to each watcher).
// Their output is byte for byte what encoding/json writes for the same values
// without these methods: the same members in the same order, the same omitempty
// rules, nil slices and maps as null, map keys sorted, times as time.Time writes
// them, and strings escaped as encoding/json does by default (HTML characters,
// U+2028 and U+2029 escaped, invalid UTF-8 replaced by U+FFFD). A job's spec, which
// is rare in what is encoded (the store keeps it apart), is left to encoding/json.

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"slices"
	"strconv"
	"time"
	"unicode/utf8"
)

// Initial capacities of the buffers that MarshalJSON and Freeze encode into: room
// for a typical job of one step, and for a typical event.
const (
	jobSizeHint   = 1024
	eventSizeHint = 192
)

// AppendJSON appends the JSON encoding of j to b and returns the extended buffer.
// The encoding is the one encoding/json gives a Job's fields. On error, b is
// returned as it was.
func (j *Job) AppendJSON(b []byte) ([]byte, error) {
	out, err := j.appendMembers(append(b, '{'))
	if err != nil {
		return b, err
	}
	return append(out, '}'), nil
}

// MarshalJSON encodes j as AppendJSON does. It has a value receiver so that every
// Job that encoding/json meets is encoded this way.
func (j Job) MarshalJSON() ([]byte, error) {
	return marshaled(j.AppendJSON(make([]byte, 0, jobSizeHint)))
}

// AppendJSON appends the JSON encoding of r to b and returns the extended buffer:
// the members of its job, then "run". On error, b is returned as it was.
func (r *Record) AppendJSON(b []byte) ([]byte, error) {
	out, err := r.Job.appendMembers(append(b, '{'))
	if err == nil {
		out, err = r.Run.appendJSON(append(out, `,"run":`...))
	}
	if err != nil {
		return b, err
	}
	return append(out, '}'), nil
}

// MarshalJSON encodes r as AppendJSON does: the job's members flattened, then
// "run". Record must have its own method: the one of its embedded Job would
// otherwise be promoted, and leave out the run state.
func (r Record) MarshalJSON() ([]byte, error) {
	return marshaled(r.AppendJSON(make([]byte, 0, jobSizeHint)))
}

// AppendJSON appends the JSON encoding of e to b and returns the extended buffer.
// It encodes e anew even when e is frozen. On error, b is returned as it was.
func (e *Event) AppendJSON(b []byte) ([]byte, error) {
	out, err := e.appendJSON(b)
	if err != nil {
		return b, err
	}
	return out, nil
}

// MarshalJSON encodes e as AppendJSON does.
func (e Event) MarshalJSON() ([]byte, error) {
	return marshaled(e.AppendJSON(make([]byte, 0, eventSizeHint)))
}

// marshaled is what a MarshalJSON method returns from an AppendJSON call: the
// encoding, or nil and the error.
func marshaled(b []byte, err error) ([]byte, error) {
	if err != nil {
		return nil, err
	}
	return b, nil
}

// appendJobs appends jobs as an array, or null when it is nil.
func appendJobs(b []byte, jobs []Job) ([]byte, error) {
	if jobs == nil {
		return append(b, "null"...), nil
	}
	b = append(b, '[')
	for i := range jobs {
		if i > 0 {
			b = append(b, ',')
		}
		var err error
		if b, err = jobs[i].AppendJSON(b); err != nil {
			return b, err
		}
	}
	return append(b, ']'), nil
}

// appendMembers appends the members of j, without the braces around them.
func (j *Job) appendMembers(b []byte) ([]byte, error) {
	var err error
	b = append(b, `"id":`...)
	b = strconv.AppendInt(b, j.ID, 10)
	b = append(b, `,"name":`...)
	b = appendString(b, j.Name)
	b = append(b, `,"key":`...)
	b = appendStringPtr(b, j.Key)
	b = append(b, `,"queue":`...)
	b = appendString(b, j.Queue)
	b = append(b, `,"priority":`...)
	b = strconv.AppendInt(b, int64(j.Priority), 10)
	b = append(b, `,"labels":`...)
	b = appendStringMap(b, j.Labels)
	b = append(b, `,"after":`...)
	b = appendInt64s(b, j.After)
	b = append(b, `,"not_before":`...)
	if b, err = appendTimePtr(b, j.NotBefore); err != nil {
		return b, err
	}
	b = append(b, `,"state":`...)
	b = appendString(b, string(j.State))
	b = append(b, `,"waiting":`...)
	b = appendStringPtr(b, j.Waiting)
	b = append(b, `,"paused_at":`...)
	if b, err = appendTimePtr(b, j.PausedAt); err != nil {
		return b, err
	}
	b = append(b, `,"submitted_at":`...)
	if b, err = appendTime(b, j.SubmittedAt); err != nil {
		return b, err
	}
	b = append(b, `,"started_at":`...)
	if b, err = appendTimePtr(b, j.StartedAt); err != nil {
		return b, err
	}
	b = append(b, `,"finished_at":`...)
	if b, err = appendTimePtr(b, j.FinishedAt); err != nil {
		return b, err
	}
	b = append(b, `,"current_step":`...)
	b = strconv.AppendInt(b, int64(j.CurrentStep), 10)
	b = append(b, `,"steps":`...)
	if j.Steps == nil {
		b = append(b, "null"...)
	} else {
		b = append(b, '[')
		for i := range j.Steps {
			if i > 0 {
				b = append(b, ',')
			}
			if b, err = j.Steps[i].appendJSON(b); err != nil {
				return b, err
			}
		}
		b = append(b, ']')
	}
	b = append(b, `,"progress":`...)
	if b, err = j.Progress.appendJSON(b); err != nil {
		return b, err
	}
	if len(j.Result) > 0 {
		b = append(b, `,"result":`...)
		if b, err = appendRaw(b, j.Result); err != nil {
			return b, err
		}
	}
	b = append(b, `,"result_truncated":`...)
	b = strconv.AppendBool(b, j.ResultTruncated)
	b = append(b, `,"error":`...)
	b = appendString(b, j.Error)
	b = append(b, `,"retry_of":`...)
	if j.RetryOf == nil {
		b = append(b, "null"...)
	} else {
		b = strconv.AppendInt(b, *j.RetryOf, 10)
	}
	b = append(b, `,"template":`...)
	b = j.Template.appendJSON(b)
	if j.Node != "" {
		b = append(b, `,"node":`...)
		b = appendString(b, j.Node)
	}
	if j.Spec != nil {
		// A spec is encoded only in a single job's reply; encoding/json does it.
		spec, err := json.Marshal(j.Spec)
		if err != nil {
			return b, err
		}
		b = append(b, `,"spec":`...)
		b = append(b, spec...)
	}
	return b, nil
}

// appendJSON appends the encoding of s.
func (s *StepStatus) appendJSON(b []byte) ([]byte, error) {
	var err error
	b = append(b, `{"name":`...)
	b = appendString(b, s.Name)
	b = append(b, `,"kind":`...)
	b = appendString(b, s.Kind)
	b = append(b, `,"state":`...)
	b = appendString(b, string(s.State))
	b = append(b, `,"attempt":`...)
	b = strconv.AppendInt(b, int64(s.Attempt), 10)
	b = append(b, `,"retry_at":`...)
	if b, err = appendTimePtr(b, s.RetryAt); err != nil {
		return b, err
	}
	b = append(b, `,"started_at":`...)
	if b, err = appendTimePtr(b, s.StartedAt); err != nil {
		return b, err
	}
	b = append(b, `,"finished_at":`...)
	if b, err = appendTimePtr(b, s.FinishedAt); err != nil {
		return b, err
	}
	b = append(b, `,"exit_code":`...)
	b = appendIntPtr(b, s.ExitCode)
	b = append(b, `,"signal":`...)
	b = appendStringPtr(b, s.Signal)
	b = append(b, `,"error":`...)
	b = appendString(b, s.Error)
	if s.OutputTail != nil {
		b = append(b, `,"output_tail":`...)
		b = appendString(b, *s.OutputTail)
	}
	b = append(b, `,"result":`...)
	if b, err = appendRaw(b, s.Result); err != nil {
		return b, err
	}
	return append(b, '}'), nil
}

// appendJSON appends the encoding of p, null when p is nil.
func (p *Progress) appendJSON(b []byte) ([]byte, error) {
	if p == nil {
		return append(b, "null"...), nil
	}
	var err error
	b = append(b, `{"done":`...)
	b = appendInt64Ptr(b, p.Done)
	b = append(b, `,"total":`...)
	b = appendInt64Ptr(b, p.Total)
	b = append(b, `,"percent":`...)
	if p.Percent == nil {
		b = append(b, "null"...)
	} else if b, err = appendFloat(b, *p.Percent); err != nil {
		return b, err
	}
	b = append(b, `,"message":`...)
	b = appendString(b, p.Message)
	b = append(b, `,"at":`...)
	if b, err = appendTime(b, p.At); err != nil {
		return b, err
	}
	return append(b, '}'), nil
}

// appendJSON appends the encoding of t, null when t is nil.
func (t *TemplateRef) appendJSON(b []byte) []byte {
	if t == nil {
		return append(b, "null"...)
	}
	b = append(b, `{"name":`...)
	b = appendString(b, t.Name)
	b = append(b, `,"params":`...)
	b = appendStringMap(b, t.Params)
	return append(b, '}')
}

// appendJSON appends the encoding of r.
func (r *RunState) appendJSON(b []byte) ([]byte, error) {
	b = append(b, `{"procs":`...)
	if r.Procs == nil {
		b = append(b, "null"...)
	} else {
		b = append(b, '[')
		for i, p := range r.Procs {
			if i > 0 {
				b = append(b, ',')
			}
			b = append(b, `{"step":`...)
			b = strconv.AppendInt(b, int64(p.Step), 10)
			b = append(b, `,"pid":`...)
			b = strconv.AppendInt(b, int64(p.PID), 10)
			b = append(b, `,"pgid":`...)
			b = strconv.AppendInt(b, int64(p.PGID), 10)
			b = append(b, `,"start":`...)
			b = strconv.AppendUint(b, p.Start, 10)
			if p.Cgroup != "" {
				b = append(b, `,"cgroup":`...)
				b = appendString(b, p.Cgroup)
			}
			b = append(b, '}')
		}
		b = append(b, ']')
	}
	b = append(b, `,"cancel_reason":`...)
	b = appendStringPtr(b, r.CancelReason)
	b = append(b, `,"deadline":`...)
	b, err := appendTimePtr(b, r.Deadline)
	if err != nil {
		return b, err
	}
	b = append(b, `,"interrupted":`...)
	b = strconv.AppendBool(b, r.Interrupted)
	if r.Resumed {
		b = append(b, `,"resumed":true`...)
	}
	if r.Node != "" {
		b = append(b, `,"node":`...)
		b = appendString(b, r.Node)
	}
	if r.Epoch != 0 {
		b = append(b, `,"epoch":`...)
		b = strconv.AppendInt(b, r.Epoch, 10)
	}
	if r.Held {
		b = append(b, `,"held":true`...)
	}
	if r.OnFinish != nil {
		b = append(b, `,"on_finish":`...)
		b = r.OnFinish.appendJSON(b)
	}
	if r.HookDepth != 0 {
		b = append(b, `,"hook_depth":`...)
		b = strconv.AppendInt(b, int64(r.HookDepth), 10)
	}
	return append(b, '}'), nil
}

// appendJSON appends the encoding of e. Time is the first member that is always
// written, so each member after it starts with its comma.
func (e *Event) appendJSON(b []byte) ([]byte, error) {
	var err error
	b = append(b, '{')
	if e.Seq != 0 {
		b = append(b, `"seq":`...)
		b = strconv.AppendInt(b, e.Seq, 10)
		b = append(b, ',')
	}
	b = append(b, `"time":`...)
	if b, err = appendTime(b, e.Time); err != nil {
		return b, err
	}
	if e.Job != 0 {
		b = append(b, `,"job":`...)
		b = strconv.AppendInt(b, e.Job, 10)
	}
	b = append(b, `,"type":`...)
	b = appendString(b, e.Type)
	if e.Step != nil {
		b = append(b, `,"step":`...)
		b = strconv.AppendInt(b, int64(*e.Step), 10)
	}
	if e.StepName != "" {
		b = append(b, `,"step_name":`...)
		b = appendString(b, e.StepName)
	}
	if e.State != "" {
		b = append(b, `,"state":`...)
		b = appendString(b, string(e.State))
	}
	if e.Attempt != 0 {
		b = append(b, `,"attempt":`...)
		b = strconv.AppendInt(b, int64(e.Attempt), 10)
	}
	if e.ExitCode != nil {
		b = append(b, `,"exit_code":`...)
		b = strconv.AppendInt(b, int64(*e.ExitCode), 10)
	}
	if e.Signal != nil {
		b = append(b, `,"signal":`...)
		b = appendString(b, *e.Signal)
	}
	if e.Error != "" {
		b = append(b, `,"error":`...)
		b = appendString(b, e.Error)
	}
	if e.RetryAt != nil {
		b = append(b, `,"retry_at":`...)
		if b, err = appendTime(b, *e.RetryAt); err != nil {
			return b, err
		}
	}
	if len(e.Result) > 0 {
		b = append(b, `,"result":`...)
		if b, err = appendRaw(b, e.Result); err != nil {
			return b, err
		}
	}
	if e.Progress != nil {
		b = append(b, `,"progress":`...)
		if b, err = e.Progress.appendJSON(b); err != nil {
			return b, err
		}
	}
	if e.Elapsed != 0 {
		b = append(b, `,"elapsed":`...)
		b = appendString(b, e.Elapsed.String())
	}
	if e.LastLine != nil {
		b = append(b, `,"last_line":`...)
		b = appendString(b, *e.LastLine)
	}
	if e.Offset != nil {
		b = append(b, `,"offset":`...)
		b = strconv.AppendInt(b, *e.Offset, 10)
	}
	if e.Data != nil {
		b = append(b, `,"data":`...)
		b = appendString(b, *e.Data)
	}
	if len(e.Changes) > 0 {
		b = append(b, `,"changes":`...)
		if b, err = appendRaw(b, e.Changes); err != nil {
			return b, err
		}
	}
	if e.Schedule != "" {
		b = append(b, `,"schedule":`...)
		b = appendString(b, e.Schedule)
	}
	if e.Slot != nil {
		b = append(b, `,"slot":`...)
		if b, err = appendTime(b, *e.Slot); err != nil {
			return b, err
		}
	}
	if e.FollowUp != nil {
		b = append(b, `,"follow_up":`...)
		b = strconv.AppendInt(b, *e.FollowUp, 10)
	}
	return append(b, '}'), nil
}

// hexDigits are the digits of \u escapes, lower case as encoding/json writes them.
const hexDigits = "0123456789abcdef"

// htmlSafe reports whether encoding/json writes the ASCII byte c as it is in a
// string (with its default HTML escaping).
func htmlSafe(c byte) bool {
	return c >= 0x20 && c != '"' && c != '\\' && c != '<' && c != '>' && c != '&'
}

// appendString appends s as a JSON string, escaped as encoding/json escapes it:
// quotes, backslashes and control characters, <, > and & (as \u003c, \u003e,
// \u0026), U+2028 and U+2029, and each invalid UTF-8 byte as \ufffd.
func appendString(b []byte, s string) []byte {
	b = append(b, '"')
	start := 0
	for i := 0; i < len(s); {
		c := s[i]
		if c < utf8.RuneSelf {
			if htmlSafe(c) {
				i++
				continue
			}
			b = append(b, s[start:i]...)
			switch c {
			case '\\', '"':
				b = append(b, '\\', c)
			case '\b':
				b = append(b, '\\', 'b')
			case '\f':
				b = append(b, '\\', 'f')
			case '\n':
				b = append(b, '\\', 'n')
			case '\r':
				b = append(b, '\\', 'r')
			case '\t':
				b = append(b, '\\', 't')
			default:
				b = append(b, '\\', 'u', '0', '0', hexDigits[c>>4], hexDigits[c&0xF])
			}
			i++
			start = i
			continue
		}
		r, size := utf8.DecodeRuneInString(s[i:])
		switch {
		case r == utf8.RuneError && size == 1:
			b = append(b, s[start:i]...)
			b = append(b, `\ufffd`...)
		case r == '\u2028' || r == '\u2029':
			b = append(b, s[start:i]...)
			b = append(b, '\\', 'u', '2', '0', '2', hexDigits[r&0xF])
		default:
			i += size
			continue
		}
		i += size
		start = i
	}
	b = append(b, s[start:]...)
	return append(b, '"')
}

// appendStringPtr appends *p as a JSON string, or null.
func appendStringPtr(b []byte, p *string) []byte {
	if p == nil {
		return append(b, "null"...)
	}
	return appendString(b, *p)
}

// appendIntPtr appends *p, or null.
func appendIntPtr(b []byte, p *int) []byte {
	if p == nil {
		return append(b, "null"...)
	}
	return strconv.AppendInt(b, int64(*p), 10)
}

// appendInt64Ptr appends *p, or null.
func appendInt64Ptr(b []byte, p *int64) []byte {
	if p == nil {
		return append(b, "null"...)
	}
	return strconv.AppendInt(b, *p, 10)
}

// appendInt64s appends a as an array, or null when it is nil.
func appendInt64s(b []byte, a []int64) []byte {
	if a == nil {
		return append(b, "null"...)
	}
	b = append(b, '[')
	for i, v := range a {
		if i > 0 {
			b = append(b, ',')
		}
		b = strconv.AppendInt(b, v, 10)
	}
	return append(b, ']')
}

// appendStringMap appends m as an object with its keys sorted, or null when it is
// nil.
func appendStringMap(b []byte, m map[string]string) []byte {
	if m == nil {
		return append(b, "null"...)
	}
	var small [16]string
	keys := small[:0]
	for k := range m {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	b = append(b, '{')
	for i, k := range keys {
		if i > 0 {
			b = append(b, ',')
		}
		b = appendString(b, k)
		b = append(b, ':')
		b = appendString(b, m[k])
	}
	return append(b, '}')
}

// appendTime appends t as time.Time.MarshalJSON writes it: RFC 3339 with as many
// digits of the second's fraction as it needs, quoted. A year outside 0 to 9999
// is an error.
func appendTime(b []byte, t time.Time) ([]byte, error) {
	out, err := t.AppendText(append(b, '"'))
	if err != nil {
		return b, err
	}
	return append(out, '"'), nil
}

// appendTimePtr appends *t as appendTime does, or null.
func appendTimePtr(b []byte, t *time.Time) ([]byte, error) {
	if t == nil {
		return append(b, "null"...), nil
	}
	return appendTime(b, *t)
}

// appendFloat appends f as encoding/json writes a float64: like ES6's number to
// string conversion, with exponents below 1e-6 and from 1e21. NaN and the
// infinities are errors.
func appendFloat(b []byte, f float64) ([]byte, error) {
	if math.IsInf(f, 0) || math.IsNaN(f) {
		return b, fmt.Errorf("unsupported value: %s", strconv.FormatFloat(f, 'g', -1, 64))
	}
	format := byte('f')
	if abs := math.Abs(f); abs != 0 && (abs < 1e-6 || abs >= 1e21) {
		format = 'e'
	}
	b = strconv.AppendFloat(b, f, format, -1, 64)
	if format == 'e' {
		// e-07 is written e-7.
		n := len(b)
		if n >= 4 && b[n-4] == 'e' && b[n-3] == '-' && b[n-2] == '0' {
			b[n-2] = b[n-1]
			b = b[:n-1]
		}
	}
	return b, nil
}

// appendRaw appends a json.RawMessage as encoding/json writes one: null when nil,
// else compacted, with <, >, &, U+2028 and U+2029 escaped (json.Compact, then
// json.HTMLEscape). Text that is not valid JSON is left to encoding/json, for its
// error.
func appendRaw(b []byte, raw json.RawMessage) ([]byte, error) {
	if raw == nil {
		return append(b, "null"...), nil
	}
	var compact bytes.Buffer
	if json.Compact(&compact, raw) != nil {
		if _, err := json.Marshal(raw); err != nil {
			return b, err
		}
		return b, errors.New("encode a raw JSON value: invalid JSON")
	}
	out := bytes.NewBuffer(b)
	json.HTMLEscape(out, compact.Bytes())
	return out.Bytes(), nil
}

// appendJSON appends the encoding of o.
func (o *OnFinish) appendJSON(b []byte) []byte {
	b = append(b, `{"template":`...)
	b = appendString(b, o.Template)
	if len(o.Params) > 0 {
		b = append(b, `,"params":`...)
		b = appendStringMap(b, o.Params)
	}
	if len(o.States) > 0 {
		b = append(b, `,"states":[`...)
		for i, st := range o.States {
			if i > 0 {
				b = append(b, ',')
			}
			b = appendString(b, string(st))
		}
		b = append(b, ']')
	}
	return append(b, '}')
}
