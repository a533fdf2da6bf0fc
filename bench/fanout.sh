#!/usr/bin/env bash
# fanout.sh: one benchmark run of the bus' fan-out, beside Redis' own
# PUBLISH throughput:
#   1. redis-benchmark -t publish -n 100000 -q against a private redis-server;
#   2. Redis mode: two dnoded hosts (1 worker each) on that Redis, SUBS
#      subscribers split evenly over them, one publisher on the first;
#   3. single-host mode: one dnoded with 2 workers, SUBS subscribers spread
#      over them by the kernel (the split is printed), one publisher.
# Each dnoded run reports messages delivered per second and delivery
# latency p50/p99, measured by bench/fanout_load.c (one epoll loop for every
# session, one clock): when the generator read each delivery, and when it
# arrived in the socket (the kernel's receive timestamp, arrival_*). Target:
# p99 under 50 ms at 5,000.
# Usage: bench/fanout.sh [DNODED_BINARY]  (default: $DNODED_BIN, else ./dnoded)
# Env: SUBS (5000); RATES ("10 50": messages per second, one run each:
# a light load shows one message's fan-out time, the heavier one the
# delivery throughput near saturation); SECONDS_PER_RUN (4). Everything
# listens on 127.0.0.1 and is stopped on exit. About a minute.
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
# free_port, wait_port, rss_kib: shared with bench/run
# shellcheck source=bench/lib.sh
. "$here/lib.sh"
dnoded=${1:-${DNODED_BIN:-./dnoded}}
subs=${SUBS:-5000}
rates=${RATES:-10 50}
secs=${SECONDS_PER_RUN:-4}

[ -x "$dnoded" ] || { echo "fanout.sh: no dnoded binary at $dnoded (pass its path)" >&2; exit 2; }
dnoded=$(cd "$(dirname "$dnoded")" && pwd)/$(basename "$dnoded")
command -v redis-server >/dev/null || { echo "fanout.sh: redis-server missing" >&2; exit 2; }

bench_init dnoded-fanout
work=$bench_work

# start_dnoded NAME PORT WORKERS [REDIS_URL]: runs dnoded in the background.
start_dnoded() {
    local conf=$work/$1.conf
    echo '{}' >"$work/models.json"
    {
        echo "listen = 127.0.0.1:$2"
        echo "workers = $3"
        echo "models = $work/models.json"
        echo "mongodb_uri = mongodb://127.0.0.1:9/fanout" # unused: no CRUD here
        echo "log_level = warning"
        echo "max_connections = 20000"
        [ -n "${4:-}" ] && echo "redis_url = $4"
    } >"$conf"
    "$dnoded" -c "$conf" >>"$work/$1.log" 2>&1 &
    bench_pids+=($!)
    wait_port "$2" 15
}

# Established connections to PORT per dnoded process (the workers' split).
split() {
    ss -Htnp state established "( sport = :$1 )" 2>/dev/null |
        grep -o 'pid=[0-9]*' | sort | uniq -c | awk '{printf "%s%s", sep, $1; sep="/"} END {print ""}'
}

ulimit -n 20000 2>/dev/null || true
cc -O2 -std=gnu11 -Wall -o "$work/fanout_load" "$here/fanout_load.c"
rport=$(free_port)
redis-server --port "$rport" --bind 127.0.0.1 --save '' --appendonly no \
    --dir "$work" --daemonize no >"$work/redis.log" 2>&1 &
bench_pids+=($!)
wait_port "$rport" 10

echo "== redis-benchmark PUBLISH, 50 clients, -n 100000 (private redis-server $(redis-server --version | grep -o 'v=[0-9.]*'))"
# `-t publish` names no test in redis-benchmark 7 (it runs nothing), so the
# command is given explicitly, with a payload the size of a bench envelope.
out=$(redis-benchmark -h 127.0.0.1 -p "$rport" -t publish -n 100000 -q | tr '\r' '\n' | grep -v '^ *$' || true)
if [ -z "$out" ]; then
    out=$(redis-benchmark -h 127.0.0.1 -p "$rport" -n 100000 -q PUBLISH dnoded:c:/bench \
        '{"v":1,"m":"created","d":{"k":1,"t":12345.678},"o":{"url":"/bench/fanout"}}' |
        tr '\r' '\n' | grep -v '^ *$' | tail -1)
fi
echo "$out"

# run_load ADDRESSES PORT_FOR_SPLIT: one fanout_load run per rate.
run_load() {
    local rate gen i
    for rate in $rates; do
        "$work/fanout_load" "$1" "$subs" $((rate * secs)) "$rate" 2>"$work/gen.err" &
        gen=$!
        for ((i = 0; i < 600; i++)); do
            grep -q subscribed "$work/gen.err" 2>/dev/null && break
            sleep 0.1
        done
        [ -n "${2:-}" ] && echo "sessions per worker: $(split "$2")"
        wait "$gen" || { grep -v subscribed "$work/gen.err" >&2; exit 1; }
    done
}

echo "== Redis mode: 2 hosts x 1 worker, $subs subscribers split evenly, rates: $rates /s"
p1=$(free_port)
start_dnoded hostA "$p1" 1 "redis://127.0.0.1:$rport"
p2=$(free_port)
start_dnoded hostB "$p2" 1 "redis://127.0.0.1:$rport"
run_load "127.0.0.1:$p1,127.0.0.1:$p2"
kill "${bench_pids[-1]}" "${bench_pids[-2]}"
wait "${bench_pids[-1]}" "${bench_pids[-2]}" 2>/dev/null || true
unset 'bench_pids[-1]' 'bench_pids[-1]'

echo "== single-host mode: 1 host x 2 workers, $subs subscribers, rates: $rates /s"
p3=$(free_port)
start_dnoded single "$p3" 2
run_load "127.0.0.1:$p3" "$p3"
grep -h -E 'error|warning' "$work"/*.log | grep -v -i mongo | tail -5 || true
