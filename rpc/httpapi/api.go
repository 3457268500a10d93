package httpapi

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"runtime/debug"
	"strconv"
	"time"

	"spool/rpc"
	"spool/rpc/codec"
)

// method is how the server runs one method of the protocol.
type method struct {
	// scope is the least a token needs to call it.
	scope Scope
	call  codec.Call
}

// methods is the dispatch table: the shared calls, each with the scope it needs.
// job.watch is GET /api/v1/watch (an event stream), and job.unwatch ends one.
func methods(svc rpc.Service, dec *codec.Decoder) map[string]method {
	read := map[string]bool{
		rpc.MethodGet: true, rpc.MethodList: true, rpc.MethodWait: true, rpc.MethodLogs: true,
		rpc.MethodQueueList: true, rpc.MethodTemplateGet: true, rpc.MethodTemplateList: true, rpc.MethodInfo: true,
		rpc.MethodJobsWait:    true,
		rpc.MethodScheduleGet: true, rpc.MethodScheduleList: true,
	}
	out := map[string]method{}
	for name, call := range codec.Calls(svc, dec) {
		scope := ScopeWrite
		if read[name] {
			scope = ScopeRead
		}
		out[name] = method{scope: scope, call: call}
	}
	return out
}

// Methods lists the methods served as POST /api/v1/<method>.
func (s *Server) Methods() []string {
	out := make([]string, 0, len(s.methods)+1)
	for name := range s.methods {
		out = append(out, name)
	}
	return append(out, rpc.MethodUnwatch)
}

// call serves POST /api/v1/<method>: the body is the params object (empty for
// none), the answer the result, or {"error": {...}} with the status of its code.
func (s *Server) call(rw http.ResponseWriter, r *http.Request) {
	name := r.PathValue("method")
	w := &statusWriter{ResponseWriter: rw, code: http.StatusOK}
	defer func() {
		label := name
		if _, known := s.methods[name]; !known && name != rpc.MethodUnwatch {
			label = "unknown"
		}
		s.cfg.Metrics.countRequest(label, w.code)
	}()
	if name == rpc.MethodUnwatch {
		s.unwatch(w, r)
		return
	}
	if name == "watch" || name == rpc.MethodWatch {
		writeError(w, http.StatusMethodNotAllowed, &rpc.Error{Code: rpc.CodeMethodNotFound, Message: "job.watch is GET /api/v1/watch, an event stream"})
		return
	}
	m, ok := s.methods[name]
	if !ok {
		writeError(w, http.StatusNotFound, &rpc.Error{Code: rpc.CodeMethodNotFound, Message: fmt.Sprintf("method not found: %q", name)})
		return
	}
	if m.scope > scopeFrom(r.Context()) {
		writeError(w, http.StatusForbidden, &rpc.Error{Code: rpc.CodeInvalidRequest, Message: "forbidden: " + name + " needs a write token"})
		return
	}
	body, rerr := s.readBody(w, r)
	if rerr != nil {
		writeError(w, statusOf(rerr), rerr)
		return
	}
	res, err := s.invoke(r.Context(), name, m, body)
	if err != nil {
		e := rpc.AsError(err)
		if r.Context().Err() != nil && e.Code == rpc.CodeShuttingDown {
			// The client went away; nobody reads this.
			e = &rpc.Error{Code: rpc.CodeCancelled, Message: "request cancelled: the connection ended"}
		}
		writeError(w, statusOf(e), e)
		return
	}
	if scopeFrom(r.Context()) < ScopeWrite {
		res = redact(res)
	}
	b, err := json.Marshal(res)
	if err != nil {
		s.log.Error("http: cannot encode a result", "method", name, "err", err)
		writeError(w, http.StatusInternalServerError, &rpc.Error{Code: rpc.CodeInternal, Message: "internal error: cannot encode the result"})
		return
	}
	s.writeJSON(w, http.StatusOK, b)
}

// invoke calls a method, turning a panic into an internal error.
func (s *Server) invoke(ctx context.Context, name string, m method, body []byte) (res any, err error) {
	defer func() {
		if v := recover(); v != nil {
			s.log.Error("panic in a request handler", "method", name, "panic", fmt.Sprint(v), "stack", string(debug.Stack()))
			res, err = nil, &rpc.Error{Code: rpc.CodeInternal, Message: "internal error"}
		}
	}()
	res, err = m.call(ctx, body)
	if err != nil && rpc.CodeOf(err) == rpc.CodeInternal {
		s.log.Error("internal error", "method", name, "err", err)
	}
	return res, err
}

// readBody reads a request's params: at most MaxMessage bytes, and well-formed
// JSON. A larger body is -32600 "message too large" and is not read past the
// limit; malformed JSON is -32700. An empty body is no params.
func (s *Server) readBody(w http.ResponseWriter, r *http.Request) ([]byte, *rpc.Error) {
	tooLarge := &rpc.Error{Code: rpc.CodeInvalidRequest, Message: "message too large", Data: &rpc.ErrorData{Reason: "the body is larger than " + strconv.FormatInt(s.cfg.MaxMessage, 10) + " bytes"}}
	if r.ContentLength > s.cfg.MaxMessage {
		return nil, tooLarge
	}
	rc := http.NewResponseController(w)
	_ = rc.SetReadDeadline(time.Now().Add(s.cfg.WriteStall))
	body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, s.cfg.MaxMessage))
	_ = rc.SetReadDeadline(time.Time{})
	var mbe *http.MaxBytesError
	if errors.As(err, &mbe) {
		return nil, tooLarge
	}
	if err != nil {
		return nil, &rpc.Error{Code: rpc.CodeParseError, Message: "parse error: cannot read the body: " + err.Error()}
	}
	if len(bytes.TrimSpace(body)) == 0 {
		return nil, nil
	}
	if !json.Valid(body) {
		return nil, &rpc.Error{Code: rpc.CodeParseError, Message: "parse error: the body is not valid JSON"}
	}
	return body, nil
}

// statusOf is the HTTP status of a protocol error code; README and openapi.json
// give the table.
func statusOf(e *rpc.Error) int {
	switch e.Code {
	case rpc.CodeParseError, rpc.CodeInvalidParams:
		return http.StatusBadRequest
	case rpc.CodeInvalidRequest:
		if e.Message == "message too large" {
			return http.StatusRequestEntityTooLarge
		}
		return http.StatusBadRequest
	case rpc.CodeMethodNotFound, rpc.CodeNotFound, rpc.CodeNoTemplate:
		return http.StatusNotFound
	case rpc.CodeCancelled:
		return 499 // client closed request: nobody reads it
	case rpc.CodeBadState, rpc.CodeKeyConflict:
		return http.StatusConflict
	case rpc.CodeStorage:
		return http.StatusInsufficientStorage
	case rpc.CodeLimit:
		return http.StatusTooManyRequests
	case rpc.CodeShuttingDown:
		return http.StatusServiceUnavailable
	case rpc.CodeSinceOutside:
		return http.StatusRequestedRangeNotSatisfiable
	}
	return http.StatusInternalServerError
}

// errorBody is how an error is written: {"error": {"code", "message", "data"}}.
type errorBody struct {
	Error *rpc.Error `json:"error"`
}

func writeError(w http.ResponseWriter, status int, e *rpc.Error) {
	b, err := json.Marshal(errorBody{Error: e})
	if err != nil {
		b = []byte(`{"error":{"code":-32603,"message":"internal error"}}`)
	}
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("X-Content-Type-Options", "nosniff")
	w.WriteHeader(status)
	w.Write(append(b, '\n'))
}

// writeJSON writes a result within the write-stall bound.
func (s *Server) writeJSON(w http.ResponseWriter, status int, b []byte) {
	_ = http.NewResponseController(w).SetWriteDeadline(time.Now().Add(s.cfg.WriteStall))
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("X-Content-Type-Options", "nosniff")
	w.WriteHeader(status)
	w.Write(append(b, '\n'))
}

// statusWriter notes the status written, for metrics.
type statusWriter struct {
	http.ResponseWriter
	code int
}

func (w *statusWriter) WriteHeader(code int) {
	w.code = code
	w.ResponseWriter.WriteHeader(code)
}

// Unwrap lets http.ResponseController reach the connection.
func (w *statusWriter) Unwrap() http.ResponseWriter { return w.ResponseWriter }

func itoa(n int) string { return strconv.Itoa(n) }
