#!/usr/bin/env bash
# rpc.sh: one benchmark run of dnoded's RPC path, beside Redis as a yardstick:
#   1. subscribe/unsubscribe round trips at 50 connections against dnoded
#      with 1 worker (ops/s, p50, p99), driven by bench/rpc_load.c;
#   2. redis-benchmark -t ping_inline -c 50 -n 200000 -q against a private
#      redis-server;
#   3. the RSS cost of 10,000 idle sessions: dnoded's RSS before and after
#      opening 10k connections that completed the methods exchange.
# Usage: bench/rpc.sh [DNODED_BINARY]  (default: $DNODED_BIN, else ./dnoded)
# Everything listens on 127.0.0.1 and is stopped on exit. About a minute.
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
# free_port, wait_port, rss_kib: shared with bench/run
# shellcheck source=bench/lib.sh
. "$here/lib.sh"
src=$(dirname "$here")
dnoded=${1:-${DNODED_BIN:-./dnoded}}
duration=${RPC_SECONDS:-10}
conns=${RPC_CONNECTIONS:-50}
idle=${IDLE_SESSIONS:-10000}

[ -x "$dnoded" ] || { echo "rpc.sh: no dnoded binary at $dnoded (pass its path)" >&2; exit 2; }
dnoded=$(cd "$(dirname "$dnoded")" && pwd)/$(basename "$dnoded")

bench_init dnoded-bench
work=$bench_work

# Enough descriptors for 10k sessions on both ends.
ulimit -n "$(ulimit -Hn)" 2>/dev/null || true
if [ "$(ulimit -n)" != unlimited ] && [ "$(ulimit -n)" -lt $((idle + 200)) ]; then
    echo "rpc.sh: ulimit -n is $(ulimit -n); $((idle + 200)) descriptors are needed" >&2
    exit 2
fi

echo "building the load generator"
cc -O2 -std=gnu11 -Wall -o "$work/rpc_load" "$here/rpc_load.c" \
    $(pkg-config --cflags --libs libevent)

start_dnoded() {
    port=$(free_port)
    cat > "$work/dnoded.conf" <<EOF
listen = 127.0.0.1:$port
workers = 1
models = $src/etc/models.json
# Pub/sub only: nothing listens here, and nothing in this run needs it.
mongodb_uri = mongodb://127.0.0.1:$(free_port)/bench?serverSelectionTimeoutMS=500
log_level = error
max_connections = $((idle + 100))
EOF
    "$dnoded" -c "$work/dnoded.conf" 2>>"$work/dnoded.log" &
    dpid=$!
    bench_pids+=("$dpid")
    wait_port "$port" 15
}

stop_dnoded() {
    kill "$dpid" 2>/dev/null || true
    wait "$dpid" 2>/dev/null || true
}

echo
echo "== dnoded: subscribe/unsubscribe round trips, $conns connections, 1 worker, ${duration}s"
start_dnoded
"$work/rpc_load" -p "$port" -c "$conns" -d "$duration" -w 2
stop_dnoded

echo
echo "== redis-server: redis-benchmark -t ping_inline -c 50 -n 200000 -q"
rport=$(free_port)
redis-server --port "$rport" --bind 127.0.0.1 --save '' --appendonly no \
    --logfile "$work/redis.log" &
rpid=$!
bench_pids+=("$rpid")
wait_port "$rport" 10
redis-benchmark -h 127.0.0.1 -p "$rport" -t ping_inline -c 50 -n 200000 -q | tr '\r' '\n' |
    grep -v '^$' | tail -1
kill "$rpid"
wait "$rpid" 2>/dev/null || true

echo
echo "== dnoded: RSS of $idle idle sessions"
start_dnoded
sleep 1
before=$(rss_kib "$dpid")
mkfifo "$work/hold"
"$work/rpc_load" -p "$port" -i "$idle" < "$work/hold" > "$work/idle.out" &
lpid=$!
bench_pids+=("$lpid")
exec 4>"$work/hold" # keeps the sessions open until closed below
for ((i = 0; i < 600; i++)); do
    grep -q '^ready' "$work/idle.out" 2>/dev/null && break
    kill -0 "$lpid" 2>/dev/null || break
    sleep 0.1
done
grep -q '^ready' "$work/idle.out" || { echo "rpc.sh: idle sessions did not all open" >&2; exit 1; }
sleep 1
after=$(rss_kib "$dpid")
exec 4>&-
wait "$lpid" || true
stop_dnoded
echo "RSS before ${before} KiB, with $idle sessions ${after} KiB:" \
    "$(( (after - before) * 1024 / idle )) bytes/session"
if grep -qi 'error\|warning' "$work/dnoded.log"; then
    echo
    echo "dnoded logged (tail):"
    tail -5 "$work/dnoded.log"
fi
