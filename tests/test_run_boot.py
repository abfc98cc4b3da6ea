"""A host restart and a shutdown, simulated around ``scripts/run.sh`` in a scratch state root.

The power loss: every Caisson process (web server, agent, beat, console relay, Redis) and every
container killed with SIGKILL, and the run directory's "since boot" marker gone as a reboot empties
``/run/caisson``. ``run.sh`` again: the agent, at its first start since that "boot", queues the
node's ``startall`` job, which brings the ``onboot`` containers back in ``startup`` order with their
``up`` delays; the others stay stopped. ``run.sh shutdown`` stops them in reverse order. And the
systemd units ``run.sh`` would install where systemd runs, checked here where it does not.
"""

from __future__ import annotations

import configparser
import json
import os
import pwd
import shutil
import signal
import sqlite3
import subprocess
import sys
import time
from datetime import datetime
from pathlib import Path

import pytest

from tests.test_run_script import REPO, gone, run, scratch  # noqa: F401 - the scratch fixture

CTIDS = (101, 102, 103, 104)


def engine_cli(scratch, *args: str) -> subprocess.CompletedProcess:  # noqa: F811
    return subprocess.run(
        [sys.executable, "-m", "engine", *args],
        cwd=REPO,
        env=scratch["env"],
        capture_output=True,
        text=True,
        timeout=120,
    )


def status(scratch, ctid: int) -> dict:  # noqa: F811
    done = engine_cli(scratch, "-o", "json", "status", str(ctid))
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


def jobs(scratch, kind: str) -> list[tuple]:  # noqa: F811
    """(id, status, message) of the node's jobs of that kind, oldest first, from the web tier's SQLite."""
    with sqlite3.connect(scratch["root"] / "web" / "caisson.sqlite3") as db:
        return db.execute("SELECT id, status, message FROM webui_job WHERE kind = ? ORDER BY id", (kind,)).fetchall()


def lines(scratch, job_id: int) -> list[tuple[str, datetime]]:  # noqa: F811
    with sqlite3.connect(scratch["root"] / "web" / "caisson.sqlite3") as db:
        rows = db.execute("SELECT text, time FROM webui_jobline WHERE job_id = ? ORDER BY seq", (job_id,)).fetchall()
    return [(text, datetime.fromisoformat(when)) for text, when in rows]


def wait_for(what: str, check, timeout: float = 30, scratch=None):  # noqa: F811
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = check()
        if found:
            return found
        time.sleep(0.3)
    log = (scratch["root"] / "daemons" / "log" / "agent.log").read_text()[-3000:] if scratch else ""
    pytest.fail(f"{what}: not within {timeout:g} s\n{log}")


def boot_startall_ended(scratch, count: int):  # noqa: F811
    """The node's startall jobs once ``count`` of them exist and none is queued or running."""

    def check():
        found = jobs(scratch, "startall")
        return found if len(found) == count and all(j[1] not in ("queued", "running") for j in found) else None

    return wait_for(f"startall job {count}", check, scratch=scratch)


@pytest.fixture
def node(scratch):  # noqa: F811
    """The scratch node, up, with four busybox containers, all running; torn down whatever happens."""
    run(scratch)
    boot_startall_ended(scratch, 1)  # the first agent start since this boot: nothing to start yet
    template = next((scratch["root"] / "template" / "cache").glob("busybox-*"))
    configs = {
        101: ["--onboot", "1", "--startup", "order=2,down=5"],
        102: ["--onboot", "1", "--startup", "order=1,up=1"],
        103: ["--onboot", "1", "--startup", "down=5"],
        104: ["--startup", "order=0"],
    }  # 104: not onboot
    try:
        for ctid, options in configs.items():
            made = engine_cli(
                scratch, "create", str(ctid), str(template), "--memory", "64", "--swap", "0", *options, "--start"
            )
            assert made.returncode == 0, made.stderr
        yield scratch
    finally:
        for ctid in CTIDS:
            engine_cli(scratch, "destroy", "--force", str(ctid))


def power_loss(scratch) -> None:  # noqa: F811
    """SIGKILL to every Caisson process and container, as the power going would; then the boot empties /run."""
    pids = [int(p.read_text()) for p in (scratch["root"] / "daemons" / "run").glob("*.pid")]
    inits = [status(scratch, ctid)["pid"] for ctid in CTIDS]
    redis = int((scratch["root"] / "redis" / "redis.pid").read_text())
    for pid in pids:
        os.killpg(pid, signal.SIGKILL)  # each daemon leads its own session: its workers go too
    for pid in [*inits, redis]:
        os.kill(pid, signal.SIGKILL)
    wait_for("every process gone", lambda: all(gone(pid) for pid in [*pids, *inits, redis]))
    shutil.rmtree(scratch["base"] / "run")  # the run directory is a tmpfs: a boot empties it


def test_a_host_restart_brings_back_the_onboot_containers_in_order(node):
    scratch = node  # noqa: F811
    power_loss(scratch)  # (a restart of the agent alone is no boot: tests/webui/test_node_power.py)
    assert {status(scratch, ctid)["status"] for ctid in CTIDS} == {"stopped"}

    run(scratch)
    done = boot_startall_ended(scratch, 2)[1]
    assert done[1:] == ("ok", "3 container(s) started"), done
    log = lines(scratch, done[0])
    texts = [text for text, _ in log]
    assert texts[1:5] == ["CT 102: started", "waiting 1 s (startup delay)", "CT 101: started", "CT 103: started"], texts
    started = {text.split(":")[0]: when for text, when in log if text.endswith(": started")}
    assert (started["CT 101"] - started["CT 102"]).total_seconds() >= 1  # 102's up delay before the next
    assert {ctid: status(scratch, ctid)["status"] for ctid in CTIDS} == {
        101: "running",
        102: "running",
        103: "running",
        104: "stopped",
    }

    pids = [int(p.read_text()) for p in (scratch["root"] / "daemons" / "run").glob("*.pid")]
    out = run(scratch, "shutdown")
    order = [line.split(":")[0] for line in out.splitlines() if ": shutdown " in line]
    assert order == ["103", "101", "102"], out  # reverse startup order
    assert {status(scratch, ctid)["status"] for ctid in CTIDS} == {"stopped"}
    assert all(gone(pid) for pid in pids) and "agent: stopped" in run(scratch, "status")


def read_units(directory: Path) -> dict[str, configparser.ConfigParser]:
    """The unit files in ``directory`` by name, parsed (systemd's syntax is close enough to INI here)."""
    units = {}
    for path in sorted(directory.glob("*.service")):
        parser = configparser.ConfigParser(interpolation=None, strict=False)
        parser.optionxform = str
        parser.read(path)
        units[path.stem] = parser
    return units


def test_the_systemd_units(scratch, tmp_path):  # noqa: F811
    """The units run.sh installs where systemd runs: the same commands, users and settings as its processes."""
    env = scratch["env"]
    out = subprocess.run(
        ["bash", "scripts/run.sh", "units", str(tmp_path)],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert out.returncode == 0, out.stderr
    units = read_units(tmp_path)
    assert set(units) == {
        "caisson-services",
        "caisson-web",
        "caisson-agent",
        "caisson-beat",
        "caisson-console",
        "caisson-guests",
    }
    users = {name: units[name]["Service"].get("User", "root") for name in units}
    assert users == {
        "caisson-services": "root",
        "caisson-web": "caisson",
        "caisson-beat": "caisson",
        "caisson-agent": "root",
        "caisson-console": "root",
        "caisson-guests": "root",
    }
    pwd.getpwnam("caisson")
    commands = {name: units[name]["Service"]["ExecStart"].split() for name in units}
    for name, command in commands.items():
        assert Path(command[0]).is_absolute() and os.access(command[0], os.X_OK), (name, command)
    assert commands["caisson-web"][1:] == [
        "-m",
        "webui.serve",
        "--host",
        "127.0.0.1",
        "--port",
        str(scratch["web_port"]),
        "--certfile",
        f"{env['CAISSON_SECRETS']}/caisson-ssl.pem",
        "--keyfile",
        f"{env['CAISSON_SECRETS']}/caisson-ssl.key",
    ]
    assert commands["caisson-agent"][1:] == ["-m", "tasks.agent"]
    assert commands["caisson-console"][1:] == ["-m", "tasks.console_relay"]
    assert commands["caisson-beat"][1:4] == ["-m", "celery", "-A"]
    assert units["caisson-guests"]["Service"]["ExecStop"].split()[1:] == ["-m", "engine", "stopall"]
    assert units["caisson-guests"]["Service"]["RemainAfterExit"] == "yes"
    assert "caisson-agent.service" in units["caisson-guests"]["Unit"]["After"]  # stopped before the agent
    environment = scratch["root"] / "daemons" / "environment"
    assert all(units[n]["Service"]["EnvironmentFile"] == str(environment) for n in units)
    settings = dict(line.split("=", 1) for line in environment.read_text().splitlines())
    assert settings["CAISSON_ROOT"] == f"'{scratch['root']}'" and settings["CAISSON_NODE"] == f"'{env['CAISSON_NODE']}'"
    assert "CAISSON_ADMIN_PASSWORD" not in settings and oct(environment.stat().st_mode & 0o777) == "0o600"
    if shutil.which("systemd-analyze"):
        verify = subprocess.run(
            ["systemd-analyze", "verify", "--man=no", *sorted(tmp_path.glob("*.service"))],
            cwd=tmp_path,
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert verify.returncode == 0, verify.stdout + verify.stderr
