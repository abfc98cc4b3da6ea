"""Hookscripts, with Proxmox's calling convention: ``<script> <vmid> <phase>``.

``hookscript: <storage>:snippets/<file>`` names an executable in the ``snippets``
directory of a storage that holds snippets.  The engine runs it as root on the
node, from ``/``, at four phases: ``pre-start`` (before anything of the start is
made; a non-zero exit vetoes the start), ``post-start`` (init runs), ``pre-stop``
(before a stop or shutdown asks init to go) and ``post-stop`` (the container's
processes are gone and, after a stop, the engine cleaned up after them).  A
container that powers itself off gets its post-stop from the engine that reaps
its init (the node agent, ``engine.reaper``), or failing that from the cleanup
that finds it gone (``engine.recovery``): once per run either way, claimed
through a file made with O_EXCL (:func:`claim_post_stop`).  A failure at the
other three phases is a warning, as in Proxmox.  Setting one is root-equivalent
(``engine.root_settings``).
"""

from __future__ import annotations

import os
import stat
import subprocess
from collections.abc import Callable
from pathlib import Path

from engine.config import ContainerConfig
from engine.errors import StartError, ValidationError

PHASES = ("pre-start", "post-start", "pre-stop", "post-stop")
TIMEOUT = 300.0  # seconds a hook may take before it is killed and counted as failed


def resolve(storages, value: str, key: str = "hookscript") -> Path:
    """The script's path: the storage must hold ``snippets``; the file must be an executable regular file."""
    storage_id, _, volname = value.partition(":")
    storage = storages.get(storage_id, content="snippets", key=key)
    name = volname.removeprefix("snippets/")
    path = Path(storage.definition.path) / "snippets" / name
    try:
        st = os.stat(path)
    except FileNotFoundError:
        raise ValidationError(f"{key}: script '{value}' does not exist ({path})", key=key) from None
    if not stat.S_ISREG(st.st_mode) or not os.access(path, os.X_OK):
        raise ValidationError(f"{key}: '{path}' is not an executable file", key=key)
    return path


def _claim_file(run_dir: Path, ctid: int) -> Path:
    return Path(run_dir) / f"{ctid}.post-stop"


def claim_post_stop(run_dir: Path, ctid: int) -> bool:
    """True for the one caller that runs this run's post-stop (a stop claims it before init is told to go,
    so the reaper seeing init exit leaves it to the stop)."""
    try:
        os.close(os.open(_claim_file(run_dir, ctid), os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600))
        return True
    except FileExistsError:
        return False
    except OSError:
        return True  # no run directory to claim in: run it rather than never


def release_post_stop(run_dir: Path, ctid: int) -> None:
    """At each start (a new run), and when a claimed stop did not stop the container."""
    _claim_file(run_dir, ctid).unlink(missing_ok=True)


def run(storages, config: ContainerConfig, phase: str, warn: Callable[[str], None]) -> None:
    """Run the container's hookscript for ``phase``, if it has one.

    ``pre-start`` raises :class:`StartError` when the script fails (the start is vetoed); the other
    phases report the failure through ``warn`` and go on.
    """
    value = config.current.values.get("hookscript")
    if not value:
        return
    try:
        path = resolve(storages, value)
        result = subprocess.run(
            [str(path), str(config.ctid), phase],
            cwd="/",
            stdin=subprocess.DEVNULL,
            capture_output=True,
            timeout=TIMEOUT,
            check=False,
        )
        problem = None if result.returncode == 0 else f"exit code {result.returncode}"
        output = (result.stderr or result.stdout).decode(errors="replace").strip()[-500:]
    except (ValidationError, OSError) as exc:
        problem, output = str(exc), ""
    except subprocess.TimeoutExpired:
        problem, output = f"still running after {TIMEOUT:g} s (killed)", ""
    if problem is None:
        return
    message = f"hookscript {value} failed at {phase} of CT {config.ctid}: {problem}" + (f": {output}" if output else "")
    if phase == "pre-start":
        raise StartError("hookscript", message)
    warn(message)
