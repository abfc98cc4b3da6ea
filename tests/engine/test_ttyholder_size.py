"""The node's tty holder stays a small process: it runs for as long as any container has a terminal, one per
node, so every module it loads is resident memory charged to the node (``bench/memory.py``, ``bench/load.py``).
Checked as it is started (``engine.ttys``: ``python -S -m engine.ttyholder`` from ``/``)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
# Each of these costs the holder 0.3-1 MB of heap and is of no use to it.
HEAVY = ("pathlib", "typing", "logging", "subprocess", "tempfile", "threading", "shutil", "engine.ttys")


def test_the_holder_loads_none_of_the_engines_heavier_modules():
    probe = "import sys, engine.ttyholder; print(' '.join(sorted(sys.modules)))"
    result = subprocess.run(
        [sys.executable, "-S", "-c", probe],
        cwd="/",
        env={"PYTHONPATH": str(REPO)},
        capture_output=True,
        text=True,
        check=True,
    )
    loaded = set(result.stdout.split())
    assert "engine.ttyholder" in loaded and "engine.consolefd" in loaded
    assert not loaded & set(HEAVY), sorted(loaded & set(HEAVY))


def test_the_engine_speaks_the_holders_protocol():
    from engine import ttyholder, ttys

    assert ttys.socket_path is ttyholder.socket_path and ttys.MAX_FDS == ttyholder.MAX_FDS
    assert ttyholder.socket_path(Path("/run/caisson")) == "/run/caisson/console/holder.sock"
