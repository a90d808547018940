#!/usr/bin/env bash
# Regenerates host/symbol-order.txt: every function of the release binary
# that runs while sluice replicates and restores (the benchmark's sluice
# workloads, warm compile cache), hottest first. host/build.rs hands the
# list to the linker, which lays those functions out together; see the
# comment on SYMBOL_ORDER there for why that matters.
#
# How: a uprobe on the entry of every function (tracefs), the workload,
# then the probes' hit counts. Exact for Rust, the standard library and
# the C parts (SQLite, zstd) alike, with no instrumented build.
#
# Needs root (uprobes), tracefs at /sys/kernel/tracing, nm and python3.
# Takes about 45 minutes, most of it the kernel disabling and removing
# 27k probes (each waits for an RCU grace period); the list is written
# after the first 5.
# Rerun it after dependency bumps or large changes: names it lists that
# no longer exist are ignored by the linker, so a stale list only costs
# resident memory, and the run prints how much of the old list still
# matched.
set -euo pipefail
cd "$(dirname "$0")/../.."
tracefs=/sys/kernel/tracing
group="${SLUICE_ORDER_GROUP:-sluice_order}"
out=host/symbol-order.txt
work="$(mktemp -d)"

[ -w "$tracefs/uprobe_events" ] || mount -t tracefs nodev "$tracefs" 2>/dev/null || true
[ -w "$tracefs/uprobe_events" ] || { echo "needs root and tracefs at $tracefs (uprobe_events not writable; as root: mount -t tracefs nodev $tracefs)" >&2; exit 2; }

cargo bench -p sluice --bench litestream --no-run
bin="$(realpath target/release/sluice)"
export SLUICE_CACHE_DIR="$PWD/target/bench-compile-cache"
# Compile (or find) the cached plugin now, so compiling is not profiled:
# a running sluice normally loads it from the cache.
"$bin" plugin info file >/dev/null

cleanup() {
    echo 0 >"$tracefs/events/$group/enable" 2>/dev/null || true
    echo 1 >"$tracefs/tracing_on"
    echo "removing the probes (slow)..." >&2
    python3 - "$tracefs" "$group" <<'PY'
import os, sys
tracefs, group = sys.argv[1:]
events = [l.split()[0][2:] for l in open(f"{tracefs}/uprobe_events") if l.startswith(f"p:{group}/")]
fd = os.open(f"{tracefs}/uprobe_events", os.O_WRONLY | os.O_APPEND)
for e in events:
    os.write(fd, f"-:{e}\n".encode())
os.close(fd)
PY
    rm -rf "$work"
}
trap cleanup EXIT

python3 - "$bin" "$tracefs" "$group" "$work/names" <<'PY'
import os, subprocess, sys
binp, tracefs, group, names = sys.argv[1:]
loads = []  # (file offset, vaddr, size) of each PT_LOAD: uprobes take file offsets
for line in subprocess.run(["readelf", "-lW", binp], capture_output=True, text=True, check=True).stdout.splitlines():
    f = line.split()
    if f and f[0] == "LOAD":
        loads.append((int(f[1], 16), int(f[2], 16), int(f[4], 16)))
funcs, seen = [], set()
for line in subprocess.run(["nm", "-S", "--defined-only", binp], capture_output=True, text=True, check=True).stdout.splitlines():
    f = line.split()
    if len(f) != 4 or f[2] not in "tTwW" or int(f[1], 16) == 0:
        continue
    addr = int(f[0], 16)
    if addr in seen:  # aliases share one entry
        continue
    seen.add(addr)
    for off, vaddr, size in loads:
        if vaddr <= addr < vaddr + size:
            funcs.append((addr - vaddr + off, f[3]))
            break
with open(names, "w") as f:
    f.writelines(f"f{i} {name}\n" for i, (_, name) in enumerate(funcs))
fd = os.open(f"{tracefs}/uprobe_events", os.O_WRONLY | os.O_APPEND)
batch = ""
for i, (off, _) in enumerate(funcs):
    line = f"p:{group}/f{i} {binp}:0x{off:x}\n"
    if len(batch) + len(line) > 4000:
        os.write(fd, batch.encode())
        batch = ""
    batch += line
if batch:
    os.write(fd, batch.encode())
os.close(fd)
print(f"{len(funcs)} probes", file=sys.stderr)
PY
# Hits are counted whether or not events are recorded; recording them
# would only slow the workload down.
echo 0 >"$tracefs/tracing_on"
echo 1 >"$tracefs/events/$group/enable"

SLUICE_BENCH_ONLY=sluice SLUICE_BENCH_SECONDS=40 SLUICE_BENCH_BIG_MB=64 \
    cargo bench -p sluice --bench litestream

# Counts are read before the probes are disabled: disabling 27k of them
# takes the kernel minutes, and the cleanup does it.
python3 - "$tracefs" "$work/names" "$out" "$bin" <<'PY'
import sys
tracefs, names, out, binp = sys.argv[1:]
name = dict(l.rstrip("\n").split(" ", 1) for l in open(names))
hits = []
for line in open(f"{tracefs}/uprobe_profile"):
    f = line.split()
    # Only this binary's probes: another group may use the same event names.
    if len(f) == 3 and f[0] == binp and f[1] in name and int(f[2]) > 0:
        hits.append((int(f[2]), name[f[1]]))
hits.sort(key=lambda h: -h[0])
try:
    old = [l.strip() for l in open(out) if l.strip()]
except FileNotFoundError:
    old = []
present = set(name.values())
if old:
    kept = sum(1 for n in old if n in present)
    print(f"the previous list matched {kept} of its {len(old)} names in this build", file=sys.stderr)
with open(out, "w") as f:
    f.writelines(n + "\n" for _, n in hits)
print(f"{len(hits)} functions ran; written to {out}", file=sys.stderr)
PY
