# lib.sh: shell helpers for the bench/ scripts, sourced, never run: free
# loopback ports, waiting for a listener, resident memory of a process tree,
# and background processes that are stopped when the script exits. Owns no
# measurement; each script decides what it runs and prints.

bench_pids=()
bench_work=

# bench_init PREFIX: a fresh work directory in $bench_work, removed on exit
# together with every process started through bench_spawn.
bench_init() {
    bench_work=$(mktemp -d "${TMPDIR:-/tmp}/$1.XXXXXX")
    trap bench_cleanup EXIT
}

bench_cleanup() {
    local p
    for p in "${bench_pids[@]}"; do
        kill "$p" 2>/dev/null || true
    done
    for p in "${bench_pids[@]}"; do
        wait "$p" 2>/dev/null || true
    done
    bench_pids=()
    [ -n "$bench_work" ] && rm -rf "$bench_work"
}

# bench_spawn LOG CMD...: CMD in the background, output to LOG; its pid is
# in $bench_pid and is stopped on exit.
bench_spawn() {
    local log=$1
    shift
    "$@" >>"$log" 2>&1 &
    bench_pid=$!
    bench_pids+=("$bench_pid")
}

# bench_stop PID: SIGTERM, then SIGKILL if it is still there after 5 s.
bench_stop() {
    local i
    kill "$1" 2>/dev/null || return 0
    for ((i = 0; i < 50; i++)); do
        kill -0 "$1" 2>/dev/null || break
        sleep 0.1
    done
    kill -KILL "$1" 2>/dev/null || true
    wait "$1" 2>/dev/null || true
}

free_port() {
    python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

# wait_port PORT SECONDS: returns once something accepts on 127.0.0.1:PORT.
wait_port() {
    local i
    for ((i = 0; i < $2 * 10; i++)); do
        if (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; then
            return 0
        fi
        sleep 0.1
    done
    echo "${0##*/}: nothing answers on port $1" >&2
    return 1
}

# rss_kib PID: resident set of PID and its children, in KiB.
rss_kib() {
    local total=0 p
    for p in $1 $(ps -o pid= --ppid "$1" 2>/dev/null); do
        total=$((total + $(ps -o rss= -p "$p" 2>/dev/null || echo 0)))
    done
    echo "$total"
}

# cpu_ticks PID: "USER SYS" clock ticks used so far by PID and its children
# (getconf CLK_TCK per second).
cpu_ticks() {
    local u=0 s=0 p f
    for p in $1 $(ps -o pid= --ppid "$1" 2>/dev/null); do
        # Fields after the command name, which may hold spaces: 12 = utime.
        f=$(sed 's/^.*) //' "/proc/$p/stat" 2>/dev/null) || continue
        set -- $f
        u=$((u + ${12})) s=$((s + ${13}))
    done
    echo "$u $s"
}
