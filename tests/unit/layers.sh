#!/bin/sh
# layers.sh: the include rules of HACKING.md's "Who may call whom",
# checked over src/. The layer table is read from HACKING.md itself (the
# fenced block after the "layers:" marker), so the docs and the check cannot
# drift apart. Rules: a module may include a module of its own layer or of a
# lower one, never a higher one; the include graph of the modules has no
# cycle; every file of src/ belongs to a module of the table.
#
# A module is a .c/.h pair named alike (a header with no .c is a module of
# its own); the table may give a header to another module as
# "header=module". Prints TAP: one case per module, one for cycles, one for
# placement, then the self-test (the checker run on small made-up trees, which
# it must refuse for the right reason).
#
# Usage: layers.sh                     (from make check: DNODED_SRCDIR set)
#        layers.sh --check SRC DOC     (one tree: SRC dir, DOC table; TAP)

set -u

# check SRC DOC: the rules over SRC with the table in DOC, as TAP lines
# without the plan. Exit status 1 when any case fails.
check() {
    src=$1
    doc=$2
    {
        # The table: "rank name module..." lines of the fenced block after
        # the marker.
        awk '
            /^<!-- layers:/ { want = 1; next }
            want && /^```/ { if (inside) exit; inside = 1; next }
            inside && NF >= 3 && $1 ~ /^[0-9]+$/ {
                for (i = 3; i <= NF; i++) print "T", $1, $2, $i
            }
        ' "$doc"
        for f in "$src"/*.c "$src"/*.h; do
            [ -f "$f" ] || continue
            b=${f##*/}
            echo "F ${b%.*} $b"
            sed -n 's/^[[:space:]]*#[[:space:]]*include[[:space:]]*"\([A-Za-z0-9_]*\)\.h".*/\1/p' "$f" |
                while read -r dep; do
                    [ -f "$src/$dep.h" ] && echo "I ${b%.*} $dep $b"
                done
        done
    } | awk '
        function mod(x) { return (x in alias) ? alias[x] : x }
        $1 == "T" {
            n = split($4, a, "=")
            if (n == 2) { alias[a[1]] = a[2]; next }
            rank[$4] = $2 + 0; layer[$4] = $3; order[++nmods] = $4
            next
        }
        $1 == "F" { files[++nfiles] = $2; fname[nfiles] = $3; next }
        $1 == "I" {
            m = mod($2); d = mod($3)
            if (m == d) next
            inc[++nincs] = m SUBSEP d SUBSEP $4 SUBSEP $3
            if (!((m, d) in edge)) { edge[m, d] = 1; succ[m] = succ[m] " " d }
            next
        }
        function dfs(u, path,    k, n, list, v) {
            state[u] = 1
            n = split(succ[u], list, " ")
            for (k = 1; k <= n; k++) {
                v = list[k]
                if (state[v] == 1) { if (cycle == "") cycle = path " -> " v; continue }
                if (state[v] == 0) dfs(v, path " -> " v)
            }
            state[u] = 2
        }
        END {
            t = 0; failed = 0
            # Every file in a module of the table.
            missing = ""
            for (i = 1; i <= nfiles; i++)
                if (!(mod(files[i]) in rank)) missing = missing " " fname[i]
            t++
            if (missing == "") print "ok " t " - every file of src/ is in a layer"
            else { print "not ok " t " - not in any layer of the table:" missing; failed = 1 }
            # Each module: no include of a higher layer.
            present[""] = 0
            for (i = 1; i <= nfiles; i++) present[mod(files[i])] = 1
            for (i = 1; i <= nmods; i++) {
                m = order[i]
                if (!(m in present)) continue
                bad = ""
                for (j = 1; j <= nincs; j++) {
                    split(inc[j], e, SUBSEP)
                    if (e[1] != m || !(e[2] in rank)) continue
                    if (rank[e[2]] > rank[m])
                        bad = bad sprintf(" %s includes %s.h (%s, layer %d);", e[3], e[4],
                                          layer[e[2]], rank[e[2]])
                }
                t++
                if (bad == "")
                    printf "ok %d - %s (%s, layer %d) includes nothing above it\n", t, m,
                           layer[m], rank[m]
                else {
                    printf "not ok %d - %s (%s, layer %d):%s\n", t, m, layer[m], rank[m], bad
                    failed = 1
                }
            }
            # No cycle among the modules.
            cycle = ""
            for (i = 1; i <= nfiles; i++) {
                m = mod(files[i])
                if (state[m] == 0) dfs(m, m)
            }
            t++
            if (cycle == "") print "ok " t " - no include cycle among the modules"
            else { print "not ok " t " - include cycle: " cycle; failed = 1 }
            print "# " t " cases" > "/dev/stderr"
            exit failed
        }
    '
}

if [ "${1:-}" = --check ]; then
    check "$2" "$3"
    exit $?
fi

top=${DNODED_SRCDIR:-$(cd "$(dirname "$0")/../.." && pwd)}
tmp=$(mktemp -d "${TMPDIR:-/tmp}/check_layers.XXXXXX")
trap 'rm -rf "$tmp"' EXIT

check "$top/src" "$top/HACKING.md" >"$tmp/real" 2>/dev/null
n=$(grep -c '^\(not \)\{0,1\}ok ' "$tmp/real")

# The self-test: a made-up tree per rule, which the checker must refuse,
# naming what is wrong; and a clean one it must accept.
mkdir -p "$tmp/t"
cat >"$tmp/t/doc" <<'EOF'
<!-- layers: -->
```
0  base     low
1  middle   mid mid_part
2  top      high
```
EOF
selftest() { # NAME EXPECT(0|1) PATTERN, on the tree in $tmp/t/src
    out=$(check "$tmp/t/src" "$tmp/t/doc" 2>/dev/null)
    rc=$?
    n=$((n + 1))
    if [ "$rc" = "$2" ] && printf '%s\n' "$out" | grep -q "$3"; then
        echo "ok $n - self-test: $1" >>"$tmp/self"
    else
        echo "not ok $n - self-test: $1 (exit $rc, wanted $2 and '$3'):" >>"$tmp/self"
        printf '%s\n' "$out" | sed 's/^/#   /' >>"$tmp/self"
    fi
}
: >"$tmp/self"
tree() { # FILE:INCLUDES... (a fresh src/ with these files and their includes)
    rm -rf "$tmp/t/src"
    mkdir -p "$tmp/t/src"
    for spec in "$@"; do
        f=${spec%%:*}
        : >"$tmp/t/src/$f"
        for d in $(echo "${spec#*:}" | tr ',' ' '); do
            echo "#include \"$d.h\"" >>"$tmp/t/src/$f"
        done
    done
}
tree low.c:low low.h: mid.c:mid,low mid.h:low mid_part.c:mid high.c:high,mid,low high.h:
selftest "a layered tree passes" 0 "no include cycle"
tree low.c:low,high low.h: high.c:high high.h:
selftest "an include of a higher layer is refused and named" 1 "low.c includes high.h"
tree low.c:low low.h: mid.c:mid mid.h:mid_part mid_part.c:mid_part mid_part.h:mid high.h:
selftest "a cycle within one layer is refused and shown" 1 "include cycle: mid.* -> mid"
tree low.c:low low.h: stray.c:low
selftest "a file in no layer is refused and named" 1 "not in any layer.*stray.c"

echo "1..$n"
cat "$tmp/real" "$tmp/self"
