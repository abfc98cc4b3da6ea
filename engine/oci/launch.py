"""What the start of an application container runs as PID 1, from the config keys Proxmox VE 9.1 writes
for an OCI image (``entrypoint``, ``lxc.environment.runtime``, ``lxc.init.uid``/``gid``/``groups``,
``lxc.init.cwd``) and the signal that stops it (``lxc.signal.halt``).

Computed before fork (:class:`AppLaunch` is plain data); :meth:`AppLaunch.exec` is the last step of the
container's PID 1, after the seccomp filter, so it only makes system calls.
"""

from __future__ import annotations

import os
import shlex
import signal
from dataclasses import dataclass

from engine.config import ContainerConfig
from engine.errors import ValidationError

SYSTEM_INIT = "/sbin/init"


@dataclass(frozen=True)
class AppLaunch:
    argv: tuple[str, ...]
    env: tuple[tuple[str, str], ...]
    uid: int = 0
    gid: int = 0
    groups: tuple[int, ...] = ()
    cwd: str = "/"

    def exec(self, base_env: dict[str, str]) -> None:
        """Become the image's user in its working directory and run its command; never returns."""
        env = {**base_env, **dict(self.env)}
        os.setgroups(list(self.groups))
        os.setresgid(self.gid, self.gid, self.gid)
        os.setresuid(self.uid, self.uid, self.uid)
        os.chdir(self.cwd)
        if "/" in self.argv[0]:
            os.execve(self.argv[0], list(self.argv), env)
        os.execvpe(self.argv[0], list(self.argv), env)  # a bare name is looked up in the image's PATH


def of(config: ContainerConfig) -> AppLaunch | None:
    """The application to run as PID 1, or None for a system container (no ``entrypoint``, or /sbin/init)."""
    section = config.current
    entrypoint = section.values.get("entrypoint")
    if not entrypoint:
        return None
    try:
        argv = tuple(shlex.split(entrypoint))
    except ValueError as err:
        raise ValidationError(f"entrypoint: {err}", key="entrypoint") from None
    if not argv or argv == (SYSTEM_INIT,):
        return None
    env = []
    for variable in section.raw_values("lxc.environment.runtime"):
        name, sep, value = variable.partition("=")
        if sep and name:
            env.append((name, value))

    def number(key: str, default: int) -> int:
        values = section.raw_values(key)
        if not values:
            return default
        try:
            return int(values[-1])
        except ValueError:
            raise ValidationError(f"{key}: '{values[-1]}' is not a number", key=key) from None

    groups_text = (section.raw_values("lxc.init.groups") or [""])[-1]
    try:
        groups = tuple(int(g) for g in groups_text.split(",") if g.strip())
    except ValueError:
        raise ValidationError(
            f"lxc.init.groups: '{groups_text}' is not a list of numbers", key="lxc.init.groups"
        ) from None
    cwd = (section.raw_values("lxc.init.cwd") or ["/"])[-1]
    return AppLaunch(argv, tuple(env), number("lxc.init.uid", 0), number("lxc.init.gid", 0), groups, cwd)


def parse_signal(text: str) -> int:
    """``SIGTERM``, ``TERM``, ``15``, ``SIGRTMIN+3`` to a signal number."""
    text = text.strip().upper()
    if text.isdigit():
        number = int(text)
    else:
        name = text if text.startswith("SIG") else f"SIG{text}"
        base, plus, offset = name.partition("+")
        if base in ("SIGRTMIN", "SIGRTMAX"):
            number = getattr(signal, base) + (int(offset) if plus and offset.isdigit() else 0)
        else:
            number = getattr(signal.Signals, name, None) if name.isidentifier() else None
            if number is None:
                raise ValidationError(f"lxc.signal.halt: unknown signal {text!r}", key="lxc.signal.halt")
            number = int(number)
    if not 1 <= number <= signal.SIGRTMAX:
        raise ValidationError(f"lxc.signal.halt: {text!r} is not a signal number", key="lxc.signal.halt")
    return number


def halt_signal(config: ContainerConfig, default: int) -> int:
    """The signal a clean shutdown sends to PID 1: ``lxc.signal.halt`` when set (the image's StopSignal),
    else ``default`` (the init's own power-off signal)."""
    values = config.current.raw_values("lxc.signal.halt")
    return parse_signal(values[-1]) if values else default
