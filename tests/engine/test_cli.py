"""The pct-like CLI as scripts use it: verbs, tables, JSON, exit codes.

Every test that runs the command line runs twice: in-process (no agent on the node) and through the
node's CLI service (the thin client forwarding to a warm process, as when the agent runs), and the
service's log shows that the second way really went through it."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from tests.engine.cli_support import REPO


def test_help_lists_every_verb(cli):
    result = cli("--help")
    assert result.returncode == 0
    for verb in (
        "create",
        "start",
        "stop",
        "shutdown",
        "reboot",
        "destroy",
        "list",
        "status",
        "config",
        "set",
        "exec",
        "enter",
        "network",
        "firewall",
    ):
        assert verb in result.stdout


def test_a_whole_life_through_the_cli(cli, busybox_template, ctid_factory):
    ctid = str(ctid_factory())
    result = cli("create", ctid, str(busybox_template), "--hostname", "from-cli", "--memory", "128", "--start")
    assert result.returncode == 0, result.stderr
    assert "status: running" in result.stdout

    table = cli("list").stdout.splitlines()
    assert table[0].split()[:3] == ["VMID", "STATUS", "NAME"]
    row = next(line.split() for line in table if line.split()[0] == ctid)
    assert row[1:3] == ["running", "from-cli"]

    listed = json.loads(cli("--output", "json", "list").stdout)
    mine = next(item for item in listed if item["ctid"] == int(ctid))
    assert mine["status"] == "running" and mine["pid"] > 0

    assert cli("exec", ctid, "--", "sh", "-c", "exit 4").returncode == 4
    assert cli("exec", ctid, "--", "hostname").stdout.strip() == "from-cli"

    result = cli("set", ctid, "--memory", "256", "--cpulimit", "1")
    assert result.returncode == 0 and "cpulimit, memory" in result.stdout
    config = json.loads(cli("-o", "json", "config", ctid).stdout)
    assert config["memory"] == "256" and len(config["digest"]) == 40
    assert "hostname: from-cli" in cli("config", ctid).stdout

    assert cli("destroy", ctid).returncode == 5  # running
    assert cli("stop", ctid).returncode == 0
    assert cli("stop", ctid).returncode == 5  # not running
    assert cli("destroy", ctid).returncode == 0
    assert cli("status", ctid).returncode == 3


@pytest.mark.parametrize(
    "args, code, words",
    [
        (["status", "12345678"], 3, "does not exist"),
        (["status", "42"], 2, "outside 100"),
        (["create", "{ctid}", "{template}", "--hostname", "bad_name"], 2, "hostname"),
        (["create", "{ctid}", "{template}", "--memory", "abc"], 2, "memory"),
        (["create", "{ctid}", "{template}", "--cores", "-1"], 2, "cores"),
        (["create", "{ctid}", "/no/such/template.tar.zst"], 2, "does not exist"),
        (["exec", "{ctid}"], 2, "give the command"),
        (["set", "{ctid}"], 2, "nothing to change"),
    ],
)
def test_bad_input_gives_a_clear_message_and_exit_code(cli, busybox_template, ctid_factory, args, code, words):
    ctid = str(ctid_factory())
    if args[0] in ("exec", "set"):
        assert cli("create", ctid, str(busybox_template)).returncode == 0
    result = cli(*[a.format(ctid=ctid, template=busybox_template) for a in args])
    assert result.returncode == code, result.stderr
    assert words in result.stderr
    assert "Traceback" not in result.stderr


def test_json_errors_for_scripts(cli):
    result = cli("--output", "json", "status", "12345678")
    assert result.returncode == 3
    assert json.loads(result.stderr)["kind"] == "NotFound"


def test_enter_gives_an_interactive_shell_on_a_terminal(engine, container):
    """Drive `enter` from a real pseudo-terminal, as a person at a console would."""
    import pty

    from tests.conftest import read_until_closed

    env = {
        **os.environ,
        "CAISSON_ROOT": str(engine.layout.root),
        "CAISSON_RUN": str(engine.layout.run),
        "CAISSON_CGROUP_PARENT": engine.cgroups.parent,
        "TERM": "xterm",
    }
    master, slave = pty.openpty()
    child = subprocess.Popen(
        [sys.executable, "-m", "engine", "enter", str(container)],
        cwd=REPO,
        env=env,
        stdin=slave,
        stdout=slave,
        stderr=slave,
        start_new_session=True,
    )
    os.close(slave)
    os.write(master, b"echo $((6*7)); tty; exit 3\n")
    output = read_until_closed(master)
    os.close(master)
    assert b"42" in output and b"/dev/pts/" in output
    assert child.wait(timeout=30) == 3


def test_a_closed_pipe_is_not_an_error(engine, cli_env, busybox_template, ctid_factory):
    ctid = ctid_factory()
    # More than a pipe holds, so the writer is still writing when the reader goes away.
    engine.create(ctid, busybox_template, {"description": "x" * 300_000})
    env = cli_env
    result = subprocess.run(
        f"{sys.executable} -m engine -o json config {ctid} | head -c 1",
        shell=True,
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0 and "Traceback" not in result.stderr
