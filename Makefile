# lambdadb — see README.md. `make help` lists the targets; `make` builds.

GO          ?= go
BIN         := bin/lambdadb
FUZZTIME    ?= 30s
STATICCHECK := honnef.co/go/tools/cmd/staticcheck@v0.8.2

.PHONY: help build run test race lint fuzz clean

build:
	$(GO) build -o $(BIN) ./cmd/lambdadb

run: build
	$(BIN) serve --addr 127.0.0.1:7070 --data ./data

test:
	$(GO) test -count=1 -timeout 15m ./...

race:
	$(GO) test -race -count=1 -timeout 15m ./...

lint:
	@out="$$(gofmt -l .)"; if [ -n "$$out" ]; then echo "gofmt needed:"; echo "$$out"; exit 1; fi
	$(GO) vet ./...
	$(GO) run $(STATICCHECK) ./...

# Each Fuzz target runs on its own: go test -fuzz accepts one target at a time.
fuzz:
	@set -e; for pkg in $$($(GO) list ./...); do \
		for fn in $$($(GO) test -list '^Fuzz' $$pkg | grep '^Fuzz' || true); do \
			echo "== $$pkg $$fn"; \
			$(GO) test -run '^$$' -fuzz "^$$fn\$$" -fuzztime $(FUZZTIME) $$pkg; \
		done; \
	done

clean:
	rm -rf bin

help:
	@echo "targets: build run test race lint fuzz clean"
	@echo "  build  write $(BIN)"
	@echo "  run    build, then serve one node on 127.0.0.1:7070 with data in ./data"
	@echo "  test   go test ./... (fuzz seed corpora included)"
	@echo "  race   go test -race ./..."
	@echo "  lint   gofmt check, go vet, staticcheck"
	@echo "  fuzz   run every Fuzz target for FUZZTIME (default 30s) each"
	@echo "  clean  remove bin/"
