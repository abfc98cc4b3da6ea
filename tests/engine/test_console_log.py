"""The console log is capped: a container printing forever cannot fill the host (engine.consolelog)."""

from __future__ import annotations

import errno
import os
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest

from engine import consolelog

REPO = Path(__file__).resolve().parents[2]
CAP = 64 * 1024

# Prints for as long as /tmp/stop is absent, in bursts longer than the cap (each a bounded `sed`, which ends
# whatever its writes do: no pipe, since the container inherits an ignored SIGPIPE and a `yes` writing into a
# closed pipe would spin), then, a second later, says its last words and stays.
FLOOD = (
    "::once:/bin/sh -c 'i=0; while [ $i -lt 8000 ]; do echo x; i=$((i+1)); done > /tmp/lines; n=0; "
    'while [ ! -e /tmp/stop ]; do n=$((n+1)); sed "s/.*/flood $n/" /tmp/lines; sleep 0.05; done; '
    "sleep 1; echo; echo LAST-WORDS $n; sleep 100000'\n"
)


# ---- the memfd and the drain, without a container ---------------------------------------------
def test_the_console_refuses_to_grow_and_never_blocks(tmp_path):
    console = consolelog.open_memfd(8192)
    try:
        assert os.write(console, b"x" * 10000) == 8192  # a short write of what fits
        with pytest.raises(OSError) as failed:
            os.write(console, b"more")
        assert failed.value.errno == errno.EPERM
        assert os.fstat(console).st_size == 8192
        with pytest.raises(OSError):
            os.ftruncate(console, 1 << 30)  # sealed: the container cannot grow it either
        assert consolelog.drain(console, tmp_path / "gone", 8192) == 0  # no log (destroyed): none made
        assert not (tmp_path / "gone").exists()
        assert consolelog.drain(console, tmp_path / "log", 8192, create=True) == 8192
        assert os.write(console, b"again\n") == 6  # rewound: free again
    finally:
        os.close(console)


def test_a_drain_keeps_the_newest_output_within_the_cap(tmp_path):
    log = tmp_path / "1.console.log"
    console = consolelog.open_memfd(4096)
    try:
        for n in range(10):
            os.write(console, b"".join(b"line %d.%03d\n" % (n, i) for i in range(300))[:4096])
            consolelog.drain(console, log, 4096, create=True)
            assert log.stat().st_size <= 4096
        os.write(console, b"the end\n")
        consolelog.drain(console, log, 4096, create=True)
    finally:
        os.close(console)
    text = log.read_bytes()
    assert len(text) == 4096 and text.endswith(b"the end\n") and b"line 9." in text and b"line 0." not in text
    assert sorted(p.name for p in tmp_path.iterdir()) == ["1.console.log"]  # no temporary file left


def test_a_follower_finds_its_place_in_a_trimmed_log():
    old = b"".join(b"message %d\n" % i for i in range(100))
    new = old[-300:] + b"fresh output\n"
    seen = old[-consolelog.OVERLAP :]
    assert new[consolelog.resume_offset(new, seen) :] == b"fresh output\n"
    assert consolelog.resume_offset(b"all new\n", seen) == 0


def test_a_bad_node_setting_is_refused_naming_it(monkeypatch):
    from engine.errors import NotSupported

    monkeypatch.setenv("CAISSON_CONSOLE_LOG_SIZE", "1k")
    with pytest.raises(NotSupported, match="CAISSON_CONSOLE_LOG_SIZE"):
        consolelog.node_size()
    monkeypatch.setenv("CAISSON_CONSOLE_LOG_SIZE", "")
    assert consolelog.node_size() == consolelog.DEFAULT_SIZE == 1024 * 1024


# ---- a real container printing forever --------------------------------------------------------
@pytest.fixture
def flooding(engine, busybox_template, ctid_factory, monkeypatch):
    """A running busybox container whose init runs the flood on its console, under a 64 KiB cap."""
    monkeypatch.setattr(engine, "console_log_size", CAP)
    ctid = ctid_factory()
    engine.create(ctid, busybox_template, {"hostname": f"flood{ctid}", "memory": "128", "swap": "0"})
    inittab = engine._rootfs(engine.config(ctid)) / "etc" / "inittab"
    inittab.write_text(inittab.read_text() + FLOOD)
    engine.start(ctid)
    return ctid


def _on_host(engine, ctid) -> int:
    """Bytes the container's log files take on the host's disk (temporary ones of a trim included)."""
    return sum(p.stat().st_blocks * 512 for p in engine.layout.logs.iterdir() if f"{ctid}.console" in p.name)


def test_a_container_printing_forever_keeps_within_the_cap(engine, flooding):
    ctid = flooding
    pid = engine.status(ctid).pid
    assert os.readlink(f"/proc/{pid}/fd/1").startswith("/memfd:caisson-console")
    log = engine.layout.console_log(ctid)
    copied = 0
    for _ in range(8):
        time.sleep(0.25)
        copied += engine.drain_console(ctid)
        assert log.stat().st_size <= CAP
        assert os.stat(f"/proc/{pid}/fd/1").st_size == CAP  # the console never grew
        assert engine.status(ctid).status == "running"
        assert engine.exec_output(ctid, ["echo", "alive"])[1] == b"alive\n"  # responsive all along
    assert copied >= 2 * CAP  # it printed more than the cap (status drained some more)
    assert b"flood " in log.read_bytes()
    assert _on_host(engine, ctid) <= CAP + 4096  # a partly filled last block at most

    engine.exec_output(ctid, ["touch", "/tmp/stop"])
    deadline = time.monotonic() + 10
    while b"LAST-WORDS" not in engine.console_log(ctid) and time.monotonic() < deadline:
        time.sleep(0.1)
    text = engine.console_log(ctid)
    assert len(text) <= CAP and text.rstrip().rsplit(b"\n", 1)[-1].startswith(b"LAST-WORDS")
    last = int(text.rstrip().rsplit(b" ", 1)[-1])
    floods = [int(m[1]) for m in (re.fullmatch(rb"flood (\d+)", line) for line in text.splitlines()) if m]
    floods = floods[:-1]  # the last burst may have been cut mid-line by the full console
    # The tail is kept: in order, up to the last burst, and the first bursts trimmed away.
    assert floods == sorted(floods) and floods[-1] <= last and floods[0] > 1


def test_a_stop_keeps_the_last_output(engine, flooding):
    ctid = flooding
    engine.exec_output(ctid, ["touch", "/tmp/stop"])
    time.sleep(0.5)
    engine.drain_console(ctid)  # the flood is over: its last words will fit
    time.sleep(1.5)  # they are said; nothing drains meanwhile: only the stop's own drain can keep them
    engine.stop(ctid)
    text = engine.layout.console_log(ctid).read_bytes()
    assert len(text) <= CAP and b"LAST-WORDS" in text.splitlines()[-1]


def test_the_cli_prints_the_log(engine, flooding):
    ctid = flooding
    engine.exec_output(ctid, ["touch", "/tmp/stop"])
    time.sleep(0.5)
    engine.drain_console(ctid)
    time.sleep(1.5)
    env = {
        **os.environ,
        "CAISSON_ROOT": str(engine.layout.root),
        "CAISSON_RUN": str(engine.layout.run),
        "CAISSON_CGROUP_PARENT": engine.cgroups.parent,
        "CAISSON_CONSOLE_LOG_SIZE": str(CAP),
    }
    result = subprocess.run(
        [sys.executable, "-m", "engine", "log", str(ctid)], cwd=REPO, env=env, capture_output=True, timeout=60
    )
    assert result.returncode == 0, result.stderr
    assert len(result.stdout) <= CAP and b"LAST-WORDS" in result.stdout.splitlines()[-1]
