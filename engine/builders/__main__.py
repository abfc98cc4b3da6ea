"""``python -m engine.builders``: build a local template into the template store.

Prints the tarball's path on stdout (progress goes to stderr) so scripts can
capture it. Exit codes: 0 built or already there, 2 bad arguments, and the
engine's error codes otherwise (8 when the host lacks a tool, 1 for a
failed build); 130 when interrupted.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from engine.builders.common import default_template_dir
from engine.builders.registry import build, get, names
from engine.errors import EngineError


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m engine.builders",
        description="Build a container template (rootfs .tar.zst) on this host.",
    )
    parser.add_argument(
        "--dest",
        type=Path,
        default=None,
        help="directory for the tarball (default: $CAISSON_ROOT/template/cache, "
        "CAISSON_ROOT defaulting to /var/lib/caisson)",
    )
    parser.add_argument("--force", action="store_true", help="rebuild even if the tarball exists")
    # The same options after the template name; SUPPRESS keeps them from
    # overwriting values given before it.
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--dest", type=Path, default=argparse.SUPPRESS, help="directory for the tarball")
    common.add_argument(
        "--force", action="store_true", default=argparse.SUPPRESS, help="rebuild even if the tarball exists"
    )
    sub = parser.add_subparsers(dest="template", required=True, metavar="TEMPLATE")
    for name in names():
        builder = get(name)
        command = sub.add_parser(name, parents=[common], help=builder.help)
        for option in builder.options:
            if option.cli:
                command.add_argument(
                    f"--{option.name}", default=option.default, choices=option.choices or None, help=option.help
                )
    return parser


def _progress(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def _reporter():
    """A build's progress(step_done, steps_total, text) as lines on stderr, each text once."""
    last = [""]

    def report(done: float, total: int, text: str) -> None:
        if text != last[0]:
            last[0] = text
            _progress(f"[{min(done / total, 1.0):4.0%}] {text}" if total else text)

    return report


def main(argv: list[str] | None = None) -> int:
    """Run the CLI; return the process exit code."""
    args = _parser().parse_args(argv)
    dest = args.dest or default_template_dir()
    started = time.monotonic()
    options = {o.name: getattr(args, o.name) for o in get(args.template).options if o.cli}
    try:
        path = build(
            args.template, dest, {k: v for k, v in options.items() if v}, progress=_reporter(), force=args.force
        )
    except EngineError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        print("interrupted; nothing was left behind", file=sys.stderr)
        return 130
    _progress(f"template ready in {time.monotonic() - started:.1f} s")
    print(path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
