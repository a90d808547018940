#!/usr/bin/env python3
"""Many tenants in one process (issue 17): N small WAL databases, one
`dbs:` entry and one file replica each, replicated by one `sluice
replicate` under a 20,000 descriptor limit.

    python3 tests/bench/tenants.py N [path/to/sluice]
    python3 tests/bench/tenants.py N path/to/litestream    # side by side

Prints, once a second: databases whose first snapshot is in their replica,
the process's RSS and open descriptors; then the time until all were
snapshotted and the CPU used by then, peak RSS, the most descriptors, the
descriptors left once they rest, and the idle CPU and RSS once every
database and lease has rested. The databases are made once under /tmp/tenantsN and reused
(their replicas and local state are removed before each run). Not a timed
test: figures go to BENCHMARKS.md, measured side by side.
"""
import glob, os, random, shutil, sqlite3, subprocess, sys, threading, time

N = int(sys.argv[1])
BIN = sys.argv[2] if len(sys.argv) > 2 else os.path.join(os.path.dirname(__file__), "../../target/release/sluice")
BASE = f"/tmp/tenants{N}"
# Litestream 0.5's file replicas keep snapshots under ltx/9, sluice's
# under 0009: `tenants.py N path/to/litestream` measures it side by side.
LITESTREAM = os.path.basename(BIN).startswith("litestream")
SNAPSHOTS = "ltx/9" if LITESTREAM else "0009"
LEVEL0 = "ltx/0" if LITESTREAM else "0000"
LAG_WRITES = 100
LIMIT = 20_000
AFTER_ALL = 105  # seconds to watch after the last first snapshot (resting)
SETTLE = 75  # idle-timeout (10 s) and the lease's idle lapse (60 s) and a margin: from then on all rests
GIVE_UP = 600

def make():
    os.makedirs(BASE + "/data", exist_ok=True)
    lines = ["dbs:"]
    for i in range(N):
        path = f"{BASE}/data/d{i}.db"
        c = sqlite3.connect(path)
        c.execute("pragma journal_mode=wal")
        c.execute("create table t(x)")
        c.execute("insert into t values (randomblob(2000))")
        c.commit()
        c.close()
        lines.append(f"  - path: {path}\n    replica:\n      url: file://{BASE}/replica/d{i}")
    with open(BASE + "/config.yml", "w") as f:
        f.write("\n".join(lines) + "\n")

if not os.path.exists(BASE + "/config.yml"):
    make()
shutil.rmtree(BASE + "/replica", ignore_errors=True)
for d in glob.glob(BASE + "/data/.d*-sluice") + glob.glob(BASE + "/data/.d*-litestream"):
    shutil.rmtree(d)

def cpu_seconds(pid):
    """User and system CPU time the process has used so far."""
    fields = open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

t0 = time.time()
proc = subprocess.Popen(
    ["bash", "-c", f"ulimit -n {LIMIT}; exec {BIN} replicate -config {BASE}/config.yml"],
    stdout=open(BASE + "/log", "w"), stderr=subprocess.STDOUT)
peak = most = fds = 0
waiting = list(range(N))
idle_from = None
done = None
while time.time() - t0 < GIVE_UP:
    time.sleep(1)
    try:
        status = open(f"/proc/{proc.pid}/status").read()
        rss = int(status.split("VmRSS:")[1].split()[0]) // 1024
        fds = len(os.listdir(f"/proc/{proc.pid}/fd"))
    except (OSError, IndexError) as e:
        sys.exit(f"the replicator is gone: {e}")
    peak, most = max(peak, rss), max(most, fds)
    # Only the databases not yet seen snapshotted are looked at: listing
    # 10,000 replica directories every second cost this script most of a
    # core, taken from the replicator on a 2-core machine.
    waiting = [i for i in waiting if not glob.glob(f"{BASE}/replica/d{i}/{SNAPSHOTS}/*")]
    snapshotted = N - len(waiting)
    print(f"{time.time() - t0:6.1f} s: {snapshotted}/{N} snapshotted, RSS {rss} MB, {fds} descriptors", flush=True)
    if snapshotted == N and done is None:
        done = time.time() - t0
        cpu_done = cpu_seconds(proc.pid)
    if done is not None and idle_from is None and time.time() - t0 > done + SETTLE:
        idle_from = (time.time(), cpu_seconds(proc.pid))
    if done is not None and time.time() - t0 > done + AFTER_ALL:
        break
def level0(i):
    try:
        return len(os.listdir(f"{BASE}/replica/d{i}/{LEVEL0}"))
    except OSError:
        return 0

def lag(i):
    """Commit one row to database i from this process; seconds until its
    replica holds one more level-0 segment (polled every millisecond)."""
    before = level0(i)
    c = sqlite3.connect(f"{BASE}/data/d{i}.db")
    c.execute("insert into t values (randomblob(100))")
    c.commit()
    committed = time.time()
    c.close()
    while level0(i) == before:
        if time.time() - committed > 30:
            return None
        time.sleep(0.001)
    return time.time() - committed

idle = idle_from and 100 * (cpu_seconds(proc.pid) - idle_from[1]) / (time.time() - idle_from[0])
print(f"N={N}: all snapshotted after {done and round(done, 1)} s using {done and round(cpu_done, 1)} s of CPU, "
      f"peak RSS {peak} MB, at most {most} descriptors, {fds} at the end; "
      f"idle: {idle and round(idle, 2)}% of a core over the last {AFTER_ALL - SETTLE} s, RSS {rss} MB")
# Commit-to-replica lag for writes spread over random databases, all
# resting: each write wakes its database (LAG_WRITES of them, one at a time).
random.seed(N)
def lags(what):
    got = sorted(l for l in (lag(random.randrange(1, N)) for _ in range(LAG_WRITES)) if l is not None)
    if got:
        print(f"lag over {len(got)} of {LAG_WRITES} writes to random {what}: "
              f"p50 {got[len(got) // 2] * 1000:.0f} ms, max {got[-1] * 1000:.0f} ms", flush=True)

def burst(stop, written):
    """One tenant's burst: database 0 written flat out, 1 MB transactions."""
    c = sqlite3.connect(f"{BASE}/data/d0.db", timeout=60)
    while not stop.is_set():
        written[0] += 1
        c.execute("with recursive s(x) as (select 1 union all select x + 1 from s where x < 1000) "
                  "insert into t select randomblob(1000) from s")
        c.commit()
    c.execute("delete from t where rowid > 1")
    c.commit()
    c.execute("vacuum")  # the next run starts from the same small database
    c.close()

if done:
    lags("resting databases")
    # Fairness: the same while another tenant writes flat out.
    stop, written = threading.Event(), [0]
    noisy = threading.Thread(target=burst, args=(stop, written))
    started = time.time()
    noisy.start()
    time.sleep(2)
    lags("databases while database 0 takes 1 MB transactions flat out")
    stop.set()
    noisy.join()
    print(f"database 0 committed {written[0] / (time.time() - started):.0f} MB/s meanwhile")
proc.send_signal(2)
print("exit code", proc.wait())
