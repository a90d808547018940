#!/usr/bin/env bash
# The main job on the embedded default backend: create a SQLite database,
# replicate it with the bundled file plugin, restore it, compare.
# Usage: tests/demo.sh [WORK_DIR]   (default target/demo)
set -euo pipefail
cd "$(dirname "$0")/.."
work="$(realpath -m "${1:-target/demo}")"
rm -rf "$work" && mkdir -p "$work"

python3 - "$work/app.db" <<'PY'
import sqlite3, sys
c = sqlite3.connect(sys.argv[1])
c.execute("PRAGMA journal_mode=wal")
c.execute("CREATE TABLE notes(id INTEGER PRIMARY KEY, body TEXT)")
c.executemany("INSERT INTO notes(body) VALUES (?)", [(f"note {i}",) for i in range(10000)])
c.commit()
PY

cargo run -q -p sluice -- replicate -once "$work/app.db" "file://$work/backup"
cargo run -q -p sluice -- ltx -level all "file://$work/backup"
cargo run -q -p sluice -- restore -integrity-check quick -o "$work/restored.db" "file://$work/backup"

python3 - "$work/app.db" "$work/restored.db" <<'PY'
import sqlite3, sys
rows = [sqlite3.connect(p).execute("SELECT count(*), sum(length(body)) FROM notes").fetchone() for p in sys.argv[1:]]
assert rows[0] == rows[1], rows
print(f"restored copy matches: {rows[1][0]} rows")
PY
