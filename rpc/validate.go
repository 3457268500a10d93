package rpc

import (
	"fmt"
	"maps"
	"net/url"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"
)

// Limits of a job spec. Those the protocol does not set are the project's choice,
// documented in README.md ("Limits").
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
	// MaxBackoff bounds a retry's backoff and max_backoff: a wait longer than a
	// month between attempts is a mistake, and doubling it must not overflow.
	MaxBackoff = Duration(30 * 24 * time.Hour)
	// DefaultMaxBackoff is max_backoff when none is given (or backoff, if longer).
	DefaultMaxBackoff = Duration(300 * time.Second)
	// MaxMethodLen bounds an http step's method.
	MaxMethodLen = 32
	// MaxReasonLen bounds a cancel's reason, in characters.
	MaxReasonLen = 1024
	// MaxWatchJobs bounds the ids one watch names.
	MaxWatchJobs = MaxBatch
	// MaxTokenLen bounds a watch token, in bytes.
	MaxTokenLen = 256
	// MaxTemplateParams bounds the params a template declares.
	MaxTemplateParams = 100
	// MaxLogLimit is the most job.logs reads at once.
	MaxLogLimit = 1 << 20
	// MaxListLimit is the most jobs job.list returns at once.
	MaxListLimit = 1000
	// MinHeartbeat is the shortest heartbeat a watch may ask for.
	MinHeartbeat = Duration(100 * time.Millisecond)
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
	if err := checkLabels(FieldPath(field, "labels"), s.Labels); err != nil {
		return err
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
	if err := checkDir(field+".dir", s.Dir); err != nil {
		return err
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
	if s.OnFinish != nil {
		if err := NormalizeOnFinish(field+".on_finish", s.OnFinish); err != nil {
			return err
		}
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
		if r.Backoff > MaxBackoff {
			return bad(".retry.backoff", "at most %s", MaxBackoff)
		}
		if r.MaxBackoff > MaxBackoff {
			return bad(".retry.max_backoff", "at most %s", MaxBackoff)
		}
		if r.Backoff == 0 {
			r.Backoff = Duration(time.Second)
		}
		if r.MaxBackoff == 0 {
			r.MaxBackoff = max(DefaultMaxBackoff, r.Backoff)
		}
		if r.MaxBackoff < r.Backoff {
			return bad(".retry.max_backoff", "must not be shorter than backoff (%s)", r.Backoff)
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
	if len(h.Method) > MaxMethodLen {
		return InvalidParams(field+".method", fmt.Sprintf("at most %d letters", MaxMethodLen))
	}
	for _, c := range h.Method {
		if !(c >= 'A' && c <= 'Z') {
			return InvalidParams(field+".method", "must be an upper-case HTTP method such as GET")
		}
	}
	if err := checkString(field+".url", h.URL); err != nil {
		return err
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
		if k == "" {
			return InvalidParams(field+".headers", "a header name must not be empty")
		}
		if !headerNameOK(k) {
			return InvalidParams(KeyPath(field+".headers", k), "a header name is letters, digits and !#$%&'*+-.^_`|~ (no space, colon, CR, LF or NUL)")
		}
		if !headerValueOK(v) {
			return InvalidParams(KeyPath(field+".headers", k), "must not contain CR, LF, NUL or other control characters but tab")
		}
		if err := checkString(KeyPath(field+".headers", k), v); err != nil {
			return err
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

// headerNameOK reports whether s is an HTTP header name: a token of RFC 9110.
func headerNameOK(s string) bool {
	for i := 0; i < len(s); i++ {
		c := s[i]
		alnum := c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9'
		if !alnum && strings.IndexByte("!#$%&'*+-.^_`|~", c) < 0 {
			return false
		}
	}
	return true
}

// headerValueOK reports whether s may be sent as an HTTP header value: no control
// characters but tab (so no CR, LF or NUL).
func headerValueOK(s string) bool {
	for i := 0; i < len(s); i++ {
		if c := s[i]; c < ' ' && c != '\t' || c == 0x7f {
			return false
		}
	}
	return true
}

func checkProcess(field, dir string, env map[string]string, stdin string) error {
	if err := checkDir(field+".dir", dir); err != nil {
		return err
	}
	if err := checkEnv(field+".env", env); err != nil {
		return err
	}
	return checkString(field+".stdin", stdin)
}

// checkDir checks a working directory: none, or an absolute path without NUL.
func checkDir(field, dir string) error {
	if dir == "" {
		return nil
	}
	if err := checkString(field, dir); err != nil {
		return err
	}
	if !filepath.IsAbs(dir) {
		return InvalidParams(field, "must be an absolute path")
	}
	return nil
}

func checkEnv(field string, env map[string]string) error {
	for k, v := range env {
		switch {
		case k == "":
			return InvalidParams(field, "a variable name must not be empty")
		case strings.ContainsAny(k, "=\x00"):
			return InvalidParams(KeyPath(field, k), "a variable name must not contain = or NUL")
		case strings.HasPrefix(k, "SPOOL_"):
			return InvalidParams(KeyPath(field, k), "names starting with SPOOL_ are the daemon's")
		case len(k) > MaxStringBytes:
			return InvalidParams(field, fmt.Sprintf("a variable name is at most %d bytes", MaxStringBytes))
		}
		if err := checkString(KeyPath(field, k), v); err != nil {
			return err
		}
	}
	return nil
}

// checkLabels checks labels against the spec's limits: at most MaxLabels, names
// not empty, names and values at most MaxLabelLen characters.
func checkLabels(field string, labels map[string]string) error {
	if len(labels) > MaxLabels {
		return InvalidParams(field, fmt.Sprintf("at most %d labels", MaxLabels))
	}
	for k, v := range labels {
		if k == "" {
			return InvalidParams(field, "a label name must not be empty")
		}
		if utf8.RuneCountInString(k) > MaxLabelLen || utf8.RuneCountInString(v) > MaxLabelLen {
			return InvalidParams(KeyPath(field, k), fmt.Sprintf("at most %d characters", MaxLabelLen))
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

// Validator is implemented by the params of the methods whose fields have ranges
// to check beyond their types. The server checks them after decoding, before the
// Service sees them; the daemon checks them again for callers in process. A
// failed check is -32602 naming the field, and nothing is done.
type Validator interface {
	Validate() error
}

func checkID(field string, id int64) error {
	if id <= 0 {
		return InvalidParams(field, "must be a positive job id")
	}
	return nil
}

func checkIDs(field string, ids []int64, most int) error {
	if len(ids) > most {
		return InvalidParams(field, fmt.Sprintf("at most %d ids", most))
	}
	for i, id := range ids {
		if err := checkID(fmt.Sprintf("%s[%d]", field, i), id); err != nil {
			return err
		}
	}
	return nil
}

// Validate checks the id.
func (p GetParams) Validate() error { return checkID("id", p.ID) }

// Validate checks the id and the reason's length.
func (p CancelParams) Validate() error {
	if err := checkID("id", p.ID); err != nil {
		return err
	}
	if utf8.RuneCountInString(p.Reason) > MaxReasonLen {
		return InvalidParams("reason", fmt.Sprintf("at most %d characters", MaxReasonLen))
	}
	return checkString("reason", p.Reason)
}

// Validate checks the id (the timeout, when given, is positive by its type).
func (p WaitParams) Validate() error { return checkID("id", p.ID) }

// Validate checks the id.
func (p RetryParams) Validate() error { return checkID("id", p.ID) }

// Validate checks the filters and the page: known job states, a queue name that
// can exist, labels within the spec's limits, limit 0 (the default) to
// MaxListLimit, order "asc" or "desc". The cursor is the store's to read.
func (p ListParams) Validate() error {
	if err := p.Filter().Validate(""); err != nil {
		return err
	}
	if p.Limit < 0 || p.Limit > MaxListLimit {
		return InvalidParams("limit", fmt.Sprintf("must be 1 to %d", MaxListLimit))
	}
	switch p.Order {
	case "", "asc", "desc":
	default:
		return InvalidParams("order", `must be "asc" or "desc"`)
	}
	return nil
}

// Validate checks the id, the step (an index is not negative), the offset (not
// negative), the limit (0, the default, to MaxLogLimit) and the encoding.
func (p LogsParams) Validate() error {
	if err := checkID("id", p.ID); err != nil {
		return err
	}
	if p.Step.Index != nil && *p.Step.Index < 0 {
		return InvalidParams("step", "a step index must not be negative")
	}
	if p.Offset < 0 {
		return InvalidParams("offset", "must not be negative")
	}
	if p.Limit < 0 || p.Limit > MaxLogLimit {
		return InvalidParams("limit", fmt.Sprintf("must be 1 to %d", MaxLogLimit))
	}
	switch p.Encoding {
	case "", "text", "base64":
	default:
		return InvalidParams("encoding", `must be "text" or "base64"`)
	}
	switch p.Stream {
	case "", StreamAll, StreamStderr:
	default:
		return InvalidParams("stream", `must be "all" or "stderr"`)
	}
	if p.Lines < 0 {
		return InvalidParams("lines", "must not be negative")
	}
	if p.Lines > 0 && p.Offset != 0 {
		return InvalidParams("offset", "must be 0 with lines (lines reads from the start of the last lines)")
	}
	return nil
}

// Validate checks the ids: at least one, at most MaxBatch, each positive.
func (p RemoveParams) Validate() error {
	if len(p.IDs) == 0 {
		return InvalidParams("ids", "must not be empty")
	}
	return checkIDs("ids", p.IDs, MaxBatch)
}

// Validate checks that states or older_than is given, and that the states are
// final job states (older_than, when given, is positive by its type).
func (p PruneParams) Validate() error {
	if len(p.States) == 0 && p.OlderThan == 0 {
		return InvalidParams("states", "give states, older_than or both")
	}
	for i, s := range p.States {
		if s != StateSucceeded && s != StateFailed && s != StateCancelled {
			return InvalidParams(fmt.Sprintf("states[%d]", i), "must be a final state: succeeded, failed or cancelled")
		}
	}
	return nil
}

// Validate checks the ids (at most MaxWatchJobs, each positive), the heartbeat
// (at least MinHeartbeat when given) and the token's length. since is checked
// against the event log (1007).
func (p WatchParams) Validate() error {
	if err := checkIDs("jobs", p.Jobs, MaxWatchJobs); err != nil {
		return err
	}
	if p.Heartbeat != 0 && p.Heartbeat < MinHeartbeat {
		return InvalidParams("heartbeat", "must be at least "+MinHeartbeat.String())
	}
	if len(p.Token) > MaxTokenLen {
		return InvalidParams("token", fmt.Sprintf("at most %d bytes", MaxTokenLen))
	}
	return nil
}

// Validate checks the queue's name and that parallel, when given, is not
// negative (0 removes the queue's own limit).
func (p QueueSetParams) Validate() error {
	if !queueNameOK(p.Name) {
		return InvalidParams("name", "must match [a-z0-9._-]{1,64}")
	}
	if p.Parallel != nil && *p.Parallel < 0 {
		return InvalidParams("parallel", "must not be negative (0 removes the queue's own limit, null keeps it)")
	}
	if p.OnFinish != nil && p.OnFinish.Template != "" {
		if err := NormalizeOnFinish("on_finish", p.OnFinish); err != nil {
			return err
		}
	}
	return nil
}

// templateNameOK reports whether s may name a template: 1 to 64 letters, digits,
// '.', '-' or '_'.
func templateNameOK(s string) bool {
	if s == "" || len(s) > 64 {
		return false
	}
	for _, c := range s {
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '_' || c == '.' || c == '-') {
			return false
		}
	}
	return true
}

// paramNameOK reports whether s may name a template param: 1 to 64 letters,
// digits or '_', so that SPOOL_PARAM_<NAME> is an environment variable.
func paramNameOK(s string) bool {
	if s == "" || len(s) > 64 {
		return false
	}
	for _, c := range s {
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '_') {
			return false
		}
	}
	return true
}

// ParamEnv is the environment variable that carries a template param's value to
// the processes of its jobs.
func ParamEnv(name string) string { return "SPOOL_PARAM_" + strings.ToUpper(name) }

// Validate checks the name, that a spec is given, and the params: at most
// MaxTemplateParams, names of letters, digits and '_' that stay distinct once
// upper-cased (each becomes SPOOL_PARAM_<NAME>), a required param without a
// default, defaults that can be environment values. The spec itself is the
// daemon's to check, with the defaults filled in.
func (p TemplatePutParams) Validate() error {
	if !templateNameOK(p.Name) {
		return InvalidParams("name", "must be 1 to 64 letters, digits, '.', '-' or '_'")
	}
	if raw := strings.TrimSpace(string(p.Spec)); raw == "" || raw == "null" {
		return InvalidParams("spec", "is required")
	}
	if len(p.Params) > MaxTemplateParams {
		return InvalidParams("params", fmt.Sprintf("at most %d params", MaxTemplateParams))
	}
	envs := make(map[string]string, len(p.Params))
	for _, name := range sortedKeys(p.Params) {
		prm := p.Params[name]
		field := KeyPath("params", name)
		if !paramNameOK(name) {
			return InvalidParams(field, "a param name is 1 to 64 letters, digits and '_'")
		}
		if other, dup := envs[ParamEnv(name)]; dup {
			return InvalidParams(field, fmt.Sprintf("%q and %q are both %s in the environment of jobs", other, name, ParamEnv(name)))
		}
		envs[ParamEnv(name)] = name
		if prm.Required && prm.Default != nil {
			return InvalidParams(field, "a required param has no default")
		}
		if prm.Default != nil {
			if err := checkString(field+".default", *prm.Default); err != nil {
				return err
			}
		}
	}
	return nil
}

// Validate checks the name, the values of params (they become environment
// values: no NUL, at most MaxStringBytes), and what the run sets over the
// template's spec: queue, labels, after and key, with the spec's limits.
// Unknown and missing params are the daemon's to find: it knows the template.
func (p TemplateRunParams) Validate() error {
	if !templateNameOK(p.Name) {
		return InvalidParams("name", "must be 1 to 64 letters, digits, '.', '-' or '_'")
	}
	for _, name := range sortedKeys(p.Params) {
		if err := checkString(KeyPath("params", name), p.Params[name]); err != nil {
			return err
		}
	}
	if p.Queue != nil && !queueNameOK(*p.Queue) {
		return InvalidParams("queue", "must match [a-z0-9._-]{1,64}")
	}
	if err := checkLabels("labels", p.Labels); err != nil {
		return err
	}
	if err := checkIDs("after", p.After, len(p.After)); err != nil {
		return err
	}
	if p.Key != nil && utf8.RuneCountInString(*p.Key) > MaxNameLen {
		return InvalidParams("key", fmt.Sprintf("at most %d characters", MaxNameLen))
	}
	return nil
}

func sortedKeys[V any](m map[string]V) []string { return slices.Sorted(maps.Keys(m)) }
