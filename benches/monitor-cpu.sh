#!/usr/bin/env bash
# The nftables monitor's own CPU time, idle and under a flood: the monitor
# runs in one end of a veth pair between two network namespaces this script
# creates (and deletes, also on failure), 20 s with no traffic, then 10 s of
# 100-byte UDP datagrams (72-byte payloads, sent by Python) to the other end.
# Prints the ticks (utime + stime from /proc/PID/stat, USER_HZ 100) of each
# phase and the monitor's summary line (the bytes it counted). Used to
# compare two builds side by side (docs/PERFORMANCE.md, "the monitor's own
# CPU"); run it alternately for each, a few times.
#
#   sudo benches/monitor-cpu.sh [BINARY]     (default: target/static/ip_traffic_monitor_cli)
set -euo pipefail
cd "$(dirname "$0")/.."
bin=$(realpath "${1:-target/static/ip_traffic_monitor_cli}")
[ "$(id -u)" = 0 ] || { echo "monitor-cpu: needs root" >&2; exit 1; }
[ -x "$bin" ] || { echo "monitor-cpu: no binary $bin (make release)" >&2; exit 1; }

source benches/flood-lab.sh
host=itm-cpu-h-$$ remote=itm-cpu-r-$$ out=$(mktemp) monitor=
cleanup() {
    [ -n "$monitor" ] && kill -INT "$monitor" 2>/dev/null && wait "$monitor" 2>/dev/null
    flood_lab_down "$host" "$remote"
    rm -f "$out"
}
trap cleanup EXIT

flood_lab_up "$host" "$remote"

ip netns exec "$host" "$bin" -b nftables -d 40 -q > "$out" 2>&1 &
monitor=$!
sleep 3
ticks() { awk '{print $14 + $15}' "/proc/$monitor/stat"; }
start=$(ticks)
sleep 20
idle=$(ticks)
ip netns exec "$host" python3 -c "
import socket, time
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
end = time.time() + 10
while time.time() < end:
    s.sendto(b'x' * 72, ('198.51.100.7', 9))
"
flood=$(ticks)
wait "$monitor" || true
monitor=
echo "$(basename "$bin"): idle $((idle - start)) ticks in 20 s, flood $((flood - idle)) ticks in 10 s; $(grep '== Summary' "$out")"
