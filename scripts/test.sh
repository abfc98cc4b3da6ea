#!/usr/bin/env bash
# Run the test suite in the project's venv. Arguments go to pytest; when
# they name test paths, only those run (e.g. tests/engine/test_builders.py).
set -euo pipefail
cd "$(dirname "$0")/.."

bash scripts/setup.sh

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
