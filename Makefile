GO ?= go
BIN := bin

.PHONY: build run test test-short bench vet fmt clean install

build:
	$(GO) build -o $(BIN)/ ./cmd/...

# run: build and start spoold in the foreground with the default paths.
run: build
	$(BIN)/spoold

# test: every test, with the race detector.
test:
	$(GO) vet ./...
	$(GO) test -race -count=1 -timeout 20m ./...

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
