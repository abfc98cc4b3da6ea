"""The source side of a migration: hold, (stop,) stream, wait for the target's verdict, commit, remove.

See :mod:`engine.migrate` for the protocol and the guarantees.  Every step before the commit is undone
by a :class:`~engine.reverter.Reverter`: the lock cleared, the intent dropped, the container started
again if restart mode stopped it.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

from engine import faults
from engine.config import ContainerConfig, write_config
from engine.errors import EngineError, InvalidState, NotSupported, ValidationError
from engine.migrate import MIGRATE_LOCK, layers, remove_container, subvols, trees
from engine.migrate.channel import ChunkWriter, check_fingerprint, connect, parse_endpoint
from engine.node import check_unlocked
from engine.reverter import Reverter
from engine.state import Intent, container_lock
from engine.volumes import volumes_of

Log = Callable[[str], None]


@dataclass
class MigrateResult:
    ctid: int
    target: str
    restarted: bool
    bytes: int  # the stream's size (compressed archive)
    data: int  # file data read from the volumes
    seconds: float

    def as_dict(self) -> dict:
        return asdict(self)


def check_online() -> None:
    """Live migration is refused: Debian 12's CRIU (3.17.1) cannot even start its kernel feature detection on
    this kernel (``criu check``: "vdso: Unexpected rt vDSO area bounds"), so no container can be checkpointed
    here."""
    raise NotSupported(
        "live migration (online) is not supported: CRIU cannot checkpoint containers on this node "
        "(Debian's criu 3.17 fails its kernel check here); migrate with restart "
        "(the container is stopped, moved and started on the target)"
    )


def _check(engine, ctid: int, restart: bool) -> tuple[object, bool]:
    config = engine.config(ctid)
    check_unlocked(config)
    binds = [v.key for v in volumes_of(config.current) if v.is_bind]
    if binds:
        raise ValidationError(
            f"container {ctid} has host directories mounted ({', '.join(binds)}): they cannot be migrated; "
            "remove them first",
            key="mp",
        )
    running = engine.node.running(ctid) is not None
    if running and not restart:
        raise InvalidState(
            f"container {ctid} is running: migrate it with restart (stopped, moved, started on the target) or stop it"
        )
    return config, running


def migrate(
    engine,
    ctid: int,
    to: str,
    fingerprint: str,
    identity: Path,
    *,
    restart: bool = False,
    online: bool = False,
    drop_snapshots: bool = False,
    netns: str | None = None,
    timeout: float = 60.0,
    shutdown_timeout: float = 60.0,
    log: Log | None = None,
    progress: Callable[[int, int], None] | None = None,
    committed: Callable[[], None] | None = None,
) -> MigrateResult:
    """Move stopped (or, with ``restart``, running) container ``ctid`` to the receiver at ``to``.

    ``committed`` is called once the target has the container for good, before the copy here is removed
    (the node's job moves its database row there).  A container's snapshots travel with it where both
    storages are of one kind (:mod:`engine.migrate.subvols`); ``drop_snapshots`` leaves them behind instead."""
    from engine.hold import Held
    from engine.network import container as network

    say = log or (lambda text: None)
    if online:
        check_online()
    host, port = parse_endpoint(to)
    fingerprint = check_fingerprint(fingerprint)
    began = time.monotonic()
    path = engine.layout.config_path(ctid)
    with container_lock(engine.layout, ctid), Reverter() as revert:
        config, running = _check(engine, ctid, restart)
        kind, found = subvols.volumes(engine, config) if config.snapshots and not drop_snapshots else (None, None)
        intent = Intent(engine.layout, ctid)
        intent.write({"op": "migrate", "phase": "sending", "to": to, "running": running})
        revert.add(intent.clear)
        config.current.values["lock"] = MIGRATE_LOCK
        write_config(path, config)
        revert.add(_unlock, engine, ctid)
        held = Held(engine, ctid, MIGRATE_LOCK)
        if running:
            say(f"stopping container {ctid} (restart mode)")
            held.shutdown(shutdown_timeout)
            revert.add(held.start)
        say(f"connecting to the target {host}:{port}")
        stream = connect(host, port, identity, fingerprint, netns, timeout)
        revert.add(stream.close)
        firewall = network.firewall_file(engine.layout.root, ctid)
        firewall_text = firewall.read_text() if firewall.exists() else None
        keys = [v.key for v in volumes_of(config.current, storage_only=True) if v.key != "rootfs"]
        header = {"ctid": ctid, "start": running, "firewall": firewall_text, "volumes": keys}
        if found is not None:
            header["kind"] = kind
            sent, data = _send_subvolumes(engine, stream, config, found, header, revert, say, progress)
        else:
            if config.snapshots:
                say(f"leaving the snapshots behind ({', '.join(subvols.ordered(config))}): drop-snapshots")
            sent, data = _send_archive(held, stream, config, keys, header, revert, say, progress)
        say(f"sent {sent} bytes ({data} bytes of data); waiting for the target to verify")
        verdict = stream.read_line()
        if not verdict.get("verified"):
            raise EngineError("migration: the target did not confirm what it received")
        say("the target verified the stream and restored the container; committing")
        intent.write({"op": "migrate", "phase": "commit", "to": to, "running": running})
        faults.point("migrate:commit")
        stream.send_line({"commit": True})
        done = stream.read_line()
        if not done.get("done"):
            raise EngineError("migration: the target did not confirm the commit")
        revert.success()  # from here the container is the target's
        stream.close()
        if committed is not None:
            committed()
        say(f"removing container {ctid} from this node")
        remove_container(engine, ctid)
        intent.clear()
        if done.get("warning"):
            say(f"warning: {done['warning']}")
    return MigrateResult(ctid, to, running, sent, data, time.monotonic() - began)


def _send_archive(held, stream, config, keys, header, revert, say, progress) -> tuple[int, int]:
    """The current state as one vzdump-format archive (zstd); (bytes sent, bytes of file data)."""
    from engine.backup.archive import config_for_archive, write_archive

    # The config comes first apart from the archive too, so the target can restore as the stream arrives.
    stream.send_line({**header, "config": config_for_archive(config)})
    stream.read_line()  # the receiver's "ready": the ID is free there, its storage exists
    sink = ChunkWriter(stream)
    revert.add(sink.abandon)
    half = [False]

    def report(done: int, total: int) -> None:
        if not half[0] and done * 2 >= total > 0:
            half[0] = True
            faults.point("migrate:sending")
        if progress is not None:
            progress(done, total)

    with held.tree("rootfs") as rootfs, _trees(held, keys) as trees:
        mountpoints = [(str(config.get(k)["mp"]), trees[k]) for k in keys]
        say(f"sending the root disk{' and ' + ', '.join(keys) if keys else ''}")
        stats = write_archive(
            sink,
            rootfs,
            held.idmap,
            config_for_archive(config),
            header["firewall"],
            compress="zstd",
            level=1,
            mountpoints=mountpoints,
            progress=report,
            default_excludes=False,
        )
    sink.close()
    stream.send_chunk(b"")
    stream.send_line({"bytes": sink.bytes, "sha256": sink.digest.hexdigest()})
    return sink.bytes, stats.bytes


def _send_subvolumes(engine, stream, config, found, header, revert, say, progress) -> tuple[int, int]:
    """The snapshots oldest first, then the current state, as btrfs streams; (bytes sent, the same)."""
    whole = ContainerConfig.parse(config.ctid, config.render())
    whole.current.values.pop("lock", None)
    idmap = engine.node.idmap_of(config)
    made = subvols.take_current(found) if header["kind"] == "btrfs" else []  # overlay: the upper, held still
    revert.add(subvols.drop, made)
    order = subvols.ordered(config)
    stream.send_line(
        {**header, "config": whole.render(), "snapshots": order, "idmap": idmap.lxc_lines() if idmap else None}
    )
    stream.read_line()  # "ready": the target storage can keep them
    say(f"sending {len(found)} volume(s) with their snapshots ({', '.join(order)}) as {header['kind']} streams")
    half = [False]

    def report(done: int) -> None:
        if not half[0] and done >= 2 << 20:
            half[0] = True
            faults.point("migrate:sending")
        if progress is not None:
            progress(done, 0)

    sent = {"btrfs": subvols, "overlay": layers, "dir": trees}[header["kind"]].send_all(stream, found, report)
    subvols.drop(made)
    return sent, sent


def _unlock(engine, ctid: int) -> None:
    config = engine.config(ctid)
    if config.current.values.get("lock") == MIGRATE_LOCK:
        config.current.values.pop("lock")
        write_config(engine.layout.config_path(ctid), config)


class _trees:
    """The trees of the volume mount points at ``keys``, for the block."""

    def __init__(self, held, keys: list[str]):
        import contextlib

        self.stack, self.held, self.keys = contextlib.ExitStack(), held, keys

    def __enter__(self) -> dict[str, Path]:
        return {key: self.stack.enter_context(self.held.tree(key)) for key in self.keys}

    def __exit__(self, *exc) -> None:
        self.stack.close()
