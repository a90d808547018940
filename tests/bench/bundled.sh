#!/usr/bin/env bash
# What the bundled plugins cost a replicating process that does not use
# them: `sluice replicate` of one database to a file replica, once with the
# bundled `file` plugin (every other bundled plugin embedded, unused) and
# once with the same plugin loaded from a .wasm file (nothing embedded is
# touched), alternately, ROUNDS times each. Prints the time from start to
# the first replica file and the peak RSS of each run.
#
# Usage: tests/bench/bundled.sh [SLUICE_BINARY] [ROUNDS]
set -euo pipefail
BIN=${1:-target/release/sluice}
ROUNDS=${2:-3}
BIN=$(realpath "$BIN")
WORK=$(mktemp -d)
trap 'pkill -INT -f "sluice replicate -config $WORK" 2>/dev/null || true; rm -rf "$WORK"' EXIT
"$BIN" plugin export "$WORK/plugins" >/dev/null
# Compile both once (the compile cache is shared), so each run is warm.
"$BIN" plugin info file >/dev/null
"$BIN" plugin info "$WORK/plugins/file.wasm" >/dev/null

one_run() {
    local mode=$1 run=$WORK/run
    rm -rf "$run" && mkdir -p "$run"
    python3 -c "import sqlite3; c = sqlite3.connect('$run/app.db'); c.execute('pragma journal_mode=wal'); c.execute('create table t(x)'); c.commit()"
    local plugin=""
    [ "$mode" = file ] && plugin="      plugin: $WORK/plugins/file.wasm"
    printf 'socket:\n  enabled: true\n  path: %s\ndbs:\n  - path: %s\n    replica:\n      url: file://%s\n%s\n' \
        "$run/ctl.sock" "$run/app.db" "$run/replica" "$plugin" > "$WORK/c-$mode.yml"
    local start end pid
    start=$(date +%s%N)
    "$BIN" replicate -config "$WORK/c-$mode.yml" > "$run/log" 2>&1 &
    pid=$!
    until [ -n "$(ls "$run/replica" 2>/dev/null)" ]; do sleep 0.005; done
    end=$(date +%s%N)
    sleep 1
    echo "$mode: first replica file after $(( (end - start) / 1000000 )) ms, peak RSS $(awk '/VmHWM/ {print $2}' /proc/$pid/status) kB"
    kill -INT $pid
    wait $pid || true
}

for _ in $(seq "$ROUNDS"); do
    one_run bundled
    one_run file
done
