#!/usr/bin/env bash
# workers.sh: what the prefork model buys, in one run:
#   1. subscribe/unsubscribe round trips at 50 connections against dnoded
#      with workers = 1, then workers = 2 (ops/s, p50, p99; bench/rpc_load.c);
#   2. how many connections one worker holds once the descriptor limit is
#      raised the way the systemd unit raises it (LimitNOFILE=65536 there,
#      ulimit -n here): N idle sessions on one worker, counted from the
#      worker's open descriptors.
# Usage: bench/workers.sh [DNODED_BINARY]  (default: $DNODED_BIN, else ./dnoded)
# Environment: RPC_SECONDS (10), RPC_CONNECTIONS (50), HOLD_SESSIONS (60000,
# capped by the descriptor limit).
# Everything listens on 127.0.0.1 and is stopped on exit. The load generator
# shares the machine's cores with the workers: on 2 cores, 2 workers compete
# with it for the CPU, so read the ratio with that in mind.
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
# free_port, wait_port, rss_kib: shared with bench/run
# shellcheck source=bench/lib.sh
. "$here/lib.sh"
src=$(dirname "$here")
dnoded=${1:-${DNODED_BIN:-./dnoded}}
duration=${RPC_SECONDS:-10}
conns=${RPC_CONNECTIONS:-50}
hold=${HOLD_SESSIONS:-60000}

[ -x "$dnoded" ] || { echo "workers.sh: no dnoded binary at $dnoded (pass its path)" >&2; exit 2; }
dnoded=$(cd "$(dirname "$dnoded")" && pwd)/$(basename "$dnoded")

bench_init dnoded-bench
work=$bench_work

# The limit the unit sets, or as close as the hard limit allows (raising
# the hard limit needs CAP_SYS_RESOURCE).
want=65536
if ! ulimit -n "$want" 2>/dev/null; then
    want=$(ulimit -Hn)
    [ "$want" = unlimited ] && want=65536
    ulimit -n "$want"
fi
if [ "$hold" -gt $((want - 200)) ]; then
    hold=$((want - 200))
fi
# One client address reaches one server port from at most ~28k ephemeral
# ports: spread the sessions over several listening ports.
per_port=25000
nports=$(( (hold + per_port - 1) / per_port ))

echo "building the load generator"
cc -O2 -std=gnu11 -Wall -o "$work/rpc_load" "$here/rpc_load.c" \
    $(pkg-config --cflags --libs libevent)

start_dnoded() { # workers [ports]
    local i
    ports=()
    for ((i = 0; i < ${2:-1}; i++)); do
        ports+=("$(free_port)")
    done
    port=${ports[0]}
    cat > "$work/dnoded.conf" <<EOF
listen = $(printf '127.0.0.1:%s ' "${ports[@]}")
workers = $1
models = $src/etc/models.json
# Pub/sub only: nothing listens here, and nothing in this run needs it.
mongodb_uri = mongodb://127.0.0.1:$(free_port)/bench?serverSelectionTimeoutMS=500
log_level = error
max_connections = $((hold + 100))
EOF
    "$dnoded" -c "$work/dnoded.conf" 2>>"$work/dnoded.log" &
    dpid=$!
    bench_pids+=("$dpid")
    wait_port "$port" 15
}

stop_dnoded() {
    kill -TERM "$dpid" 2>/dev/null || true
    wait "$dpid" 2>/dev/null || true
}

for n in 1 2; do
    echo
    echo "== subscribe/unsubscribe round trips: workers = $n, $conns connections, ${duration}s"
    start_dnoded "$n"
    "$work/rpc_load" -p "$port" -c "$conns" -d "$duration" -w 2
    stop_dnoded
done

echo
echo "== connections held by one worker with ulimit -n $(ulimit -n)"
start_dnoded 1 "$nports"
for p in "${ports[@]:1}"; do
    wait_port "$p" 5
done
worker=$(ps -o pid= --ppid "$dpid" | tr -d ' ' | head -n 1)
before=$(ls "/proc/$worker/fd" | wc -l)
rss_before=$(ps -o rss= -p "$worker" | tr -d ' ')
mkfifo "$work/hold"
lpids=()
left=$hold
for p in "${ports[@]}"; do
    n=$(( left < per_port ? left : per_port ))
    left=$((left - n))
    "$work/rpc_load" -p "$p" -i "$n" < "$work/hold" > "$work/hold.$p.out" &
    lpids+=($!)
    bench_pids+=($!)
done
exec 4>"$work/hold" # keeps the sessions open until closed below
for ((i = 0; i < 1200; i++)); do
    [ "$(cat "$work"/hold.*.out 2>/dev/null | grep -c '^ready')" -eq "$nports" ] && break
    sleep 0.1
done
sleep 1
held=$(( $(ls "/proc/$worker/fd" | wc -l) - before ))
rss_after=$(ps -o rss= -p "$worker" | tr -d ' ')
limit=$(sed -n 's/^Max open files *\([0-9]*\).*/\1/p' "/proc/$worker/limits")
echo "asked for $hold sessions over $nports port(s): worker $worker holds $held connections" \
    "(its open file limit: $limit), RSS $rss_before -> $rss_after KiB"
exec 4>&-
for p in "${lpids[@]}"; do
    wait "$p" 2>/dev/null || true
done
stop_dnoded
if grep -qi 'error\|warning' "$work/dnoded.log"; then
    echo
    echo "dnoded logged (tail):"
    tail -5 "$work/dnoded.log"
fi
