# Sourced by the bench scripts that flood (probe-cost.sh, rule-cost.sh,
# monitor-cpu.sh, flood-pairs.sh): the host and remote namespaces of tests/lab/mod.rs, cut
# to what a flood needs. The caller deletes them in its EXIT trap with
# flood_lab_down, so they go also when it fails.
#
#   flood_lab_up HOST REMOTE     vh 192.0.2.1/24 in HOST, vr 192.0.2.2/24 in
#                                REMOTE, 198.51.100.7 on REMOTE's loopback,
#                                routed from HOST via vr
#   flood_lab_down HOST REMOTE
#   flood_bench                  prints the path of benches/overhead.rs's
#                                binary (its --udp-flood and --udp-sink),
#                                building it if needed
#   stop_monitor                 stops the monitor whose PID is in $monitor
#                                (stopped with SIGSTOP or not), if any
#   flood_lab_start TAG          builds the flood binary into $flood, names
#                                $host and $remote (itm-TAG-h-PID, …), makes
#                                $work, and on exit stops $monitor and
#                                deletes all three (flood_lab_up is the
#                                caller's)

flood_lab_up() {
    ip netns add "$1"
    ip netns add "$2"
    ip link add vh netns "$1" type veth peer name vr netns "$2"
    ip -n "$1" link set lo up
    ip -n "$2" link set lo up
    ip -n "$1" link set vh up
    ip -n "$2" link set vr up
    ip -n "$1" addr add 192.0.2.1/24 dev vh
    ip -n "$2" addr add 192.0.2.2/24 dev vr
    ip -n "$2" addr add 198.51.100.7/32 dev lo
    ip -n "$1" route add 198.51.100.0/24 via 192.0.2.2
}

flood_lab_down() {
    ip netns delete "$1" 2>/dev/null || true
    ip netns delete "$2" 2>/dev/null || true
}

flood_bench() {
    cargo bench --bench overhead --no-run 2>&1 | grep -o 'target/release/deps/overhead-[0-9a-f]*' | head -1
}

stop_monitor() {
    if [ -n "${monitor:-}" ]; then
        kill -CONT "$monitor" 2>/dev/null || true
        kill -INT "$monitor" 2>/dev/null || true
        wait "$monitor" 2>/dev/null || true
        monitor=
    fi
}

flood_lab_start() {
    flood=$(flood_bench)
    [ -x "$flood" ] || { echo "$(basename "$0"): could not build benches/overhead.rs" >&2; exit 1; }
    host=itm-$1-h-$$ remote=itm-$1-r-$$ work=$(mktemp -d) monitor=
    trap flood_lab_cleanup EXIT
}

flood_lab_cleanup() {
    stop_monitor
    flood_lab_down "$host" "$remote"
    rm -rf "$work"
}
