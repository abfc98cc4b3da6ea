"""The two sides every comparison runs: Caisson's in-process engine and LXC 5's command line."""

from __future__ import annotations

import contextlib
import glob
import os
import shlex
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterable
from pathlib import Path

from paths import CGROUP_PARENT, CLI_CGROUP_PARENT, LXC_IDMAP, LXCFS_HOOKS, MEMORY_MB, REPO
from session import Session, _stop_process
from timing import reap_children

from engine import inits
from engine.lifecycle import Engine
from engine.unpack import extract_archive

# ---- Caisson's side --------------------------------------------------------------------------------------
SHM = Path("/dev/shm")


def _runtime_dir(session: Session) -> Path:
    """The run directory on a tmpfs, as ``/run/caisson`` is on a host whose /run is one (systemd's): a start
    writes its run record there, and creating a file on some disks (this kind of VM's ext4) costs ~1 ms."""
    if os.statvfs(SHM).f_fsid == os.statvfs(session.workdir).f_fsid or not SHM.is_dir():
        return session.workdir / "caisson" / "run"
    path = Path(tempfile.mkdtemp(prefix="caisson-bench-run-", dir=SHM))
    session.stack.callback(shutil.rmtree, path, ignore_errors=True)
    session.notes.append(f"Caisson's run directory is on a tmpfs ({SHM}), as /run/caisson is where /run is one.")
    return path


class CaissonSide:
    """An engine with its own state and run dirs, held for the whole run like the node agent's.

    Containers started through the CLI (``python -m engine``) get their cgroups under the CLI's
    default parent ``caisson``; they are stopped by a second in-process engine with that parent.
    """

    def __init__(self, session: Session):
        base = session.workdir / "caisson"
        self.root, self.run_dir = base / "state", _runtime_dir(session)
        self.ctids: list[int] = []
        self.cli_started: set[int] = set()
        self.engine: Engine | None = None
        self._cli_engine: Engine | None = None
        session.stack.callback(self.cleanup)
        self.engine = Engine(root=self.root, run_dir=self.run_dir, cgroup_parent=CGROUP_PARENT, reaper=True)
        # The CLI runs as an installed package would: with its bytecode cached (here in the temp dir,
        # so nothing is written to the source tree), whatever PYTHONDONTWRITEBYTECODE says.
        self.env = {
            **os.environ,
            "PYTHONPATH": os.pathsep.join(p for p in (str(REPO), os.environ.get("PYTHONPATH", "")) if p),
            "PYTHONPYCACHEPREFIX": str(session.workdir / "pycache"),
        }
        self._bytecode_note = bool(self.env.pop("PYTHONDONTWRITEBYTECODE", None))
        self.env["CAISSON_CLI_SOCKET"] = ""  # in-process unless a row asks for the service (below)
        self._session = session
        self._service_env: dict[str, str] | None = None

    @property
    def service_env(self) -> dict[str, str]:
        """The CLI's environment with the node's CLI service running, as when the agent runs (started once)."""
        if self._service_env is None:
            sock = self.run_dir / "cli.sock"
            env = {**self.env, "CAISSON_CLI_SOCKET": str(sock)}
            service = subprocess.Popen(
                [sys.executable, "-m", "engine.cli.service", "--socket", str(sock), "--with-parent"],
                env=env,
                stderr=subprocess.DEVNULL,
            )
            self._session.stack.callback(_stop_process, service)
            deadline = time.monotonic() + 30
            while not sock.exists():
                if service.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError("the CLI service did not start")
                time.sleep(0.02)
            self._service_env = env
        return self._service_env

    @property
    def cli_engine(self) -> Engine:
        if self._cli_engine is None:
            self._cli_engine = Engine(
                root=self.root, run_dir=self.run_dir, cgroup_parent=CLI_CGROUP_PARENT, reaper=True
            )
        return self._cli_engine

    def _free_ctid(self) -> int:
        """A container ID whose cgroup exists under neither parent (other engines may share 'caisson')."""
        ctid = 900_000_000 + (os.getpid() % 90_000) * 1000 + len(self.ctids)
        while any(
            os.path.exists(p)
            for p in glob.glob(f"/sys/fs/cgroup/*/{CLI_CGROUP_PARENT}/{ctid}")
            + glob.glob(f"/sys/fs/cgroup/*/{CGROUP_PARENT}/{ctid}")
        ):
            ctid += 1
        return ctid

    def create(self, template: Path, hostname: str, options: dict[str, str] | None = None) -> int:
        ctid = self._free_ctid()
        self.ctids.append(ctid)
        self.engine.create(ctid, template, {"hostname": hostname, "memory": str(MEMORY_MB), **(options or {})})
        return ctid

    def cli(self, *args: str) -> list[str]:
        if self._bytecode_note:
            self._bytecode_note = False
            self._session.notes.append(
                "CLI: PYTHONDONTWRITEBYTECODE is set here; the CLI runs with it unset and "
                "PYTHONPYCACHEPREFIX in the temp dir, i.e. with cached bytecode as when "
                "installed (compiling the engine from source adds about 55 ms to every call)."
            )
        return [sys.executable, "-m", "engine", "--root", str(self.root), "--run-dir", str(self.run_dir), *args]

    def cli_shell(self, *args: str) -> str:
        return shlex.join(self.cli(*args))

    def mark_cli_started(self, ctid: int) -> None:
        self.cli_started.add(ctid)

    def running(self, ctid: int) -> bool:
        return self.engine.status(ctid, stats=False).status == "running"

    def stop(self, ctid: int) -> None:
        """Hard stop (not timed), by the engine whose cgroup parent the container was started under."""
        engine = self.cli_engine if ctid in self.cli_started else self.engine
        if self.running(ctid):
            engine.stop(ctid)
        self.cli_started.discard(ctid)
        reap_children()

    def cleanup(self) -> None:
        for ctid in self.ctids:
            with contextlib.suppress(Exception):
                if ctid in self.cli_started and self.running(ctid):
                    self.cli_engine.stop(ctid)
            with contextlib.suppress(Exception):
                if self.engine is not None:
                    self.engine.destroy(ctid, force=True)
            for engine in (self.engine, self._cli_engine):
                if engine is not None:
                    with contextlib.suppress(Exception):
                        if engine.cgroups.exists(str(ctid)):
                            engine.cgroups.kill(str(ctid))
                            engine.cgroups.destroy(str(ctid))
        reap_children()
        # The bench parent is ours alone; the CLI's 'caisson' parent may be shared, so it stays.
        for path in glob.glob(f"/sys/fs/cgroup/*/{CGROUP_PARENT}") + glob.glob(f"/sys/fs/cgroup/{CGROUP_PARENT}"):
            with contextlib.suppress(OSError):
                os.rmdir(path)


# ---- LXC's side ------------------------------------------------------------------------------------------


class LxcSide:
    """LXC containers in a private lxcpath, each with its own copy of the template's rootfs."""

    def __init__(self, session: Session):
        self.path = session.workdir / "lxc"
        self.path.mkdir(mode=0o711)
        self.unprivileged = session.lxc_unprivileged
        self.lxcfs_hooks = getattr(session.args, "lxc_lxcfs_hooks", False)
        self.names: list[str] = []
        session.stack.callback(self.cleanup)
        if self.lxcfs_hooks:
            session.notes.append(
                "LXC keeps Debian's lxcfs hooks (common.conf.d/00-lxcfs.conf: a mount hook and a "
                "post-stop hook that sleeps 0.5 s)."
            )
        elif os.path.exists(LXCFS_HOOKS):
            session.notes.append(
                f"LXC runs without the lxcfs hooks that {LXCFS_HOOKS} adds to every container (a "
                "mount hook, and a post-stop hook that sleeps 0.5 s, which lxc-stop waits for); "
                "--lxc-lxcfs-hooks keeps them."
            )

    def create(self, template: Path, name: str, net: Iterable[str] = ("lxc.net.0.type = empty",)) -> str:
        """Extract the template (ids shifted like Caisson's when unprivileged) and write the config
        (``net``: the lxc.net.* lines; by default no network)."""
        name = f"cb{os.getpid()}-{name}"
        cdir = self.path / name
        cdir.mkdir(mode=0o711)
        self.names.append(name)
        rootfs = cdir / "rootfs"
        extract_archive(template, rootfs, LXC_IDMAP if self.unprivileged else None)
        init = inits.detect(rootfs) or inits.SYSVINIT
        lines = [
            "lxc.include = /usr/share/lxc/config/common.conf",
            f"lxc.rootfs.path = dir:{rootfs}",
            f"lxc.uts.name = {name}",
            *net,
            # The same memory limit and power-off signal Caisson gives its containers.
            f"lxc.cgroup.memory.limit_in_bytes = {MEMORY_MB << 20}",
            f"lxc.signal.halt = {int(init.poweroff_signal)}",
        ]
        if not self.lxcfs_hooks:
            # Debian's lxcfs package adds a mount hook and a post-stop hook ("sleep 0.5s") to every
            # container through common.conf.d; lxc-stop waits for it. Without lxcfs running they do
            # nothing useful, so LXC is measured without them unless asked.
            lines += ["lxc.hook.mount =", "lxc.hook.post-stop ="]
        if self.unprivileged:
            lines += [f"lxc.idmap = {line}" for line in LXC_IDMAP.lxc_lines()]
        (cdir / "config").write_text("\n".join(lines) + "\n")
        return name

    def cmd(self, tool: str, name: str, *rest: str) -> list[str]:
        return [tool, "-P", str(self.path), "-n", name, *rest]

    def shell(self, tool: str, name: str, *rest: str) -> str:
        return shlex.join(self.cmd(tool, name, *rest))

    def start_argv(self, name: str) -> list[str]:
        return self.cmd("lxc-start", name, "-d")

    def attach_argv(self, name: str, *command: str) -> list[str]:
        return self.cmd("lxc-attach", name, "--", *(command or ("true",)))

    def stop(self, name: str) -> None:
        """Hard stop (not timed)."""
        self._reaping(self.cmd("lxc-stop", name, "-k"))

    @staticmethod
    def _reaping(argv: list[str], timeout: float = 30.0) -> None:
        """Run an lxc-* command that waits for a container's end, reaping our children meanwhile.

        Processes attached with lxc-attach are re-parented to this process (a child subreaper) when
        their lxc-attach exits. A killed container's init waits in the kernel until every process
        of its pid namespace is reaped, so an unreaped one (a zombie whose parent is this process)
        would hold ``lxc-stop`` and ``lxc-destroy`` forever. Reap while waiting, and give up after
        ``timeout`` seconds rather than hang.
        """
        reap_children()
        process = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + timeout
        while process.poll() is None:
            reap_children()
            if time.monotonic() > deadline:
                process.kill()
                process.wait()
                print(f"warning: {shlex.join(argv)} did not finish in {timeout:g} s; killed", file=sys.stderr)
                break
            time.sleep(0.02)
        reap_children()

    def cleanup(self) -> None:
        for name in self.names:
            self._reaping(self.cmd("lxc-stop", name, "-k"))
            self._reaping(self.cmd("lxc-destroy", name, "-f"))
            # What LXC leaves when a start fails half way.
            for top in glob.glob(f"/sys/fs/cgroup/*/lxc.*.{name}") + glob.glob(f"/sys/fs/cgroup/lxc.*.{name}"):
                for dirpath, _, _ in sorted(os.walk(top), key=lambda w: -w[0].count("/")):
                    with contextlib.suppress(OSError):
                        os.rmdir(dirpath)
        shutil.rmtree(self.path, ignore_errors=True)
