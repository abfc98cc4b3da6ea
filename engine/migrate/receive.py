"""The target side of a migration: listen, take one authenticated stream, verify it, restore, commit.

:class:`Receiver` makes its identity and listening socket at once (so the job can hand the address, port
and fingerprint to the source), then :meth:`Receiver.run` serves exactly one migration of the ID it was
made for.  For its whole run it holds ``run/lock/migrate-in-<ID>.lock`` and keeps a marker
``migrate/in-<ID>.json`` under the state root: a killed receiver leaves the marker with the flock free,
and recovery then removes whatever it made (:mod:`engine.migrate.recover`).
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import hashlib
import json
import os
import secrets
import socket
import ssl
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path

from engine import faults
from engine.config import parse_ctid, write_atomic, write_config
from engine.errors import AlreadyExists, EngineError, HostError, Locked, NotSupported, ValidationError
from engine.migrate import MIGRATE_LOCK, incoming_lock, incoming_marker, remove_container, spool_dir
from engine.migrate.channel import Stream, context, make_identity
from engine.migrate.channel import verify_trailer as _verify
from engine.state import container_lock

Log = Callable[[str], None]


class Receiver:
    """One incoming migration of container ``ctid`` from the holder of ``peer_cert``."""

    def __init__(
        self,
        engine,
        ctid: int | str,
        peer_cert: str,
        listen: tuple[str, int] = ("127.0.0.1", 0),
        *,
        storage: str | None = None,
        netns: str | None = None,
    ):
        from engine.migrate.channel import in_netns

        self.engine, self.ctid, self.storage = engine, parse_ctid(ctid), storage
        if "BEGIN CERTIFICATE" not in str(peer_cert):
            raise ValidationError("peer certificate: expected the sender's certificate (PEM)", key="peer-cert")
        if engine.exists(self.ctid):
            raise AlreadyExists(f"container {self.ctid} already exists on this node: it cannot be migrated here")
        if storage is not None:
            engine.storages.get(storage, content="rootdir", key="storage")
        layout = engine.layout
        spool_dir(layout).mkdir(mode=0o700, parents=True, exist_ok=True)
        self.lock_fd = os.open(incoming_lock(layout, self.ctid), os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        try:
            fcntl.flock(self.lock_fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            os.close(self.lock_fd)
            raise Locked(f"container {self.ctid}: another migration into this node is running") from None
        self.identity = spool_dir(layout) / f"in-{self.ctid}.pem"
        self.fingerprint = make_identity(self.identity)
        self.ctx = context(self.identity, peer_cert)
        write_atomic(incoming_marker(layout, self.ctid), json.dumps({"ctid": self.ctid}), mode=0o600)

        def make() -> socket.socket:
            sock = socket.create_server(listen, family=socket.AF_INET6 if ":" in listen[0] else socket.AF_INET)
            return sock

        try:
            self.listener = in_netns(netns, make)
        except OSError as err:
            self.close()
            raise HostError(f"migration: cannot listen on {listen[0]}:{listen[1]}: {err.strerror}") from None
        except EngineError:
            self.close()
            raise
        self.address, self.port = self.listener.getsockname()[:2]
        _warm(engine)

    def endpoint(self) -> dict:
        return {"address": self.address, "port": self.port, "fingerprint": self.fingerprint}

    def close(self) -> None:
        """Drop the listener, identity, marker and flock (what :meth:`run` did not commit is removed there)."""
        with contextlib.suppress(AttributeError, OSError):
            self.listener.close()
        self.identity.unlink(missing_ok=True)
        incoming_marker(self.engine.layout, self.ctid).unlink(missing_ok=True)
        if self.lock_fd >= 0:
            os.close(self.lock_fd)
            self.lock_fd = -1

    def _accept(self, timeout: float) -> Stream:
        """The first connection that shows the pinned certificate; others are dropped."""
        deadline = time.monotonic() + timeout
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                raise HostError(f"migration: no sender connected within {timeout:g} s")
            self.listener.settimeout(left)
            try:
                raw, _ = self.listener.accept()
            except TimeoutError:
                continue
            raw.settimeout(timeout)
            try:
                sock = self.ctx.wrap_socket(raw, server_side=True)
            except (OSError, ssl.SSLError):
                raw.close()  # not our sender (no or another certificate): keep waiting for it
                continue
            return Stream(sock)

    def run(self, timeout: float = 60.0, log: Log | None = None) -> dict:
        """Serve the migration; returns what was received.  Always closes the receiver."""
        say = log or (lambda text: None)
        engine, ctid = self.engine, self.ctid
        spool = None
        made = committed = False
        stream = None
        try:
            stream = self._accept(timeout)
            header = stream.read_line()
            if header.get("ctid") != ctid:
                raise ValidationError(f"migration: the sender offers container {header.get('ctid')}, not {ctid}")
            known = _known(ctid, header)
            if header.get("snapshots") and known is not None:  # btrfs streams: see engine.migrate.subvols

                def written() -> None:  # from here a failure removes what came
                    nonlocal made
                    made = True

                received, digest = self._receive_subvolumes(stream, header, known[0], written), None
                from engine.backup.restore import _write_firewall

                _write_firewall(engine, ctid, known[1])
                _set_lock(engine, ctid, MIGRATE_LOCK)
                say(f"container {ctid} received with its snapshots ({', '.join(header['snapshots'])})")
            elif known is not None and not header.get("volumes"):
                stream.send_line({"ready": True})
                # Restored as it arrives (a pipe into the restore); verified before the answer, as below.
                spool = spool_dir(engine.layout) / f".in-{ctid}-{secrets.token_hex(4)}.fifo"
                made = True
                received, digest = self._restore_streamed(stream, spool, known)
                _verify(stream.read_line(), received, digest)
                say(f"received {received} bytes and restored container {ctid} as they came; size and SHA-256 verified")
            else:  # volume mount points are read from the archive once more each: spooled first
                stream.send_line({"ready": True})
                fd, name = tempfile.mkstemp(dir=spool_dir(engine.layout), prefix=f".in-{ctid}-", suffix=".tar.zst")
                spool = Path(name)
                received, digest = self._spool(stream, fd)
                _verify(stream.read_line(), received, digest)
                say(f"received {received} bytes, size and SHA-256 verified; restoring container {ctid}")
                made = True
                self._restore(spool, known)
            stream.send_line({"verified": True, "bytes": received})
            if not stream.read_line().get("commit"):
                raise HostError("migration: the sender did not commit")
            incoming_marker(engine.layout, ctid).unlink(missing_ok=True)
            _set_lock(engine, ctid, None)
            committed = True
            warning = None
            if header.get("start"):
                try:
                    engine.start(ctid)
                except EngineError as err:
                    warning = f"container {ctid} was moved but did not start here: {err}"
            stream.send_line({"done": True, "warning": warning})
            say(f"container {ctid} committed on this node" + (" and started" if header.get("start") else ""))
            return {
                "ctid": ctid,
                "bytes": received,
                "sha256": digest,
                "started": bool(header.get("start")),
                "warning": warning,
            }
        except BaseException as err:
            if stream is not None and isinstance(err, EngineError):
                with contextlib.suppress(EngineError, ValueError):  # the sender may be gone: a HostError
                    stream.send_line({"error": str(err)})
            if made and not committed:
                with container_lock(engine.layout, ctid):
                    if engine.exists(ctid):
                        remove_container(engine, ctid)
            raise
        finally:
            if stream is not None:
                stream.close()
            if spool is not None:
                spool.unlink(missing_ok=True)
            self.close()

    def _receive_subvolumes(self, stream: Stream, header: dict, config, written: Callable[[], None]) -> int:
        """The config written first (``lock: create``, so a failure's cleanup finds the volumes), then every
        btrfs stream received and verified."""
        from engine.migrate import layers, subvols, trees

        engine, ctid = self.engine, self.ctid
        storage = self.storage or _storage_of(engine, config)
        kind = str(header.get("kind", "btrfs"))
        driver = subvols.check_target(engine, ctid, config, storage, kind)
        idmap = engine.node.idmap_of(config)
        if (idmap.lxc_lines() if idmap else None) != header.get("idmap"):
            raise NotSupported(
                f"container {ctid}: this node maps its ids otherwise than the source ({header.get('idmap')}): "
                "its snapshots' files cannot be re-owned here; migrate with drop-snapshots"
            )
        config = subvols.renamed(config, storage)
        with container_lock(engine.layout, ctid):
            if engine.exists(ctid):
                raise AlreadyExists(f"container {ctid} already exists on this node")
            subvols.write_received_config(engine, ctid, config, "create")
            written()
        stream.send_line({"ready": True})
        say = lambda text: None  # noqa: E731 - the run's log says what came
        owner = idmap.host_uid(0) if idmap else 0
        module = {"btrfs": subvols, "overlay": layers, "dir": trees}[kind]
        received = module.receive_all(engine, stream, driver, ctid, owner, say)
        for key, volid in subvols.storage_volumes(config.current) if kind == "btrfs" else ():
            size = config.get(key).get("size")
            if size:
                driver.resize(volid.partition(":")[2], int(size), None)
        return received

    def _spool(self, stream: Stream, fd: int) -> tuple[int, str]:
        digest, received, half = hashlib.sha256(), 0, False
        with os.fdopen(fd, "wb") as out:
            while True:
                data = stream.read_chunk()
                if not data:
                    break
                digest.update(data)
                out.write(data)
                received += len(data)
                if not half and received >= 4 << 20:
                    half = True
                    faults.point("migrate:receiving")
        return received, digest.hexdigest()

    def _restore_streamed(self, stream: Stream, fifo: Path, known) -> tuple[int, str]:
        """The stream pumped into a FIFO by a thread (hashed as it goes) while the restore reads it here."""
        os.mkfifo(fifo, 0o600)
        stop, outcome = threading.Event(), {}

        def pump() -> None:
            try:
                outcome["value"] = _pump(stream, fifo, stop)
            except BaseException as err:  # noqa: BLE001 - handed to the restoring thread
                outcome["error"] = err

        thread = threading.Thread(target=pump, name="migrate-pump")
        thread.start()
        try:
            self._restore(fifo, known)
        except BaseException:
            stop.set()
            thread.join()
            if "error" in outcome:  # the stream broke: say so rather than "truncated archive"
                raise outcome["error"] from None
            raise
        thread.join()
        if "error" in outcome:
            raise outcome["error"]
        return outcome["value"]

    def _restore(self, spool: Path, known=None) -> None:
        from engine.backup.archive import read_archive_config
        from engine.backup.restore import restore

        engine, ctid = self.engine, self.ctid
        storage = self.storage
        if storage is None:
            storage = _storage_of(engine, known[0] if known is not None else read_archive_config(spool, ctid)[0])
        restore(engine, spool, ctid, storage=storage, known=known)
        _set_lock(engine, ctid, MIGRATE_LOCK)


# What a restore loads on first use: imported before the endpoint is handed out, so the stream does not
# wait on module loading (a cold interpreter spends a good part of a second here, the clock running).
_RESTORE_MODULES = (
    "zstandard",
    "engine.backup.restore",
    "engine.unpack",
    "engine.create_steps",
    "engine.network.container",
    "engine.network.fwconfig",
    "engine.templates.store",
    "engine.oci.archive",
)


def _warm(engine) -> None:
    """Load the restore's modules and this node's storage drivers now, before the sender connects."""
    import importlib

    from engine.storage import DRIVERS, driver_class

    for name in _RESTORE_MODULES:
        importlib.import_module(name)
    for definition in engine.storages.definitions().values():
        if definition.type in DRIVERS:
            driver_class(definition.type)
        if definition.type == "dir":
            driver_class("loop")  # a dir storage's sized volumes are raw images


def _storage_of(engine, archived) -> str:
    """The storage of the container's root disk, which must exist here (else the caller names one)."""
    storage = str(archived.current.values.get("rootfs", "local:")).split(":", 1)[0]
    if storage not in engine.storages.definitions():
        raise ValidationError(
            f"migration: the container's storage '{storage}' does not exist on the target node; name a target storage",
            key="storage",
        )
    return storage


def _known(ctid: int, header: dict):
    """The config and firewall text the sender announced (checked as a config), or None."""
    from engine.config import ContainerConfig

    text = header.get("config")
    if not isinstance(text, str):
        return None
    firewall = header.get("firewall")
    config = ContainerConfig.parse(ctid, text, origin="the migration's header")
    return config, firewall if isinstance(firewall, str) else None


def _pump(stream: Stream, fifo: Path, stop: threading.Event) -> tuple[int, str]:
    """Chunks from the sender into the FIFO, all of them hashed; the FIFO is left alone once its reader is
    done (the restore read the archive's end) or gone (it failed: ``stop``)."""
    fd = None
    while fd is None:
        if stop.is_set():
            return 0, ""
        try:
            fd = os.open(fifo, os.O_WRONLY | os.O_NONBLOCK | os.O_CLOEXEC)
        except OSError as err:
            if err.errno != errno.ENXIO:  # no reader yet
                raise
            time.sleep(0.005)
    os.set_blocking(fd, True)
    digest, received, half = hashlib.sha256(), 0, False
    try:
        while not stop.is_set():
            data = stream.read_chunk()
            if not data:
                break
            digest.update(data)
            received += len(data)
            if not half and received >= 4 << 20:
                half = True
                faults.point("migrate:receiving")
            if fd is not None:
                try:
                    view = memoryview(data)
                    while view:
                        view = view[os.write(fd, view) :]
                except BrokenPipeError:
                    os.close(fd)
                    fd = None
    finally:
        if fd is not None:
            os.close(fd)
    return received, digest.hexdigest()


def _set_lock(engine, ctid: int, lock: str | None) -> None:
    with container_lock(engine.layout, ctid):
        config = engine.config(ctid)
        if lock is None:
            config.current.values.pop("lock", None)
        else:
            config.current.values["lock"] = lock
        write_config(engine.layout.config_path(ctid), config)
