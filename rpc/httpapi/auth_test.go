package httpapi_test

import (
	"encoding/json"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"testing"

	"github.com/matryer/is"

	"spool/rpc"
	"spool/rpc/httpapi"
)

// openAPIDoc is the part of openapi.json the tests read.
type openAPIDoc struct {
	Paths map[string]map[string]struct {
		Security *[]any `json:"security"`
		Scope    string `json:"x-spool-scope"`
	} `json:"paths"`
}

func readOpenAPI(t *testing.T) openAPIDoc {
	t.Helper()
	b, err := os.ReadFile("openapi.json")
	if err != nil {
		t.Fatal(err)
	}
	var doc openAPIDoc
	if err := json.Unmarshal(b, &doc); err != nil {
		t.Fatalf("openapi.json: %v", err)
	}
	return doc
}

// request sends one request with an Authorization header (none when auth is "").
func (h *harness) request(method, path, auth, body string) (int, []byte) {
	h.t.Helper()
	req, err := http.NewRequest(method, h.srv.URL+path, strings.NewReader(body))
	if err != nil {
		h.t.Fatal(err)
	}
	if auth != "" {
		req.Header.Set("Authorization", auth)
	}
	res, err := h.srv.Client().Do(req)
	if err != nil {
		h.t.Fatalf("%s %s: %v", method, path, err)
	}
	defer res.Body.Close()
	b, _ := io.ReadAll(res.Body)
	return res.StatusCode, b
}

// TestEveryRouteNeedsAToken sends every route of openapi.json without a token,
// with a wrong one, and with a token of another scheme: each is refused 401
// before it reaches the service. The two routes that take none (/healthz and the
// dashboard's static files) are declared so and tell nothing.
func TestEveryRouteNeedsAToken(t *testing.T) {
	h := newHarness(t, harnessOpts{})
	j := h.submit(`{"env":{"K":"secret-value"},"steps":[{"sleep":{"duration":"10ms"}}]}`)
	doc := readOpenAPI(t)
	for path, ops := range doc.Paths {
		for verb, op := range ops {
			method := strings.ToUpper(verb)
			open := op.Security != nil && len(*op.Security) == 0
			t.Run(method+" "+path, func(t *testing.T) {
				is := is.New(t)
				body := `{"id":` + itoa(j.ID) + `}`
				for _, auth := range []string{"", "Bearer wrong-token-0123456789", "Bearer " + writeToken + "x", "Basic " + writeToken, writeToken} {
					code, b := h.request(method, path, auth, body)
					if open {
						is.True(code == 200 || code == 503)             // an open route answers
						is.True(!strings.Contains(string(b), "secret")) // and tells nothing of jobs
						continue
					}
					is.Equal(code, http.StatusUnauthorized) // refused without a valid token
					is.Equal(apiError(t, b).Code, rpc.CodeInvalidRequest)
					is.True(!strings.Contains(string(b), "secret-value")) // nothing leaks
				}
			})
		}
	}
	var after rpc.Job
	h.call("job.get", `{"id":`+itoa(j.ID)+`}`, &after)
	is.New(t).Equal(after.ID, j.ID) // refused calls removed or changed nothing
	select {
	case <-h.d.Stopped():
		t.Fatal("an unauthenticated request stopped the daemon")
	default:
	}
}

// TestOpenAPIMatchesHandlers checks openapi.json against the handlers: every
// method has a path, and every path reaches a handler of its own (not the
// catch-all 404). Methods that change something are called with a read token,
// which their handler refuses (403) without running them.
func TestOpenAPIMatchesHandlers(t *testing.T) {
	is := is.New(t)
	h := newHarness(t, harnessOpts{})
	doc := readOpenAPI(t)
	served := OpenAPIServed(t, h)
	is.Equal(served, string(httpapi.OpenAPI())) // the served description is the file

	methods := h.api.Methods()
	sort.Strings(methods)
	is.Equal(len(methods), 34) // every protocol method but job.watch, which is a stream
	for _, m := range methods {
		op, ok := doc.Paths["/api/v1/"+m]["post"]
		is.True(ok) // every method has a path
		want := "read"
		code, b := h.request("POST", "/api/v1/"+m, "Bearer "+readToken, `[]`)
		if code == http.StatusForbidden {
			want = "write"
		} else {
			is.Equal(code, http.StatusBadRequest)                // read methods decode their params
			is.Equal(apiError(t, b).Code, rpc.CodeInvalidParams) // params must be an object
		}
		is.Equal(op.Scope, want) // the description says which token a method needs
	}
	_, ok := doc.Paths["/api/v1/watch"]["get"]
	is.True(ok) // job.watch is described
	for path, ops := range doc.Paths {
		for verb := range ops {
			target := path
			if path == "/api/v1/watch" {
				target += "?jobs=999999" // answered 1001 at once, not a stream
			}
			code, b := h.request(strings.ToUpper(verb), target, "Bearer "+readToken, `{"jobs":[]}`)
			if code == http.StatusNotFound {
				is.True(apiError(t, b).Code != rpc.CodeMethodNotFound) // the path has a handler
			}
		}
	}
	code, _ := h.request("POST", "/api/v1/job.nothing", "Bearer "+readToken, `{}`)
	is.Equal(code, http.StatusNotFound) // and a path not described has none
}

// OpenAPIServed reads /api/v1/openapi.json.
func OpenAPIServed(t *testing.T, h *harness) string {
	code, b := h.request("GET", "/api/v1/openapi.json", "Bearer "+readToken, "")
	if code != 200 {
		t.Fatalf("openapi.json: %d", code)
	}
	return string(b)
}

// TestTokenFile checks the token file's rules: 0600 only, scopes, length.
func TestTokenFile(t *testing.T) {
	is := is.New(t)
	dir := t.TempDir()
	path := filepath.Join(dir, "tokens")
	is.NoErr(os.WriteFile(path, []byte("# tokens\nwrite-0123456789abcdef\nread  read-0123456789abcdef\n"), 0o644))
	_, err := httpapi.ReadTokenFile(path)
	is.True(err != nil && strings.Contains(err.Error(), "chmod 600")) // a looser mode is refused, saying what to do
	is.NoErr(os.Chmod(path, 0o600))
	toks, err := httpapi.ReadTokenFile(path)
	is.NoErr(err)
	is.Equal(len(toks), 2)                      // both lines
	is.Equal(toks[0].Scope, httpapi.ScopeWrite) // a bare token may write
	is.Equal(toks[1].Scope, httpapi.ScopeRead)  // "read TOKEN" may only read
	is.NoErr(os.WriteFile(path, []byte("short\n"), 0o600))
	_, err = httpapi.ReadTokenFile(path)
	is.True(err != nil && strings.Contains(err.Error(), "line 1")) // a weak token is refused, naming its line

	gen := filepath.Join(dir, "gen")
	toks, err = httpapi.EnsureTokenFile(gen)
	is.NoErr(err)
	fi, err := os.Stat(gen)
	is.NoErr(err)
	is.Equal(fi.Mode().Perm(), os.FileMode(0o600)) // a made token file is private
	again, err := httpapi.EnsureTokenFile(gen)
	is.NoErr(err)
	is.Equal(again[0].Secret, toks[0].Secret) // and kept across restarts
	is.True(len(toks[0].Secret) >= 32)        // and strong
}
