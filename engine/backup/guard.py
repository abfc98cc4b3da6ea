"""A watchdog that puts a container back if the backup process dies while it is frozen or stopped.

``suspend`` mode freezes the container and ``stop`` mode stops it for the
length of the copy; a backup process killed then (SIGKILL, OOM) would leave
it frozen or down. Before either, the backup starts this small process in its
own session with one end of a pipe: the backup writes ``done`` when it has
put the container back itself; end of file without it means the backup died,
and the guard clears the backup's ``lock: backup`` and thaws (``thaw``) or
starts (``start``) the container.

Run as ``python -m engine.backup.guard ROOT RUN_DIR CGROUP_PARENT ID thaw|start``.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path


class Guard:
    """The backup's side: start the watchdog, and tell it all went well."""

    def __init__(self, engine, ctid: int, action: str):
        read_end, self.write_end = os.pipe()
        os.set_inheritable(read_end, True)
        try:
            self.proc = subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "engine.backup.guard",
                    str(engine.layout.root),
                    str(engine.layout.run),
                    engine.cgroups.parent,
                    str(ctid),
                    action,
                ],
                stdin=read_end,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
                start_new_session=True,
                cwd="/",
                env={**os.environ, "PYTHONPATH": _package_root()},
            )
        finally:
            os.close(read_end)

    def disarm(self) -> None:
        """The container is back as it was: the guard has nothing to do."""
        try:
            os.write(self.write_end, b"done")
        finally:
            os.close(self.write_end)
            self.proc.wait()


def _package_root() -> str:
    root = str(Path(__file__).resolve().parents[2])
    extra = os.environ.get("PYTHONPATH")
    return f"{root}{os.pathsep}{extra}" if extra else root


def main(argv: list[str]) -> int:
    root, run_dir, parent, ctid, action = argv
    data = b""
    while True:
        try:
            chunk = os.read(0, 64)
        except InterruptedError:
            continue
        if not chunk:
            break
        data += chunk
    if data == b"done":
        return 0
    from engine.lifecycle import Engine

    engine = Engine(root, run_dir, cgroup_parent=parent)
    ident = int(ctid)
    if engine.exists(ident) and engine.config(ident).current.values.get("lock") == "backup":
        engine.unlock(ident)  # the backup that held it is gone (its snapshot, if any, goes too)
    if action == "thaw":
        from engine.recovery import thaw_filesystems

        thaw_filesystems(engine, ident)  # an image volume's FIFREEZE outlives the process that froze it
        if engine.cgroups.exists(ctid):
            engine.cgroups.thaw(ctid)
    elif action == "start":
        if engine.exists(int(ctid)) and engine.status(int(ctid), stats=False).status != "running":
            engine.start(int(ctid))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
