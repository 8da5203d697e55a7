#!/usr/bin/env bash
# How far apart two floods are that should be the same, and what the
# nftables backend's table costs a flood while the monitor runs or is
# stopped: the 100-byte UDP flood of benches/overhead.rs (its --udp-flood
# and --udp-sink) from one end of the flood lab's veth pair to the other
# (benches/flood-lab.sh, namespaces made anew for each flood and deleted,
# also on failure), 10 s each, modes interleaved, ROUNDS times:
#
#   none, none2, …   no table at all (any mode whose name starts with none)
#   running          the monitor (-b nftables -i vh -s 2) running, after
#                    5,000 datagrams to the flood's peer and its lane
#   stopped          the same, the monitor stopped (SIGSTOP) once the lane
#                    is made: only the packet path differs from none
#
# Each line: packets/s that reached the sink, packets/s sent, and the
# sender's run time per packet (schedstat), which is what the flood's rate
# is made of (the sender is on a CPU the whole time). With PERF=DIR each
# flood's sender is recorded by `perf record -g` into DIR/ROUND-MODE.perf:
# `perf report -i FILE --no-children --sort sym -g none -n` gives its
# samples per symbol, a sample each 250 µs.
#
#   sudo benches/flood-pairs.sh [ROUNDS] [BINARY]      (default 4, target/static/…)
#   MODES="none running stopped none2" sudo benches/flood-pairs.sh
set -euo pipefail
cd "$(dirname "$0")/.."
rounds=${1:-4}
bin=${2:-target/static/ip_traffic_monitor_cli}
read -r -a modes <<< "${MODES:-none running stopped none2}"
[ "$(id -u)" = 0 ] || { echo "flood-pairs: needs root" >&2; exit 1; }
[ -x "$bin" ] || { echo "flood-pairs: no $bin (make release)" >&2; exit 1; }
source benches/flood-lab.sh
flood_lab_start pairs

# The monitor, given the flood's peer's lane (two harvests after 5,000
# datagrams to it), as benches/overhead.rs's warm-up does.
start_monitor() {
    ip netns exec "$host" "$bin" -b nftables -i vh -d 0 -q -s 2 > /dev/null 2>&1 &
    monitor=$!
    sleep 1.5
    ip netns exec "$host" python3 -c "import socket; s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); [s.sendto(b'x' * 72, ('198.51.100.7', 9)) for _ in range(5000)]"
    for _ in $(seq 100); do
        ip netns exec "$host" nft list chain inet ip_traffic_monitor tx | grep -q '0xc6336407 @nh,0,8 0x45' && return
        sleep 0.1
    done
    echo "flood-pairs: the monitor gave the flood's peer no lane" >&2
    exit 1
}

for round in $(seq "$rounds"); do
    for mode in "${modes[@]}"; do
        flood_lab_up "$host" "$remote"
        case $mode in
            none*) ;;
            running) start_monitor ;;
            stopped) start_monitor; kill -STOP "$monitor" ;;
            *) echo "flood-pairs: no mode $mode" >&2; exit 1 ;;
        esac
        ip netns exec "$remote" "$flood" --udp-sink > "$work/received" &
        sink=$!
        sleep 0.3
        sender=(ip netns exec "$host" "$flood" --udp-flood 198.51.100.7)
        if [ -n "${PERF:-}" ]; then
            mkdir -p "$PERF"
            perf record -q -e cpu-clock -F 4000 -g -o "$PERF/$round-$mode.perf" -- "${sender[@]}" > "$work/sent" 2> /dev/null
        else
            "${sender[@]}" > "$work/sent"
        fi
        wait "$sink" || true
        stop_monitor
        flood_lab_down "$host" "$remote"
        read -r sent runtime < "$work/sent"
        printf '%s %-8s received %6d packets/s  sent %6d packets/s  sender %4d ns per packet\n' \
            "$round" "$mode" $(($(cat "$work/received") / 10)) $((sent / 10)) $((runtime / sent))
    done
done
