#!/usr/bin/env bash
# What one nftables table costs the 100-byte UDP flood over another, in
# whole-send terms, measured inside one flood: two 10 s floods a minute
# apart differ here by up to ±10 % (benches/flood-pairs.sh), and perf's
# samples inside nf_hook_slow (benches/rule-cost.sh) miss what a hook
# costs on its way in and out. So both tables are loaded in the flood
# lab's host namespace (benches/flood-lab.sh, with the truth counters of
# tests/lab/mod.rs at its input and output hooks, as in `make bench`), and
# every 3 s one is made dormant (its hooks leave the kernel) and the other
# woken, during one flood of 120 s (benches/overhead.rs --udp-flood-ticks,
# a count every 250 ms). Each phase of A against the mean of the phases of
# B either side of it, the first 500 ms of a phase left out:
#
#   A/B  mean of the phases' rates, and the median of the paired ratios
#        (with their spread); ns per packet of each
#
#   sudo benches/table-ab.sh A.nft [B.nft]     (no B: A against no table)
#
# Each file holds one table, named `v` (`table inet v { … }`), whose base
# chain hooks postrouting: the flood's packets leave the host there.
# docs/PERFORMANCE.md (eighth session) lists the tables it was run with.
set -euo pipefail
cd "$(dirname "$0")/.."
[ "$(id -u)" = 0 ] || { echo "table-ab: needs root" >&2; exit 1; }
[ -r "${1:-}" ] || { echo "usage: table-ab.sh A.nft [B.nft]" >&2; exit 1; }
a=$(cat "$1")
b=$(if [ -n "${2:-}" ]; then cat "$2"; else echo 'table inet v { }'; fi)
source benches/flood-lab.sh
flood_lab_start ab
flood_lab_up "$host" "$remote"

ip netns exec "$host" nft -f - <<'EOF'
table inet itm_truth {
 chain input { type filter hook input priority 0; ip saddr 198.51.100.7 counter; ip saddr 203.0.113.9 counter; ip saddr 203.0.113.10 counter; ip saddr 203.0.113.11 counter; ip6 saddr 2001:db8:2::7 counter; ip6 saddr 2001:db8:2::8 counter; ip saddr 192.0.2.77 counter; ip saddr 203.0.113.128/25 counter; }
 chain output { type filter hook output priority 0; ip daddr 198.51.100.7 counter; ip daddr 203.0.113.9 counter; ip daddr 203.0.113.10 counter; ip daddr 203.0.113.11 counter; ip6 daddr 2001:db8:2::7 counter; ip6 daddr 2001:db8:2::8 counter; ip daddr 192.0.2.77 counter; ip daddr 203.0.113.128/25 counter; }
}
EOF
echo "${a//table inet v/table inet a}" | ip netns exec "$host" nft -f -
echo "${b//table inet v/table inet b}" | ip netns exec "$host" nft -f -
ip netns exec "$host" nft add table inet b '{ flags dormant; }'

ip netns exec "$remote" "$flood" --udp-sink > /dev/null &
sleep 0.3
ip netns exec "$host" "$flood" --udp-flood-ticks 198.51.100.7 > "$work/ticks" &
sender=$!
phase=a
: > "$work/phases"
while kill -0 "$sender" 2> /dev/null; do
    echo "$(date +%s%3N) $phase" >> "$work/phases"
    sleep 3
    [ $phase = a ] && phase=b || phase=a
    other=$([ $phase = a ] && echo b || echo a)
    # `table inet X { }` with no flags wakes it.
    printf 'add table inet %s { flags dormant; }\ntable inet %s { }\n' "$other" "$phase" | ip netns exec "$host" nft -f -
done
wait "$sender"

python3 - "$work/phases" "$work/ticks" <<'EOF'
import statistics, sys
phases = [(int(ms), which) for ms, which in (line.split() for line in open(sys.argv[1]))]
ticks = [tuple(map(int, line.split())) for line in open(sys.argv[2])]
rates = []
for i, (start, which) in enumerate(phases):
    end = phases[i + 1][0] if i + 1 < len(phases) else float("inf")
    inside = [sent for ms, sent in ticks if ms >= start + 750 and ms <= end]
    if inside:
        rates.append((which, sum(inside) / len(inside) * 4))
ratios = []
for i, (which, rate) in enumerate(rates):
    beside = [r for j, (w, r) in enumerate(rates) if abs(i - j) == 1 and w == "b"]
    if which == "a" and beside:
        ratios.append(rate / statistics.mean(beside))
mean = {w: statistics.mean(r for x, r in rates if x == w) for w in "ab"}
print(f"A {mean['a']:.0f} packets/s, B {mean['b']:.0f}: A/B {mean['a'] / mean['b']:.4f}; "
      f"paired median {statistics.median(ratios):.4f} (min {min(ratios):.3f}, max {max(ratios):.3f}, "
      f"sd {statistics.stdev(ratios):.3f}, {len(ratios)} phases); "
      f"ns per packet A {1e9 / mean['a']:.0f}, B {1e9 / mean['b']:.0f}")
EOF
