#!/usr/bin/env bash
# ws.sh: DNode round trips over WebSocket beside the same round trips over
# plain TCP, in one run against one dnoded (1 worker): subscribe/unsubscribe
# calls, one in flight per connection, at 1 and at 50 connections, driven by
# bench/ws_load.c for both transports (ops/s, p50, p99).
# Usage: bench/ws.sh [DNODED_BINARY]  (default: $DNODED_BIN, else ./dnoded)
# Everything listens on 127.0.0.1 and is stopped on exit. About 50 seconds.
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
# free_port, wait_port, rss_kib: shared with bench/run
# shellcheck source=bench/lib.sh
. "$here/lib.sh"
src=$(dirname "$here")
dnoded=${1:-${DNODED_BIN:-./dnoded}}
duration=${WS_SECONDS:-10}

[ -x "$dnoded" ] || { echo "ws.sh: no dnoded binary at $dnoded (pass its path)" >&2; exit 2; }

bench_init dnoded-bench-ws
work=$bench_work

echo "building the load generator"
cc -O2 -std=gnu11 -Wall -o "$work/ws_load" "$here/ws_load.c" \
    $(pkg-config --cflags --libs libevent libevent_openssl libssl libcrypto)

port=$(free_port)
cat > "$work/dnoded.conf" <<CONF
listen = 127.0.0.1:$port
workers = 1
models = $src/etc/models.json
# Pub/sub only: nothing listens here, and nothing in this run needs it.
mongodb_uri = mongodb://127.0.0.1:$(free_port)/bench?serverSelectionTimeoutMS=500
log_level = error
CONF
"$dnoded" -c "$work/dnoded.conf" 2>>"$work/dnoded.log" &
dpid=$!
bench_pids+=("$dpid")
for _ in $(seq 1 150); do
    (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null && break
    sleep 0.1
done

echo
echo "== subscribe/unsubscribe round trips, ${duration}s each, 1 worker"
for conns in 1 50; do
    for transport in tcp ws; do
        "$work/ws_load" -p "$port" -t "$transport" -c "$conns" -d "$duration" -w 2
    done
done
if grep -qi 'error\|warning' "$work/dnoded.log"; then
    echo
    echo "dnoded logged (tail):"
    tail -5 "$work/dnoded.log"
fi
