"""``pvesh get|create|set|delete PATH [--output-format text|json|json-pretty] [-param value ...]``: Proxmox's API
from the node's shell, through the same handlers as ``/api2/json`` (``webui.pve``).

As Proxmox's ``pvesh`` it is for root on the node and acts as the administrator (Proxmox's ``root@pam``):
here the Caisson superuser named by ``--user``, or ``PVESH_USER``, else the first active superuser.
Ansible's proxmox modules and proxmoxer's ``local`` backend run ``pvesh`` on the node itself: put
``scripts/pvesh`` on root's ``PATH`` (``ln -s /opt/caisson/scripts/pvesh /usr/local/bin/pvesh``).

Exit codes: 0 done; 2 bad usage; 255 refused by the API (its status code and message on stderr, then one
line per bad parameter), as Proxmox's.
"""

from __future__ import annotations

import argparse
import json
import os
import sys

COMMANDS = {"get": "GET", "create": "POST", "set": "PUT", "delete": "DELETE"}
FORMATS = ("text", "json", "json-pretty")


def parse(argv: list[str]) -> tuple[argparse.Namespace, dict]:
    parser = argparse.ArgumentParser(prog="pvesh", description=__doc__.split("\n\n")[0])
    parser.add_argument("command", choices=sorted(COMMANDS), help="get (GET), create (POST), set (PUT), delete")
    parser.add_argument("path", help="an API path, e.g. /nodes/NODE/lxc")
    parser.add_argument("--output-format", choices=FORMATS, default="text", help="text (tables), json or json-pretty")
    parser.add_argument("--user", help="the Caisson superuser to act as (default: PVESH_USER or the first one)")
    parser.add_argument("--noproxy", action="store_true", help="accepted for Proxmox's scripts; one node here")
    args, rest = parser.parse_known_args(argv)
    params: dict[str, str] = {}
    index = 0
    while index < len(rest):
        token = rest[index]
        if not token.startswith("-") or token in ("-", "--"):
            parser.error(f"unexpected argument '{token}' (parameters are -name value)")
        name, eq, value = token.lstrip("-").partition("=")
        if not eq:
            if index + 1 >= len(rest):
                parser.error(f"parameter -{name} needs a value")
            index += 1
            value = rest[index]
        params[name] = value
        index += 1
    return args, params


def table(data) -> str:
    """Text output: a table for a list of rows, ``key: value`` lines for one object, else the value."""
    if isinstance(data, list) and data and all(isinstance(r, dict) for r in data):
        keys = sorted({k for row in data for k in row})
        rows = [[_cell(row.get(k)) for k in keys] for row in data]
        widths = [max(len(k), *(len(r[i]) for r in rows)) for i, k in enumerate(keys)]
        line = lambda cells: "  ".join(c.ljust(w) for c, w in zip(cells, widths, strict=True)).rstrip()  # noqa: E731
        return "\n".join([line(keys), *(line(r) for r in rows)])
    if isinstance(data, dict):
        return "\n".join(f"{k}: {_cell(v)}" for k, v in sorted(data.items()))
    return "" if data is None else _cell(data)


def _cell(value) -> str:
    return json.dumps(value) if isinstance(value, dict | list) else "" if value is None else str(value)


def main(argv: list[str] | None = None) -> int:
    args, params = parse(sys.argv[1:] if argv is None else argv)
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "webui.settings")
    import django

    django.setup()
    from django.contrib.auth import get_user_model

    from webui.access import Access
    from webui.pve.router import run

    if os.geteuid() != 0:
        print("pvesh: only root on the node may use pvesh (as Proxmox's)", file=sys.stderr)
        return 255
    users = get_user_model().objects.filter(is_active=True, is_superuser=True).order_by("date_joined", "id")
    name = args.user or os.environ.get("PVESH_USER")
    user = users.filter(username=name).first() if name else users.first()
    if user is None:
        print(f"pvesh: no active Caisson superuser {name or ''} to act as".replace("  ", " "), file=sys.stderr)
        return 255
    status, data, message, errors = run(COMMANDS[args.command], args.path, params, Access(user))
    if status != 200:
        print(f"{status} {message}", file=sys.stderr)
        for key, text in sorted(errors.items()):
            print(f"{key}: {text}", file=sys.stderr)
        return 255
    if args.output_format == "text":
        text = table(data)
        if text:
            print(text)
    else:
        print(json.dumps(data, indent=2 if args.output_format == "json-pretty" else None, sort_keys=True))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
