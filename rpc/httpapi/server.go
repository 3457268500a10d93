// Package httpapi serves spool's protocol over HTTP: a JSON API with one path per
// method (POST /api/v1/<method>), job.watch as Server-Sent Events, an OpenAPI
// description, Prometheus metrics, a health check and a dashboard embedded in the
// binary. It adapts any rpc.Service, as the socket server does, with the same
// strict params, size limit and error codes; every data route takes a bearer
// token, read-only or read-write (see Token).
//
// It imports rpc, rpc/codec and rpc/server (the socket's defaults), and
// prometheus/client_golang; spoold imports it.
package httpapi

import (
	"context"
	"crypto/sha256"
	"crypto/subtle"
	"embed"
	"errors"
	"io/fs"
	"log/slog"
	"net"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"spool/rpc"
	"spool/rpc/codec"
	"spool/rpc/server"
)

// Defaults of Config.
const (
	DefaultMaxMessage = server.DefaultMaxMessage
	DefaultWriteStall = server.DefaultWriteStall
	// DefaultMaxStreams bounds the watch streams open at once; past it a watch
	// answers 1005, as the socket does past its watches.
	DefaultMaxStreams = 1024
)

// Config configures a Server.
type Config struct {
	// Service answers the requests.
	Service rpc.Service
	// Tokens are the bearer tokens accepted; at least one.
	Tokens []Token
	// MaxMessage is the largest request body read, in bytes (default 1 MiB).
	MaxMessage int64
	// WriteStall ends a response whose writes have been blocked this long (default
	// 60s): a client that stops reading a watch stream.
	WriteStall time.Duration
	// MaxStreams bounds the watch streams open at once (default 1024).
	MaxStreams int
	// Health answers /healthz; nil: always healthy.
	Health func(context.Context) error
	// Metrics is served on /metrics; nil: no metrics route.
	Metrics *Metrics
	// Logger receives refused requests and internal errors, never payloads.
	Logger *slog.Logger
}

// Scope is what a token allows.
type Scope int

// Scopes of tokens.
const (
	// ScopeRead reads jobs, logs, queues, templates and events; environment values
	// and HTTP header values in the jobs and templates it reads are redacted.
	ScopeRead Scope = iota + 1
	// ScopeWrite may call every method and sees jobs as they are stored.
	ScopeWrite
)

// String names the scope as token files do.
func (s Scope) String() string {
	if s == ScopeWrite {
		return "write"
	}
	return "read"
}

// Token is one accepted bearer token and what it allows.
type Token struct {
	Secret string
	Scope  Scope
}

// Server is the HTTP face of a Service. It is an http.Handler.
type Server struct {
	cfg     Config
	log     *slog.Logger
	dec     *codec.Decoder
	mux     *http.ServeMux
	methods map[string]method
	tokens  []tokenHash

	streams atomic.Int64
	mu      sync.Mutex
	watches map[string]*stream // open watch streams by token
}

type tokenHash struct {
	sum   [32]byte
	scope Scope
}

//go:embed ui
var uiFiles embed.FS

//go:embed openapi.json
var openAPI []byte

// OpenAPI returns the OpenAPI description the server serves.
func OpenAPI() []byte { return append([]byte(nil), openAPI...) }

// New returns a server for cfg, with defaults filled in. It refuses a config
// without tokens: every data route needs one.
func New(cfg Config) (*Server, error) {
	if cfg.Service == nil {
		return nil, errors.New("httpapi: no service")
	}
	if len(cfg.Tokens) == 0 {
		return nil, errors.New("httpapi: no token: every route that serves data needs one")
	}
	if cfg.MaxMessage <= 0 {
		cfg.MaxMessage = DefaultMaxMessage
	}
	if cfg.WriteStall <= 0 {
		cfg.WriteStall = DefaultWriteStall
	}
	if cfg.MaxStreams <= 0 {
		cfg.MaxStreams = DefaultMaxStreams
	}
	log := cfg.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	s := &Server{cfg: cfg, log: log, dec: codec.NewDecoder(), mux: http.NewServeMux(), watches: map[string]*stream{}}
	for _, t := range cfg.Tokens {
		if t.Secret == "" || (t.Scope != ScopeRead && t.Scope != ScopeWrite) {
			return nil, errors.New("httpapi: a token is empty or has no scope")
		}
		s.tokens = append(s.tokens, tokenHash{sum: sha256.Sum256([]byte(t.Secret)), scope: t.Scope})
	}
	s.methods = methods(cfg.Service, s.dec)
	s.routes()
	return s, nil
}

// routes lists every route; openapi_test.go checks them against openapi.json.
func (s *Server) routes() {
	s.mux.HandleFunc("POST /api/v1/{method}", s.auth(ScopeRead, s.call))
	s.mux.HandleFunc("GET /api/v1/watch", s.auth(ScopeRead, s.watch))
	s.mux.HandleFunc("GET /api/v1/openapi.json", s.auth(ScopeRead, s.openapi))
	if s.cfg.Metrics != nil {
		s.mux.Handle("GET /metrics", s.auth(ScopeRead, s.cfg.Metrics.handler().ServeHTTP))
	}
	s.mux.HandleFunc("GET /healthz", s.healthz)
	ui, _ := fs.Sub(uiFiles, "ui")
	files := http.FileServerFS(ui)
	notFound := s.auth(ScopeRead, s.notFound)
	s.mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		if strings.HasPrefix(r.URL.Path, "/api/") || r.URL.Path == "/metrics" {
			notFound(w, r)
			return
		}
		if r.Method != http.MethodGet && r.Method != http.MethodHead {
			w.Header().Set("Allow", "GET, HEAD")
			writeError(w, http.StatusMethodNotAllowed, &rpc.Error{Code: rpc.CodeInvalidRequest, Message: "the dashboard's files are read with GET"})
			return
		}
		w.Header().Set("Content-Security-Policy", "default-src 'self'; connect-src 'self'; img-src 'self' data:; frame-ancestors 'none'")
		w.Header().Set("X-Content-Type-Options", "nosniff")
		w.Header().Set("Referrer-Policy", "no-referrer")
		files.ServeHTTP(w, r)
	})
}

// ServeHTTP serves one request.
func (s *Server) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	s.mux.ServeHTTP(w, r)
}

type scopeKey struct{}

// auth checks the bearer token before h: a request without one, or with one that
// is not accepted, is 401 and reaches nothing.
func (s *Server) auth(need Scope, h http.HandlerFunc) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Cache-Control", "no-store")
		scope := s.scopeOf(r)
		if scope == 0 {
			w.Header().Set("WWW-Authenticate", `Bearer realm="spool"`)
			s.log.Warn("http: refused a request without a valid token", "path", r.URL.Path, "remote", r.RemoteAddr)
			writeError(w, http.StatusUnauthorized, &rpc.Error{Code: rpc.CodeInvalidRequest, Message: "unauthorized: send Authorization: Bearer <token>"})
			return
		}
		if scope < need {
			writeError(w, http.StatusForbidden, &rpc.Error{Code: rpc.CodeInvalidRequest, Message: "forbidden: this token may only read"})
			return
		}
		h(w, r.WithContext(context.WithValue(r.Context(), scopeKey{}, scope)))
	}
}

// scopeOf returns the scope of the request's bearer token, or 0. Every accepted
// token is compared, in constant time, whatever matched.
func (s *Server) scopeOf(r *http.Request) Scope {
	h := r.Header.Get("Authorization")
	scheme, tok, ok := strings.Cut(h, " ")
	if !ok || !strings.EqualFold(scheme, "Bearer") {
		return 0
	}
	sum := sha256.Sum256([]byte(strings.TrimSpace(tok)))
	var got Scope
	for _, t := range s.tokens {
		if subtle.ConstantTimeCompare(sum[:], t.sum[:]) == 1 && t.scope > got {
			got = t.scope
		}
	}
	return got
}

func scopeFrom(ctx context.Context) Scope {
	s, _ := ctx.Value(scopeKey{}).(Scope)
	return s
}

func (s *Server) openapi(w http.ResponseWriter, _ *http.Request) {
	w.Header().Set("Content-Type", "application/json")
	w.Write(openAPI)
}

func (s *Server) notFound(w http.ResponseWriter, r *http.Request) {
	if name, ok := strings.CutPrefix(r.URL.Path, "/api/v1/"); ok {
		if _, known := s.methods[name]; known || name == rpc.MethodUnwatch {
			w.Header().Set("Allow", "POST")
			writeError(w, http.StatusMethodNotAllowed, &rpc.Error{Code: rpc.CodeInvalidRequest, Message: name + " is called with POST"})
			return
		}
	}
	if r.URL.Path == "/api/v1/watch" || r.URL.Path == "/api/v1/openapi.json" || r.URL.Path == "/metrics" {
		w.Header().Set("Allow", "GET")
		writeError(w, http.StatusMethodNotAllowed, &rpc.Error{Code: rpc.CodeInvalidRequest, Message: r.URL.Path + " is read with GET"})
		return
	}
	writeError(w, http.StatusNotFound, &rpc.Error{Code: rpc.CodeMethodNotFound, Message: "no such route: " + r.Method + " " + r.URL.Path})
}

// healthz answers 200 "ok" when Health passes, 503 otherwise. It takes no token,
// so that a load balancer can ask, and says nothing else.
func (s *Server) healthz(w http.ResponseWriter, r *http.Request) {
	w.Header().Set("Cache-Control", "no-store")
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	if s.cfg.Health != nil {
		ctx, cancel := context.WithTimeout(r.Context(), 5*time.Second)
		defer cancel()
		if err := s.cfg.Health(ctx); err != nil {
			s.log.Warn("http: health check failed", "err", err)
			w.WriteHeader(http.StatusServiceUnavailable)
			w.Write([]byte("unavailable\n"))
			return
		}
	}
	w.Write([]byte("ok\n"))
}

// IsLoopback reports whether addr (host:port) names a loopback address only:
// "localhost", 127.0.0.0/8 or ::1. An empty host (all interfaces) is not.
func IsLoopback(addr string) bool {
	host, _, err := net.SplitHostPort(addr)
	if err != nil {
		return false
	}
	if host == "localhost" {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}
