"""Pure text helpers shared by the families: Proxmox's marked blocks, list splitting, version checks."""

from __future__ import annotations

import re

BEGIN, END = "# --- BEGIN PVE ---", "# --- END PVE ---"
_BEGIN_RE = re.compile(r"^#\s*---\s*BEGIN\s*PVE\s*")
_END_RE = re.compile(r"^#\s*---\s*END\s*PVE\s*", re.IGNORECASE)
REMOVE = object()  # modify_block's answer: delete the file


def split_list(value: str | None) -> list[str]:
    """Proxmox's list syntax: words separated by spaces, commas or semicolons."""
    return re.sub(r"[,;]", " ", value or "").split()


def modify_block(old: str | None, data: str, *, replace: bool = False, prepend: bool = False, delete: bool = False):
    """The file with its marked block set to ``data``: the new text, None (leave it), or ``REMOVE``.

    The block is the first BEGIN line and the first END after it; without a
    block, ``data`` is appended (or prepended, or replaces the whole file).
    """
    if data and not data.endswith("\n"):
        data += "\n"
    block = f"{BEGIN}\n{data}{END}"
    if old is None:
        return block + "\n" if data else None
    lines = old.split("\n")
    while lines and lines[-1] == "":  # Perl's split drops trailing empty fields
        lines.pop()
    begin = end = None
    for index, line in enumerate(lines):
        if begin is None and _BEGIN_RE.match(line):
            begin = index
        elif begin is not None and _END_RE.match(line):
            end = index
            break
    if begin is not None and end is not None:
        if not data and begin == 0 and end == len(lines) - 1:
            return REMOVE if delete else None
        lines[begin : end + 1] = [block]
        return "\n".join(lines) + "\n"
    if not data:
        return None
    content = "\n".join(lines).rstrip("\n") + "\n"
    if replace:
        return block + "\n"
    if prepend:
        return block + "\n" + content
    return content + block + "\n"


def remove_blocks(text: str) -> str:
    """The text without any marked block (from a BEGIN line to the next END line, inclusive)."""
    return re.sub(
        r"^[ \t]*" + re.escape(BEGIN) + r".*?^[ \t]*" + re.escape(END) + r"[^\n]*",
        "",
        text,
        flags=re.MULTILINE | re.DOTALL,
    )


def at_least(version: str | None, major: int, minor: int) -> bool:
    """``version`` ("12", "3.13.1") is ``major.minor`` or newer."""
    match = re.match(r"^(\d+)(?:\.(\d+))?", str(version or ""))
    if not match:
        return False
    have_major, have_minor = int(match[1]), match[2]
    if have_major != major:
        return have_major > major
    return minor == 0 if have_minor is None else minor <= int(have_minor)


def parse_os_release(text: str | None) -> dict[str, str]:
    """os-release(5): shell-like assignments, values optionally quoted."""
    values = {}
    for line in (text or "").splitlines():
        match = re.match(r"^\s*([A-Za-z_][A-Za-z0-9_]*)=(.*)$", line)
        if not match:
            continue
        key, content = match[1], match[2]
        if quoted := re.match(r"^'([^']*)'", content):
            values[key] = quoted[1]
        elif quoted := re.match(r'^"((?:[^"\\]|\\.)*)"', content):
            values[key] = re.sub(r"\\([\"'`nt$\\])", r"\1", quoted[1])
        else:
            values[key] = re.match(r"^([A-Za-z0-9._-]*)", content)[1]
    return values
