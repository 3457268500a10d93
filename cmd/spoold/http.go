package main

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"spool/daemon"
	"spool/rpc/httpapi"
)

// checkHTTPFlags refuses --http settings that would expose the daemon: any
// address but loopback needs TLS and a token file.
func checkHTTPFlags(o *options) error {
	if o.httpAddr == "" {
		if o.httpTLSCert != "" || o.httpTLSKey != "" || o.httpTokenFile != "" {
			return errors.New("--http-tls-cert, --http-tls-key and --http-token-file need --http ADDR")
		}
		return nil
	}
	if _, _, err := net.SplitHostPort(o.httpAddr); err != nil {
		return fmt.Errorf("--http: want host:port such as 127.0.0.1:8080, got %q", o.httpAddr)
	}
	if (o.httpTLSCert == "") != (o.httpTLSKey == "") {
		return errors.New("--http-tls-cert and --http-tls-key go together: give both or neither")
	}
	if httpapi.IsLoopback(o.httpAddr) {
		return nil
	}
	var missing []string
	if o.httpTLSCert == "" {
		missing = append(missing, "--http-tls-cert", "--http-tls-key")
	}
	if o.httpTokenFile == "" {
		missing = append(missing, "--http-token-file")
	}
	if len(missing) > 0 {
		return fmt.Errorf("--http %s is not a loopback address: serving the network needs TLS and a token file (missing %s); or use 127.0.0.1:PORT",
			o.httpAddr, strings.Join(missing, ", "))
	}
	return nil
}

// httpFace is spoold's HTTP server: the API, the dashboard and the metrics.
type httpFace struct {
	ln        net.Listener
	metrics   *httpapi.Metrics
	tokens    []httpapi.Token
	tokenFile string
	tls       *tls.Config
	srv       *http.Server
	log       *slog.Logger
}

// newHTTPFace reads the tokens and the certificate and listens, before the daemon
// is made.
func newHTTPFace(o *options, commits func() uint64, log *slog.Logger) (*httpFace, error) {
	h := &httpFace{log: log, tokenFile: o.httpTokenFile}
	var err error
	if h.tokenFile != "" {
		h.tokens, err = httpapi.ReadTokenFile(h.tokenFile)
	} else {
		h.tokenFile = filepath.Join(o.stateDir, "http-token")
		h.tokens, err = httpapi.EnsureTokenFile(h.tokenFile)
	}
	if err != nil {
		return nil, fmt.Errorf("--http-token-file: %w", err)
	}
	if o.httpTLSCert != "" {
		cert, err := tls.LoadX509KeyPair(o.httpTLSCert, o.httpTLSKey)
		if err != nil {
			return nil, fmt.Errorf("--http-tls-cert/--http-tls-key: %w", err)
		}
		h.tls = &tls.Config{Certificates: []tls.Certificate{cert}, MinVersion: tls.VersionTLS12}
	}
	h.metrics = httpapi.NewMetrics(httpapi.MetricsConfig{Commits: commits})
	if h.ln, err = net.Listen("tcp", o.httpAddr); err != nil {
		return nil, fmt.Errorf("--http: %w", err)
	}
	return h, nil
}

// serveDaemon builds the handler for d.
func (h *httpFace) serveDaemon(d *daemon.Daemon, o *options) error {
	h.metrics.SetService(d, func() httpapi.Stats { return httpapi.Stats{Watchers: d.Stats().Watchers} })
	api, err := httpapi.New(httpapi.Config{
		Service: d, Tokens: h.tokens, MaxMessage: o.maxMessage, WriteStall: o.writeStall,
		Health: d.Health, Metrics: h.metrics, Logger: h.log,
	})
	if err != nil {
		return err
	}
	h.srv = &http.Server{
		Handler: api, TLSConfig: h.tls, ConnState: h.metrics.ConnState,
		ReadHeaderTimeout: 10 * time.Second, IdleTimeout: 2 * time.Minute,
		ErrorLog: slog.NewLogLogger(h.log.Handler(), slog.LevelWarn),
	}
	return nil
}

// run serves until ctx is done, with the metrics' follower of the event log
// beside it; then open streams are ended and the server closed.
func (h *httpFace) run(ctx context.Context) error {
	if h.tls != nil {
		h.log.Info("http: serving with TLS", "addr", h.ln.Addr().String(), "token_file", h.tokenFile)
	} else {
		h.log.Info("http: serving", "addr", h.ln.Addr().String(), "token_file", h.tokenFile)
	}
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	h.srv.BaseContext = func(net.Listener) context.Context { return ctx } // ends streams with the daemon
	var wg sync.WaitGroup
	wg.Go(func() { _ = h.metrics.Follow(ctx) })
	errc := make(chan error, 1)
	go func() {
		var err error
		if h.tls != nil {
			err = h.srv.ServeTLS(h.ln, "", "")
		} else {
			err = h.srv.Serve(h.ln)
		}
		if errors.Is(err, http.ErrServerClosed) {
			err = nil
		}
		errc <- err
	}()
	var err error
	select {
	case <-ctx.Done():
	case err = <-errc:
	}
	cancel()
	sctx, scancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer scancel()
	if h.srv.Shutdown(sctx) != nil {
		h.srv.Close()
	}
	wg.Wait()
	if err != nil {
		return fmt.Errorf("http: %w", err)
	}
	return nil
}
