"""The engine's exceptions: one small hierarchy, mapped to CLI exit codes in one place.

Every message names the thing that is wrong (the config key, the path, the
container ID) so that a user can act on it without reading a traceback.
"""

from __future__ import annotations


class EngineError(Exception):
    """Base of every error the engine raises on purpose."""

    exit_code = 1


class ValidationError(EngineError):
    """Bad input: a config key, a CLI argument, an archive member."""

    exit_code = 2

    def __init__(self, message: str, key: str | None = None):
        super().__init__(message)
        self.key = key


class Cancelled(EngineError):
    """The caller asked to stop (a job's cancel, Ctrl-C); what was begun was undone or kept for resume.

    One class for every long operation (builds, downloads, backups), so callers
    catch it by type whatever the operation.
    """

    exit_code = 130


class NotFound(EngineError):
    """No such container (or other named object)."""

    exit_code = 3


class AlreadyExists(EngineError):
    """An ID or name that must be unique is taken."""

    exit_code = 4


class InvalidState(EngineError):
    """The container is in the wrong state for the request (running, stopped, locked)."""

    exit_code = 5


class Locked(InvalidState):
    """Another operation holds the container's lock."""

    exit_code = 6


class StartError(EngineError):
    """A named step of the container start failed."""

    exit_code = 7

    def __init__(self, step: str, message: str):
        super().__init__(f"start failed at step '{step}': {message}")
        self.step = step


class InitExited(StartError):
    """Init's exec succeeded but it had exited again before the start ended: the container's own boot ended
    it (a restore test reports this as a boot failure, as it would if init had lived a moment longer)."""

    def __init__(self, console_log: str):
        super().__init__("exec", f"init died as it started; see {console_log}")


class UnsafeArchive(ValidationError):
    """An archive member would escape the target or carries something forbidden."""


class HostError(EngineError):
    """The host lacks something the engine needs (a kernel feature, a cgroup controller)."""

    exit_code = 8


class NotSupported(HostError):
    """The request is valid but this host or driver cannot do it."""

    exit_code = 9
