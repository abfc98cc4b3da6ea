"""Proxmox's error answers: the HTTP code, the message, and ``errors`` per parameter.

pve-http-server answers an error with ``{"data": null}`` (plus ``errors`` for parameter checks) and puts
the message in the status line; an ASGI server sends only the standard reason phrase, so the message is
also in the body as ``message`` (where Proxmox's ``extjs`` format has it for every error).
"""

from __future__ import annotations

import re

from django.core.exceptions import PermissionDenied, ValidationError

from webui.models.queue import JobRefused

PARAMETER_FAILED = "Parameter verification failed."


class PveError(Exception):
    def __init__(self, status: int, message: str, errors: dict[str, str] | None = None):
        super().__init__(message)
        self.status, self.message, self.errors = status, message, errors or {}


def param_error(errors: dict[str, str]) -> PveError:
    return PveError(400, PARAMETER_FAILED, errors)


def permission_failed(path: str, privilege: str) -> PveError:
    return PveError(403, f"Permission check failed ({path}, {privilege})")


def config_missing(node: str, vmid) -> PveError:
    """Proxmox's answer for a guest ID with no config: a 500 that clients match on "does not exist"."""
    return PveError(500, f"Configuration file 'nodes/{node}/lxc/{vmid}.conf' does not exist")


def no_such_node(node: str) -> PveError:
    return PveError(596, f"no such cluster node '{node}'")


def pve_path(path: str) -> str:
    """Caisson's access path as Proxmox names it (``/ct/100`` -> ``/vms/100``)."""
    return "/vms/" + path[4:] if path.startswith("/ct/") else path


_REQUIRED = re.compile(r"permission denied: (\S+) on (\S+) is required")


def translate(exc: Exception) -> PveError:
    """The actions' refusals as Proxmox words them."""
    if isinstance(exc, PveError):
        return exc
    if isinstance(exc, PermissionDenied):
        found = _REQUIRED.search(str(exc))
        if found:
            return permission_failed(pve_path(found.group(2)), found.group(1))
        return PveError(403, f"Permission check failed ({str(exc).removeprefix('permission denied: ')})")
    if isinstance(exc, ValidationError):
        errors = (
            {k: " ".join(v) for k, v in exc.message_dict.items()}
            if hasattr(exc, "error_dict")
            else {"__all__": " ".join(exc.messages)}
        )
        return param_error(errors)
    if isinstance(exc, JobRefused):
        return PveError(500 if exc.status == 409 else 595, str(exc))
    raise exc
