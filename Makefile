# The two set-up commands are `make run` and `make test` (README.md).
GO        ?= go
BIN       := bin/gateway
DATA_DIR  ?= ./data
FUZZTIME  ?= 30s
VERSION   ?= $(shell git describe --always --dirty 2>/dev/null || echo dev)
LDFLAGS   := -X github.com/wsgateway/gateway/gateway.Version=$(VERSION)

.PHONY: build run test browser-deps js-deps vet race bench bench-history bench-cluster bench-micro fuzz soak chaos scale clean

build:
	$(GO) build -ldflags '$(LDFLAGS)' -o $(BIN) ./cmd/gateway

# run: start one node on embedded defaults (no Redis) and say how to get in.
run: build
	@mkdir -p $(DATA_DIR)
	@echo "gateway: ws://127.0.0.1:8080/api/ws (native), /api/ws/<jwt> (KOsync), /ws (Hypothesis); wsify ws://127.0.0.1:3000/ws"
	@echo "KOReader: custom sync server http://<this host>:8080   admin: http://127.0.0.1:8081/metrics"
	@echo "a key:   $(BIN) key issue --subject alice --data-dir $(DATA_DIR)"
	@echo "a client: $(BIN) client --key KEY --sub room"
	$(BIN) serve --data-dir $(DATA_DIR)

# test: vet, then every test with the race detector, and the tests of our
# gnet patches (third_party/gnet is a module of its own, outside ./...).
# Redis tests start their own redis-server on a free port (REDIS_URL
# overrides); fuzz targets run their seed corpora.
test: vet browser-deps js-deps
	$(GO) test -race -count=1 -timeout 10m ./...
	cd third_party/gnet && $(GO) test -race -count=1 -run 'TestConnSize|TestRemoteAddrInOpenOnly' .

# browser-deps: Debian's chromium and playwright-core for the browser test,
# installed only when missing (test/browser/install.sh; warns and goes on
# where it cannot install).
browser-deps:
	@sh test/browser/install.sh

# js-deps: the TypeScript client's devDependencies (typescript, esbuild,
# ws) from sdk/js/package-lock.json, installed only when missing or stale
# (sdk/js/install.sh; warns and goes on where it cannot install).
js-deps:
	@sh sdk/js/install.sh

vet:
	@test -z "$$(gofmt -l $$(git ls-files '*.go'))" || (gofmt -l $$(git ls-files '*.go'); echo "gofmt needed"; exit 1)
	$(GO) vet ./...

# bench: the whole-system suite, gateway and baseline side by side
# (bench/README.md); results in bench/results/.
BENCH_FLAGS ?=
bench: build
	$(GO) run ./bench/cmd/bench -gateway $(BIN) -out bench/results $(BENCH_FLAGS)

# bench-history: the history scenarios alone (issue 13; bench/README.md
# "History"): fan-out with and without history, recovery of 1,000 clients,
# on one node and on two nodes with their own redis-server; results in
# bench/results/history.{json,md}.
bench-history: build
	$(GO) run ./bench/cmd/bench -gateway $(BIN) -out bench/results -scenarios history $(BENCH_FLAGS)

# bench-cluster: cross-node fan-out over 256 channels on one redis-server
# and on a 3-master Redis Cluster (issue 15; bench/README.md "Cluster"),
# with each shard's CPU per publish; results in
# bench/results/cluster.{json,md}.
bench-cluster: build
	$(GO) run ./bench/cmd/bench -gateway $(BIN) -out bench/results -scenarios cluster $(BENCH_FLAGS)

# bench-micro: the hot-path micro-benchmarks with allocations.
bench-micro:
	$(GO) test -run '^$$' -bench . -benchmem ./packet ./gateway ./session ./native ./token ./hypothesis ./kosync

# fuzz: each fuzz target for FUZZTIME.
fuzz:
	@for pkg in $$(grep -rl --include='*_test.go' '^func Fuzz' . | xargs -n1 dirname | sort -u); do \
	  for t in $$($(GO) test -list '^Fuzz' $$pkg | grep '^Fuzz'); do \
	    echo "== $$pkg $$t"; $(GO) test -run '^$$' -fuzz "^$$t$$" -fuzztime $(FUZZTIME) $$pkg || exit 1; \
	  done; \
	done

# soak: churn, fan-out and a Redis restart across two nodes for SOAKTIME.
SOAKTIME ?= 10m
soak:
	GATEWAY_SOAK=$(SOAKTIME) $(GO) test -race -count=1 -run Soak -timeout 30m -v ./test/

# chaos: one node (all four protocols, its own Redis) attacked for CHAOSTIME
# while a healthy client's round trip is watched (test/chaos_e2e_test.go).
# CHAOSSEED replays a run's choices. No -race: the attackers share the two
# cores with the node, and a slower client would report stalls of its own.
CHAOSTIME ?= 3m
CHAOSSEED ?=
chaos:
	GATEWAY_CHAOS=$(CHAOSTIME) GATEWAY_CHAOS_SEED=$(CHAOSSEED) $(GO) test -count=1 -run '^TestChaos$$' -timeout 30m -v ./test/

# scale: many gateway processes on one port and many load processes, up to
# CONNS connections (default 100000; CONNS=1000000 SYSCTL=1 for the million
# of bench/README.md "Scaling up"); the knobs are environment variables
# listed at the top of bench/scale.sh. Not part of make test.
scale:
	bench/scale.sh

clean:
	rm -rf bin
