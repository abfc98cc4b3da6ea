"""The systemd units of a machine that joined a cluster (``run.sh join`` installs them where systemd runs):
only the node's agent, console relay and guests, restarted on failure and started at boot, with the
cluster's settings, and nothing that waits for a local Redis or database. Written into a scratch
directory here; nothing is enabled on this machine."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

from tests.test_run_boot import read_units

REPO = Path(__file__).resolve().parents[1]


def test_a_joined_node_gets_units_for_its_agent_relay_and_guests_only(tmp_path):
    root = tmp_path / "root"
    (root / "daemons").mkdir(parents=True)
    # What tasks.join writes (tests/webui/test_cluster.py runs it for real).
    (root / "daemons" / "cluster.env").write_text(
        "DATABASE_URL=postgres://caisson@db.example:5432/caisson\nREDIS_URL=redis://db.example:6390\n"
        f"CAISSON_NODE=node-u\nCAISSON_SECRETS={tmp_path / 'secrets'}\n"
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith(("CAISSON_", "DATABASE_URL", "REDIS_URL"))}
    env.update(CAISSON_ROOT=str(root), CAISSON_SYSTEMD="no")
    done = subprocess.run(
        ["bash", "scripts/run.sh", "units", str(tmp_path / "units")],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    units = read_units(tmp_path / "units")
    assert set(units) == {"caisson-agent", "caisson-console", "caisson-guests"}  # no web, beat, Redis here
    for name in ("caisson-agent", "caisson-console"):
        service, unit = units[name]["Service"], units[name]["Unit"]
        assert service["Restart"] == "on-failure" and service["KillMode"] == "process"
        assert units[name]["Install"]["WantedBy"] == "multi-user.target"  # at boot, once enabled
        assert "caisson-services" not in unit.get("Requires", "") + unit["After"]
        assert unit["After"] == "network-online.target" and unit["Wants"] == "network-online.target"
        command = service["ExecStart"].split()
        assert Path(command[0]).is_absolute() and os.access(command[0], os.X_OK)
    assert units["caisson-agent"]["Service"]["ExecStart"].split()[1:] == ["-m", "tasks.agent"]
    assert units["caisson-console"]["Service"]["ExecStart"].split()[1:] == ["-m", "tasks.console_relay"]
    assert units["caisson-guests"]["Service"]["ExecStop"].split()[1:] == ["-m", "engine", "stopall"]
    assert "caisson-agent.service" in units["caisson-guests"]["Unit"]["After"]  # containers stop first

    environment = root / "daemons" / "environment"
    assert all(units[n]["Service"]["EnvironmentFile"] == str(environment) for n in units)
    settings = dict(line.split("=", 1) for line in environment.read_text().splitlines())
    assert settings["CAISSON_NODE"] == "'node-u'" and settings["DATABASE_URL"].startswith("'postgres://caisson@")
    assert settings["REDIS_URL"] == "'redis://db.example:6390'" and environment.stat().st_mode & 0o077 == 0
    if shutil.which("systemd-analyze"):
        verify = subprocess.run(
            ["systemd-analyze", "verify", "--man=no", *sorted((tmp_path / "units").glob("*.service"))],
            cwd=tmp_path / "units",
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert verify.returncode == 0, verify.stdout + verify.stderr
