#!/usr/bin/env bash
# Bring Caisson up on this machine: packages and venv, Redis and the
# database, migrations, the first administrator (password printed once, or
# CAISSON_ADMIN_PASSWORD), the busybox template in the store, then the ASGI
# web server, this node's agent, Celery beat and the console relay in the
# background. Prints the address to open. Needs root: the node agent runs
# containers and the console relay opens terminals inside them.
#
#   ./scripts/run.sh            start what is not running (idempotent)
#   ./scripts/run.sh stop       stop web server, agent, beat and console relay (containers keep running)
#   ./scripts/run.sh status     show what runs
#
# Settings (environment): CAISSON_ROOT (/var/lib/caisson), CAISSON_PORT (8006),
# CAISSON_BIND (127.0.0.1), DATABASE_URL (default: SQLite in $CAISSON_ROOT/web),
# REDIS_URL (redis://127.0.0.1:6379; a local Redis is started if none answers).
set -euo pipefail
cd "$(dirname "$0")/.."

export CAISSON_ROOT=${CAISSON_ROOT:-/var/lib/caisson}
export CAISSON_WEB_DATA=${CAISSON_WEB_DATA:-$CAISSON_ROOT/web}
PORT=${CAISSON_PORT:-8006}
BIND=${CAISSON_BIND:-127.0.0.1}
RUN_DIR=$CAISSON_WEB_DATA/run
LOG_DIR=$CAISSON_WEB_DATA/log
PY=.venv/bin/python
DAEMONS=(web agent beat console)

say() { printf 'run: %s\n' "$*"; }
die() { printf 'run: error: %s\n' "$*" >&2; exit 1; }

running() { [[ -f $RUN_DIR/$1.pid ]] && kill -0 "$(cat "$RUN_DIR/$1.pid")" 2>/dev/null; }

command_of() {
    case $1 in
        web) echo "$PY -m webui.serve --host $BIND --port $PORT" ;;
        agent) echo "$PY -m tasks.agent" ;;
        console) echo "$PY -m tasks.console_relay" ;;
        beat) echo "$PY -m celery -A tasks.celery beat --schedule $RUN_DIR/beat-schedule --pidfile= -l info" ;;
    esac
}

stop_all() {
    for name in "${DAEMONS[@]}"; do
        if running "$name"; then
            say "stopping $name"
            kill -TERM "$(cat "$RUN_DIR/$name.pid")" || true
        fi
    done
    for name in "${DAEMONS[@]}"; do
        for _ in $(seq 100); do running "$name" || break; sleep 0.2; done
        rm -f "$RUN_DIR/$name.pid"
    done
}

case ${1:-start} in
    stop) stop_all; exit 0 ;;
    status)
        for name in "${DAEMONS[@]}"; do
            if running "$name"; then say "$name: running (pid $(cat "$RUN_DIR/$name.pid"))"; else say "$name: stopped"; fi
        done
        exit 0 ;;
    start) ;;
    *) die "unknown command '$1' (use start, stop or status)" ;;
esac

[[ $(id -u) -eq 0 ]] || die "run as root: the node agent creates namespaces, cgroups and mounts"
bash scripts/setup.sh
bash scripts/services.sh
mkdir -p "$RUN_DIR" "$LOG_DIR"
chmod 700 "$CAISSON_WEB_DATA"

# A secret key of this installation, made once.
if [[ -z ${DJANGO_SECRET_KEY:-} ]]; then
    [[ -s $CAISSON_WEB_DATA/secret_key ]] || (umask 077; $PY -c 'import secrets; print(secrets.token_urlsafe(50))' >"$CAISSON_WEB_DATA/secret_key")
    DJANGO_SECRET_KEY=$(cat "$CAISSON_WEB_DATA/secret_key")
    export DJANGO_SECRET_KEY
fi

$PY manage.py migrate --noinput -v0
$PY manage.py collectstatic --noinput -v0
$PY manage.py ensure_admin

if ! ls "$CAISSON_ROOT"/template/cache/busybox-*.tar.* >/dev/null 2>&1; then
    say "building the busybox template into the store"
    $PY -m engine.builders busybox --dest "$CAISSON_ROOT/template/cache" >/dev/null
fi

for name in "${DAEMONS[@]}"; do
    if running "$name"; then
        say "$name already running (pid $(cat "$RUN_DIR/$name.pid"))"
        continue
    fi
    # shellcheck disable=SC2046
    setsid nohup $(command_of "$name") >>"$LOG_DIR/$name.log" 2>&1 </dev/null &
    echo $! >"$RUN_DIR/$name.pid"
    say "started $name (log: $LOG_DIR/$name.log)"
done

url="http://$BIND:$PORT/"
for _ in $(seq 150); do
    if $PY -c "import sys, urllib.request; urllib.request.urlopen('${url}healthz', timeout=1)" 2>/dev/null; then
        break
    fi
    for name in "${DAEMONS[@]}"; do
        running "$name" || die "$name stopped at start; see $LOG_DIR/$name.log"
    done
    sleep 0.2
done
$PY -c "import sys, urllib.request; urllib.request.urlopen('${url}healthz', timeout=2)" 2>/dev/null \
    || die "the web server does not answer at $url; see $LOG_DIR/web.log"
say "Caisson is up: open $url (log in as the administrator above; stop with ./scripts/run.sh stop)"
