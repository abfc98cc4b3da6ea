"""Crash safety of an overlay volume's snapshot and rollback: an intent written first, a repair after.

Both operations move directories before they write the records that refer to them:
a stopped container's snapshot renames ``upper`` into ``layers/<id>`` and an empty
``.upper.new`` into ``upper``, then writes ``lower`` and the snapshot record; a rollback
parks ``upper`` as ``.upper.old``, puts an empty one in its place, then writes ``lower``.
A process killed (or a host that loses power) between the renames and the records
would leave the container's changes in a layer nothing refers to, which the layer
collector then deletes, or a volume without an upper layer.

So, before the first rename, the operation writes (durably) ``<volume>/.pending``
naming itself, its layer and the layer list it started from, and removes it when done.
:func:`repair`, run under the storage lock before anything reads or changes the
volume (activate, snapshot, rollback, delete, the collector) and by node recovery,
finishes or undoes what a dead process left, from what is on disk:

- a snapshot whose records were all written is finished; any other is undone (the
  layer renamed back to ``upper``, ``lower`` rewritten, its record removed), so the
  container keeps its data either way, with or without the snapshot;
- a rollback whose own upper layer is parked but not yet replaced is undone (it is
  renamed back); once the empty upper is in place it is finished (``lower`` rewritten,
  the parked layer removed), which is what the rollback was for.

Each step only renames, rewrites or removes what its state implies, so a repair killed
midway is repaired again the same way.  The collector counts layers named in an intent
it could not repair as in use.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from engine.errors import HostError, NotFound
from engine.storage.base import remove_path

PENDING = ".pending"


def write_intent(path: Path, facts: dict) -> None:
    """Record an operation on the volume at ``path`` durably, before it moves anything.

    Written in place, not renamed into place: one journal commit instead of two (the directory's flush
    after the file's finds nothing left).  A torn record can only be one whose flush never returned, so
    nothing had moved yet: :func:`repair` drops it."""
    fd = os.open(path / PENDING, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
    try:
        payload = (json.dumps(facts, sort_keys=True) + "\n").encode()
        while payload:
            payload = payload[os.write(fd, payload) :]
        os.fsync(fd)
    finally:
        os.close(fd)
    dir_fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)


def clear_intent(path: Path) -> None:
    """The operation is done (no flush: a repair that finds the intent again sees it finished)."""
    (path / PENDING).unlink(missing_ok=True)


def read_intent(path: Path) -> dict | None:
    """The recorded operation; ``{"op": "torn"}`` for a record cut short while it was written."""
    try:
        facts = json.loads((path / PENDING).read_text())
    except FileNotFoundError:
        return None
    except ValueError:
        return {"op": "torn"}
    except OSError as err:
        raise HostError(f"{path / PENDING}: unreadable ({err})") from None
    if not isinstance(facts, dict) or facts.get("op") not in ("snapshot", "rollback"):
        raise HostError(f"{path / PENDING}: not an overlay operation record")
    return facts


def clear_work(work: Path) -> None:
    """overlayfs leaves ``work/work`` (mode 000) behind; an unused work dir must be empty."""
    for entry in work.iterdir() if work.is_dir() else []:
        remove_path(entry)


def pending(images: Path) -> list[Path]:
    """The volumes of a storage with an operation recorded."""
    return sorted(p.parent for p in images.glob(f"*/*.overlay/{PENDING}"))


def intent_layers(path: Path) -> set[str]:
    """The layers an intent names (kept by the collector while the intent stands)."""
    try:
        facts = read_intent(path) or {}
    except HostError:
        return set()
    return {str(x) for x in [facts.get("layer"), *facts.get("lower", []), *facts.get("layers", [])] if x}


def repair(driver, path: Path) -> str | None:
    """Finish or undo the operation recorded for the volume at ``path``; what was done, or None.

    The caller holds the storage lock, and every operation holds it until its intent is cleared, so an
    intent seen here was left by a process that died."""
    facts = read_intent(path)
    if facts is None:
        return None
    if facts["op"] == "torn":
        remove_path(path / ".upper.new")
        done = "an operation killed while it recorded its intent (nothing had moved) was dropped"
    elif facts["op"] == "snapshot":
        done = _repair_snapshot(driver, path, facts)
    else:
        done = _repair_rollback(driver, path, facts)
    clear_intent(path)
    return f"{path.name}: {done}"


def _layer_list(driver, record: Path) -> list[str] | None:
    try:
        return driver._read_layers(record)
    except (OSError, HostError, NotFound):
        return None


def _repair_snapshot(driver, path: Path, facts: dict) -> str:
    layer, lower, snap = str(facts["layer"]), [str(x) for x in facts["lower"]], str(facts["snap"])
    record = path.with_name(f"{path.name}@{snap}")
    moved = driver.layers / layer
    upper = path / "upper"
    new = [layer, *lower]
    if moved.is_dir() and upper.is_dir() and _layer_list(driver, record) == new:
        if _layer_list(driver, path / "lower") != new:
            driver._write_layers(path / "lower", new)
        remove_path(path / ".upper.new")
        return f"an interrupted snapshot '{snap}' was finished"
    if os.path.lexists(moved):
        if os.path.lexists(upper):
            if not upper.is_dir() or any(os.scandir(upper)):
                raise HostError(f"{upper}: not the empty upper layer an interrupted snapshot put there; check it")
            os.rmdir(upper)
        os.rename(moved, upper)
    remove_path(path / ".upper.new")
    driver._write_layers(path / "lower", lower)
    if (_layer_list(driver, record) or [None])[0] == layer:
        record.unlink()
    clear_work(path / "work")
    return f"an interrupted snapshot '{snap}' was undone (the volume's changes put back in place)"


def _repair_rollback(driver, path: Path, facts: dict) -> str:
    upper, old, fresh = path / "upper", path / ".upper.old", path / ".upper.new"
    snap = str(facts["snap"])
    if not os.path.lexists(upper):
        if os.path.lexists(old):
            os.rename(old, upper)  # the volume's own upper layer back: as before the rollback
        elif os.path.lexists(fresh):
            os.rename(fresh, upper)
        else:
            upper.mkdir(mode=0o755)
        done = f"an interrupted rollback to '{snap}' was undone"
    elif os.path.lexists(old):
        driver._write_layers(path / "lower", [str(x) for x in facts["layers"]])
        clear_work(path / "work")
        remove_path(old)
        done = f"an interrupted rollback to '{snap}' was finished"
    else:
        done = f"an interrupted rollback to '{snap}' had changed nothing, or was done"
    remove_path(fresh)
    return done


def undo_rollback(driver, path: Path, lower: list[str]) -> None:
    """A rollback that failed (an error, not a kill): the volume's own upper layer and layer list back."""
    upper, old = path / "upper", path / ".upper.old"
    if os.path.lexists(old):
        if upper.is_dir() and not any(os.scandir(upper)):
            os.rmdir(upper)
        if not os.path.lexists(upper):
            os.rename(old, upper)
    remove_path(path / ".upper.new")
    driver._write_layers(path / "lower", lower)
    clear_intent(path)
