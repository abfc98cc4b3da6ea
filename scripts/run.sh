#!/usr/bin/env bash
# Bring Caisson up on this machine: packages and venv, Redis and the
# database, migrations, the first administrator (password printed once, or
# CAISSON_ADMIN_PASSWORD), the busybox template in the store, then the ASGI
# web server, this node's agent, Celery beat and the console relay in the
# background. Prints the address to open. Needs root: the node agent runs
# containers and the console relay opens terminals inside them; they alone
# run as root. The web server and beat run as the system user CAISSON_USER
# (caisson, made here), which owns $CAISSON_WEB_DATA (database, static files,
# their logs); Redis runs as Debian's 'redis' user, with a password. The
# installation's secrets (SECRET_KEY, Redis password, the keys signing jobs and
# console messages: webui/keys.py) are made once in $CAISSON_SECRETS, 0600,
# owned by the web user. Pid files and the root daemons' logs are in
# $CAISSON_ROOT/daemons, which only root may write; Redis keeps its files in $CAISSON_ROOT/redis.
#
#   ./scripts/run.sh            start what is not running (idempotent)
#   ./scripts/run.sh stop       stop web server, agent, beat and console relay (containers keep running)
#   ./scripts/run.sh shutdown   as at the host's shutdown: stop the containers in reverse startup order
#                               (python -m engine stopall, each within its down timeout), then the daemons
#   ./scripts/run.sh status     show what runs
#   ./scripts/run.sh units DIR  write the systemd units into DIR (and the daemons' environment file)
#   ./scripts/run.sh join --database URL --redis URL --token T --name NAME
#                               make this machine a node of an existing Caisson (README: A cluster): the token is
#                               an administrator's (manage.py node token; '-' reads it from stdin), checked
#                               against that database; then only this node's agent and console relay start
#                               here (the web server and beat run where the console is). A cluster needs
#                               PostgreSQL: one machine may run on SQLite, several nodes cannot share it.
#   ./scripts/run.sh leave      stop this node's agent and console relay and leave the cluster (removed from
#                               the console when it holds no containers; otherwise kept, offline)
#   ./scripts/run.sh units DIR  on a joined node: only caisson-agent, caisson-console and caisson-guests,
#                               ordered after the network (the database and Redis are the console machine's)
#
# Where systemd runs as PID 1 (/run/systemd/system; CAISSON_SYSTEMD=no to opt out) the daemons run as
# systemd units (scripts/systemd.sh), installed, enabled and started here (by run.sh join too), with
# caisson-guests.service stopping the containers at shutdown; elsewhere as plain background processes.
# Either way the agent starts the onboot containers in startup order at its first start since the host
# booted (tasks/boot.py).
#
# Settings (environment): CAISSON_ROOT (/var/lib/caisson), CAISSON_PORT (8006),
# CAISSON_BIND (127.0.0.1), DATABASE_URL (default: SQLite in $CAISSON_ROOT/web),
# REDIS_URL (redis://127.0.0.1:6390: Caisson's own Redis, started if it does not
# answer), CAISSON_SECRETS (/etc/caisson), CAISSON_USER (caisson), CAISSON_HTTP (1: plain HTTP instead of
# HTTPS with the certificate $CAISSON_SECRETS/caisson-ssl.pem, made once and replaceable: webui/tls.py).
set -euo pipefail
cd "$(dirname "$0")/.."

export CAISSON_ROOT=${CAISSON_ROOT:-/var/lib/caisson}
export CAISSON_WEB_DATA=${CAISSON_WEB_DATA:-$CAISSON_ROOT/web}
export CAISSON_SECRETS=${CAISSON_SECRETS:-/etc/caisson}
export REDIS_URL=${REDIS_URL:-redis://127.0.0.1:6390}
PORT=${CAISSON_PORT:-8006}
BIND=${CAISSON_BIND:-127.0.0.1}
WEB_USER=${CAISSON_USER:-caisson}
DAEMON_DIR=$CAISSON_ROOT/daemons
RUN_DIR=$DAEMON_DIR/run
ROOT_LOG_DIR=$DAEMON_DIR/log
LOG_DIR=$CAISSON_WEB_DATA/log
PY=.venv/bin/python
DAEMONS=(web agent beat console)
if [[ ${CAISSON_HTTP:-0} == 1 ]]; then
    SCHEME=http TLS_ARGS=""
else
    SCHEME=https TLS_ARGS="--certfile $CAISSON_SECRETS/caisson-ssl.pem --keyfile $CAISSON_SECRETS/caisson-ssl.key"
fi

say() { printf 'run: %s\n' "$*"; }
die() { printf 'run: error: %s\n' "$*" >&2; exit 1; }

# shellcheck source=scripts/systemd.sh
source scripts/systemd.sh
# The daemons are systemd's once its units are installed here.
units_installed() { systemd_runs && [[ -f ${CAISSON_UNIT_DIR:-/etc/systemd/system}/caisson-agent.service ]]; }

daemon_pid() {  # the daemon's main pid, or nothing
    if units_installed; then
        local pid
        pid=$(systemctl show -p MainPID --value "caisson-$1.service" 2>/dev/null)
        [[ $pid =~ ^[1-9][0-9]*$ ]] && echo "$pid"
    elif [[ -f $RUN_DIR/$1.pid ]]; then
        cat "$RUN_DIR/$1.pid"
    fi
}

# A pid file outlives a reboot (it is not on a tmpfs): its pid counts only while it is that daemon.
running() {
    local pid pattern
    pid=$(daemon_pid "$1") && [[ -n $pid ]] && kill -0 "$pid" 2>/dev/null || return 1
    case $1 in web) pattern='webui\.serve' ;; agent) pattern='tasks\.agent' ;;
               beat) pattern='tasks\.celery beat' ;; console) pattern='tasks\.console_relay' ;; esac
    tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null | grep -qE "$pattern"
}

command_of() {
    case $1 in
        web) echo "$PY -m webui.serve --host $BIND --port $PORT $TLS_ARGS" ;;
        agent) echo "$PY -m tasks.agent" ;;
        console) echo "$PY -m tasks.console_relay" ;;
        beat) echo "$PY -m celery -A tasks.celery beat --schedule $CAISSON_WEB_DATA/beat-schedule --pidfile= -l info" ;;
    esac
}

# The web server, beat and the management commands: the web user, its own home, no root.
as_web() { setpriv --reuid="$WEB_USER" --regid="$WEB_USER" --init-groups env HOME="$CAISSON_WEB_DATA" "$@"; }

start_daemon() {  # start_daemon NAME: in the background, its pid in RUN_DIR
    local name=$1 log
    if [[ $name == web || $name == beat ]]; then
        # The web user opens its own log, so root never writes through a path that user controls.
        log=$LOG_DIR/$name.log
        # shellcheck disable=SC2046,SC2016
        setsid nohup setpriv --reuid="$WEB_USER" --regid="$WEB_USER" --init-groups \
            env HOME="$CAISSON_WEB_DATA" bash -c 'exec "$@" >>"$0" 2>&1' "$log" $(command_of "$name") </dev/null &
    else
        log=$ROOT_LOG_DIR/$name.log
        # shellcheck disable=SC2046
        setsid nohup $(command_of "$name") >>"$log" 2>&1 </dev/null &
    fi
    echo $! >"$RUN_DIR/$name.pid"
    say "started $name (log: $log)"
}

adopt_old_pidfiles() {
    # Daemons started by an older run.sh kept their pid files beside the web data, which the web user
    # now owns: only root's files naming a Caisson daemon are believed.
    for pidfile in "$CAISSON_WEB_DATA"/run/*.pid; do
        [[ -f $pidfile && ! -L $pidfile && -O $pidfile ]] || continue
        name=$(basename "$pidfile" .pid) pid=$(cat "$pidfile")
        [[ " ${DAEMONS[*]} " == *" $name "* && $pid =~ ^[0-9]+$ ]] || continue
        if [[ ! -f $RUN_DIR/$name.pid ]] \
            && tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null | grep -qE 'webui\.serve|tasks\.agent|tasks\.celery beat|tasks\.console_relay'; then
            mkdir -p "$RUN_DIR" && echo "$pid" >"$RUN_DIR/$name.pid"
        fi
        rm -f "$pidfile"
    done
}

stop_all() {
    adopt_old_pidfiles
    if units_installed; then
        say "stopping the daemons' units"
        systemctl stop "${DAEMONS[@]/#/caisson-}"  # caisson-web caisson-agent ...: .service is implied
        return
    fi
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

# A node that joined a cluster runs only its agent and console relay, with the cluster's settings.
CLUSTER_ENV=$DAEMON_DIR/cluster.env
if [[ -f $CLUSTER_ENV ]]; then
    set -a
    # shellcheck source=/dev/null
    source "$CLUSTER_ENV"
    set +a
    DAEMONS=(agent console)
fi

join_cluster() {
    local database="" redis="" token="" name=""
    while [[ $# -gt 0 ]]; do
        case $1 in
            --database) database=${2:-}; shift 2 ;;
            --redis) redis=${2:-}; shift 2 ;;
            --token) token=${2:-}; shift 2 ;;
            --name) name=${2:-}; shift 2 ;;
            *) die "join: unknown option '$1' (--database URL --redis URL --token T --name NAME)" ;;
        esac
    done
    [[ -n $database && -n $redis && -n $token && -n $name ]] || die "join needs --database, --redis, --token and --name"
    [[ $database == postgres://* || $database == postgresql://* ]] \
        || die "join: a cluster needs PostgreSQL (--database postgres://...): SQLite lives on one machine"
    [[ $(id -u) -eq 0 ]] || die "run as root: the node agent creates namespaces, cgroups and mounts"
    [[ ! -f $CLUSTER_ENV ]] || die "this machine is a node already ($CLUSTER_ENV); run.sh leave first"
    bash scripts/setup.sh
    install -d -o root -g root -m 700 "$DAEMON_DIR" "$RUN_DIR" "$ROOT_LOG_DIR"
    if [[ $token == - ]]; then read -r token; fi
    printf '%s\n' "$token" | $PY -m tasks.join --database "$database" --redis "$redis" --token - --name "$name" \
        --secrets "$CAISSON_SECRETS" --env-file "$CLUSTER_ENV" || exit $?
    set -a
    # shellcheck source=/dev/null
    source "$CLUSTER_ENV"
    set +a
    if [[ ${CAISSON_LXCFS_AUTOSTART:-1} != 0 ]]; then
        $PY -m engine lxcfs --log "$CAISSON_ROOT/log/lxcfs.log" >/dev/null || say "warning: lxcfs is not serving"
    fi
    DAEMONS=(agent console)
    if systemd_runs; then  # restarted on failure and at boot
        install_units
    else
        for daemon in "${DAEMONS[@]}"; do running "$daemon" || start_daemon "$daemon"; done
    fi
    say "node $name joined; it appears in the console's tree once its agent has mirrored it"
}

[[ ! -d $CAISSON_WEB_DATA/run ]] || adopt_old_pidfiles
case ${1:-start} in
    join) shift; join_cluster "$@"; exit 0 ;;
    leave)
        [[ -f $CLUSTER_ENV ]] || die "leave: this machine did not join a cluster ($CLUSTER_ENV is missing)"
        stop_all
        outcome=0
        $PY -m tasks.leave || outcome=$?
        if [[ $outcome -eq 0 || $outcome -eq 3 ]]; then
            if units_installed; then remove_units; fi
            rm -f "$CLUSTER_ENV"
        fi
        exit $outcome ;;
    stop) stop_all; exit 0 ;;
    shutdown)
        [[ $(id -u) -eq 0 ]] || die "run as root: stopping containers needs it"
        outcome=0
        if units_installed; then
            say "stopping the containers in reverse startup order (caisson-guests.service)"
            systemctl stop caisson-guests.service || outcome=$?
        else
            say "stopping the containers in reverse startup order (python -m engine stopall)"
            $PY -m engine stopall || outcome=$?
        fi
        stop_all
        [[ $outcome -eq 0 ]] || die "some containers did not stop (see above); the daemons are stopped"
        exit 0 ;;
    units)
        [[ -n ${2:-} ]] || die "units: name the directory to write the unit files into"
        install -d -o root -g root -m 700 "$DAEMON_DIR"
        write_environment "$DAEMON_DIR/environment"
        write_units "$2"
        say "units written into $2 (settings in $DAEMON_DIR/environment)"
        exit 0 ;;
    status)
        for name in "${DAEMONS[@]}"; do
            if running "$name"; then
                pid=$(daemon_pid "$name")
                say "$name: running (pid $pid, user $(ps -o user= -p "$pid"))"
            else
                say "$name: stopped"
            fi
        done
        exit 0 ;;
    start)
        if [[ -f $CLUSTER_ENV ]]; then
            if units_installed; then  # systemd's since run.sh join: started there, never twice
                mapfile -t units < <(unit_names)
                systemctl start "${units[@]/%/.service}"
            else
                for daemon in "${DAEMONS[@]}"; do running "$daemon" || start_daemon "$daemon"; done
            fi
            exit 0
        fi ;;
    *) die "unknown command '$1' (use start, stop, shutdown, status, units DIR, join or leave)" ;;
esac
if [[ ${DATABASE_URL:-sqlite} != postgres* ]]; then
    say "one machine on SQLite; a cluster (run.sh join on other machines) needs DATABASE_URL=postgres://..."
fi

[[ $(id -u) -eq 0 ]] || die "run as root: the node agent creates namespaces, cgroups and mounts"
bash scripts/setup.sh

# The web tier's user, and what it owns.
if ! id "$WEB_USER" >/dev/null 2>&1; then
    say "making the system user $WEB_USER (web server and beat)"
    useradd --system --user-group --home-dir "$CAISSON_WEB_DATA" --no-create-home --shell /usr/sbin/nologin "$WEB_USER"
fi
install -d -m 711 "$CAISSON_ROOT"
install -d -o root -g root -m 700 "$DAEMON_DIR" "$RUN_DIR" "$ROOT_LOG_DIR"
install -d -o "$WEB_USER" -g "$WEB_USER" -m 700 "$CAISSON_WEB_DATA" "$LOG_DIR"
chown -R -P "$WEB_USER:$WEB_USER" "$CAISSON_WEB_DATA"  # an older installation's files were root's
# The web user must reach the checkout and the venv's interpreter (pyenv keeps it under /root): grant
# traversal (search, not listing) on the directories on the way that it cannot pass.
for target in "$(pwd)/manage.py" "$(readlink -f "$PY")"; do
    dir=/
    IFS=/ read -ra parts <<<"${target#/}"
    for part in "${parts[@]:0:${#parts[@]}-1}"; do
        dir=${dir%/}/$part
        if ! as_web test -x "$dir"; then
            say "letting $WEB_USER pass through $dir (chmod o+x: it can open what it is told, not list it)"
            chmod o+x "$dir"
        fi
    done
done
as_web test -r manage.py -a -x "$PY" \
    || die "the user $WEB_USER cannot read $(pwd) or run $PY: put the checkout where it can (e.g. /opt/caisson)"

# The installation's secrets, made once (an older installation's SECRET_KEY is kept).
$PY -m webui.keys "$CAISSON_SECRETS" --owner "$WEB_USER" --redis-password \
    --secret-key-from "$CAISSON_WEB_DATA/secret_key"
rm -f "$CAISSON_WEB_DATA/secret_key"
# HTTPS as Proxmox's: a self-signed certificate made once (its fingerprint printed), replaceable in place.
if [[ $SCHEME == https ]]; then
    say "$($PY -m webui.tls "$CAISSON_SECRETS" --owner "$WEB_USER")"
fi

CAISSON_REDIS_PASSWORD_FILE=$CAISSON_SECRETS/redis.password CAISSON_REDIS_DIR=$CAISSON_ROOT/redis \
    bash scripts/services.sh

as_web $PY manage.py migrate --noinput -v0
as_web $PY manage.py collectstatic --noinput -v0
as_web $PY manage.py ensure_admin

if ! ls "$CAISSON_ROOT"/template/cache/busybox-*.tar.* >/dev/null 2>&1; then
    say "building the busybox template into the store"
    $PY -m engine.builders busybox --dest "$CAISSON_ROOT/template/cache" >/dev/null
fi

# A fresh node gets vmbr0 (a private /24 with an address pool and DHCP, no NAT), as Proxmox's installer makes
# one; an existing interfaces file or vmbr0 is left alone. CAISSON_DEFAULT_BRIDGE=no skips it.
if [[ ${CAISSON_DEFAULT_BRIDGE:-yes} != no ]]; then
    $PY -m engine --root "$CAISSON_ROOT" network --init-default >/dev/null \
        || say "warning: no default bridge made (see: $PY -m engine network --init-default)"
fi

# One lxcfs per node (containers' /proc/meminfo, cpuinfo, uptime... show their limits); the agent restarts it too.
$PY -m engine lxcfs --log "$CAISSON_ROOT/log/lxcfs.log" >/dev/null \
    || say "warning: lxcfs is not serving; containers will see the host's /proc/meminfo (see: $PY -m engine lxcfs)"

if systemd_runs; then
    install_units
else
    for name in "${DAEMONS[@]}"; do
        if running "$name"; then
            say "$name already running (pid $(daemon_pid "$name"))"
            continue
        fi
        start_daemon "$name"
    done
fi

url="$SCHEME://$BIND:$PORT/"
# The health check takes the self-signed certificate as it is: it only asks whether the server answers.
healthy() { $PY -c "import ssl, urllib.request; urllib.request.urlopen('${url}healthz', timeout=$1, context=ssl._create_unverified_context())" 2>/dev/null; }
for _ in $(seq 150); do
    if healthy 1; then
        break
    fi
    for name in "${DAEMONS[@]}"; do
        running "$name" || die "$name stopped at start; see its log in $LOG_DIR or $ROOT_LOG_DIR"
    done
    sleep 0.2
done
healthy 2 || die "the web server does not answer at $url; see $LOG_DIR/web.log"
say "Caisson is up: open $url (log in as the administrator above; stop with ./scripts/run.sh stop)"
