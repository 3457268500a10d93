GO ?= go
BIN := bin

# install: where the binaries, completions and systemd user units go. DESTDIR is
# prepended to every path (for packaging); ExecStart names the path without it.
PREFIX ?= $(HOME)/.local
BINDIR ?= $(PREFIX)/bin
DATADIR ?= $(PREFIX)/share
UNITDIR ?= $(or $(XDG_CONFIG_HOME),$(HOME)/.config)/systemd/user

.PHONY: build run test test-short bench vet fmt clean install uninstall

build:
	CGO_ENABLED=0 $(GO) build -o $(BIN)/ ./cmd/spoold ./cmd/spool

# run: build and start spoold in the foreground with the default paths. make's
# own variables stay out of the daemon's environment, which its jobs inherit
# (a job running make would otherwise think it is a sub-make).
run: build
	env -u MAKELEVEL -u MAKEFLAGS -u MFLAGS -u MAKEOVERRIDES $(BIN)/spoold

# test: every test, with the race detector; it ends with the tests that skipped
# and why (cmd/testskips reads go test -json), and exits as go test did.
test:
	$(GO) vet ./...
	@rc=$$(mktemp); trap 'rm -f $$rc' EXIT; \
	{ $(GO) test -race -count=1 -timeout 20m -json ./...; echo $$? > $$rc; } | $(GO) run ./cmd/testskips; \
	exit $$(cat $$rc)

# bench: the side-by-side harness (cmd/spoolbench): every figure of the performance
# targets against the machine's floor and task-spooler, in one run, as one table.
# BENCHFLAGS=-quick for a short run; BENCHFLAGS='-only e2e,cli' for some figures.
# The store's micro-benchmarks: go test -run '^$$' -bench . ./store/
bench:
	$(GO) run ./cmd/spoolbench $(BENCHFLAGS)

fmt:
	gofmt -w $$(git ls-files '*.go')

clean:
	rm -rf $(BIN)

# install: bin/spoold and bin/spool in $(BINDIR), shell completions under
# $(DATADIR), and the systemd user units in $(UNITDIR) with ExecStart rewritten
# to the installed spoold.
install: build
	install -d -m 0755 $(DESTDIR)$(BINDIR) $(DESTDIR)$(UNITDIR) \
		$(DESTDIR)$(DATADIR)/bash-completion/completions \
		$(DESTDIR)$(DATADIR)/zsh/site-functions \
		$(DESTDIR)$(DATADIR)/fish/vendor_completions.d
	install -m 0755 $(BIN)/spoold $(BIN)/spool $(DESTDIR)$(BINDIR)/
	$(BIN)/spool completion bash > $(DESTDIR)$(DATADIR)/bash-completion/completions/spool
	$(BIN)/spool completion zsh > $(DESTDIR)$(DATADIR)/zsh/site-functions/_spool
	$(BIN)/spool completion fish > $(DESTDIR)$(DATADIR)/fish/vendor_completions.d/spool.fish
	sed 's|^ExecStart=.*|ExecStart=$(BINDIR)/spoold|' cmd/spoold/spoold.service > $(DESTDIR)$(UNITDIR)/spoold.service
	install -m 0644 cmd/spoold/spoold.socket $(DESTDIR)$(UNITDIR)/spoold.socket
	chmod 0644 $(DESTDIR)$(UNITDIR)/spoold.service \
		$(DESTDIR)$(DATADIR)/bash-completion/completions/spool \
		$(DESTDIR)$(DATADIR)/zsh/site-functions/_spool \
		$(DESTDIR)$(DATADIR)/fish/vendor_completions.d/spool.fish
	@echo 'installed; to start spoold on demand:'
	@echo '  systemctl --user daemon-reload && systemctl --user enable --now spoold.socket'

uninstall:
	rm -f $(DESTDIR)$(BINDIR)/spoold $(DESTDIR)$(BINDIR)/spool \
		$(DESTDIR)$(UNITDIR)/spoold.service $(DESTDIR)$(UNITDIR)/spoold.socket \
		$(DESTDIR)$(DATADIR)/bash-completion/completions/spool \
		$(DESTDIR)$(DATADIR)/zsh/site-functions/_spool \
		$(DESTDIR)$(DATADIR)/fish/vendor_completions.d/spool.fish

.PHONY: crash fuzz

# crash: the crash matrices and the red-team suite (cmd/spoold/redteam_test.go) with
# more rounds than `make test` runs: SIGKILL at random moments (during starts too)
# while clients submit, cancel and retry, with the invariants checked after each
# restart; containment, timeouts, cancels racing ends, shutdown answers. The
# cluster matrix (TestCrashMatrixCluster) does it to three spoold on one PostgreSQL.
# CRASH_SEED=N replays the random choices of the crash matrices (see their logs).
CRASH_ROUNDS ?= 30
CRASH_JOBS ?= 40
crash:
	SPOOL_CRASH_ROUNDS=$(CRASH_ROUNDS) SPOOL_CRASH_JOBS=$(CRASH_JOBS) SPOOL_CRASH_SEED=$(CRASH_SEED) \
		$(GO) test -race -count=1 -timeout 120m -run '^(TestCrashMatrix.*|TestRedTeam.*)$$' -v ./cmd/spoold/

# fuzz: each fuzz target for FUZZTIME; the seed corpora under testdata/fuzz run
# with every `go test`. New failing inputs land in testdata/fuzz: commit them.
# The budget is a count of inputs, not a duration: a duration-based -fuzztime
# races the Go fuzz coordinator's own deadline and can fail a target with a
# bare "context deadline exceeded" having found nothing (golang/go#75804).
FUZZTIME ?= 100000x
FUZZ_TARGETS := rpc/server:FuzzNewlineFraming rpc/server:FuzzLSPFraming rpc/codec:FuzzDecodeParams \
	rpc/codec:FuzzSpec rpc/codec:FuzzLenient rpc:FuzzEncodeJob rpc:FuzzEncodeEvent \
	daemon:FuzzParseProgress daemon:FuzzExpandTemplate
fuzz:
	@set -e; log=$$(mktemp); trap 'rm -f $$log' EXIT; \
	for t in $(FUZZ_TARGETS); do \
		pkg=$${t%%:*}; name=$${t##*:}; \
		echo "== $$name ($$pkg), $(FUZZTIME)"; \
		$(GO) test -run '^$$' -fuzz "^$$name$$" -fuzztime $(FUZZTIME) ./$$pkg/ > $$log 2>&1 || { cat $$log; exit 1; }; \
		grep '^fuzz: elapsed' $$log | tail -1; tail -1 $$log; \
	done
