#!/usr/bin/env bash
# Start the Redis and PostgreSQL servers the integration tests use (called by .ci/run); also
# installs g++, which torch.compile needs to build CPU kernels, and Chromium, which the browser tests
# (tests/browser, Playwright) drive.
# Installs them with apt only when missing; safe to run again (every step checks first).
# Afterwards: redis://127.0.0.1:6379/0 and postgresql+psycopg://kd:kd@127.0.0.1:5432/kd
set -euo pipefail

PG_ROLE=kd
PG_PASSWORD=kd
PG_DB=kd

as_root() {
    if [ "$(id -u)" -eq 0 ]; then "$@"; else sudo "$@"; fi
}

missing=()
command -v redis-server >/dev/null 2>&1 || missing+=(redis-server)
command -v pg_ctlcluster >/dev/null 2>&1 || missing+=(postgresql)
command -v g++ >/dev/null 2>&1 || missing+=(g++)  # torch.compile's CPU kernels (train.compile test)
command -v chromium >/dev/null 2>&1 || missing+=(chromium)  # tests/browser; Playwright brings its driver
if [ "${#missing[@]}" -gt 0 ]; then
    echo "ci-services: installing ${missing[*]}"
    as_root apt-get update -qq
    as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
fi

# --- Redis: loopback only, no persistence (test data is throw-away).
if ! redis-cli -h 127.0.0.1 -p 6379 ping >/dev/null 2>&1; then
    echo "ci-services: starting redis-server"
    redis-server --daemonize yes --bind 127.0.0.1 --port 6379 --save '' --appendonly no \
        --logfile /tmp/ci-redis.log
fi

# --- PostgreSQL: the distribution's cluster (Debian/Ubuntu pg_ctlcluster), created if absent.
if ! pg_isready -h 127.0.0.1 -p 5432 -q 2>/dev/null; then
    version=$(ls /usr/lib/postgresql | sort -V | tail -n 1)
    if ! pg_lsclusters -h 2>/dev/null | awk '{print $1" "$2}' | grep -q "^$version main$"; then
        as_root pg_createcluster "$version" main --port 5432 >/dev/null
    fi
    echo "ci-services: starting PostgreSQL $version"
    as_root pg_ctlcluster "$version" main start || as_root service postgresql start
fi

wait_for() {  # wait_for NAME COMMAND...: poll for up to 30 s
    local name=$1; shift
    for _ in $(seq 1 60); do
        if "$@" >/dev/null 2>&1; then return 0; fi
        sleep 0.5
    done
    echo "ci-services: $name did not answer within 30 s" >&2
    return 1
}
wait_for redis redis-cli -h 127.0.0.1 -p 6379 ping
wait_for postgresql pg_isready -h 127.0.0.1 -p 5432 -q

psql_admin() {  # run SQL as the postgres superuser over the local socket
    if [ "$(id -u)" -eq 0 ]; then
        su postgres -c "psql -v ON_ERROR_STOP=1 -qtA -c \"$1\""
    else
        sudo -u postgres psql -v ON_ERROR_STOP=1 -qtA -c "$1"
    fi
}
if [ "$(psql_admin "SELECT 1 FROM pg_roles WHERE rolname='$PG_ROLE'")" != "1" ]; then
    psql_admin "CREATE ROLE $PG_ROLE LOGIN PASSWORD '$PG_PASSWORD'"
fi
if [ "$(psql_admin "SELECT 1 FROM pg_database WHERE datname='$PG_DB'")" != "1" ]; then
    psql_admin "CREATE DATABASE $PG_DB OWNER $PG_ROLE"
fi
wait_for "postgresql login as $PG_ROLE" \
    env PGPASSWORD=$PG_PASSWORD psql -h 127.0.0.1 -U $PG_ROLE -d $PG_DB -qtAc 'SELECT 1'
echo "ci-services: redis and postgresql are up"
