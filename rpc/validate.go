package rpc

import (
	"fmt"
	"net/url"
	"path/filepath"
	"strconv"
	"strings"
	"unicode/utf8"
)

// Limits of a job spec.
const (
	MaxSteps       = 1000
	MaxBatch       = 10000
	MaxNameLen     = 200
	MaxLabels      = 64
	MaxLabelLen    = 256
	MaxStringBytes = 128 << 10
	DefaultMaxBody = 1 << 20
	MaxMaxBody     = 1 << 30
	MaxAttempts    = 1000
)

func queueNameOK(s string) bool {
	if len(s) < 1 || len(s) > 64 {
		return false
	}
	for _, c := range s {
		if !(c >= 'a' && c <= 'z' || c >= '0' && c <= '9' || c == '.' || c == '_' || c == '-') {
			return false
		}
	}
	return true
}

// ValidQueueName reports whether s may name a queue.
func ValidQueueName(s string) bool { return queueNameOK(s) }

func stepNameOK(s string) bool {
	if len(s) < 1 || len(s) > 64 {
		return false
	}
	for i, c := range s {
		alnum := c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9'
		if !alnum && (i == 0 || c != '.' && c != '_' && c != '-') {
			return false
		}
	}
	return true
}

// NormalizeSpec fills in the defaults of a job spec and validates it. field is the
// spec's path in the request ("job", "jobs[3]"), used in the -32602 it returns.
// Ids in After are checked by the store, which knows which jobs exist.
func NormalizeSpec(field string, s *Spec) error {
	bad := func(sub, reason string, args ...any) error {
		return InvalidParams(field+sub, fmt.Sprintf(reason, args...))
	}
	if utf8.RuneCountInString(s.Name) > MaxNameLen {
		return bad(".name", "at most %d characters", MaxNameLen)
	}
	if utf8.RuneCountInString(s.Key) > MaxNameLen {
		return bad(".key", "at most %d characters", MaxNameLen)
	}
	if s.Queue == "" {
		s.Queue = "default"
	}
	if !queueNameOK(s.Queue) {
		return bad(".queue", "must match [a-z0-9._-]{1,64}")
	}
	if len(s.Labels) > MaxLabels {
		return bad(".labels", "at most %d labels", MaxLabels)
	}
	for k, v := range s.Labels {
		if k == "" {
			return bad(".labels", "a label name must not be empty")
		}
		if utf8.RuneCountInString(k) > MaxLabelLen || utf8.RuneCountInString(v) > MaxLabelLen {
			return bad(".labels."+k, "at most %d characters", MaxLabelLen)
		}
	}
	if s.Labels == nil {
		s.Labels = map[string]string{}
	}
	for i, id := range s.After {
		if id <= 0 {
			return bad(fmt.Sprintf(".after[%d]", i), "must be a positive job id")
		}
	}
	for i, idx := range s.AfterIndex {
		if idx < 0 {
			return bad(fmt.Sprintf(".after_index[%d]", i), "must not be negative")
		}
	}
	if s.After == nil {
		s.After = []int64{}
	}
	if s.AfterIndex == nil {
		s.AfterIndex = []int{}
	}
	if s.Dir != "" && !filepath.IsAbs(s.Dir) {
		return bad(".dir", "must be an absolute path")
	}
	if err := checkEnv(field+".env", s.Env); err != nil {
		return err
	}
	if s.Env == nil {
		s.Env = map[string]string{}
	}
	if len(s.Steps) == 0 {
		return bad(".steps", "at least one step is required")
	}
	if len(s.Steps) > MaxSteps {
		return bad(".steps", "at most %d steps", MaxSteps)
	}
	names := make(map[string]int, len(s.Steps))
	for i := range s.Steps {
		sf := fmt.Sprintf("%s.steps[%d]", field, i)
		if err := normalizeStep(sf, i, &s.Steps[i]); err != nil {
			return err
		}
		if j, dup := names[s.Steps[i].Name]; dup {
			return InvalidParams(sf+".name", fmt.Sprintf("%q is also the name of step %d", s.Steps[i].Name, j))
		}
		names[s.Steps[i].Name] = i
	}
	return nil
}

func normalizeStep(field string, i int, st *Step) error {
	bad := func(sub, reason string, args ...any) error {
		return InvalidParams(field+sub, fmt.Sprintf(reason, args...))
	}
	if st.Name == "" {
		st.Name = "step-" + strconv.Itoa(i)
	}
	if !stepNameOK(st.Name) {
		return bad(".name", "must match [A-Za-z0-9][A-Za-z0-9._-]{0,63}")
	}
	if strings.Trim(st.Name, "0123456789") == "" {
		return bad(".name", "must not be all digits")
	}
	kinds := 0
	for _, set := range []bool{st.Exec != nil, st.Shell != nil, st.Sleep != nil, st.HTTP != nil} {
		if set {
			kinds++
		}
	}
	if kinds != 1 {
		return bad("", "must have exactly one of exec, shell, sleep, http (has %d)", kinds)
	}
	switch {
	case st.Exec != nil:
		e := st.Exec
		if len(e.Argv) == 0 {
			return bad(".exec.argv", "must not be empty")
		}
		if e.Argv[0] == "" {
			return bad(".exec.argv[0]", "must not be empty")
		}
		for j, a := range e.Argv {
			if err := checkString(fmt.Sprintf("%s.exec.argv[%d]", field, j), a); err != nil {
				return err
			}
		}
		if err := checkProcess(field+".exec", e.Dir, e.Env, e.Stdin); err != nil {
			return err
		}
		if e.Env == nil {
			e.Env = map[string]string{}
		}
	case st.Shell != nil:
		sh := st.Shell
		if strings.TrimSpace(sh.Script) == "" {
			return bad(".shell.script", "must not be empty")
		}
		if err := checkString(field+".shell.script", sh.Script); err != nil {
			return err
		}
		if err := checkProcess(field+".shell", sh.Dir, sh.Env, sh.Stdin); err != nil {
			return err
		}
		if sh.Env == nil {
			sh.Env = map[string]string{}
		}
	case st.Sleep != nil:
		if st.Sleep.Duration <= 0 {
			return bad(".sleep.duration", "must be a positive duration")
		}
	case st.HTTP != nil:
		if err := normalizeHTTP(field+".http", st.HTTP); err != nil {
			return err
		}
	}
	if st.Retry != nil {
		r := st.Retry
		if r.Attempts < 1 || r.Attempts > MaxAttempts {
			return bad(".retry.attempts", "must be 1 to %d", MaxAttempts)
		}
		if r.Backoff == 0 {
			r.Backoff = Duration(1e9)
		}
		if r.MaxBackoff == 0 {
			r.MaxBackoff = Duration(300e9)
		}
		if r.MaxBackoff < r.Backoff {
			return bad(".retry.max_backoff", "must not be shorter than backoff")
		}
	}
	switch st.Result {
	case "":
		st.Result = ResultText
	case ResultText, ResultJSON, ResultNone:
	default:
		return bad(".result", `must be "text", "json" or "none"`)
	}
	switch st.OnInterrupt {
	case "":
		st.OnInterrupt = OnInterruptRetry
	case OnInterruptRetry, OnInterruptFail:
	default:
		return bad(".on_interrupt", `must be "retry" or "fail"`)
	}
	return nil
}

func normalizeHTTP(field string, h *HTTPStep) error {
	if h.Method == "" {
		h.Method = "GET"
	}
	for _, c := range h.Method {
		if !(c >= 'A' && c <= 'Z') {
			return InvalidParams(field+".method", "must be an upper-case HTTP method such as GET")
		}
	}
	u, err := url.Parse(h.URL)
	if err != nil || h.URL == "" {
		return InvalidParams(field+".url", "must be an absolute http or https URL")
	}
	if u.Scheme != "http" && u.Scheme != "https" {
		return InvalidParams(field+".url", "scheme must be http or https")
	}
	if u.Host == "" {
		return InvalidParams(field+".url", "must name a host")
	}
	for k, v := range h.Headers {
		if k == "" || strings.ContainsAny(k, " :\r\n\x00") {
			return InvalidParams(field+".headers", fmt.Sprintf("invalid header name %q", k))
		}
		if strings.ContainsAny(v, "\r\n\x00") {
			return InvalidParams(field+".headers."+k, "must not contain CR, LF or NUL")
		}
	}
	if h.Headers == nil {
		h.Headers = map[string]string{}
	}
	if err := checkString(field+".body", h.Body); err != nil {
		return err
	}
	for i, code := range h.ExpectStatus {
		if code < 100 || code > 599 {
			return InvalidParams(fmt.Sprintf("%s.expect_status[%d]", field, i), "must be an HTTP status 100 to 599")
		}
	}
	if h.ExpectStatus == nil {
		h.ExpectStatus = []int{}
	}
	switch {
	case h.MaxBody == 0:
		h.MaxBody = DefaultMaxBody
	case h.MaxBody < 0 || h.MaxBody > MaxMaxBody:
		return InvalidParams(field+".max_body", fmt.Sprintf("must be 1 to %d bytes", MaxMaxBody))
	}
	return nil
}

func checkProcess(field, dir string, env map[string]string, stdin string) error {
	if dir != "" && !filepath.IsAbs(dir) {
		return InvalidParams(field+".dir", "must be an absolute path")
	}
	if err := checkEnv(field+".env", env); err != nil {
		return err
	}
	return checkString(field+".stdin", stdin)
}

func checkEnv(field string, env map[string]string) error {
	for k, v := range env {
		switch {
		case k == "":
			return InvalidParams(field, "a variable name must not be empty")
		case strings.ContainsAny(k, "=\x00"):
			return InvalidParams(field+"."+k, "a variable name must not contain = or NUL")
		case strings.HasPrefix(k, "SPOOL_"):
			return InvalidParams(field+"."+k, "names starting with SPOOL_ are the daemon's")
		}
		if err := checkString(field+"."+k, v); err != nil {
			return err
		}
	}
	return nil
}

func checkString(field, s string) error {
	if len(s) > MaxStringBytes {
		return InvalidParams(field, fmt.Sprintf("at most %d bytes", MaxStringBytes))
	}
	if strings.IndexByte(s, 0) >= 0 {
		return InvalidParams(field, "must not contain NUL")
	}
	return nil
}
