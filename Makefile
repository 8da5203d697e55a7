# ip_traffic_monitor_cli — build, run, test, benchmark and install.
#
#   make                 static release binary (target/static/ip_traffic_monitor_cli)
#   sudo make run        install what is missing, then monitor (ARGS="-d 0 -i eth0")
#   sudo make test       install what is missing, then every test, lab included
#   make bench           benchmarks (docs/PERFORMANCE.md)
#   sudo make install    binary, bpftrace script, dashboard, systemd unit, config
#                        (PREFIX=/usr/local, DESTDIR= for staging)
#   sudo make uninstall  removes them; an edited configuration file stays
#   make cross           static binaries for the router architectures rustup has here
#   make i686            the 32-bit static binary (x86's stand-in for 32-bit routers)
#   make vm              the qemu VM with Debian's kernel for the flowtable test

BIN      := target/release/ip_traffic_monitor_cli
ARGS     ?=
# Tools the program and its tests use, and the Debian/Ubuntu packages with them.
TOOLS    := bpftrace iftop stdbuf nft iperf3 socat ip setpriv unshare prometheus promtool systemd-analyze file python3 chromium \
            qemu-system-x86_64 busybox cpio depmod
PACKAGES := bpftrace iftop coreutils nftables iperf3 socat iproute2 util-linux prometheus systemd file python3 chromium \
            qemu-system-x86 busybox-static cpio kmod

# Under sudo, root usually has no cargo of its own: use the invoking user's.
SUDO_HOME := $(if $(SUDO_USER),$(shell getent passwd $(SUDO_USER) | cut -d: -f6))
CARGO ?= $(shell command -v cargo 2>/dev/null || echo $(SUDO_HOME)/.cargo/bin/cargo)
ifneq ($(SUDO_HOME),)
ifeq ($(shell command -v cargo 2>/dev/null),)
export RUSTUP_HOME ?= $(SUDO_HOME)/.rustup
endif
endif

.PHONY: all build release cross i686 vm run test bench realdb fuzz fuzz-smoke deps tracefs install uninstall clean

PREFIX   ?= /usr/local
DESTDIR  ?=
BINDIR   := $(PREFIX)/bin
SHAREDIR := $(PREFIX)/share/ip_traffic_monitor_cli
UNITDIR  ?= $(PREFIX)/lib/systemd/system
CONFFILE := $(DESTDIR)/etc/default/ip-traffic-monitor
STATIC   := target/static/ip_traffic_monitor_cli
RUSTUP   ?= $(shell command -v rustup 2>/dev/null || echo $(SUDO_HOME)/.cargo/bin/rustup)
ARCH     := $(shell uname -m)

all: release

build:
	$(CARGO) build --release

# A static binary: musl where rustup can add the target, else glibc with
# +crt-static (printed); then its size, which the budget is 1 MiB for.
release:
	@mkdir -p target/static
	@if $(RUSTUP) target list --installed 2>/dev/null | grep -qx $(ARCH)-unknown-linux-musl || \
	    $(RUSTUP) target add $(ARCH)-unknown-linux-musl >/dev/null 2>&1; then \
		$(CARGO) build --release --target $(ARCH)-unknown-linux-musl && \
		cp target/$(ARCH)-unknown-linux-musl/release/ip_traffic_monitor_cli $(STATIC); \
	else \
		echo "note: the musl target cannot be added here; building a static glibc binary (+crt-static)"; \
		RUSTFLAGS="-C target-feature=+crt-static" $(CARGO) build --release --target $(ARCH)-unknown-linux-gnu && \
		cp target/$(ARCH)-unknown-linux-gnu/release/ip_traffic_monitor_cli $(STATIC); \
	fi
	@echo "$(STATIC): $$(stat -c %s $(STATIC)) bytes"

# Router architectures: linked with rust-lld, no cross C toolchain needed.
cross:
	@for t in aarch64-unknown-linux-musl armv7-unknown-linux-musleabihf i686-unknown-linux-musl; do \
		if $(RUSTUP) target add $$t >/dev/null 2>&1; then \
			$(CARGO) build --release --target $$t --config "target.$$t.linker=\"rust-lld\"" && \
			file target/$$t/release/ip_traffic_monitor_cli; \
		else echo "$$t: rustup cannot add this target here"; fi; \
	done

# The 32-bit build: runs on an x86_64 kernel, so the tests check that its
# libc calls have the widths 32-bit routers use (tests/router_32bit.rs).
i686:
	$(RUSTUP) target add i686-unknown-linux-musl >/dev/null
	$(CARGO) build --release --target i686-unknown-linux-musl

install: release
	install -Dm755 $(STATIC) $(DESTDIR)$(BINDIR)/ip_traffic_monitor_cli
	install -Dm644 bpftrace/traffic.bt $(DESTDIR)$(SHAREDIR)/bpftrace/traffic.bt
	install -Dm644 grafana/grafana.json $(DESTDIR)$(SHAREDIR)/grafana/grafana.json
	mkdir -p $(DESTDIR)$(UNITDIR)
	sed 's|@BINDIR@|$(BINDIR)|' packaging/ip-traffic-monitor.service.in > $(DESTDIR)$(UNITDIR)/ip-traffic-monitor.service
	chmod 644 $(DESTDIR)$(UNITDIR)/ip-traffic-monitor.service
	@# Never overwrite a configuration file the admin may have edited.
	@if [ -e $(CONFFILE) ]; then echo "keeping $(CONFFILE)"; \
	else install -Dm644 packaging/ip-traffic-monitor.default $(CONFFILE); fi

uninstall:
	rm -f $(DESTDIR)$(BINDIR)/ip_traffic_monitor_cli $(DESTDIR)$(UNITDIR)/ip-traffic-monitor.service
	rm -rf $(DESTDIR)$(SHAREDIR)
	@# The configuration goes only if it is still the shipped one.
	@if cmp -s $(CONFFILE) packaging/ip-traffic-monitor.default; then rm -f $(CONFFILE); \
	elif [ -e $(CONFFILE) ]; then echo "keeping edited $(CONFFILE)"; fi

# A kernel with flowtables for tests/nftables_flowtable.rs, whatever kernel
# this machine runs: Debian's package unpacked under target/vm (not
# installed), booted by the test in qemu with this machine's root read-only.
vm:
	sh tests/vm/prepare.sh target/vm

run: deps tracefs build
	$(BIN) $(ARGS)

test: deps tracefs release i686 vm
	$(CARGO) test
	$(MAKE) fuzz-smoke

# Every benchmark, one table on stdout (cargo's own progress goes to
# target/bench.log, shown when something fails). The lab overhead rows need
# root and the tools `make deps` installs; without them they say skipped.
bench: release
	@$(CARGO) bench --benches --no-run -q 2>target/bench.log || { cat target/bench.log; exit 1; }
	@echo "| benchmark | figure | compared with | ratio / note |"
	@echo "| --- | --- | --- | --- |"
	@$(CARGO) bench --benches -q 2>>target/bench.log || { cat target/bench.log; exit 1; }

# Fuzz every parser of outside input for FUZZ_SECONDS each (cargo-fuzz on a
# nightly toolchain: cargo install cargo-fuzz). New inputs join fuzz/corpus/.
FUZZ_SECONDS ?= 60
FUZZ_TARGETS := bpftrace_line iftop_block http_head qqwry ipdb nft_elements
# cargo-fuzz's build options (default: optimized, with AddressSanitizer).
FUZZ_BUILD ?=
fuzz:
	cd fuzz && for t in $(FUZZ_TARGETS); do \
		$(CARGO) +nightly fuzz run $(FUZZ_BUILD) $$t corpus/$$t -- -max_total_time=$(FUZZ_SECONDS) -rss_limit_mb=1024 || exit 1; \
	done

# A short run of every fuzz target (part of make test): its corpus, then
# 5 s of new inputs. Built unoptimized, with overflow checks and debug
# assertions, and without AddressSanitizer (the parsers are safe Rust):
# it compiles in half the time, which is most of a 5-second run's cost.
# cargo-fuzz needs a nightly toolchain: without one this says so and runs nothing.
fuzz-smoke:
	@if ! $(RUSTUP) toolchain list 2>/dev/null | grep -q '^nightly'; then \
		echo "fuzz smoke: no nightly toolchain here, not run"; exit 0; fi; \
	command -v cargo-fuzz >/dev/null 2>&1 || $(CARGO) install cargo-fuzz --locked --quiet || \
		{ echo "fuzz smoke: cargo-fuzz could not be installed, not run"; exit 0; }; \
	$(MAKE) --no-print-directory fuzz FUZZ_SECONDS=5 FUZZ_BUILD="--dev -s none"

# Real location databases for the lookup benchmark (never committed).
realdb:
	python3 tools/realdb.py

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
