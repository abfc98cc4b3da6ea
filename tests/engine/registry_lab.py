"""A registry on loopback for the tests and the bench: Debian's ``docker-registry`` bound to 127.0.0.1,
optionally with htpasswd authentication, started and stopped by its user; images pushed with skopeo."""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import shutil
import socket
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

REGISTRY = "/usr/bin/docker-registry"


def available() -> bool:
    return Path(REGISTRY).exists() and shutil.which("skopeo") is not None


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def bcrypt(password: str) -> str:
    """A bcrypt hash through the system's libcrypt (libxcrypt), for the registry's htpasswd file."""
    lib = ctypes.CDLL(ctypes.util.find_library("crypt"))
    lib.crypt_gensalt.restype = ctypes.c_char_p
    lib.crypt_gensalt.argtypes = [ctypes.c_char_p, ctypes.c_ulong, ctypes.c_char_p, ctypes.c_int]
    lib.crypt.restype = ctypes.c_char_p
    lib.crypt.argtypes = [ctypes.c_char_p, ctypes.c_char_p]
    return lib.crypt(password.encode(), lib.crypt_gensalt(b"$2b$", 5, None, 0)).decode()


@contextlib.contextmanager
def registry(workdir: Path, users: dict[str, str] | None = None) -> Iterator[str]:
    """A running registry; yields its ``127.0.0.1:<port>``."""
    port = _free_port()
    workdir.mkdir(parents=True, exist_ok=True)
    auth = ""
    if users:
        (workdir / "htpasswd").write_text("".join(f"{u}:{bcrypt(p)}\n" for u, p in users.items()))
        auth = f"auth:\n  htpasswd:\n    realm: caisson-test\n    path: {workdir / 'htpasswd'}\n"
    config = workdir / "config.yml"
    config.write_text(
        "version: 0.1\nlog:\n  level: error\n"
        f"storage:\n  filesystem:\n    rootdirectory: {workdir / 'data'}\n  delete:\n    enabled: true\n"
        f"http:\n  addr: 127.0.0.1:{port}\n{auth}"
    )
    log = open(workdir / "registry.log", "wb")  # noqa: SIM115 - closed below
    proc = subprocess.Popen([REGISTRY, "serve", str(config)], stdout=log, stderr=subprocess.STDOUT)
    try:
        address = f"127.0.0.1:{port}"
        for _ in range(200):
            if proc.poll() is not None:
                raise RuntimeError(f"docker-registry exited: {(workdir / 'registry.log').read_text()}")
            try:
                urllib.request.urlopen(f"http://{address}/v2/", timeout=1)
                break
            except urllib.error.HTTPError:  # 401 with auth: it answers
                break
            except OSError:
                time.sleep(0.05)
        yield address
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        log.close()


def push(layout: Path, address: str, repo: str, creds: str | None = None) -> None:
    """Push an OCI image layout to the registry with skopeo (``creds``: ``user:password``)."""
    argv = ["skopeo", "copy", "--dest-tls-verify=false", f"oci:{layout}:latest", f"docker://{address}/{repo}"]
    if creds:
        argv[2:2] = ["--dest-creds", creds]
    subprocess.run(argv, check=True, capture_output=True)
