"""``python -m engine recover [ID]``: what killed jobs left, finished, undone or named (engine.recovery)."""

from __future__ import annotations

from engine.cli.output import emit_json, table


def add_parser(verbs, ctid_type) -> None:
    rec = verbs.add_parser(
        "recover",
        help="release locks of jobs that no longer run, thaw, clean up and sweep temporary files (as the agent does)",
    )
    rec.add_argument("ctid", nargs="?", type=ctid_type, help="only this container (default: the whole node)")


def dispatch(engine, args) -> int:
    """Exit 0 when nothing is left for a person, 5 when a lock was kept or a recovery failed (listed)."""
    from engine.recovery import recover

    actions = recover(engine, args.ctid)
    if args.output == "json":
        emit_json([action.as_dict() for action in actions])
    elif actions:
        table(["VMID", "ACTION", "DETAIL"], [[a.ctid or "-", a.what, a.detail] for a in actions])
    else:
        print("nothing to recover")
    return 5 if any(a.what in ("kept", "failed") for a in actions) else 0
