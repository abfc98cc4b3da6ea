# shellcheck shell=bash
# Caisson's systemd units, sourced by run.sh (which defines PY, command_of, WEB_USER and the directories).
#
#   caisson-services.service  Redis and a local database (scripts/services.sh), oneshot
#   caisson-web.service       the ASGI web server, as $WEB_USER
#   caisson-agent.service     this node's agent, root
#   caisson-beat.service      Celery beat, as $WEB_USER
#   caisson-console.service   the console relay, root
#   caisson-guests.service    oneshot: nothing at start (the agent queues the node's startall at its first
#                             start since the host booted), `python -m engine stopall` at stop, so at
#                             shutdown the containers stop in reverse startup order with their down
#                             timeouts before the agent goes (After= orders stops in reverse), as
#                             Proxmox's pve-guests.service does.
#
# A node that joined a cluster (run.sh join) runs only caisson-agent, caisson-console and caisson-guests:
# Redis, the database, the web server and beat are the console machine's, so its units wait for the
# network instead of caisson-services.
#
# The daemons read the installation's settings from $DAEMON_DIR/environment (root's, 0600: it may hold
# the database's password; on a joined node it includes cluster.env's); they log to the journal
# (journalctl -u caisson-web).

unit_names() {  # this machine's units: the daemons run.sh starts here, plus services and guests
    local name
    [[ " ${DAEMONS[*]} " == *" web "* ]] && echo caisson-services
    for name in "${DAEMONS[@]}"; do echo "caisson-$name"; done
    echo caisson-guests
}

systemd_runs() { [[ -d /run/systemd/system && ${CAISSON_SYSTEMD:-yes} != no ]]; }


write_environment() {  # write_environment FILE: the settings run.sh was given, for the units
    local file=$1 name value
    (umask 077 && : >"$file.new")
    for name in $(compgen -e | sort); do
        [[ $name == CAISSON_* || $name == DATABASE_URL || $name == REDIS_URL || $name == DJANGO_* ]] || continue
        [[ $name == CAISSON_ADMIN_PASSWORD ]] && continue  # used once, by ensure_admin
        value=${!name}
        [[ $value != *"'"* && $value != *$'\n'* ]] \
            || die "$name holds a quote or a line break, which a systemd environment file cannot carry here"
        printf "%s='%s'\n" "$name" "$value" >>"$file.new"
    done
    mv -f "$file.new" "$file"
}

write_units() {  # write_units DIR: the unit files, for this checkout and these settings
    local dir=$1 here python name description user exec after needs
    here=$(pwd)
    python=$here/${PY#./}
    mkdir -p "$dir"
    if [[ " ${DAEMONS[*]} " != *" web "* ]]; then  # a joined node: the database and Redis are elsewhere
        after=network-online.target needs=Wants=network-online.target
    else
        after="network.target caisson-services.service" needs=Requires=caisson-services.service
        cat >"$dir/caisson-services.service" <<EOF
[Unit]
Description=Caisson: Redis and the database answer (scripts/services.sh)
After=network.target postgresql.service

[Service]
Type=oneshot
RemainAfterExit=yes
WorkingDirectory=${here//%/%%}
EnvironmentFile=${DAEMON_DIR//%/%%}/environment
Environment=CAISSON_REDIS_PASSWORD_FILE=${CAISSON_SECRETS//%/%%}/redis.password CAISSON_REDIS_DIR=${CAISSON_ROOT//%/%%}/redis
ExecStart=/bin/bash ${here//%/%%}/scripts/services.sh

[Install]
WantedBy=multi-user.target
EOF
    fi
    for name in "${DAEMONS[@]}"; do
        case $name in
            web) description="the web server ($SCHEME://$BIND:$PORT/)" ;;
            agent) description="this node's agent (jobs, as root)" ;;
            beat) description="Celery beat (the node's tick, scheduled backups)" ;;
            console) description="the console relay (browser terminals, as root)" ;;
        esac
        exec=$(command_of "$name")
        {
            printf '[Unit]\nDescription=Caisson: %s\n' "$description"
            printf '%s\nAfter=%s\n\n' "$needs" "$after"
            printf '[Service]\nType=simple\nWorkingDirectory=%s\n' "${here//%/%%}"
            printf 'EnvironmentFile=%s/environment\n' "${DAEMON_DIR//%/%%}"
            printf 'ExecStart=%s\n' "${python//%/%%} ${exec#"$PY" }"
            if [[ $name == web || $name == beat ]]; then
                user=$WEB_USER
                printf 'User=%s\nGroup=%s\nEnvironment=HOME=%s\n' "$user" "$user" "${CAISSON_WEB_DATA//%/%%}"
            else
                # Containers do not depend on the agent or the relay: stopping either signals its main
                # process alone, never a container's init that is still counted in its cgroup.
                printf 'KillMode=process\n'
            fi
            printf 'Restart=on-failure\nRestartSec=2\n\n[Install]\nWantedBy=multi-user.target\n'
        } >"$dir/caisson-$name.service"
    done
    cat >"$dir/caisson-guests.service" <<EOF
[Unit]
Description=Caisson guests: containers stopped in reverse startup order at shutdown
Wants=caisson-agent.service
After=$after caisson-agent.service caisson-console.service

[Service]
Type=oneshot
RemainAfterExit=yes
WorkingDirectory=${here//%/%%}
EnvironmentFile=${DAEMON_DIR//%/%%}/environment
# Start: nothing; the agent queues the node's startall job at its first start since the host booted.
ExecStart=/bin/true
ExecStop=${python//%/%%} -m engine stopall
TimeoutStopSec=infinity

[Install]
WantedBy=multi-user.target
EOF
}

install_units() {  # into /etc/systemd/system, enabled and started
    local target=${CAISSON_UNIT_DIR:-/etc/systemd/system} name pid units
    for name in "${DAEMONS[@]}"; do  # started by an earlier run.sh as a plain process: systemd takes over
        pid=$(cat "$RUN_DIR/$name.pid" 2>/dev/null) || continue
        if kill -0 "$pid" 2>/dev/null; then
            say "handing $name over to systemd"
            kill -TERM "$pid" || true
            for _ in $(seq 100); do kill -0 "$pid" 2>/dev/null || break; sleep 0.2; done
        fi
        rm -f "$RUN_DIR/$name.pid"
    done
    write_environment "$DAEMON_DIR/environment"
    write_units "$target"
    systemctl daemon-reload
    mapfile -t units < <(unit_names)
    systemctl enable --quiet "${units[@]/%/.service}"
    systemctl start "${units[@]/%/.service}"
    say "systemd units installed in $target and started (journalctl -u caisson-web, -u caisson-agent, ...)"
}

remove_units() {  # a node leaving: its units stopped, disabled and deleted
    local target=${CAISSON_UNIT_DIR:-/etc/systemd/system} units name
    mapfile -t units < <(unit_names)
    systemctl disable --now --quiet "${units[@]/%/.service}" || true
    for name in "${units[@]}"; do rm -f "$target/$name.service"; done
    systemctl daemon-reload
    say "systemd units removed from $target"
}
