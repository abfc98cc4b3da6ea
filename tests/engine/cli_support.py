"""Running the command line in tests: the engine layout's environment and the node's CLI service."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from contextlib import contextmanager
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def layout_env(engine) -> dict[str, str]:
    """The environment of a command line that works on the tests' engine layout."""
    return {
        **os.environ,
        "CAISSON_ROOT": str(engine.layout.root),
        "CAISSON_RUN": str(engine.layout.run),
        "CAISSON_CGROUP_PARENT": engine.cgroups.parent,
    }


def served(log: Path) -> int:
    """How many command lines the service has run, from its log."""
    return log.read_text().count(" cli-service: engine ")


@contextmanager
def cli_service(env: dict[str, str], socket_path: Path, log: Path):
    """A CLI service with ``env``'s layout on ``socket_path``, logging to ``log``; stopped afterwards."""
    with open(log, "w") as log_file:
        service = subprocess.Popen(
            [sys.executable, "-m", "engine.cli.service", "--socket", str(socket_path), "--with-parent"],
            cwd=REPO,
            env=env,
            stderr=log_file,
        )
    try:
        deadline = time.monotonic() + 60
        while not socket_path.exists():
            assert service.poll() is None and time.monotonic() < deadline, log.read_text()
            time.sleep(0.05)
        yield service
    finally:
        service.terminate()
        service.wait(30)
    assert not socket_path.exists()
