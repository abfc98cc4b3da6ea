#!/usr/bin/env bash
# Run the test suite in the project's venv. Arguments go to pytest; when
# they name test paths, only those run (e.g. tests/engine/test_builders.py).
set -euo pipefail
cd "$(dirname "$0")/.."

bash scripts/setup.sh
# The web tier's tests run against a real PostgreSQL (pytest-django makes test_<name> beside it) and
# Redis databases of their own, apart from a development instance on the same server.
export DATABASE_URL=${DATABASE_URL:-postgres://postgres@127.0.0.1:5432/caisson}
export CAISSON_REDIS_DBS=${CAISSON_REDIS_DBS:-10,11,12}
bash scripts/services.sh

targets=(tests)
for arg in "$@"; do
    if [[ $arg != -* && -e ${arg%%::*} ]]; then
        targets=()
        break
    fi
done

set +e
.venv/bin/python -m pytest -q "${targets[@]}" "$@"
exit $?
