#!/usr/bin/env bash
# What single nftables rules cost a packet, and what a monitor binary's
# table costs: the 100-byte UDP flood of benches/overhead.rs (its
# --udp-flood and --udp-sink) from one end of a veth pair to the other,
# between two network namespaces this script creates (and deletes, also on
# failure), sampled by perf as in `cargo bench --bench overhead --
# --hook-cost`. Each variant is one table at the sender's postrouting hook:
#
#   update           one set update per packet, nothing else
#   +meta-nfproto    that, after a rule that fails at `meta nfproto ipv6`
#   +version-inline  that, after a rule that fails at `@nh,0,4 6` (three
#                    expressions the interpreter inlines, no call)
#   +version-fast    that, after `@nh,0,32 & 0xf0000000 == 0x60000000 return`
#                    (the family from the header, all three inlined)
#   +oifname         that, after `oifname != "vh" return` (16-byte name)
#   +oif             that, after `oif != "vh" return` (4-byte index)
#   +lead            that, after the prefilter's bitmap lookup that fails
#   +cmp1            that, after one rule that fails at `@nh,128,8 10` (a
#                    load and a compare the interpreter inlines)
#   +cmp8            that, after eight such rules, the last a 4-byte load,
#                    mask and compare: the default IPv4 leads as the
#                    monitor compares them (table.rs, skip_rules)
#   shards-jhash     the update in one of 32 chains, reached by `jhash
#                    ADDRESS mod 32 seed S vmap` (the monitor's dispatch)
#   shards-byte      the same, reached by the address's last byte & 31
#                    (no hash: what the hash itself costs)
#   +lead+shards     the prefilter's failing lookup, then shards-jhash: the
#                    monitor's IPv4 path for a public peer, less the rest
#   concat-shards    both in one lookup: `@nh,128,8 . jhash … vmap`
#   front            the prefilter, then the update in a front set with
#                    room, `return`, then +lead+shards's dispatch (which the
#                    flood's one peer never reaches): the monitor's common path
#   front-full       the same with the front set full (one other element,
#                    room for one): its refusal, then the dispatch
#   stacked          the monitor's common IPv4 path as rules: the device,
#                    the family, the bitmap prefilter, the front update
#   fused            the same tests in one rule before them (`oif "vh"
#                    meta nfproto ipv4 @nh,128,8 != @lead4 update …
#                    return`): what a rule costs beyond its expressions
#   lane             the flood's peer in a lane (table.rs, lane_rules): its
#                    address, the header's first byte, the device, then a
#                    counter object, `return`; the update after it unused
#   lane-inline      the same with the rule's own counter instead of an
#                    object (what the objref's call costs)
#   +lane-miss       update, after a lane of another peer: what a lane
#                    costs every other packet
#   BINARY           the table a monitor binary makes with -i vh (stopped
#                    with SIGSTOP while the flood runs)
#
# Variants run interleaved, ROUNDS times; each line: ns per packet in
# netfilter's hooks, nft_do_chain's own ns, the whole send's ns (schedstat).
#
#   sudo benches/rule-cost.sh [ROUNDS] [BINARY ...]     (default: 3 rounds, no binary)
# e.g. sudo benches/rule-cost.sh 5 /tmp/before /tmp/after
# VARIANTS="update +lead /tmp/after" picks which run (binaries among them).
set -euo pipefail
cd "$(dirname "$0")/.."
rounds=${1:-3}
shift || true
binaries=("$@")
[ "$(id -u)" = 0 ] || { echo "rule-cost: needs root" >&2; exit 1; }
command -v perf >/dev/null || { echo "rule-cost: needs perf (linux-perf)" >&2; exit 1; }
source benches/flood-lab.sh
flood_lab_start rule

flood_lab_up "$host" "$remote"

# One table: the base chain's rules, and 32 chains s0 … s31 that each
# update the set (unused by most variants: a chain no packet reaches costs
# nothing). lead4 holds the leading bytes of the default skipped IPv4
# blocks (table.rs's unit test lists the same 39); a bitmap lookup costs
# the same whatever it holds.
update='update @peers { @nh,128,32 }'
table() {
    cat <<EOF
table inet itm_rule_cost {
 counter lane { }
 set peers { typeof @nh,128,32; size 131072; flags dynamic; counter; }
 set front { typeof @nh,128,32; size ${front_room:-4096}; flags dynamic; counter; ${front_elements:-} }
 set lead4 { typeof @nh,128,8; flags constant; elements = { 0, 10, 100, 127, 169, 172, 192, $(seq -s ', ' 224 255) } }
$(for k in $(seq 0 31); do echo " chain s$k { $update; }"; done)
 chain tx { type filter hook postrouting priority 2147483647;
  $1
 }
}
EOF
}
# The leading byte and the hash in one key: what folding the prefilter into
# the shard map would cost. Only the flood's lead (198) is in it; a real
# map would hold every lead not skipped, 32 times (a hash lookup's cost
# hardly depends on the size).
lead_shards="vmap { $(for k in $(seq 0 31); do printf '198 . %s : goto s%s, ' "$k" "$k"; done) }"
shards="vmap { $(for k in $(seq 0 31); do printf '%s : goto s%s, ' "$k" "$k"; done) }"
declare -A rule=(
    [update]="$update"
    [+meta-nfproto]="meta nfproto ipv6 return; $update"
    [+version-inline]="@nh,0,4 6 return; $update"
    [+oifname]="oifname != \"vh\" return; $update"
    [+oif]="oif != \"vh\" return; $update"
    [+lead]="@nh,128,8 @lead4 return; $update"
    [shards-jhash]="jhash @nh,128,32 mod 32 seed 0x1234 $shards"
    [shards-byte]="@nh,152,8 & 0x1f $shards"
    [+lead+shards]="@nh,128,8 @lead4 return; jhash @nh,128,32 mod 32 seed 0x1234 $shards"
    [front]="@nh,128,8 @lead4 return; update @front { @nh,128,32 } return; jhash @nh,128,32 mod 32 seed 0x1234 $shards"
    [front-full]="@nh,128,8 @lead4 return; update @front { @nh,128,32 } return; jhash @nh,128,32 mod 32 seed 0x1234 $shards"
    [concat-shards]="@nh,128,8 . jhash @nh,128,32 mod 32 seed 0x1234 $lead_shards"
    [+version-fast]="@nh,0,32 & 0xf0000000 == 0x60000000 return; $update"
    [lane]="@nh,128,32 0xc6336407 @nh,0,8 0x45 oif != \"lo\" counter name \"lane\" return; $update"
    [lane-inline]="@nh,128,32 0xc6336407 @nh,0,8 0x45 oif != \"lo\" counter return; $update"
    [+lane-miss]="@nh,128,32 0xc6336408 @nh,0,8 0x45 oif != \"lo\" counter name \"lane\" return; $update"
    [+cmp1]="@nh,128,8 10 return; $update"
    [+cmp8]="$(for b in 0 10 100 127 169 172 192; do printf '@nh,128,8 %s return; ' $b; done)@nh,128,32 & 0xe0000000 == 0xe0000000 return; $update"
    [stacked]="oif != \"vh\" return; meta nfproto ipv6 return; @nh,128,8 @lead4 return; update @front { @nh,128,32 } return; jhash @nh,128,32 mod 32 seed 0x1234 $shards"
    [fused]="oif \"vh\" meta nfproto ipv4 @nh,128,8 != @lead4 update @front { @nh,128,32 } return; oif != \"vh\" return; meta nfproto ipv6 return; @nh,128,8 @lead4 return; update @front { @nh,128,32 } return; jhash @nh,128,32 mod 32 seed 0x1234 $shards"
)
variants=(update +meta-nfproto +version-inline +oifname +oif +lead lane lane-inline +lane-miss shards-jhash shards-byte +lead+shards concat-shards front front-full stacked fused "${binaries[@]}")
[ -z "${VARIANTS:-}" ] || read -r -a variants <<< "$VARIANTS"

# One flood with the variant's table in place: prints its line.
measure() {
    local variant=$1
    if [ -n "${rule[$variant]+set}" ]; then
        # front-full: 1.2.3.4 fills the front set's one place.
        if [ "$variant" = front-full ]; then front_room=1 front_elements="elements = { 16909060 }"; else front_room= front_elements=; fi
        table "${rule[$variant]}" | ip netns exec "$host" nft -f -
    else
        ip netns exec "$host" "$variant" -b nftables -i vh -d 0 -q > /dev/null 2>&1 &
        monitor=$!
        sleep 2
        kill -STOP "$monitor"
    fi
    ip netns exec "$remote" "$flood" --udp-sink > /dev/null &
    local sink=$!
    sleep 0.3
    perf record -q -e cpu-clock -F 4000 -g -o "$work/perf.data" -- \
        ip netns exec "$host" "$flood" --udp-flood 198.51.100.7 > "$work/sent" 2> /dev/null
    wait "$sink" || true
    if [ -n "${rule[$variant]+set}" ]; then
        ip netns exec "$host" nft delete table inet itm_rule_cost
    else
        stop_monitor
    fi
    read -r sent runtime < "$work/sent"
    # A sample: a line naming the command, then one indented line per frame.
    perf script -i "$work/perf.data" -F comm,ip,sym 2> /dev/null | awk -v sent="$sent" -v runtime="$runtime" -v what="$variant" '
        /^[^ \t]/ { hook += seen; self += (top == "nft_do_chain"); seen = 0; first = 1; next }
        { if (first) { top = $2; first = 0 } if ($2 == "nf_hook_slow") seen = 1 }
        END { hook += seen; self += (top == "nft_do_chain")
              printf "%-16s hooks %5.0f ns  nft_do_chain self %4.0f ns  whole send %5.0f ns\n", what, hook * 250000 / sent, self * 250000 / sent, runtime / sent }'
}

for round in $(seq "$rounds"); do
    for variant in "${variants[@]}"; do
        measure "$variant"
    done
done | sort -s -k1,1
