"""The guided diagnosis of a failed start: each likely cause from the engine's own messages."""

from __future__ import annotations

from engine.diagnosis import console_tail, diagnose


def test_a_missing_bridge():
    found = diagnose("net0: bridge 'vmbr7' does not exist (neither defined in /x/interfaces nor on the host)")
    assert found.step == "network"
    assert "vmbr7" in found.cause and "net0" in found.cause
    assert "Node → Network" in found.fix


def test_a_full_storage_by_message_or_by_space_left():
    assert "full" in diagnose("write /x: [Errno 28] No space left on device", "prepare").cause
    low = diagnose("start failed at step 'mounts': something odd", "mounts", free=1 << 20)
    assert "full" in low.cause and "1 MiB left" in low.cause


def test_an_init_that_exited_quotes_its_console():
    console = b"\x1b[1mstarting\x1b[0m\r\n\r\n/sbin/init: error while loading shared libraries: libc.so.6\r\n"
    found = diagnose("start failed at step 'exec': init died as it started; see /run/x.log", "exec", console)
    assert found.step == "exec"
    assert found.console == ["starting", "/sbin/init: error while loading shared libraries: libc.so.6"]
    assert "libc.so.6" in found.cause


def test_other_steps_and_the_unknown():
    assert diagnose("start failed at step 'init': /r has no /sbin/init", "init").step == "init"
    assert "not mounted" in diagnose("start failed at step 'rootfs': /r is missing or not a directory", "rootfs").cause
    unknown = diagnose("something new went wrong")
    assert unknown.step == "start" and unknown.cause == "no known cause matches this error"


def test_the_console_tail_keeps_the_last_lines():
    raw = "".join(f"line {i}\n" for i in range(100)).encode()
    assert console_tail(raw, 3) == ["line 97", "line 98", "line 99"]
