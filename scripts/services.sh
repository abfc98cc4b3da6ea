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
# With CAISSON_REDIS_PASSWORD_FILE (run.sh sets it) the Redis at REDIS_URL must ask for that password.
# A local one that does not answer is started with it (requirepass, given on stdin, never on a command
# line), as the user CAISSON_REDIS_USER (redis), in CAISSON_REDIS_DIR; one that answers without the
# password is restarted only if it is that Redis (its pid file there), never someone else's. Without
# the variable (the test suite), a local Redis without a password is fine and started if needed.
redis_url=${REDIS_URL:-redis://127.0.0.1:6379}
redis_host=$(sed -E 's#^redis://([^@]*@)?([^:/]+).*#\2#' <<<"$redis_url")
redis_port=$(sed -nE 's#^redis://([^@]*@)?[^:/]+:([0-9]+).*#\2#p' <<<"$redis_url")
redis_port=${redis_port:-6379}
password_file=${CAISSON_REDIS_PASSWORD_FILE:-}
cli() { redis-cli -h "$redis_host" -p "$redis_port" "$@"; }
answers() { [[ $(cli ping 2>/dev/null) == PONG ]]; }
answers_with_password() { [[ $(REDISCLI_AUTH=$(cat "$password_file") cli --no-auth-warning ping 2>/dev/null) == PONG ]]; }

start_redis() {
    case $redis_host in 127.0.0.1|localhost) ;; *) die "Redis at $redis_url does not answer" ;; esac
    command -v redis-server >/dev/null || die "redis-server is not installed (run scripts/setup.sh)"
    if cli ping 2>&1 | grep -q NOAUTH; then
        die "the Redis at $redis_url asks for a password other than Caisson's (${password_file:-none given})"
    fi
    if [[ -z $password_file ]]; then
        say "starting a local Redis on port $redis_port"
        redis-server --port "$redis_port" --bind 127.0.0.1 --daemonize yes --save '' --appendonly no \
            --dir /tmp >/dev/null
        wait_for "Redis" answers
        return
    fi
    local dir=${CAISSON_REDIS_DIR:?CAISSON_REDIS_DIR is needed with a password file} user=${CAISSON_REDIS_USER:-redis}
    local -a drop=()
    if [[ $(id -u) -eq 0 ]]; then  # never as root
        id "$user" >/dev/null 2>&1 || die "user '$user' for Redis does not exist (Debian's redis-server package makes 'redis')"
        install -d -o "$user" -g "$(id -gn "$user")" -m 700 "$dir"
        drop=(setpriv --reuid="$user" --regid="$(id -gn "$user")" --init-groups)
    else
        install -d -m 700 "$dir"
    fi
    say "starting Caisson's Redis on port $redis_port (as ${user}, with a password)"
    { printf 'requirepass %s\n' "$(cat "$password_file")"
      printf 'port %s\nbind 127.0.0.1\ndaemonize yes\nsave ""\nappendonly no\ndir %s\n' "$redis_port" "$dir"
      printf 'pidfile %s/redis.pid\nlogfile %s/redis.log\n' "$dir" "$dir"; } | "${drop[@]}" redis-server -
    wait_for "Redis" answers_with_password
}

if [[ -n $password_file ]] && answers_with_password; then
    :
elif [[ -n $password_file ]] && answers; then
    own=${CAISSON_REDIS_DIR:-}/redis.pid
    if [[ -n ${CAISSON_REDIS_DIR:-} && -s $own && $(cli info server | sed -n 's/^process_id:\([0-9]*\).*/\1/p') == "$(cat "$own")" ]]; then
        say "Caisson's Redis on port $redis_port has no password: restarting it with one"
        cli shutdown nosave >/dev/null 2>&1 || true
        for _ in $(seq 50); do answers || break; sleep 0.1; done
        start_redis
    else
        die "the Redis at $redis_url answers without Caisson's password and is not Caisson's own: give it
      'requirepass' with the password in $password_file, or set REDIS_URL to a free local port"
    fi
elif ! answers; then
    start_redis
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
