"""Read-only reports of ``pct``: ``pending`` (a config's changes waiting for a restart) and ``cpusets``.

Caisson applies ``set`` at once (live where the kernel allows, else at the
next start from the config), so its own changes are never pending; a
``[pve:pending]`` section comes from a Proxmox config brought over, and is
shown here as ``pct pending`` shows it: each key's current value, its
pending value, and whether it is to be deleted.
"""

from __future__ import annotations

from engine.config import ContainerConfig


def pending(config: ContainerConfig) -> list[dict]:
    """Rows of ``key``, ``value`` (current), ``pending``, ``delete`` (0, 1, or 2 when forced), sorted by key."""
    current = dict(config.current.values)
    if config.current.description:
        current["description"] = config.current.description
    section = config.pending
    waiting = dict(section.values) if section is not None else {}
    if section is not None and section.description:
        waiting["description"] = section.description
    deletes = {}
    for item in str(waiting.pop("delete", "") or "").split(","):
        item = item.strip()
        if item:
            deletes[item.lstrip("!")] = 2 if item.startswith("!") else 1
    rows = []
    for key in sorted(set(current) | set(waiting) | set(deletes)):
        row = {"key": key}
        if key in current:
            row["value"] = str(current[key])
        if key in waiting:
            row["pending"] = str(waiting[key])
        if key in deletes:
            row["delete"] = deletes[key]
        rows.append(row)
    return rows


def pending_lines(rows: list[dict]) -> list[str]:
    """``pct pending``'s text: ``cur``, ``new`` and ``del`` lines."""
    lines = []
    for row in rows:
        if "delete" in row:
            lines.append(f"del {row['key']}: {row.get('value', '')}")
        elif "pending" in row:
            if "value" in row:
                lines.append(f"cur {row['key']}: {row['value']}")
            lines.append(f"new {row['key']}: {row['pending']}")
        else:
            lines.append(f"cur {row['key']}: {row['value']}")
    return lines


def parse_cpus(text: str) -> list[int]:
    cpus: list[int] = []
    for part in text.split(","):
        part = part.strip()
        if "-" in part:
            low, high = part.split("-", 1)
            cpus.extend(range(int(low), int(high) + 1))
        elif part:
            cpus.append(int(part))
    return cpus


def cpusets(engine) -> dict[int, list[int]]:
    """The CPUs each running container may use, as the kernel applies them."""
    found = {}
    for ctid in engine.ids():
        if engine.node.running(ctid):
            text = engine.cgroups.cpuset(str(ctid))
            if text is not None:
                found[ctid] = parse_cpus(text)
    return found


def cpuset_lines(found: dict[int, list[int]]) -> list[str]:
    """``pct cpusets``'s table: one column per CPU, a dashed rule above and below."""
    if not found:
        return ["no running containers"]
    width = max(len(str(ctid)) for ctid in found)
    last = max((max(cpus) for cpus in found.values() if cpus), default=0)
    rows = []
    for ctid in sorted(found):
        cells = " ".join(str(i) if i in found[ctid] else " " * len(str(i)) for i in range(last + 1))
        rows.append(f"{ctid:>{width}}:  {cells}".rstrip())
    rule = "-" * max(len(r) for r in rows)
    return [rule, *rows, rule]
