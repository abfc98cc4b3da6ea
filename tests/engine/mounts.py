"""The host's mount table as a test compares it before and after: only what this test's engine could make.

Other test runs may share the host meanwhile: their engines and labs mount below their own pytest
directories under the temp directory, and the network tests name namespaces in ``/run/netns``.  Those
are left out; everything else stays: mounts below the directories given (the test's engine state and
run directories, its storage lab) and any mount elsewhere on the host, which no engine of a test should
make.  The engine names no network namespaces, so ``/run/netns`` holds none of its making.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

TMP = tempfile.gettempdir().rstrip("/") + "/"


def _below(point: str, directory: str) -> bool:
    return point == directory or point.startswith(directory.rstrip("/") + "/")


def host_mounts(*own: Path | str, fields: slice = slice(3, 5)) -> set[str]:
    """``fields`` of each mountinfo line (root and mount point; ``slice(0, 5)`` adds the ids) whose mount
    lies below one of ``own`` or outside both the temp directory and ``/run/netns``."""
    mine = [str(Path(d).resolve()) for d in own]
    found = set()
    with open("/proc/self/mountinfo") as handle:
        for line in handle:
            parts = line.split()
            point = parts[4].replace("\\040", " ")
            if any(_below(point, d) for d in mine) or not (point.startswith(TMP) or _below(point, "/run/netns")):
                found.add(" ".join(parts[fields]))
    return found
