"""The node's CLI service: root only, signals passed on, another node's commands left to the client."""

from __future__ import annotations

import array
import os
import shutil
import signal
import socket
import stat
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

from engine import syscalls
from engine.cli import thin
from tests.engine.cli_support import REPO, cli_service, layout_env, served


@pytest.fixture(scope="module")
def service(engine, tmp_path_factory):
    """A CLI service whose socket's directory others may enter (the file's own mode still keeps them out)."""
    base = tmp_path_factory.mktemp("cli-service")
    socket_dir = Path(tempfile.mkdtemp(prefix="caisson-cli-"))
    socket_dir.chmod(0o755)
    socket_path, log = socket_dir / "cli.sock", base / "service.log"
    try:
        with cli_service({**layout_env(engine), "CAISSON_CLI_SOCKET": str(socket_path)}, socket_path, log):
            yield socket_path, log
    finally:
        shutil.rmtree(socket_dir, ignore_errors=True)


def _client(engine, socket_path, *args: str, **popen) -> subprocess.Popen:
    env = {**layout_env(engine), "CAISSON_CLI_SOCKET": str(socket_path)}
    return subprocess.Popen([sys.executable, "-m", "engine", *args], cwd=REPO, env=env, **popen)


def test_the_socket_is_roots_alone_and_a_non_root_peer_is_refused(service):
    socket_path, log = service
    assert stat.S_IMODE(os.stat(socket_path).st_mode) == 0o600
    os.chmod(socket_path, 0o666)  # past the file mode: the peer's credentials are still checked
    try:
        pid = syscalls.fork_quietly()
        if pid == 0:  # a process of 'nobody' that speaks the protocol
            code = 1
            try:
                os.setgroups([])
                os.setgid(65534)
                os.setuid(65534)
                with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
                    sock.connect(str(socket_path))
                    try:
                        sock.sendmsg(
                            [thin.encode_request("engine", ["list"])],
                            [(socket.SOL_SOCKET, socket.SCM_RIGHTS, array.array("i", (0, 0, 0)))],
                        )
                        answer = sock.recv(4)
                    except (BrokenPipeError, ConnectionResetError):
                        answer = b""  # closed before the request was read
                    code = 0 if answer == b"" else 3  # closed without an answer
            except BaseException as exc:
                os.write(2, f"{type(exc).__name__}: {exc}\n".encode())
            finally:
                os._exit(code)
        _, status = os.waitpid(pid, 0)
        assert os.waitstatus_to_exitcode(status) == 0
    finally:
        os.chmod(socket_path, 0o600)
    assert "refused a client running as uid 65534" in log.read_text()


@pytest.mark.parametrize("through_service", [False, True], ids=["in-process", "service"])
def test_ctrl_c_ends_the_command_the_same_way(engine, container, service, through_service):
    """Ctrl-C (SIGINT to the client's process group) ends an `exec` and what it runs, with the same code."""
    socket_path, log = service
    before = served(log)
    client = _client(
        engine,
        socket_path if through_service else "",
        "exec",
        str(container),
        "--",
        "sleep",
        "60",
        stdin=subprocess.DEVNULL,
        start_new_session=True,
    )
    deadline = time.monotonic() + 30
    while "sleep 60" not in _ps(engine, container):  # the command runs inside
        assert client.poll() is None and time.monotonic() < deadline
        time.sleep(0.05)
    assert served(log) == before + through_service
    os.killpg(client.pid, signal.SIGINT)
    assert client.wait(timeout=30) == 130
    deadline = time.monotonic() + 10
    while "sleep 60" in _ps(engine, container):
        assert time.monotonic() < deadline, "the command's process outlived Ctrl-C"
        time.sleep(0.1)


def _ps(engine, container) -> str:
    return subprocess.run(
        [sys.executable, "-m", "engine", "exec", str(container), "--", "ps"],
        cwd=REPO,
        env={**layout_env(engine), "CAISSON_CLI_SOCKET": ""},
        capture_output=True,
        text=True,
        timeout=60,
    ).stdout


def test_another_node_layout_runs_in_the_client(engine, service, tmp_path):
    """A command line for a layout other than the service's (its environment) is run by the client itself."""
    socket_path, log = service
    before = served(log)
    env = {**layout_env(engine), "CAISSON_CLI_SOCKET": str(socket_path), "CAISSON_ROOT": str(tmp_path / "other")}
    result = subprocess.run(
        [sys.executable, "-m", "engine", "-o", "json", "list"],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0 and result.stdout.strip() == "[]"
    assert served(log) == before
    assert (tmp_path / "other").is_dir()  # the client's own engine made the other layout


def test_no_service_means_in_process(engine, tmp_path):
    result = _client(
        engine, tmp_path / "absent.sock", "-o", "json", "list", stdout=subprocess.PIPE, stderr=subprocess.PIPE
    )
    out, err = result.communicate(timeout=60)
    assert result.returncode == 0 and out.strip().startswith(b"["), err


@pytest.mark.parametrize("argv", [["enter", "100"], ["-o", "json", "console", "100"]])
def test_terminal_verbs_stay_in_the_client(argv):
    assert thin.wants_own_terminal(argv)
    assert not thin.wants_own_terminal(["--root", "enter", "list"])


def _children(pid: int) -> set[int]:
    with open(f"/proc/{pid}/task/{pid}/children") as fh:
        return {int(child) for child in fh.read().split()}


def _wait_for(predicate, what: str, timeout: float = 30.0):
    deadline = time.monotonic() + timeout
    while not (found := predicate()):
        assert time.monotonic() < deadline, what
        time.sleep(0.02)
    return found


@pytest.fixture
def own_service(engine, tmp_path):
    """A service of this test's own: (its process, socket, log)."""
    socket_path, log = tmp_path / "cli.sock", tmp_path / "service.log"
    with cli_service({**layout_env(engine), "CAISSON_CLI_SOCKET": str(socket_path)}, socket_path, log) as process:
        yield process, socket_path, log


def _listed(engine, socket_path, **extra_env) -> subprocess.CompletedProcess:
    env = {**layout_env(engine), "CAISSON_CLI_SOCKET": str(socket_path), **extra_env}
    return subprocess.run(
        [sys.executable, "-m", "engine", "-o", "json", "list"], cwd=REPO, env=env, capture_output=True, timeout=60
    )


def test_a_command_runs_in_a_child_forked_before_it_came(engine, own_service):
    """The service keeps one child forked ahead (the fork's cost paid while idle); a request uses it up."""
    process, socket_path, log = own_service
    (spare,) = _wait_for(lambda: _children(process.pid), "no spare child")
    result = _listed(engine, socket_path)
    assert result.returncode == 0 and result.stdout.startswith(b"["), result.stderr
    assert served(log) == 1
    (next_spare,) = _wait_for(lambda: _children(process.pid) - {spare}, "no new spare after the request")
    _wait_for(lambda: not os.path.exists(f"/proc/{spare}"), "the spare did not end")  # ran the command, reaped


def test_a_long_environment_reaches_the_spare_whole(engine, own_service):
    process, socket_path, log = own_service
    # 500 KB, past one socket buffer (each variable under the kernel's 128 KiB limit): handed on in pieces
    result = _listed(engine, socket_path, **{f"CAISSON_TEST_LONG_{i}": "x" * 100_000 for i in range(5)})
    assert result.returncode == 0 and result.stdout.startswith(b"["), result.stderr
    assert served(log) == 1


def test_a_dead_spare_is_replaced_and_the_request_still_runs(engine, own_service):
    process, socket_path, log = own_service
    (spare,) = _wait_for(lambda: _children(process.pid), "no spare child")
    os.kill(spare, signal.SIGKILL)
    _wait_for(lambda: not os.path.exists(f"/proc/{spare}/cmdline") or _is_zombie(spare), "the spare did not die")
    result = _listed(engine, socket_path)
    assert result.returncode == 0 and result.stdout.startswith(b"["), result.stderr
    assert served(log) == 1 and process.poll() is None
    _wait_for(lambda: _children(process.pid) - {spare}, "no new spare after the request")


def _is_zombie(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as fh:
            return fh.read().rsplit(")", 1)[1].split()[0] == "Z"
    except FileNotFoundError:
        return True
