"""Parameters as Proxmox's JSON schema checks them: names, types, ranges, enumerations, with its messages.

A handler declares ``{name: P(type, ...)}``; ``check`` turns the request's strings (a query string or a
form-encoded body) into typed values, or refuses the whole request with 400 and one message per bad
parameter, as pve-common's ``validate`` words them.  Indexed names (``net[n]``, ``mp[n]``) are declared
once with ``[n]``.  A parameter no handler declares is refused: nothing unknown is silently dropped.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from webui.pve.errors import param_error

UNKNOWN = "property is not defined in schema and the schema does not allow additional properties"
MISSING = "property is missing and it is not optional"
TRUE, FALSE = {"1", "true", "yes", "on"}, {"0", "false", "no", "off"}


@dataclass(frozen=True)
class P:
    type: str = "string"  # string, integer, number, boolean
    optional: bool = True
    enum: tuple[str, ...] | None = None
    minimum: float | None = None
    maximum: float | None = None
    pattern: str | None = None
    max_length: int | None = None
    default: object = None

    def parse(self, raw):
        """The typed value of one parameter, or a ``ValueError`` with Proxmox's message."""
        text = raw if isinstance(raw, str) else ("1" if raw is True else "0" if raw is False else str(raw))
        if self.type == "boolean":
            if text.lower() in TRUE:
                return True
            if text.lower() in FALSE:
                return False
            raise ValueError(f"type check ('boolean') failed - got '{text}'")
        if self.type == "integer":
            if not re.fullmatch(r"[+-]?\d+", text.strip()):
                raise ValueError(f"type check ('integer') failed - got '{text}'")
            value = int(text)
        elif self.type == "number":
            try:
                value = float(text)
            except ValueError:
                raise ValueError(f"type check ('number') failed - got '{text}'") from None
        else:
            value = text
            if self.enum is not None and value not in self.enum:
                raise ValueError(f"value '{value}' does not have a value in the enumeration '{', '.join(self.enum)}'")
            if self.pattern and not re.fullmatch(self.pattern, value):
                raise ValueError("value does not match the regex pattern")
            if self.max_length is not None and len(value) > self.max_length:
                raise ValueError(f"value may only be {self.max_length} characters long")
            return value
        if self.minimum is not None and value < self.minimum:
            raise ValueError(f"value must have a minimum value of {self.minimum:g}")
        if self.maximum is not None and value > self.maximum:
            raise ValueError(f"value must have a maximum value of {self.maximum:g}")
        return value


VMID = P("integer", optional=False, minimum=100, maximum=999_999_999)
NODE = P("string", optional=False, pattern=r"[a-zA-Z0-9]([a-zA-Z0-9\-]*[a-zA-Z0-9])?")
STORAGE = P("string", pattern=r"[a-zA-Z][a-zA-Z0-9\-_.]*[a-zA-Z0-9]")
SNAPNAME = P("string", optional=False, pattern=r"[a-zA-Z][a-zA-Z0-9_\-]{1,39}")


def _spec_for(name: str, spec: dict[str, P]) -> P | None:
    if name in spec:
        return spec[name]
    indexed = re.fullmatch(r"([a-z]+)(\d+)", name)
    return spec.get(f"{indexed.group(1)}[n]") if indexed else None


def check(values: dict, spec: dict[str, P], path: dict | None = None) -> dict:
    """Typed parameters from ``values`` (path parameters in ``path``), or 400 naming each bad one."""
    errors: dict[str, str] = {}
    out: dict = {}
    for name, raw in {**values, **(path or {})}.items():
        declared = _spec_for(name, spec)
        if declared is None:
            errors[name] = UNKNOWN
            continue
        try:
            out[name] = declared.parse(raw)
        except ValueError as exc:
            errors[name] = str(exc)
    for name, declared in spec.items():
        if not declared.optional and name not in out and name not in errors and "[n]" not in name:
            errors[name] = MISSING
        elif declared.default is not None and name not in out:
            out[name] = declared.default
    if errors:
        raise param_error(errors)
    return out
