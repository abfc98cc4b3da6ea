"""Files on their way between a browser and a node (the Files panel's push and pull), staged in the cache.

A file is not a job parameter: parameters are stored with the job and in the
audit log.  The web tier stages an upload under a random token and queues the
push job with the token, the size and the SHA-256; the job takes the bytes
(read once, then deleted) and refuses them unless the digest matches, so what
lands in the container is what the user sent.  A pull job stages what it read
under its own job ID for the user who asked; it expires after ``TTL`` seconds.
The cache is the installation's Redis, reached by the web tier and the node
agents alike, with the installation's password.
"""

from __future__ import annotations

import hashlib
import os
import secrets

from django.core.cache import cache

TTL = 600
MAX_BYTES = int(os.environ.get("CAISSON_FILE_MAX", str(64 << 20)))


def stage_upload(data: bytes) -> tuple[str, str]:
    """(token, sha256) of bytes kept for a push job."""
    token = secrets.token_urlsafe(24)
    cache.set(f"caisson:push:{token}", data, TTL)
    return token, hashlib.sha256(data).hexdigest()


def take_upload(token: str, sha256: str) -> bytes:
    """The staged bytes, once; ValueError when gone or changed."""
    key = f"caisson:push:{token}"
    data = cache.get(key)
    cache.delete(key)
    if data is None:
        raise ValueError("the uploaded file is no longer staged (it expired or was taken); upload it again")
    if hashlib.sha256(data).hexdigest() != sha256:
        raise ValueError("the uploaded file does not match its checksum")
    return data


def stage_download(job_id: int, data: bytes, info: dict) -> None:
    cache.set(f"caisson:pull:{job_id}", {"data": data, "info": info}, TTL)


def download(job_id: int) -> dict | None:
    """``{"data", "info"}`` a pull job staged, or None when it expired."""
    return cache.get(f"caisson:pull:{job_id}")
