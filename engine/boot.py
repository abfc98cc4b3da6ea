"""The node's boot and shutdown: start the ``onboot`` containers in ``startup`` order, stop all in reverse.

Proxmox's rules (``pvenode startall``/``stopall``, the ``startup`` key's
``order``, ``up`` and ``down``):

* start: containers with ``onboot: 1`` (every stopped one with ``force``),
  lowest ``order`` first, those without an order after all that have one,
  ties by ID; after each start, wait its ``up`` seconds before the next;
* stop: every running container in exactly the reverse of that order, each
  shut down cleanly within its ``down`` seconds (180 when unset) and then
  stopped hard (unless ``force_stop`` is off).

One container's failure is reported and the sequence goes on: a node that
boots must bring up everything it can.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass

from engine.errors import EngineError

DEFAULT_DOWN_TIMEOUT = 180.0  # Proxmox's default shutdown timeout per guest
NO_ORDER = 1 << 62  # after every explicit order


@dataclass(frozen=True)
class Planned:
    """One container in the boot sequence."""

    ctid: int
    onboot: bool
    order: int | None
    up: int
    down: int | None

    @property
    def key(self) -> tuple[int, int]:
        return (NO_ORDER if self.order is None else self.order, self.ctid)


@dataclass
class Outcome:
    ctid: int
    action: str  # "start", "shutdown", "skip"
    ok: bool
    message: str = ""

    def as_dict(self) -> dict:
        return {"ctid": self.ctid, "action": self.action, "ok": self.ok, "message": self.message}


Report = Callable[[Outcome], None]


def plan(engine, ctids: Iterable[int] | None = None) -> list[Planned]:
    """Every container (or the ones named), in start order."""
    wanted = set(ctids) if ctids is not None else None
    result = []
    for ctid in engine.ids():
        if wanted is not None and ctid not in wanted:
            continue
        try:
            config = engine.config(ctid)
            startup = config.get("startup") or {}
        except EngineError:
            continue  # destroyed meanwhile, or a config the operator must fix: start/stop report it
        result.append(
            Planned(
                ctid, bool(config.get("onboot")), startup.get("order"), int(startup.get("up") or 0), startup.get("down")
            )
        )
    return sorted(result, key=lambda p: p.key)


def start_all(
    engine,
    ctids: Iterable[int] | None = None,
    force: bool = False,
    report: Report | None = None,
    sleep: Callable[[float], None] = time.sleep,
) -> list[Outcome]:
    """Start the ``onboot`` containers (all stopped ones with ``force``) in order; see the module's text."""
    outcomes = []
    for item in plan(engine, ctids):
        try:
            if not (force or item.onboot):
                continue
            if engine.status(item.ctid, stats=False).status == "running":
                outcome = Outcome(item.ctid, "skip", True, "already running")
            else:
                engine.start(item.ctid)
                outcome = Outcome(item.ctid, "start", True, "started")
        except EngineError as exc:
            outcome = Outcome(item.ctid, "start", False, str(exc))
        outcomes.append(outcome)
        if report:
            report(outcome)
        if outcome.action == "start" and outcome.ok and item.up:
            sleep(item.up)
    return outcomes


def stop_all(
    engine,
    ctids: Iterable[int] | None = None,
    timeout: float | None = None,
    force_stop: bool = True,
    report: Report | None = None,
) -> list[Outcome]:
    """Shut down every running container in reverse start order, each within its ``down`` (or ``timeout``)."""
    outcomes = []
    for item in reversed(plan(engine, ctids)):
        try:
            if engine.status(item.ctid, stats=False).status != "running":
                continue
            limit = float(item.down) if item.down is not None else (timeout or DEFAULT_DOWN_TIMEOUT)
            engine.shutdown(item.ctid, timeout=limit, force_stop=force_stop)
            outcome = Outcome(item.ctid, "shutdown", True, "stopped")
        except EngineError as exc:
            outcome = Outcome(item.ctid, "shutdown", False, str(exc))
        outcomes.append(outcome)
        if report:
            report(outcome)
    return outcomes
