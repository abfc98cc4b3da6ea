"""Node boot and shutdown as Proxmox's startall/stopall: onboot, startup order, up delays, reverse stop."""

from __future__ import annotations

import json

from engine import boot


def _make(engine, template, ctid_factory, **config):
    ctid = ctid_factory()
    engine.create(ctid, template, {"hostname": f"boot{ctid}", "memory": "64", "swap": "0", **config})
    return ctid


def test_startall_follows_order_then_id_and_waits_up(engine, busybox_template, ctid_factory):
    late = _make(engine, busybox_template, ctid_factory, onboot="1", startup="order=2,up=3")
    unordered = _make(engine, busybox_template, ctid_factory, onboot="1")
    first = _make(engine, busybox_template, ctid_factory, onboot="1", startup="order=1,down=20")
    manual = _make(engine, busybox_template, ctid_factory, startup="order=0")  # no onboot: stays down
    mine = {late, unordered, first, manual}
    waits: list[float] = []
    seen = []
    outcomes = boot.start_all(engine, mine, report=seen.append, sleep=waits.append)
    assert [o.ctid for o in outcomes] == [first, late, unordered] and all(o.ok for o in outcomes)
    assert seen == outcomes and waits == [3]
    assert {c: engine.status(c, stats=False).status for c in mine} == {
        first: "running",
        late: "running",
        unordered: "running",
        manual: "stopped",
    }

    again = boot.start_all(engine, mine, sleep=waits.append)  # a second boot: nothing started twice
    assert [(o.action, o.ok) for o in again] == [("skip", True)] * 3 and waits == [3]

    stopped = boot.stop_all(engine, mine, timeout=5)
    assert [o.ctid for o in stopped] == [unordered, late, first] and all(o.ok for o in stopped)
    assert all(engine.status(c, stats=False).status == "stopped" for c in mine)


def test_one_failure_does_not_stop_the_boot(engine, busybox_template, ctid_factory):
    broken = _make(engine, busybox_template, ctid_factory, onboot="1", startup="order=1")
    fine = _make(engine, busybox_template, ctid_factory, onboot="1", startup="order=2")
    path = engine.layout.config_path(broken)
    path.write_text(path.read_text() + "lock: snapshot\n")  # a stale lock: its start is refused
    outcomes = boot.start_all(engine, {broken, fine})
    assert [(o.ctid, o.ok) for o in outcomes] == [(broken, False), (fine, True)]
    assert "snapshot" in outcomes[0].message
    engine.unlock(broken)
    boot.stop_all(engine, {fine}, timeout=5)


def test_startall_and_stopall_through_the_cli(cli, engine, busybox_template, ctid_factory):
    ctid = _make(engine, busybox_template, ctid_factory, onboot="1")
    other = _make(engine, busybox_template, ctid_factory)
    result = cli("-o", "json", "startall", str(ctid), str(other))
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout) == [{"ctid": ctid, "action": "start", "ok": True, "message": "started"}]
    forced = cli("startall", "--force", str(other))
    assert forced.returncode == 0 and f"{other}: start ok" in forced.stdout
    result = cli("stopall", "--timeout", "5", str(ctid), str(other))
    assert result.returncode == 0, result.stderr
    assert {engine.status(c, stats=False).status for c in (ctid, other)} == {"stopped"}
    assert cli("startall", "abc").returncode == 2
