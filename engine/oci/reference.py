"""Image references (``[registry[:port]/]repository[:tag|@digest]``) and the archive names Proxmox gives them.

Proxmox VE names a pulled image's archive ``normalize(filename or reference) + ".tar"``, where
normalize keeps what follows the last ``/`` and turns every character but ``[A-Za-z0-9_.-]`` into ``_``
(pve-storage's ``normalize_content_filename``): ``docker.io/library/alpine:3.20`` is ``alpine_3.20.tar``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from engine.errors import ValidationError

_COMPONENT = r"[a-z\d]+(?:(?:[._]|__|-+)[a-z\d]+)*"
_HOST = (
    r"(?:[a-zA-Z\d]|[a-zA-Z\d][a-zA-Z\d-]*[a-zA-Z\d])(?:\.(?:[a-zA-Z\d]|[a-zA-Z\d][a-zA-Z\d-]*[a-zA-Z\d]))*(?::\d+)?"
)
_REFERENCE = re.compile(
    rf"^(?:(?P<registry>{_HOST})/)?(?P<repository>{_COMPONENT}(?:/{_COMPONENT})*)"
    rf"(?::(?P<tag>\w[\w.-]{{0,127}}))?(?:@(?P<digest>sha256:[0-9a-f]{{64}}))?$"
)
DEFAULT_REGISTRY = "docker.io"


@dataclass(frozen=True)
class Reference:
    registry: str
    repository: str
    tag: str | None
    digest: str | None

    def __str__(self) -> str:
        return self.repo + (f":{self.tag}" if self.tag else "") + (f"@{self.digest}" if self.digest else "")

    @property
    def repo(self) -> str:
        return f"{self.registry}/{self.repository}"

    @property
    def transport(self) -> str:
        """skopeo's source name."""
        return f"docker://{self}"


def parse(text: str, default_tag: str | None = "latest") -> Reference:
    """A reference as Proxmox's API takes it, plus ``@sha256:<digest>``; refuses anything else naming why."""
    text = (text or "").strip()
    match = _REFERENCE.match(text)
    if not match:
        raise ValidationError(
            f"reference {text!r}: expected [registry[:port]/]repository[:tag|@sha256:<digest>] "
            "(lower-case repository names)",
            key="reference",
        )
    registry, repository = match["registry"], match["repository"]
    if registry and "." not in registry and ":" not in registry and registry != "localhost":
        registry, repository = None, f"{registry}/{repository}"  # "library/alpine": a path, not a host
        if not re.fullmatch(rf"{_COMPONENT}(?:/{_COMPONENT})*", repository):
            raise ValidationError(f"reference {text!r}: repository names are lower-case", key="reference")
    registry = registry or DEFAULT_REGISTRY
    if registry == DEFAULT_REGISTRY and "/" not in repository:
        repository = f"library/{repository}"
    tag = match["tag"] or (None if match["digest"] else default_tag)
    return Reference(registry, repository, tag, match["digest"])


def normalize(text: str) -> str:
    """pve-storage's normalize_content_filename."""
    return re.sub(r"[^a-zA-Z0-9_.-]", "_", text.strip().rpartition("/")[2])


def archive_name(reference: Reference, name: str | None = None) -> str:
    """The store's file for a pulled image: Proxmox's name for it, so archives move between the two."""
    if name:
        base = normalize(name).removesuffix(".tar")
    else:
        base = normalize(reference.repository + (f":{reference.tag}" if reference.tag else ""))
        if reference.digest:
            base += "_" + normalize(reference.digest)
    if not base or base.startswith(".") or base.startswith("-"):
        raise ValidationError(f"archive name {base!r} is not a usable file name", key="name")
    return base + ".tar"
