# lambdadb — see README.md. `make help` lists the targets; `make` builds.

GO          ?= go
BIN         := bin/lambdadb
FUZZTIME    ?= 30s
# make chaos: how long the nemesis runs, its seed (0 = from the clock),
# its fault kinds (see chaos/nemesis.go) and where the report, node logs and
# visualizations go.
DURATION    ?= 15m
SEED        ?= 0
FAULTS      ?= all
CHAOS_OUT   ?= bin/chaos
# more nemesis flags, for example CHAOS_FLAGS=-keep-data
CHAOS_FLAGS ?=
NEMESIS     := bin/nemesis
STATICCHECK := honnef.co/go/tools/cmd/staticcheck@v0.8.2

.PHONY: help build run demo shop test chromium race lint fuzz chaos chaos-quick chaos-insecure chaos-quick-insecure soak soak-quick clean bench bench-quick bench-kv bench-fn bench-trigger etcd examples

build:
	$(GO) build -o $(BIN) ./cmd/lambdadb

# The example handlers, built as a user builds a handler; the shop's
# (examples/shop/handlers/*) as bin/examples/shop-<name>.wasm.
EXAMPLES := echo counter sleep indexer wordcount
SHOP_HANDLERS := reserve totals sold sizes
examples:
	@mkdir -p bin/examples
	@for e in $(EXAMPLES); do \
		echo "building bin/examples/$$e.wasm"; \
		GOOS=wasip1 GOARCH=wasm $(GO) build -buildmode=c-shared -o bin/examples/$$e.wasm ./examples/$$e || exit 1; \
	done
	@for h in $(SHOP_HANDLERS); do \
		echo "building bin/examples/shop-$$h.wasm"; \
		GOOS=wasip1 GOARCH=wasm $(GO) build -buildmode=c-shared -o bin/examples/shop-$$h.wasm ./examples/shop/handlers/$$h || exit 1; \
	done

run: build
	$(BIN) serve --addr 127.0.0.1:7070 --data ./data

# The example shop (examples/shop): three nodes on 127.0.0.1:7001-7003 and
# the shop on 127.0.0.1:8080, data in bin/demo/, a few hundred orders
# (DEMO_ORDERS); prints the URLs; Ctrl-C stops it all.
shop:
	$(GO) build -o bin/shop ./examples/shop/cmd/shop

demo: build examples shop
	@scripts/demo.sh

# The console's browser tests (console/browser_test.go) drive Debian's
# chromium through chromedp; install it when missing (as root: no sudo).
chromium:
	@command -v chromium >/dev/null || (apt-get update && apt-get install -y chromium)

test: chromium
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

# LambdaBench (bench/, docs/benchmarks.md): every scenario, the paper's
# experiments, the KV paths against etcd 3.4 and secure mode against
# insecure (kv-secure), in one run. Writes
# bench/results/<UTC timestamp>/{report.json,report.md,*.svg}; progress on
# stderr. bench: full sizes (about 20 minutes, at most 30; kv-secure is about
# 6 of them); bench-quick: the same scenarios at small sizes (about 8 minutes). BENCH_FLAGS adds flags,
# e.g. BENCH_FLAGS='-scenarios burst,billing'.
BENCH_FLAGS ?=
bench: build examples etcd
	$(GO) run ./bench/cmd/lambdabench -bin $(BIN) $(BENCH_FLAGS)

bench-quick: build examples etcd
	$(GO) run ./bench/cmd/lambdabench -quick -bin $(BIN) $(BENCH_FLAGS)

# KV benchmark: a 3-node lambdadb cluster and a 3-member etcd 3.4 cluster on
# loopback, same load (BENCH_CLIENTS clients, 256-byte values), one after the
# other in the same run. Installs Debian's etcd-server when etcd is missing.
BENCH_DURATION ?= 10s
BENCH_CLIENTS  ?= 64
bench-kv: build etcd examples
	$(GO) run ./bench/cmd/lambdabench -scenarios kv-put,kv-get -bin $(BIN) -duration $(BENCH_DURATION) -clients $(BENCH_CLIENTS)

# Function benchmarks: sandbox start by state, the 60/100-call burst,
# paused sandboxes per GiB, and warm invocations over loopback HTTP.
bench-fn:
	$(GO) test ./lambda -run '^$$' -bench 'Start|Burst|PausedPerGiB' -benchtime 10x
	$(GO) test ./server -run '^$$' -bench InvokeHTTP -benchtime 5000x

# Change delivery on 3 nodes: feed latency (vs etcd watch), put → handler
# latency, invocations and sandbox starts per 1,000 changes over a steady
# stream of TRIGGER_CHANGES changes (500/s) per sandbox state.
TRIGGER_CHANGES ?= 20000
bench-trigger: build etcd examples
	$(GO) run ./bench/cmd/lambdabench -scenarios trigger -bin $(BIN) -changes $(TRIGGER_CHANGES)

etcd:
	@command -v etcd >/dev/null 2>&1 || { \
		echo "installing etcd-server (Debian)"; \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq etcd-server >/dev/null; }

# The nemesis: `lambdadb serve` processes (three at the start; nodes join,
# are decommissioned and removed) under faults and load; the history is
# checked for linearizability, lost writes, session guarantees and
# convergence, and the final placement for R replicas per shard on the
# remaining members. Exits non-zero on any violation. See docs/testing.md.
$(NEMESIS): build
	$(GO) build -o $(NEMESIS) ./chaos/cmd/nemesis

# Both run the cluster in secure mode (TLS, cluster secret, admin token);
# the -insecure variants run the same in plain HTTP, for comparison.
chaos: $(NEMESIS) examples
	$(NEMESIS) -bin $(BIN) -secure -duration $(DURATION) -seed $(SEED) -faults $(FAULTS) $(CHAOS_FLAGS) -out $(CHAOS_OUT)

chaos-insecure: $(NEMESIS) examples
	$(NEMESIS) -bin $(BIN) -duration $(DURATION) -seed $(SEED) -faults $(FAULTS) $(CHAOS_FLAGS) -out $(CHAOS_OUT)/insecure

# CI-sized: under 3 minutes including the build. The first fault is a
# join, so replicas move under the faults that follow; membership faults
# stop 50 s before the end so that their moves finish within the run.
CHAOS_QUICK := -duration 100s -hold 5s -quiet 2s -membership-cutoff 50s -settle-timeout 90s -seed $(SEED) -faults $(FAULTS) $(CHAOS_FLAGS)

chaos-quick: $(NEMESIS) examples
	$(NEMESIS) -bin $(BIN) -secure $(CHAOS_QUICK) -out $(CHAOS_OUT)/quick

chaos-quick-insecure: $(NEMESIS) examples
	$(NEMESIS) -bin $(BIN) $(CHAOS_QUICK) -out $(CHAOS_OUT)/quick-insecure

# The soak: every flood of careless and hostile clients at once against one
# `lambdadb serve` (idle long polls, never-reading WebSockets, stalled
# uploads, writers), then 1,000 writers against three; asserts the node's
# memory bound and that every acknowledged write reads back (soak/).
# SOAK_DURATION: how long the one-node floods last (default 3m; the
# three-node flood lasts half as long).
SOAK_DURATION ?= 3m
soak: build
	LAMBDADB_BIN=$(abspath $(BIN)) SOAK_DURATION=$(SOAK_DURATION) $(GO) test -tags soak -count=1 -timeout 60m -v ./soak/

soak-quick: build
	LAMBDADB_BIN=$(abspath $(BIN)) SOAK_DURATION=40s $(GO) test -tags soak -count=1 -timeout 15m -v ./soak/

clean:
	rm -rf bin

help:
	@echo "targets: build run demo test race lint fuzz chaos chaos-quick chaos-insecure chaos-quick-insecure soak soak-quick bench bench-quick bench-kv bench-fn bench-trigger examples etcd clean"
	@echo "  build  write $(BIN)"
	@echo "  run    build, then serve one node on 127.0.0.1:7070 with data in ./data"
	@echo "  demo   the example shop: 3 nodes and the shop on 127.0.0.1:8080 (data in bin/demo/), orders loaded; Ctrl-C stops it"
	@echo "  test   go test ./... (fuzz seed corpora included)"
	@echo "  race   go test -race ./..."
	@echo "  lint   gofmt check, go vet, staticcheck"
	@echo "  fuzz   run every Fuzz target for FUZZTIME (default 30s) each"
	@echo "  chaos  nemesis run for DURATION (default 15m), cluster in secure mode: faults, porcupine check, report in $(CHAOS_OUT)"
	@echo "  chaos-quick  the same in CI time (100s of faults)"
	@echo "  chaos-insecure, chaos-quick-insecure  the same with the cluster in plain HTTP, no tokens"
	@echo "  bench  LambdaBench, every scenario at full size (~10 min): report and plots in bench/results/<timestamp>"
	@echo "  bench-quick  the same scenarios at small sizes (~6 min)"
	@echo "  bench-kv  3-node lambdadb vs 3-member etcd: puts and gets (BENCH_DURATION, BENCH_CLIENTS)"
	@echo "  bench-fn  function benchmarks: sandbox starts by state, bursts, density, warm invoke over HTTP"
	@echo "  bench-trigger  3 nodes: feed latency vs etcd watch, put→handler latency, trigger delivery rate"
	@echo "  examples  build the example handlers into bin/examples/*.wasm"
	@echo "  etcd  install Debian's etcd-server (etcd 3.4) if etcd is missing"
	@echo "  clean  remove bin/"
