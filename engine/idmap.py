"""User-namespace id maps: how a container's uids and gids appear on the host.

An unprivileged container sees ids 0..count-1; on disk (and to the host) they
are base+id. The engine writes host ids directly when it creates a rootfs, so
the tree is right the moment the container starts and never needs a chown pass.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass

from .errors import ValidationError

# Host ids below this are real host users (root, system accounts, people); a map
# starting lower would make container root one of them.
MIN_HOST_BASE = 65536
# (uid_t)-1 means "no id" to the kernel, so the largest usable id is one less.
MAX_HOST_ID = 2**32 - 2


@dataclass(frozen=True)
class IdMap:
    """One contiguous range: container id N is host id base+N, for N in 0..count-1."""

    uid_base: int = 100000
    gid_base: int = 100000
    count: int = 65536

    def __post_init__(self) -> None:
        # Refuse unsafe maps at construction, so no caller can hold one by accident.
        for field in ("uid_base", "gid_base", "count"):
            value = getattr(self, field)
            if not isinstance(value, int) or isinstance(value, bool):
                raise ValidationError(f"id map {field} must be an integer, not {value!r}", key=field)
        if self.count < 1:
            raise ValidationError(f"id map count must be at least 1, not {self.count}", key="count")
        for kind, base in (("uid", self.uid_base), ("gid", self.gid_base)):
            if base < MIN_HOST_BASE:
                raise ValidationError(
                    f"{kind} map base {base} overlaps host ids below {MIN_HOST_BASE}: "
                    "container root would be a real host user",
                    key=f"{kind}_base",
                )
            if base + self.count - 1 > MAX_HOST_ID:
                raise ValidationError(
                    f"{kind} map {base}+{self.count} runs past the largest host id {MAX_HOST_ID}",
                    key=f"{kind}_base",
                )

    def _to_host(self, kind: str, base: int, cid: int) -> int:
        if not isinstance(cid, int) or not 0 <= cid < self.count:
            raise ValidationError(f"{kind} {cid} is outside the container's id map (0..{self.count - 1})")
        return base + cid

    def _to_container(self, kind: str, base: int, hid: int) -> int:
        if not isinstance(hid, int) or not base <= hid < base + self.count:
            raise ValidationError(f"host {kind} {hid} is outside the id map ({base}..{base + self.count - 1})")
        return hid - base

    def host_uid(self, uid: int) -> int:
        """The host uid that container uid `uid` is stored as."""
        return self._to_host("uid", self.uid_base, uid)

    def host_gid(self, gid: int) -> int:
        """The host gid that container gid `gid` is stored as."""
        return self._to_host("gid", self.gid_base, gid)

    def container_uid(self, host_uid: int) -> int:
        """Inverse of host_uid: needed to re-shift a tree that is already shifted."""
        return self._to_container("uid", self.uid_base, host_uid)

    def container_gid(self, host_gid: int) -> int:
        """Inverse of host_gid."""
        return self._to_container("gid", self.gid_base, host_gid)

    def uid_map_text(self) -> str:
        """What to write to /proc/PID/uid_map (the kernel wants it in a single write)."""
        return f"0 {self.uid_base} {self.count}\n"

    def gid_map_text(self) -> str:
        """What to write to /proc/PID/gid_map."""
        return f"0 {self.gid_base} {self.count}\n"

    def lxc_lines(self) -> list[str]:
        """The map as Proxmox/LXC `lxc.idmap` values; from_lxc_lines reads them back."""
        return [f"u 0 {self.uid_base} {self.count}", f"g 0 {self.gid_base} {self.count}"]

    @classmethod
    def from_lxc_lines(cls, lines: Iterable[str]) -> IdMap:
        """Parse `lxc.idmap` values such as ``u 0 100000 65536`` / ``g 0 100000 65536``.

        A full ``lxc.idmap: u 0 100000 65536`` config line is accepted too. Only
        one contiguous range per kind, starting at container id 0, is supported.
        """
        ranges: dict[str, list[tuple[int, int, int]]] = {"u": [], "g": []}
        for raw in lines:
            line = raw.strip()
            if not line or line.startswith("#"):
                continue
            if line.startswith("lxc.idmap"):
                line = line[len("lxc.idmap") :].lstrip(" \t:=")
            fields = line.split()
            if len(fields) != 4 or fields[0] not in ("u", "g"):
                raise ValidationError(
                    f"lxc.idmap {raw.strip()!r}: expected 'u|g CONTAINER_ID HOST_ID COUNT'",
                    key="lxc.idmap",
                )
            try:
                first, host, count = (int(f, 10) for f in fields[1:])
            except ValueError:
                raise ValidationError(
                    f"lxc.idmap {raw.strip()!r}: ids and count must be decimal integers",
                    key="lxc.idmap",
                ) from None
            ranges[fields[0]].append((first, host, count))
        for kind, name in (("u", "uid"), ("g", "gid")):
            if not ranges[kind]:
                raise ValidationError(f"lxc.idmap: no '{kind}' ({name}) range given", key="lxc.idmap")
            if len(ranges[kind]) > 1:
                raise ValidationError(
                    f"lxc.idmap: {len(ranges[kind])} '{kind}' ranges given; "
                    "only a single contiguous range is supported",
                    key="lxc.idmap",
                )
            if ranges[kind][0][0] != 0:
                raise ValidationError(
                    f"lxc.idmap: the '{kind}' range must start at container id 0, not {ranges[kind][0][0]}",
                    key="lxc.idmap",
                )
        (_, uid_base, ucount), (_, gid_base, gcount) = ranges["u"][0], ranges["g"][0]
        if ucount != gcount:
            raise ValidationError(
                f"lxc.idmap: the 'u' and 'g' ranges must have the same count ({ucount} != {gcount})",
                key="lxc.idmap",
            )
        return cls(uid_base, gid_base, ucount)


def remap_file_caps(value: bytes, to_root: Callable[[int], int]) -> bytes:
    """File capabilities (security.capability) as v3 with root id to_root(old); v2 has root id 0.

    The kernel honours v2 capabilities only in the initial user namespace, so an
    unprivileged rootfs needs v3 ones owned by its own root: what an extraction
    from inside the namespace would have stored. Other values pass unchanged.
    """
    rev = value[3] if len(value) >= 4 else 0
    if (rev, len(value)) not in ((2, 20), (3, 24)):
        return value
    root = int.from_bytes(value[20:24], "little") if rev == 3 else 0
    return value[:3] + b"\x03" + value[4:20] + to_root(root).to_bytes(4, "little")


# A privileged container: ids on disk are the container's own, no shift.
IDENTITY: IdMap | None = None
