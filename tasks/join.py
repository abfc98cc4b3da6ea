"""``python -m tasks.join``: make this machine a node of an existing Caisson.

Checks the join token an administrator made (``manage.py node token``) against the cluster's database,
marks it used, registers the node, receives the installation's shared secrets (the keys that sign jobs
and channel messages, the Redis password) into ``--secrets``, and writes the node's settings into
``--env-file``; ``scripts/run.sh join`` then starts this node's agent and console relay only (the web
server and beat run where the console is). A cluster needs PostgreSQL: a SQLite database lives on one
machine and is refused. Exit codes: 0 joined, 2 refused or bad input, 1 the database or Redis is unreachable.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
from pathlib import Path
from urllib.parse import urlparse


def write_private(path: Path, text: str) -> None:
    """A 0600 file written whole (temp file and rename), so a reader never sees half of it."""
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    tmp = path.with_name(f".{path.name}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(text)
    os.replace(tmp, path)


def parse(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m tasks.join", description=__doc__.split("\n\n")[0])
    parser.add_argument("--database", required=True, help="the cluster's PostgreSQL URL (postgres://...)")
    parser.add_argument("--redis", required=True, help="the cluster's Redis URL (redis://host:port)")
    parser.add_argument(
        "--token", required=True, help="the join token; '-' reads it from standard input (kept out of ps)"
    )
    parser.add_argument("--name", required=True, help="this node's name (lower-case letters, digits, hyphens)")
    parser.add_argument("--secrets", type=Path, default=Path("/etc/caisson"), help="where the shared keys go")
    parser.add_argument("--env-file", type=Path, required=True, help="where this node's settings are written")
    args = parser.parse_args(argv)
    if args.token == "-":
        args.token = sys.stdin.readline().strip()
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse(argv)
    scheme = urlparse(args.database).scheme
    if scheme not in ("postgres", "postgresql"):
        print(
            f"join: error: a cluster needs PostgreSQL (--database postgres://...), not '{scheme or args.database}':"
            " every node reads and writes the one database",
            file=sys.stderr,
        )
        return 2
    if urlparse(args.redis).scheme not in ("redis", "rediss"):
        print(f"join: error: --redis must be a redis:// URL, not '{args.redis}'", file=sys.stderr)
        return 2
    # Django's settings make any missing key on import: a throwaway directory keeps them off --secrets.
    with tempfile.TemporaryDirectory(prefix="caisson-join-") as scratch:
        os.environ.update(
            DATABASE_URL=args.database,
            REDIS_URL=args.redis,
            CAISSON_SECRETS=scratch,
            CAISSON_NODE=args.name,
            DJANGO_SETTINGS_MODULE=os.environ.get("DJANGO_SETTINGS_MODULE", "webui.settings"),
        )
        import django
        from django.db import OperationalError

        django.setup()
        from webui.models.cluster import JoinRefused, JoinToken

        try:
            shared = JoinToken.redeem(args.token, args.name)
        except JoinRefused as exc:
            print(f"join: refused: {exc}", file=sys.stderr)
            return 2
        except OperationalError as exc:
            print(f"join: error: the database does not answer: {exc}", file=sys.stderr)
            return 1
    for name, value in shared.items():
        if value is not None:
            write_private(args.secrets / name, value)
    settings = {"DATABASE_URL": args.database, "REDIS_URL": args.redis, "CAISSON_NODE": args.name}
    settings["CAISSON_SECRETS"] = str(args.secrets)
    write_private(args.env_file, "".join(f"{key}={value}\n" for key, value in settings.items()))
    print(f"join: node '{args.name}' registered; settings in {args.env_file}, shared keys in {args.secrets}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
