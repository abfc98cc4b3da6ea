"""The post-stop hookscript phase of a container that powers itself off (real kernel, reaper engine)."""

from __future__ import annotations

import time
from pathlib import Path

from engine import recovery
from tests.engine.test_machine import _hook, snippets  # noqa: F401 - fixture


def _make(engine, template, ctid_factory, volid: str) -> int:
    ctid = ctid_factory()
    engine.create(ctid, template, {"hostname": f"p{ctid}", "hookscript": volid})
    return ctid


def _phases(trace: Path) -> list[str]:
    return [line.split()[1] for line in trace.read_text().splitlines()] if trace.exists() else []


def _until(check, rounds: int = 400) -> None:
    for _ in range(rounds):  # a bound, not a timing assert: the reaper thread runs the hook when init is gone
        if check():
            return
        time.sleep(0.05)


def test_a_poweroff_inside_runs_post_stop_once(engine, busybox_template, ctid_factory, snippets, tmp_path):  # noqa: F811
    trace = tmp_path / "trace"
    ctid = _make(engine, busybox_template, ctid_factory, _hook(snippets, "t.sh", f'echo "$1 $2" >> {trace}\n'))
    engine.start(ctid)
    engine.exec(ctid, ["poweroff"])
    _until(lambda: "post-stop" in _phases(trace))
    assert _phases(trace) == ["pre-start", "post-start", "post-stop"]
    assert engine.status(ctid).status == "stopped"
    # the node's cleanup of the stopped container (cgroup, run record) does not run it again
    actions = recovery.recover(engine, ctid)
    assert any(action.what == "cleaned" for action in actions), actions
    assert _phases(trace) == ["pre-start", "post-start", "post-stop"]
    engine.start(ctid)  # the next run has its own
    engine.stop(ctid)
    assert _phases(trace) == [
        "pre-start",
        "post-start",
        "post-stop",
        "pre-start",
        "post-start",
        "pre-stop",
        "post-stop",
    ]


def test_a_stop_runs_post_stop_once_though_the_reaper_sees_init_go(
    engine,
    busybox_template,
    ctid_factory,
    snippets,  # noqa: F811
    tmp_path,
):
    trace = tmp_path / "trace"
    ctid = _make(engine, busybox_template, ctid_factory, _hook(snippets, "s.sh", f'echo "$1 $2" >> {trace}\n'))
    for _ in range(3):
        engine.start(ctid)
        engine.shutdown(ctid, timeout=10)
    engine.start(ctid)
    engine.stop(ctid)
    time.sleep(0.5)  # no assert on time: only gives a wrongly run reaper hook the chance to show
    assert _phases(trace) == ["pre-start", "post-start", "pre-stop", "post-stop"] * 4
