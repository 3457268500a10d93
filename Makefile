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

bench: build
	$(GO) test -run '^$$' -bench . -benchtime 1x ./store/ ./daemon/

fmt:
	gofmt -w $$(git ls-files '*.go')

clean:
	rm -rf $(BIN)
