package rpc

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
)

// Error codes of the protocol.
const (
	CodeParseError     = -32700
	CodeInvalidRequest = -32600
	CodeMethodNotFound = -32601
	CodeInvalidParams  = -32602
	CodeInternal       = -32603
	CodeCancelled      = -32800
	CodeNotFound       = 1001
	CodeBadState       = 1002
	CodeNoTemplate     = 1003
	CodeStorage        = 1004
	CodeLimit          = 1005
	CodeShuttingDown   = 1006
	CodeSinceOutside   = 1007
	CodeKeyConflict    = 1008
)

// ErrorData is the structured part of an error; only the fields that apply to the
// error's code are set.
type ErrorData struct {
	Field     string  `json:"field,omitempty"`
	Reason    string  `json:"reason,omitempty"`
	ID        int64   `json:"id,omitempty"`
	State     State   `json:"state,omitempty"`
	NeededBy  []int64 `json:"needed_by,omitempty"`
	Name      string  `json:"name,omitempty"`
	Key       string  `json:"key,omitempty"`
	OldestSeq *int64  `json:"oldest_seq,omitempty"`
	LastSeq   *int64  `json:"last_seq,omitempty"`
}

// Error is the one error type of the protocol. The daemon returns it in process;
// the client rebuilds it from the wire, so callers see the same value either way.
type Error struct {
	Code    int        `json:"code"`
	Message string     `json:"message"`
	Data    *ErrorData `json:"data,omitempty"`
}

// Error formats the error for people.
func (e *Error) Error() string {
	if e.Data != nil && e.Data.Field != "" {
		return fmt.Sprintf("%s: %s: %s", e.Message, e.Data.Field, e.Data.Reason)
	}
	return e.Message
}

// Errorf makes an error with a code and a formatted message.
func Errorf(code int, format string, args ...any) *Error {
	return &Error{Code: code, Message: fmt.Sprintf(format, args...)}
}

// InvalidParams is -32602 naming the field and what is wrong with it.
func InvalidParams(field, reason string) *Error {
	return &Error{Code: CodeInvalidParams, Message: "invalid params", Data: &ErrorData{Field: field, Reason: reason}}
}

// NotFound is 1001 for a job id.
func NotFound(id int64) *Error {
	return &Error{Code: CodeNotFound, Message: fmt.Sprintf("job %d not found", id), Data: &ErrorData{ID: id}}
}

// BadState is 1002: the job's state does not allow the request.
func BadState(id int64, state State, what string) *Error {
	return &Error{Code: CodeBadState, Message: fmt.Sprintf("job %d is %s: %s", id, state, what), Data: &ErrorData{ID: id, State: state}}
}

// NeededBy is 1002: unfinished jobs depend on the job.
func NeededBy(id int64, by []int64) *Error {
	return &Error{Code: CodeBadState, Message: fmt.Sprintf("job %d is needed by unfinished jobs %v", id, by), Data: &ErrorData{ID: id, NeededBy: by}}
}

// NoTemplate is 1003.
func NoTemplate(name string) *Error {
	return &Error{Code: CodeNoTemplate, Message: fmt.Sprintf("template %q not found", name), Data: &ErrorData{Name: name}}
}

// Storage is 1004: the change could not be stored and was not applied.
func Storage(err error) *Error {
	return &Error{Code: CodeStorage, Message: "storage failure, request not applied: " + err.Error()}
}

// SinceOutside is 1007.
func SinceOutside(oldest, last int64) *Error {
	return &Error{Code: CodeSinceOutside, Message: fmt.Sprintf("since is outside the stored event log (%d..%d)", oldest, last),
		Data: &ErrorData{OldestSeq: &oldest, LastSeq: &last}}
}

// KeyConflict is 1008.
func KeyConflict(key string, id int64) *Error {
	return &Error{Code: CodeKeyConflict, Message: fmt.Sprintf("key %q is used by job %d with a different spec", key, id), Data: &ErrorData{Key: key, ID: id}}
}

// ShuttingDown is 1006.
func ShuttingDown() *Error {
	return &Error{Code: CodeShuttingDown, Message: "the daemon is shutting down"}
}

// CodeOf returns the protocol code of err, as AsError converts it.
func CodeOf(err error) int { return AsError(err).Code }

// AsError converts any error to an *Error: itself when one is in the chain, 1006
// for a cancelled context, otherwise an internal error carrying the message.
//
// A cancelled context is 1006, not -32800: -32800 answers only a request that its
// client cancelled, and the server, which knows why it cancelled a request's
// context, says so itself (see Server). A context a Service ends on its own is
// ended because the daemon stops.
func AsError(err error) *Error {
	var e *Error
	if errors.As(err, &e) {
		return e
	}
	if errors.Is(err, context.Canceled) {
		return ShuttingDown()
	}
	return &Error{Code: CodeInternal, Message: "internal error: " + err.Error()}
}

// FieldPath names a field of the value at path, as errors name it: path.name
// for a plain name, path["odd name"] otherwise.
func FieldPath(path, name string) string {
	if !plainName(name) {
		return KeyPath(path, name)
	}
	if path == "" {
		return name
	}
	return path + "." + name
}

// KeyPath names a map entry: path.key for plain keys, path["odd key"] otherwise.
func KeyPath(path, key string) string {
	if plainName(key) {
		if path == "" {
			return key
		}
		return path + "." + key
	}
	q, _ := json.Marshal(key)
	return path + "[" + string(q) + "]"
}

func plainName(s string) bool {
	if s == "" || len(s) > 128 {
		return false
	}
	for _, c := range s {
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '_' || c == '-') {
			return false
		}
	}
	return true
}
