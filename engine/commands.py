"""Running commands in a container: exec with its output or this process's stdio, a shell, a terminal."""

from __future__ import annotations

from engine.errors import InvalidState, ValidationError
from engine.suspend import refuse_if_paused


class CommandOps:
    """Mixed into :class:`engine.lifecycle.Engine`; uses its ``node`` and ``cgroups``."""

    # ---- running commands ------------------------------------------------------------------
    def _attach_spec(self, ctid: int, argv: list[str], tty: bool, env: dict[str, str] | None, cwd: str):
        config = self.config(ctid)
        record = self.node.running(ctid)
        if not record:
            raise InvalidState(f"container {ctid} is not running")
        refuse_if_paused(self.node, ctid, "running a command in it")
        if not argv:
            raise ValidationError("no command given", key="command")
        from engine import attach

        return attach.AttachSpec(
            init_pid=record.pid,
            argv=list(argv),
            cgroup_procs=_cgroup_procs_of(record.pid, self.cgroups.mounts),
            env=env or {},
            cwd=cwd,
            tty=tty,
            seccomp_rules=attach.seccomp.container_rules(config),
            notify_socket=str(attach.notify.socket_path(self.node.layout.run, ctid)),
        )

    def exec(
        self,
        ctid: int,
        argv: list[str],
        stdio: tuple[int, int, int] | None = None,
        env: dict[str, str] | None = None,
        cwd: str = "/",
    ) -> int:
        """Run a command without a tty; stdio defaults to this process's own. Returns its exit code."""
        from engine import attach

        return attach.run(self._attach_spec(ctid, argv, False, env, cwd), stdio)

    def exec_output(
        self, ctid: int, argv: list[str], input: bytes = b"", env: dict[str, str] | None = None, cwd: str = "/"
    ) -> tuple[int, bytes, bytes]:
        """Run a command and collect its output: (exit code, stdout, stderr)."""
        from engine import attach

        return attach.run_capture(self._attach_spec(ctid, argv, False, env, cwd), input)

    def enter(self, ctid: int, argv: list[str] | None = None) -> int:
        """An interactive shell (or command) on a new pty inside the container."""
        from engine import attach

        return attach.interactive(self._attach_spec(ctid, argv or ["/bin/sh", "-l"], True, None, "/root"))

    def open_terminal(
        self, ctid: int, argv: list[str], env: dict[str, str] | None = None, cwd: str = "/root"
    ) -> tuple[int, int]:
        """Start ``argv`` on a new pty inside the container without waiting for it.

        Returns the joiner's pid (a child of the caller, which must reap it; its exit code is the
        command's) and the pty master.  The console relay serves browser terminals this way.
        """
        from engine import attach

        pid, master = attach.spawn(self._attach_spec(ctid, argv, True, env, cwd))
        assert master is not None
        return pid, master


def _cgroup_procs_of(pid: int, mounts) -> list[str]:
    """The cgroup.procs files of init's own cgroups, so a command joins where init is (a leaf on v2)."""
    files = []
    with open(f"/proc/{pid}/cgroup") as handle:
        for line in handle:
            _, controllers, path = line.rstrip("\n").split(":", 2)
            root = mounts.v1.get(controllers.split(",")[0]) if controllers else mounts.unified
            if root:
                files.append(f"{root}{path}/cgroup.procs")
    return files
