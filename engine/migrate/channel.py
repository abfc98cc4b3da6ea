"""The migration channel: mutual TLS between two pinned, per-migration certificates, and its framing.

Each side makes a fresh key and self-signed certificate for one migration
(:func:`make_identity`; never reused, never leaving the node that made it)
and is told the other side's SHA-256 fingerprint through the job that starts
both (public values, so Redis and the database may carry them).  Either side
refuses a peer whose certificate is not the pinned one, so a migration
stream can neither be read nor injected by anyone else on the network, the
web tier included: the bytes go from one agent to the other directly.

Framing on the TLS stream: JSON control lines (``\\n``-terminated, at most 2 MiB: the first carries the
config and firewall rules) and, between them, the archive as chunks of ``<u32 length><data>`` closed by a
zero length.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import queue
import socket
import ssl
import struct
import threading
from pathlib import Path

from engine.config import write_atomic
from engine.errors import HostError, ValidationError
from engine.selfsigned import private_pem, self_signed

CHUNK = 1 << 20
MAX_LINE = 2 << 20  # a control line carries the config and firewall rules (each at most 1 MiB in an archive)
FINGERPRINT_LEN = 64  # hex SHA-256


def make_identity(path: Path) -> str:
    """A new EC key and self-signed certificate in one PEM file (0600); returns the certificate's fingerprint."""
    from cryptography import x509
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    cert = self_signed(key, x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "caisson-migration")]), days=2)
    pem = private_pem(key) + cert.public_bytes(serialization.Encoding.PEM)
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    write_atomic(path, pem.decode(), mode=0o600, durable=False)
    return hashlib.sha256(cert.public_bytes(serialization.Encoding.DER)).hexdigest()


def check_fingerprint(value: str, what: str = "fingerprint") -> str:
    """A SHA-256 fingerprint as 64 hex digits (colons allowed, as openssl prints it)."""
    text = str(value).replace(":", "").lower()
    if len(text) != FINGERPRINT_LEN or any(c not in "0123456789abcdef" for c in text):
        raise ValidationError(f"{what} '{value}': expected a SHA-256 fingerprint (64 hex digits)", key=what)
    return text


def certificate_of(identity: Path) -> str:
    """The public half of an identity file: its certificate, PEM (what the receiver is given)."""
    text = Path(identity).read_text()
    start = text.find("-----BEGIN CERTIFICATE-----")
    if start < 0:
        raise ValidationError(f"migration identity {identity}: no certificate in it", key="identity")
    return text[start:]


def context(identity: Path, peer_cert: str | None = None) -> ssl.SSLContext:
    """TLS 1.3 with our certificate.  The receiver (``peer_cert`` given) trusts exactly the sender's
    certificate and requires it; the sender checks the receiver's by fingerprint (:func:`pinned`)."""
    server = peer_cert is not None
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER if server else ssl.PROTOCOL_TLS_CLIENT)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_3
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE  # the sender pins the receiver's self-signed certificate instead
    try:
        ctx.load_cert_chain(identity)
        if server:
            ctx.load_verify_locations(cadata=peer_cert)
            ctx.verify_flags |= ssl.VERIFY_X509_PARTIAL_CHAIN  # the self-signed leaf is its own anchor
            ctx.verify_mode = ssl.CERT_REQUIRED
    except (OSError, ssl.SSLError, ValueError) as err:
        raise ValidationError(f"migration identity or peer certificate: cannot be loaded ({err})") from None
    return ctx


def peer_fingerprint(sock: ssl.SSLSocket) -> str | None:
    der = sock.getpeercert(binary_form=True)
    return hashlib.sha256(der).hexdigest() if der else None


def pinned(sock: ssl.SSLSocket, expected: str, who: str) -> None:
    """HostError unless the peer showed the certificate it was announced with."""
    got = peer_fingerprint(sock)
    if got != expected:
        raise HostError(
            f"migration: the {who} showed {'no certificate' if got is None else 'another certificate'}"
            f" than the one announced ({expected[:16]}…); refused"
        )


def parse_endpoint(value: str, what: str = "to", any_port: bool = False) -> tuple[str, int]:
    """``HOST:PORT`` (``[v6]:PORT``) checked; port 0 (any free one) only for a listener."""
    text = str(value)
    host, sep, port = text.rpartition(":")
    host = host.strip("[]")
    if (
        not sep
        or not host
        or not port.isdigit()
        or not (0 if any_port else 1) <= int(port) < 65536
        or any(c in host for c in " /\x00")
    ):
        raise ValidationError(f"{what} '{value}': expected HOST:PORT (e.g. 10.0.0.2:60001)", key=what)
    return host, int(port)


def in_netns(netns: str | None, make):
    """``make()`` run in network namespace ``netns`` (``/run/netns/<name>``), or here when None.

    setns(CLONE_NEWNET) changes only the calling thread, so a short thread joins the namespace and makes
    the socket there; a socket keeps the namespace it was made in, wherever it is used afterwards.
    """
    if not netns:
        return make()
    if "/" in netns or netns in (".", ".."):
        raise ValidationError(f"netns '{netns}': a name under /run/netns", key="netns")
    result: dict = {}

    def run() -> None:
        try:
            fd = os.open(f"/run/netns/{netns}", os.O_RDONLY | os.O_CLOEXEC)
            try:
                os.setns(fd, os.CLONE_NEWNET)
            finally:
                os.close(fd)
            result["value"] = make()
        except BaseException as err:  # noqa: BLE001 - handed to the caller's thread
            result["error"] = err

    thread = threading.Thread(target=run, name="migrate-netns")
    thread.start()
    thread.join()
    if "error" in result:
        err = result["error"]
        if isinstance(err, OSError):
            raise HostError(f"network namespace '{netns}': {err.strerror or err}") from err
        raise err
    return result["value"]


def _lost(method):
    """A broken connection (reset, cut, timed out) becomes one HostError naming the migration."""
    import functools

    @functools.wraps(method)
    def wrapper(self, *args):
        try:
            return method(self, *args)
        except (OSError, ssl.SSLError) as err:
            if isinstance(err, HostError):
                raise
            raise HostError(f"migration: the connection to the other side was lost ({err})") from None

    return wrapper


class Stream:
    """Control lines and framed data over one TLS socket."""

    def __init__(self, sock: ssl.SSLSocket):
        self.sock = sock
        self.file = sock.makefile("rb", buffering=CHUNK)

    @_lost
    def send_line(self, message: dict) -> None:
        self.sock.sendall(json.dumps(message).encode() + b"\n")

    @_lost
    def read_line(self) -> dict:
        line = self.file.readline(MAX_LINE + 1)
        if not line.endswith(b"\n"):
            raise HostError(
                "migration: the peer closed the channel" if not line else "migration: control line too long"
            )
        try:
            message = json.loads(line)
        except ValueError:
            raise HostError("migration: the peer sent a malformed control line") from None
        if not isinstance(message, dict):
            raise HostError("migration: the peer sent a malformed control line")
        if message.get("error"):
            raise HostError(f"migration: the other side failed: {message['error']}")
        return message

    @_lost
    def send_chunk(self, data: bytes | memoryview) -> None:
        self.sock.sendall(struct.pack(">I", len(data)))
        if data:
            self.sock.sendall(data)

    @_lost
    def read_chunk(self) -> bytes:
        head = self.file.read(4)
        if len(head) != 4:
            raise HostError("migration: the stream was cut off")
        (size,) = struct.unpack(">I", head)
        if size > 4 * CHUNK:
            raise HostError(f"migration: a chunk of {size} bytes is larger than allowed")
        data = self.file.read(size) if size else b""
        if len(data) != size:
            raise HostError("migration: the stream was cut off")
        return data

    def close(self) -> None:
        with contextlib.suppress(OSError):
            self.file.close()
        with contextlib.suppress(OSError):
            self.sock.close()


class ChunkWriter:
    """A file-like sink the archive writer writes into: framed chunks, counted and hashed as they go.

    A thread hashes, encrypts and sends them (both release the GIL), so the archive walk and compression go
    on meanwhile; a full queue holds the writer back.  A send error is raised in the writer's thread at its
    next write or at ``close``, which must be called (it also waits for the last chunk to leave)."""

    def __init__(self, stream: Stream, depth: int = 8):
        self.stream, self.buffer = stream, bytearray()
        self.bytes, self.digest = 0, hashlib.sha256()
        self.queue: queue.Queue[bytes | None] = queue.Queue(maxsize=depth)
        self.error: BaseException | None = None
        self.abandoned = threading.Event()
        self.thread = threading.Thread(target=self._send, name="migrate-send", daemon=True)
        self.thread.start()

    def _send(self) -> None:
        while not self.abandoned.is_set():
            try:
                data = self.queue.get(timeout=0.5)
            except queue.Empty:
                continue
            if data is None:
                return
            if self.error is not None:
                continue  # drained, so the writer never blocks on a dead sender
            try:
                self.digest.update(data)
                self.stream.send_chunk(data)
                self.bytes += len(data)
            except BaseException as err:  # noqa: BLE001 - raised in the writer's thread
                self.error = err

    def _check(self) -> None:
        if self.error is not None:
            raise self.error

    def write(self, data) -> int:
        self._check()
        if not self.buffer and CHUNK <= len(data) <= 4 * CHUNK:  # a compressor's whole output: sent as it is
            self.queue.put(bytes(data))  # a copy only of a memoryview (bytes are immutable)
            return len(data)
        self.buffer += data
        if len(self.buffer) >= CHUNK:
            self.queue.put(bytes(self.buffer))
            self.buffer.clear()
        return len(data)

    def flush(self) -> None:
        self._check()

    def abandon(self) -> None:
        """A failed migration: the thread ends by itself (once a blocked send fails with the closed stream)."""
        self.abandoned.set()

    def close(self) -> None:
        """Send what is buffered and wait for the thread; raises its error if a send failed."""
        if self.thread.is_alive():
            if self.buffer:
                self.queue.put(bytes(self.buffer))
                self.buffer.clear()
            self.queue.put(None)
            self.thread.join()
        self._check()


def connect(host: str, port: int, identity: Path, expected: str, netns: str | None, timeout: float) -> Stream:
    """The sender's side: a TLS connection to the receiver, its certificate checked against the pin."""
    ctx = context(identity)

    def make():
        return socket.create_connection((host, port), timeout=timeout)

    try:
        raw = in_netns(netns, make)
        sock = ctx.wrap_socket(raw)
    except (OSError, ssl.SSLError) as err:
        raise HostError(f"migration: cannot reach the receiver at {host}:{port}: {err}") from None
    pinned(sock, expected, "receiver")
    sock.settimeout(timeout)
    return Stream(sock)


def verify_trailer(trailer: dict, received: int, digest: str) -> None:
    """The sender's trailer (size and SHA-256) against what was received; a mismatch is refused."""
    if trailer.get("bytes") != received or trailer.get("sha256") != digest:
        raise HostError(
            f"migration: the stream does not match what the sender sent ({received} bytes, sha256 "
            f"{digest[:16]}… received; {trailer.get('bytes')} bytes, {str(trailer.get('sha256'))[:16]}… sent)"
        )
