#!/usr/bin/env bash
# Make sure the services Caisson talks to answer on this machine: Redis
# (broker, channel layer, cache) and, when DATABASE_URL names a local
# PostgreSQL, that server and its database. Starts what is installed but
# not running; setup.sh installs the packages. Idempotent.
set -euo pipefail
cd "$(dirname "$0")/.."

say() { printf 'services: %s\n' "$*"; }
die() { printf 'services: error: %s\n' "$*" >&2; exit 1; }

wait_for() {  # wait_for DESCRIPTION COMMAND...
    local what=$1
    shift
    for _ in $(seq 100); do
        "$@" >/dev/null 2>&1 && return 0
        sleep 0.1
    done
    die "$what did not come up"
}

# --- Redis ----------------------------------------------------------------------
redis_url=${REDIS_URL:-redis://127.0.0.1:6379}
redis_host=$(sed -E 's#^redis://([^@]*@)?([^:/]+).*#\2#' <<<"$redis_url")
redis_port=$(sed -nE 's#^redis://([^@]*@)?[^:/]+:([0-9]+).*#\2#p' <<<"$redis_url")
redis_port=${redis_port:-6379}
if ! redis-cli -h "$redis_host" -p "$redis_port" ping >/dev/null 2>&1; then
    case $redis_host in
        127.0.0.1|localhost)
            say "starting a local Redis on port $redis_port"
            command -v redis-server >/dev/null || die "redis-server is not installed (run scripts/setup.sh)"
            redis-server --port "$redis_port" --bind 127.0.0.1 --daemonize yes --save '' --appendonly no \
                --dir /tmp >/dev/null
            wait_for "Redis" redis-cli -h "$redis_host" -p "$redis_port" ping ;;
        *) die "Redis at $redis_url does not answer" ;;
    esac
fi

# --- PostgreSQL -------------------------------------------------------------------
if [[ ${DATABASE_URL:-} == postgres* ]]; then
    db_host=$(.venv/bin/python -c 'import os,urllib.parse as u; print(u.urlparse(os.environ["DATABASE_URL"]).hostname or "")')
    db_name=$(.venv/bin/python -c 'import os,urllib.parse as u; print(u.urlparse(os.environ["DATABASE_URL"]).path.lstrip("/"))')
    if [[ $db_host == 127.0.0.1 || $db_host == localhost || -z $db_host ]]; then
        if ! pg_isready -q -h "${db_host:-/var/run/postgresql}"; then
            say "starting the local PostgreSQL"
            if command -v pg_ctlcluster >/dev/null && ls /etc/postgresql/*/main >/dev/null 2>&1; then
                version=$(ls /etc/postgresql | sort -V | tail -1)
                pg_ctlcluster "$version" main start || true
            else
                service postgresql start || true
            fi
            wait_for "PostgreSQL" pg_isready -q -h "${db_host:-/var/run/postgresql}"
        fi
    fi
    if ! .venv/bin/python - <<'PY'
import os, sys, urllib.parse as u
import psycopg
url = u.urlparse(os.environ["DATABASE_URL"])
name = url.path.lstrip("/")
admin = url._replace(path="/postgres").geturl()
try:
    with psycopg.connect(admin, autocommit=True, connect_timeout=10) as conn:
        if not conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", (name,)).fetchone():
            conn.execute(f'CREATE DATABASE "{name}"')
            print(f"services: created database {name}")
except psycopg.Error as exc:
    sys.exit(f"services: error: PostgreSQL at {url.hostname or 'the local socket'}: {exc}")
PY
    then die "PostgreSQL is not usable"; fi
fi
say "Redis and the database answer"
