# Parley: `make serve` runs the server in dev mode, `make test` runs every test.
# Both first install what is missing on a fresh Debian machine.

SHELL := /bin/bash
APT_PACKAGES := libssl-dev libsrtp2-dev libopus-dev libsqlite3-dev pkg-config python3-venv curl chromium chromium-driver coturn opus-tools ffmpeg iproute2 nftables postgresql openssl
VENV := .venv
PYTHON := $(VENV)/bin/python
PARLEY := .build/debug/parley
SWIFT_BUILD_FLAGS ?=

.PHONY: all deps apt venv build serve cluster test test-graph test-swift test-interop test-soak soak bench bench-chat bench-turn bench-sfu bench-cluster fuzz clean

all: build

deps: apt venv

# Installs only what is missing, so a machine that has everything is not touched.
apt:
	@missing=""; for p in $(APT_PACKAGES); do \
	  dpkg-query -W -f='$${Status}' $$p 2>/dev/null | grep -q "install ok installed" || missing="$$missing $$p"; \
	done; \
	if [ -n "$$missing" ]; then \
	  echo "installing:$$missing"; \
	  SUDO=$$( [ "$$(id -u)" = 0 ] || echo sudo ); \
	  $$SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq $$missing; \
	fi

$(VENV)/.ready: Tests/Interop/requirements.txt
	python3 -m venv $(VENV)
	$(PYTHON) -m pip install -q --upgrade pip
	$(PYTHON) -m pip install -q -r Tests/Interop/requirements.txt
	touch $@

venv: $(VENV)/.ready

build: apt
	swift build --build-tests $(SWIFT_BUILD_FLAGS)

serve: apt
	swift build --product parley $(SWIFT_BUILD_FLAGS)
	$(PARLEY) serve --dev --config Config/parley.yaml

# A throwaway PostgreSQL and three nodes on this machine (ports 7880, 7890, 7900); Ctrl-C stops all.
cluster: apt
	swift build --product parley $(SWIFT_BUILD_FLAGS)
	python3 Scripts/cluster --parley $(PARLEY) --nodes 3

test: deps build test-graph test-swift test-interop test-soak

# The module graph against Scripts/module-graph.allowed, and docs/architecture.md's diagram of it.
test-graph: venv
	python3 Scripts/module-graph --check
	$(PYTHON) -m pytest -q Tests/ModuleGraph

test-swift:
	swift test --skip-build --parallel

test-interop: venv
	$(PYTHON) -m pytest -q Tests/Interop --parley $(PARLEY)

# Two minutes of load and churn with the server's memory, descriptors and delay watched (CI's
# version of `make soak`).
test-soak: venv
	$(PYTHON) Benchmarks/soak.py --parley $(PARLEY) --minutes 2 --sample 5 --warmup 40 --record-every 20

# A long day: 30 minutes (SOAK_ARGS="--minutes 120" for more) of media load, churn, chat and
# recordings on the release build; the samples and a picture go to .build/soak.
soak: apt venv
	swift build -c release --product parley $(SWIFT_BUILD_FLAGS)
	$(PYTHON) Benchmarks/soak.py --parley .build/release/parley $(SOAK_ARGS)

# Micro-benchmarks (package-benchmark) for the hot paths.
bench: apt
	cd Benchmarks && swift package --allow-writing-to-package-directory benchmark

# 1,000 WebSocket participants in 100 rooms; chat delivery latency.
bench-chat: venv
	swift build -c release --product parley $(SWIFT_BUILD_FLAGS)
	$(PYTHON) Benchmarks/chat_load.py --parley .build/release/parley

# Parley's TURN against Debian's coturn under the same turnutils_uclient load.
bench-turn: apt
	swift build -c release --product parley $(SWIFT_BUILD_FLAGS)
	python3 Benchmarks/compare-turn --parley .build/release/parley $(BENCH_TURN_ARGS)

# Parley against Janus's VideoRoom under the same `parley loadtest` (installs janus when missing).
bench-sfu: apt
	@dpkg-query -W -f='$${Status}' janus 2>/dev/null | grep -q "install ok installed" || \
	  { SUDO=$$( [ "$$(id -u)" = 0 ] || echo sudo ); $$SUDO apt-get install -y -qq janus; }
	swift build -c release --product parley $(SWIFT_BUILD_FLAGS)
	python3 Benchmarks/compare-sfu --parley .build/release/parley $(BENCH_SFU_ARGS)

# One node against a cluster of three on a throwaway PostgreSQL under the same `parley loadtest`
# (rooms spread over the three), and join and chat latency through a relaying node.
bench-cluster: apt venv
	swift build -c release --product parley $(SWIFT_BUILD_FLAGS)
	$(PYTHON) Benchmarks/cluster_load.py --parley .build/release/parley $(BENCH_CLUSTER_ARGS)
	$(PYTHON) Benchmarks/cluster_relay.py --parley .build/release/parley

# libFuzzer targets for the STUN, RTP/RTCP and SDP parsers, FUZZ_SECONDS (60) each.
fuzz: apt
	Fuzz/run.sh $(FUZZ_TARGETS)

clean:
	rm -rf .build $(VENV) Benchmarks/.build
