"""Application containers from the host's own binaries (the idea of libvirt's virt-sandbox): no template,
one host program run isolated.

The container's rootfs is a small private, writable skeleton (``/etc`` with its own users and the host's
``ld.so.cache``, ``/tmp``, ``/root``, ``/var``, the merged-/usr links ``/bin -> usr/bin``, ...) and the
host's ``/usr`` is bound read-only over its ``/usr`` (``mp0: /usr,mp=/usr,ro=1``, a bind mount point as
any other: locked read-only). The program is its ``entrypoint``: PID 1, output in the console log,
stopped with SIGTERM. Everything else is a container's: its own namespaces, cgroup limits, seccomp,
unprivileged ids (the host's files show as ``nobody``; they are read and run, never written).
"""

from __future__ import annotations

import os
import shlex
import shutil
import stat
import tempfile
from pathlib import Path

from engine.errors import NotSupported, ValidationError

USR = "/usr"
DIRS = {"etc": 0o755, "tmp": 0o1777, "root": 0o700, "var": 0o755, "var/tmp": 0o1777, "run": 0o755, "usr": 0o755}
for _d in ("proc", "sys", "dev", "home", "srv"):
    DIRS[_d] = 0o755
FILES = {
    "etc/passwd": "root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/nonexistent:/usr/sbin/nologin\n",
    "etc/group": "root:x:0:\nnogroup:x:65534:\n",
    "etc/nsswitch.conf": "passwd: files\ngroup: files\nhosts: files dns\n",
    "etc/hosts": "127.0.0.1 localhost\n::1 localhost\n",
}
HOST_FILES = ("etc/ld.so.cache", "etc/localtime")  # copied when the host has them


def skeleton(target: Path, host_root: Path = Path("/")) -> None:
    """Write the rootfs skeleton into the empty directory ``target`` (host ids: the create shifts them)."""
    links = {}
    for entry in os.scandir(host_root):
        if entry.is_symlink():
            link = os.readlink(entry.path)
            if link.startswith(("usr/", "/usr/")):
                links[entry.name] = link.lstrip("/")
    if "bin" not in links:
        raise NotSupported(
            f"the host's {host_root / 'bin'} is not a link into /usr: a host-binary container needs merged /usr"
        )
    for name, mode in DIRS.items():
        (target / name).mkdir(parents=True, exist_ok=True)
        os.chmod(target / name, mode)
    for name, link in links.items():
        os.symlink(link, target / name)
    for name, text in FILES.items():
        (target / name).write_text(text)
    for name in HOST_FILES:
        source = host_root / name
        if source.is_file():
            shutil.copyfile(source, target / name)  # a symlink (localtime) is followed: its content is wanted
            os.chmod(target / name, 0o644)


def create_host_app(engine, ctid: int, argv: list[str], options: dict | None = None):
    """Create a container that runs ``argv`` (a host program) as PID 1; returns the engine's create status."""
    if not argv or not argv[0]:
        raise ValidationError("a host-binary container needs a command", key="entrypoint")
    program = argv[0]
    if not program.startswith("/"):
        found = shutil.which(program, path="/usr/local/bin:/usr/bin:/usr/sbin")
        if found is None:
            raise ValidationError(f"entrypoint: no program '{program}' in the host's /usr", key="entrypoint")
        program = found
    real = os.path.realpath(program)
    if not (real.startswith(USR + "/") and stat.S_ISREG(os.stat(real).st_mode) and os.access(real, os.X_OK)):
        raise ValidationError(f"entrypoint: '{program}' is not an executable of the host's /usr", key="entrypoint")
    wanted = {
        "hostname": f"app{ctid}",
        **(options or {}),
        "entrypoint": shlex.join([program, *argv[1:]]),
        "cmode": "console",
        "mp0": f"{USR},mp={USR},ro=1",
    }
    with tempfile.TemporaryDirectory(prefix="caisson-hostapp-") as tmp:
        root = Path(tmp) / "rootfs"
        root.mkdir()
        skeleton(root)
        return engine.create(ctid, root, wanted)
