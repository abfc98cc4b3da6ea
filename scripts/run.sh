#!/usr/bin/env bash
# Bring Caisson up on this machine for development: set up, build the
# busybox template into the template store, create and start container 100
# from it, and list the containers. Needs root.
set -euo pipefail
cd "$(dirname "$0")/.."

bash scripts/setup.sh

export CAISSON_ROOT=${CAISSON_ROOT:-/var/lib/caisson}
PY=.venv/bin/python
CTID=100

template=$($PY -m engine.builders busybox --dest "$CAISSON_ROOT/template/cache")
echo "run: template $template"

set +e
state=$($PY -m engine status "$CTID" 2>/dev/null)
code=$?
set -e
if ((code == 3)); then  # no such container
    echo "run: creating container $CTID"
    $PY -m engine create "$CTID" "$template" --hostname "ct$CTID"
    state=$($PY -m engine status "$CTID")
elif ((code != 0)); then
    $PY -m engine status "$CTID"  # shows the error
    exit "$code"
fi
if ! grep -q '^status: running' <<<"$state"; then
    echo "run: starting container $CTID"
    $PY -m engine start "$CTID"
fi
$PY -m engine list

# --- web app ---------------------------------------------------------------------
# Start the web app (webui/) and the job worker (tasks/) here once they exist.
