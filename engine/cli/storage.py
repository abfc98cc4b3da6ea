"""Storage, snapshot, clone and resize verbs of ``python -m engine`` (as ``pvesm`` and ``pct`` name them).

::

    storage list | status [ID] | add TYPE ID --path P [--content ...] [--nodes ...] [--disable] | remove ID
    snapshot ID NAME [--description TEXT]      listsnapshot ID      rollback ID NAME
    delsnapshot ID NAME [--force]              unlock ID
    clone ID NEWID [--snapshot NAME] [--full] [--storage S] [--hostname H]
    resize ID DISK SIZE                        (DISK: rootfs or mpN; SIZE: 4G, or +1G to grow by)
"""

from __future__ import annotations

import time

from engine.cli.output import emit_json, table
from engine.errors import NotFound
from engine.units import human_bytes

VERBS = ("storage", "snapshot", "listsnapshot", "rollback", "delsnapshot", "unlock", "clone", "resize")


def add_parsers(verbs, ctid_type) -> None:
    storage = verbs.add_parser("storage", help="list, add, remove storages (storage.cfg) and show their usage")
    actions = storage.add_subparsers(dest="storage_action", metavar="ACTION", required=True)
    actions.add_parser("list", help="the storages and what their drivers can do")
    status = actions.add_parser("status", help="space used and free, as pvesm status")
    status.add_argument("storage_id", nargs="?")
    add = actions.add_parser("add", help="define a storage")
    add.add_argument("type", choices=("dir", "btrfs", "overlay"))
    add.add_argument("storage_id")
    add.add_argument("--path", required=True, help="absolute directory (made if missing)")
    add.add_argument("--content", default="rootdir", help="comma-separated content types (default %(default)s)")
    add.add_argument("--nodes", default="", help="comma-separated nodes it is available on (default all)")
    add.add_argument("--disable", action="store_true")
    remove = actions.add_parser("remove", help="forget a storage no container uses")
    remove.add_argument("storage_id")

    snap = verbs.add_parser("snapshot", help="snapshot a container (freezes a running one meanwhile)")
    snap.add_argument("ctid", type=ctid_type)
    snap.add_argument("name")
    snap.add_argument("--description", default="")
    lst = verbs.add_parser("listsnapshot", help="a container's snapshots as a tree")
    lst.add_argument("ctid", type=ctid_type)
    rb = verbs.add_parser("rollback", help="bring a container back to a snapshot (restarts a running one)")
    rb.add_argument("ctid", type=ctid_type)
    rb.add_argument("name")
    dl = verbs.add_parser("delsnapshot", help="delete a snapshot")
    dl.add_argument("ctid", type=ctid_type)
    dl.add_argument("name")
    dl.add_argument("--force", action="store_true", help="also when a snapshot or delete was interrupted")
    un = verbs.add_parser("unlock", help="clear the lock an interrupted operation left")
    un.add_argument("ctid", type=ctid_type)
    cl = verbs.add_parser("clone", help="a new container from a container or one of its snapshots")
    cl.add_argument("ctid", type=ctid_type)
    cl.add_argument("newid", type=ctid_type)
    cl.add_argument("--snapshot", help="clone this snapshot (linked where the storage can)")
    cl.add_argument("--full", action="store_true", help="copy all data, even where a linked clone is possible")
    cl.add_argument("--storage", help="target storage (a full copy when it differs)")
    cl.add_argument("--hostname")
    rs = verbs.add_parser("resize", help="grow a disk: 4G sets the size, +1G grows by (never shrinks)")
    rs.add_argument("ctid", type=ctid_type)
    rs.add_argument("disk", help="rootfs or mpN")
    rs.add_argument("size")


def dispatch(engine, args) -> int:
    as_json = args.output == "json"
    verb = args.verb
    if verb == "storage":
        return _storage(engine, args, as_json)
    if verb == "snapshot":
        info = engine.snapshot(args.ctid, args.name, args.description)
        if as_json:
            emit_json({"ctid": args.ctid, **info.as_dict()})
    elif verb == "listsnapshot":
        infos = engine.list_snapshots(args.ctid)
        if as_json:
            emit_json([i.as_dict() for i in infos])
        else:
            _tree(infos)
    elif verb == "rollback":
        engine.rollback(args.ctid, args.name)
        if as_json:
            emit_json({"ctid": args.ctid, "rollback": args.name, "status": engine.status(args.ctid).status})
    elif verb == "delsnapshot":
        engine.delete_snapshot(args.ctid, args.name, force=args.force)
        if as_json:
            emit_json({"ctid": args.ctid, "deleted": args.name})
    elif verb == "unlock":
        dropped = engine.unlock(args.ctid)
        removed = not engine.exists(args.ctid)  # what an interrupted create or restore left
        if as_json:
            emit_json({"ctid": args.ctid, "unlocked": True, "dropped_snapshots": dropped, "removed": removed})
        elif removed:
            print(f"removed container {args.ctid}: its create or restore had been interrupted")
        elif dropped:
            print(f"removed unfinished snapshot(s): {', '.join(dropped)}")
    elif verb == "clone":
        status = engine.clone(
            args.ctid, args.newid, snapshot=args.snapshot, full=args.full, storage=args.storage, hostname=args.hostname
        )
        config = engine.config(args.newid)
        if as_json:
            emit_json(
                {
                    "ctid": args.newid,
                    "source": args.ctid,
                    "hostname": status.hostname,
                    "rootfs": config.current.values["rootfs"],
                }
            )
        else:
            print(f"{args.newid}: {config.current.values['rootfs']}")
    elif verb == "resize":
        size = engine.resize(args.ctid, args.disk, args.size)
        if as_json:
            emit_json({"ctid": args.ctid, "disk": args.disk, "size": size})
        else:
            print(f"{args.disk}: {human_bytes(size)}")
    return 0


def _tree(infos) -> None:
    """As ``pct listsnapshot``: each snapshot under its parent, ``current`` last."""
    children: dict[str | None, list] = {}
    names = {i.name for i in infos}
    for info in infos:
        parent = info.parent if info.parent in names and info.parent != info.name else None
        children.setdefault(parent, []).append(info)

    def walk(parent, depth):
        for info in children.get(parent, []):
            when = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(info.snaptime)) if info.snaptime else ""
            state = f" ({info.state})" if info.state else ""
            text = (info.description or "").splitlines()[0] if info.description else ""
            print(f"{'  ' * depth}`-> {info.name:<24}{when:<21}{text}{state}".rstrip())
            if info.name != "current":
                walk(info.name, depth + 1)

    walk(None, 0)


def _storage(engine, args, as_json: bool) -> int:
    from engine.storage import STORAGE_TYPES, cfg, driver_class

    action = args.storage_action
    root = engine.layout.root
    if action == "list":
        rows = []
        for definition in cfg.load(root).values():
            drivers = [driver_class(n).info for n in dict.fromkeys(STORAGE_TYPES[definition.type])]
            rows.append(
                {
                    "id": definition.id,
                    "type": definition.type,
                    "path": str(definition.path),
                    "content": sorted(definition.content),
                    "nodes": list(definition.nodes),
                    "enabled": not definition.disabled,
                    "active": definition.path.is_dir(),
                    "drivers": [
                        {
                            "name": i.name,
                            "snapshots_instant": i.snapshots_instant,
                            "linked_clones": i.linked_clones,
                            "size_enforced": i.size_enforced,
                            "block_backed": i.block_backed,
                        }
                        for i in drivers
                    ],
                }
            )
        if as_json:
            emit_json(rows)
        else:
            table(
                ["ID", "TYPE", "PATH", "CONTENT", "ENABLED", "INSTANT SNAPSHOTS", "LINKED CLONES", "SIZE LIMIT"],
                [
                    [
                        r["id"],
                        r["type"],
                        r["path"],
                        ",".join(r["content"]),
                        "yes" if r["enabled"] else "no",
                        _flags(r["drivers"], "snapshots_instant"),
                        _flags(r["drivers"], "linked_clones"),
                        _flags(r["drivers"], "size_enforced"),
                    ]
                    for r in rows
                ],
            )
        return 0
    if action == "status":
        from engine.storage import status

        definitions = cfg.load(root)
        if args.storage_id and args.storage_id not in definitions:
            raise NotFound(f"storage '{args.storage_id}' is not defined (known: {', '.join(sorted(definitions))})")
        rows = [{k: v for k, v in row.items() if k != "content"} for row in status(root, args.storage_id)]
        if as_json:
            emit_json(rows)
        else:
            table(
                ["NAME", "TYPE", "STATUS", "TOTAL", "USED", "AVAILABLE", "%"],
                [
                    [
                        r["id"],
                        r["type"],
                        r["status"],
                        human_bytes(r["total"]),
                        human_bytes(r["used"]),
                        human_bytes(r["available"]),
                        f"{100 * r['used'] / r['total']:.2f}%" if r["total"] else "-",
                    ]
                    for r in rows
                ],
            )
        return 0 if all(r["status"] == "active" for r in rows) or not args.storage_id else 5
    from engine.storage.manage import add_storage, remove_storage, volume_users

    if action == "add":
        props = {"path": args.path, "content": args.content}
        if args.nodes:
            props["nodes"] = args.nodes
        if args.disable:
            props["disable"] = "1"
        add_storage(root, args.type, args.storage_id, props)
    else:  # remove
        remove_storage(root, args.storage_id, volume_users(engine, args.storage_id))
    if as_json:
        emit_json({"storage": args.storage_id, "action": action})
    return 0


def _flags(drivers: list[dict], key: str) -> str:
    return "/".join(
        f"{d['name']}:{'yes' if d[key] else 'no'}" if len(drivers) > 1 else ("yes" if d[key] else "no") for d in drivers
    )
