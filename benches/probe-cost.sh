#!/usr/bin/env bash
# What a bpftrace script's programs cost per run, under a 10 s flood of
# 100-byte UDP packets between two network namespaces this script creates
# (and deletes, also on failure). Used to tune bpftrace/traffic.bt one change
# at a time (docs/PERFORMANCE.md, "Tuning the bpftrace script").
#
#   sudo benches/probe-cost.sh [SCRIPT.bt]      (default: bpftrace/traffic.bt)
#
# The script gets the monitor's five arguments (a 1 s interval, the host
# namespace's inode, every device, counting private addresses off). Prints
# the packets that arrived and, for each program that ran, its runs and
# run_time_ns / run_cnt from bpftrace's /proc/PID/fdinfo, with
# kernel.bpf_stats_enabled on for the run (restored after). The sender and
# sink are benches/overhead.rs run as `--udp-flood` and `--udp-sink`.
set -euo pipefail
cd "$(dirname "$0")/.."
script=${1:-bpftrace/traffic.bt}
[ "$(id -u)" = 0 ] || { echo "probe-cost: needs root" >&2; exit 1; }

source benches/flood-lab.sh
bench=$(flood_bench)
[ -x "$bench" ] || { echo "probe-cost: could not build benches/overhead.rs" >&2; exit 1; }

host=itm-pc-h-$$ remote=itm-pc-r-$$ out=$(mktemp) stats_was=$(cat /proc/sys/kernel/bpf_stats_enabled)
bpftrace_pid=
cleanup() {
    [ -n "$bpftrace_pid" ] && kill -INT "$bpftrace_pid" 2>/dev/null && wait "$bpftrace_pid" 2>/dev/null
    echo "$stats_was" > /proc/sys/kernel/bpf_stats_enabled
    flood_lab_down "$host" "$remote"
    rm -f "$out" "$out.sink"
}
trap cleanup EXIT

flood_lab_up "$host" "$remote"
inode=$(ip netns exec "$host" stat -L -c %i /proc/self/ns/net)

echo 1 > /proc/sys/kernel/bpf_stats_enabled
BPFTRACE_MAP_KEYS_MAX=131072 bpftrace "$script" 500 "$inode" 0 125 0 > "$out" 2>&1 &
bpftrace_pid=$!
for _ in $(seq 300); do grep -q '^@attached' "$out" && break; sleep 0.1; done
grep -q '^@attached' "$out" || { echo "probe-cost: bpftrace did not attach:" >&2; grep -v WARNING "$out" | head >&2; exit 1; }

ip netns exec "$remote" "$bench" --udp-sink > "$out.sink" &
sink=$!
sleep 0.3
ip netns exec "$host" "$bench" --udp-flood 198.51.100.7
wait "$sink"
echo "script: $script"
echo "packets that reached the sink in 10 s: $(cat "$out.sink")"
for info in /proc/"$bpftrace_pid"/fdinfo/*; do
    runs=$(awk '/^run_cnt:/ {print $2}' "$info" 2>/dev/null)
    ns=$(awk '/^run_time_ns:/ {print $2}' "$info" 2>/dev/null)
    if [ -n "$runs" ] && [ "$runs" -gt 1000 ]; then
        echo "program $(awk '/^prog_id:/ {print $2}' "$info"): $runs runs, $((ns / runs)) ns per run"
    fi
done
