"""The Debian template: debootstrap a minimal systemd system and pack it.

This gives Caisson a real distribution to run (systemd as PID 1, apt,
ifupdown networking) built from the same Debian mirror the host's apt
already uses, with no template download server involved.

The rootfs is built in a hidden directory inside ``dest_dir`` (same
filesystem as the result, and one a build tool can create device nodes and
run binaries on), then tidied so every container made from it starts
unique and clean: no apt caches, an empty machine-id (systemd makes one at
first boot), no host name, no copy of the build host's resolv.conf, root's
password locked, no ssh host keys, an empty /dev (the engine provides one).
The tarball appears under its final name only when complete; on any
failure the build directory is unmounted and removed and nothing is left.
"""

from __future__ import annotations

import hashlib
import os
import re
import shutil
import tarfile
import tempfile
import threading
import time
from collections.abc import Iterable, Sequence
from contextlib import suppress
from datetime import UTC, datetime
from pathlib import Path

from engine.builders import common
from engine.builders.common import TEMPLATE_SUFFIX, Progress, add_tree, atomic_file, check_cancel, debian_arch, zstd_tar
from engine.builders.debootstrap import SBIN_PATH, Steps, find_debootstrap, run_debootstrap
from engine.builders.registry import Builder, Offer, Option, register
from engine.errors import EngineError, HostError, ValidationError

# Suites Caisson builds, and the number used in the template name. Release
# aliases (stable, testing...) are refused: a template must name what it is.
SUITES: dict[str, str] = {
    "bullseye": "11",
    "bookworm": "12",
    "trixie": "13",
    "forky": "14",
    "sid": "sid",
    "unstable": "sid",
}

BASE_PACKAGES: tuple[str, ...] = (
    "systemd-sysv",
    "iproute2",
    "ifupdown",
    "procps",
    "iputils-ping",
    "less",
    "ca-certificates",
)

# Bump when the tidy-up below changes, so a new template gets a new name.
RELEASE = 1

DEFAULT_TIMEOUT = 1800.0

_PACKAGE_RE = re.compile(r"^[a-z0-9][a-z0-9+.-]+$")
_FLAVOR_RE = re.compile(r"^[a-z0-9][a-z0-9.+-]*$")

_HOSTS = """\
127.0.0.1	localhost
::1		localhost ip6-localhost ip6-loopback
ff02::1		ip6-allnodes
ff02::2		ip6-allrouters
"""


# --- mirror -----------------------------------------------------------------


def _deb822_stanzas(text: str) -> list[dict[str, str]]:
    stanzas, current, key = [], {}, None
    for raw in text.splitlines():
        if raw.startswith("#"):
            continue
        if not raw.strip():
            if current:
                stanzas.append(current)
            current, key = {}, None
            continue
        if raw[0] in " \t" and key:
            current[key] += " " + raw.strip()
            continue
        name, sep, value = raw.partition(":")
        if sep:
            key = name.strip().lower()
            current[key] = value.strip()
    if current:
        stanzas.append(current)
    return stanzas


def _usable(uri: str, suites: Iterable[str], components: Iterable[str]) -> bool:
    return (
        uri.split(":", 1)[0] in ("http", "https", "ftp", "file")
        and any(suite in SUITES for suite in suites)
        and "main" in components
    )


def find_mirror(
    sources_dir: Path = Path("/etc/apt/sources.list.d"),
    sources_list: Path = Path("/etc/apt/sources.list"),
) -> str:
    """The Debian mirror the host's apt uses (deb822 ``*.sources`` first, then sources.list).

    Only an entry for a plain Debian suite with ``main`` counts, so the
    security and updates archives, and Ubuntu mirrors, are never picked.
    """
    files = sorted(sources_dir.glob("*.sources")) if sources_dir.is_dir() else []
    for path in files:
        for stanza in _deb822_stanzas(path.read_text(errors="replace")):
            if stanza.get("enabled", "yes").lower() == "no" or "deb" not in stanza.get("types", "").split():
                continue
            suites = stanza.get("suites", "").split()
            components = stanza.get("components", "").split()
            for uri in stanza.get("uris", "").split():
                if _usable(uri, suites, components):
                    return uri
    lists = [sources_list] if sources_list.is_file() else []
    if sources_dir.is_dir():
        lists += sorted(sources_dir.glob("*.list"))
    for path in lists:
        for line in path.read_text(errors="replace").splitlines():
            line = re.sub(r"\[[^]]*\]", " ", line.split("#", 1)[0])
            words = line.split()
            if len(words) >= 4 and words[0] == "deb" and _usable(words[1], [words[2]], words[3:]):
                return words[1]
    raise HostError(
        f"no Debian mirror found in {sources_dir}/*.sources or {sources_list}: "
        "add one for apt, or pass a mirror URL explicitly"
    )


# --- names ------------------------------------------------------------------


def _check_args(suite: str, extra_packages: Sequence[str], flavor: str | None) -> str:
    if suite not in SUITES:
        raise ValidationError(f"unknown Debian suite '{suite}': expected one of {', '.join(SUITES)}", key="suite")
    if not Path(f"/usr/share/debootstrap/scripts/{suite}").exists() and shutil.which("debootstrap", path=SBIN_PATH):
        raise HostError(f"this host's debootstrap does not know suite '{suite}': upgrade debootstrap")
    for name in extra_packages:
        if not _PACKAGE_RE.match(name):
            raise ValidationError(f"'{name}' is not a valid Debian package name", key="packages")
    if flavor is None:
        if not extra_packages:
            return "standard"
        digest = hashlib.sha256(",".join(sorted(set(extra_packages))).encode()).hexdigest()[:8]
        return f"custom-{digest}"
    if not _FLAVOR_RE.match(flavor):
        raise ValidationError(
            f"template flavor '{flavor}' must be lower-case letters, digits, '.', '+' or '-'", key="flavor"
        )
    return flavor


def template_stem(suite: str, flavor: str = "standard") -> str:
    """The name up to the version: ``debian-12-standard``."""
    return f"debian-{SUITES[suite]}-{flavor}"


def _template_version(rootfs: Path) -> str:
    text = (rootfs / "etc/debian_version").read_text().strip()
    if re.fullmatch(r"\d+(\.\d+)*", text):
        return text
    # sid says "trixie/sid": the build date is the only meaningful version.
    return datetime.now(UTC).strftime("%Y%m%d")


def _tree_bytes(root: Path) -> int:
    """Bytes of the regular files below ``root`` on its file system (the packing step's total)."""
    total, stack, dev = 0, [os.fspath(root)], os.lstat(root).st_dev
    while stack:
        with os.scandir(stack.pop()) as entries:
            for entry in entries:
                st = entry.stat(follow_symlinks=False)
                if st.st_dev != dev:
                    continue
                if entry.is_dir(follow_symlinks=False):
                    stack.append(entry.path)
                elif entry.is_file(follow_symlinks=False):
                    total += st.st_size
    return total


# --- tidy-up ----------------------------------------------------------------


def _path_in(rootfs: Path, rel: str) -> Path:
    """``rootfs/rel``, refusing any symlinked directory on the way (it could lead out)."""
    path = rootfs / rel
    real_parent = os.path.realpath(path.parent)
    if real_parent != os.path.join(os.path.realpath(rootfs), os.path.dirname(rel)).rstrip("/"):
        raise EngineError(f"refusing to touch {path}: a directory on the way is a symlink")
    return path


def _write(rootfs: Path, rel: str, data: str, mode: int = 0o644) -> None:
    """Replace a file's content and mode (debootstrap copies some files with the host's mode)."""
    path = _path_in(rootfs, rel)
    if path.is_symlink():
        path.unlink()
    path.write_text(data)
    os.chmod(path, mode)


def _empty_dir(path: Path, keep: Iterable[str] = ()) -> None:
    if not path.is_dir() or path.is_symlink():
        return
    for entry in path.iterdir():
        if entry.name in keep:
            continue
        if entry.is_dir() and not entry.is_symlink():
            shutil.rmtree(entry)
        else:
            entry.unlink()


def tidy_rootfs(rootfs: Path) -> None:
    """Make a freshly bootstrapped rootfs fit to be copied into many containers."""
    # apt: downloaded packages, package lists and binary caches.
    archives = rootfs / "var/cache/apt/archives"
    for deb in archives.glob("*.deb"):
        deb.unlink()
    _empty_dir(archives / "partial")
    for cache in (rootfs / "var/cache/apt").glob("*.bin"):
        cache.unlink()
    _empty_dir(rootfs / "var/lib/apt/lists", keep={"partial"})
    _empty_dir(rootfs / "var/lib/apt/lists/partial")

    # Identity: every container must get its own.
    _write(rootfs, "etc/machine-id", "", 0o444)
    dbus_id = rootfs / "var/lib/dbus/machine-id"
    if dbus_id.exists() and not dbus_id.is_symlink():
        dbus_id.unlink()
    _write(rootfs, "etc/hostname", "")
    _write(rootfs, "etc/hosts", _HOSTS)
    resolv = rootfs / "etc/resolv.conf"
    if not resolv.is_symlink():  # debootstrap copies the build host's; the engine writes one
        _write(rootfs, "etc/resolv.conf", "")
    for key in (rootfs / "etc/ssh").glob("ssh_host_*"):
        key.unlink()

    # root's password locked ('!'), whatever debootstrap left there.
    shadow = _path_in(rootfs, "etc/shadow")
    lines = shadow.read_text().splitlines()
    for i, line in enumerate(lines):
        fields = line.split(":")
        if fields[0] == "root" and len(fields) > 1:
            fields[1] = "!"
            lines[i] = ":".join(fields)
    _write(rootfs, "etc/shadow", "\n".join(lines) + "\n", 0o640)

    # Runtime and scratch directories: the engine mounts /dev, /proc, /sys, /run.
    for rel in ("dev", "proc", "sys", "run", "tmp", "var/tmp"):
        _empty_dir(rootfs / rel)


# --- build ------------------------------------------------------------------


def build_debian(
    dest_dir: Path,
    suite: str = "bookworm",
    extra_packages: Sequence[str] = (),
    progress: Progress | None = None,
    *,
    force: bool = False,
    mirror: str | None = None,
    flavor: str | None = None,
    timeout: float = DEFAULT_TIMEOUT,
    cancel: threading.Event | None = None,
) -> Path:
    """Build a Debian template into ``dest_dir`` and return the tarball's path.

    ``extra_packages`` are installed on top of the base set (for app
    templates); without a ``flavor`` they give the template a
    ``custom-<hash>`` flavor instead of ``standard``. An existing template of
    the same suite, flavor and release is returned as is unless ``force``.
    Needs root, debootstrap and the network to the mirror.

    ``progress(step_done, 5, text)`` follows debootstrap's stages (see :class:`Steps`),
    then tidying and packing. Once ``cancel`` is set, debootstrap's process group is
    killed, the build directory unmounted and removed, and :class:`engine.errors.Cancelled`
    raised; as on any failure, no template (and no partial file) is left in ``dest_dir``.
    """
    dest_dir = Path(dest_dir)
    extra_packages = list(extra_packages)
    flavor = _check_args(suite, extra_packages, flavor)
    arch = debian_arch()
    stem = template_stem(suite, flavor)
    steps = Steps(progress, len(extra_packages))
    if not force:
        found = common.existing_templates(dest_dir, f"{stem}_*-{RELEASE}_{arch}{TEMPLATE_SUFFIX}")
        if found:
            steps.say(steps.STEPS, f"{found[-1].name} is already in the store")
            return found[-1]
    debootstrap = find_debootstrap()
    if os.geteuid() != 0:
        raise HostError("building the Debian template needs root (debootstrap chroots and creates device nodes)")
    mirror = mirror or find_mirror()
    check_cancel(cancel, "Debian build")

    created_dest = not dest_dir.exists()
    dest_dir.mkdir(parents=True, exist_ok=True)
    workdir = Path(tempfile.mkdtemp(dir=dest_dir, prefix=".debian-build-"))
    rootfs = workdir / "rootfs"
    ok = False
    try:
        packages = list(dict.fromkeys([*BASE_PACKAGES, *extra_packages]))
        cmd = [
            debootstrap,
            "--variant=minbase",
            f"--include={','.join(packages)}",
            f"--arch={arch}",
            suite,
            str(rootfs),
            mirror,
        ]
        started = time.monotonic()
        steps.say(0, f"running debootstrap {suite} from {mirror} (minbase + {len(packages)} packages)")
        run_debootstrap(cmd, rootfs, steps, timeout, cancel)
        check_cancel(cancel, "Debian build")
        steps.say(
            3,
            f"debootstrap done in {time.monotonic() - started:.0f} s "
            f"({len(steps.validated)} packages); tidying the rootfs",
        )
        common.unmount_under(workdir)  # debootstrap unmounts what it mounted; make sure
        if common.mounts_under(workdir):  # never empty /dev or /proc through a live mount
            raise EngineError(f"still mounted below {workdir}: {', '.join(common.mounts_under(workdir))}")
        tidy_rootfs(rootfs)
        target = dest_dir / f"{stem}_{_template_version(rootfs)}-{RELEASE}_{arch}{TEMPLATE_SUFFIX}"
        total = max(_tree_bytes(rootfs), 1)
        packed = [0, 0.0]  # bytes, last report

        def member(info: tarfile.TarInfo) -> tarfile.TarInfo:
            check_cancel(cancel, "Debian build")
            if info.isreg():
                packed[0] += info.size
                now = time.monotonic()
                if now - packed[1] >= 0.25:
                    packed[1] = now
                    steps.say(
                        4 + min(packed[0] / total, 0.99),
                        f"packing {target.name}: {packed[0] >> 20} of {total >> 20} MiB",
                    )
            return info

        steps.say(4, f"packing {target.name}")
        with atomic_file(target) as fileobj, zstd_tar(fileobj, level=10, threads=-1) as tar:
            count = add_tree(tar, rootfs, member)
        steps.say(steps.STEPS, f"wrote {target} ({count} members, {target.stat().st_size >> 20} MiB)")
        ok = True
        return target
    finally:
        common.remove_build_dir(workdir)
        if not ok and created_dest:
            with suppress(OSError):
                dest_dir.rmdir()


def _package_list(value: object) -> list[str]:
    """Extra packages as a list, or as one comma-separated string (the command line's form)."""
    if not value:
        return []
    if isinstance(value, str):
        return [p.strip() for p in value.split(",") if p.strip()]
    if not isinstance(value, (list, tuple)) or not all(isinstance(p, str) for p in value):
        raise ValidationError("packages: a list of Debian package names", key="packages")
    return list(value)


class DebianBuilder(Builder):
    """debootstrap, one catalog offer per suite; options as :func:`build_debian` takes them."""

    name = "debian"
    help = "Debian with systemd via debootstrap (root, network to the mirror)"
    options = (
        Option("suite", "Debian suite (default: bookworm)", default="bookworm", choices=tuple(sorted(SUITES))),
        Option(
            "packages",
            "extra packages, comma-separated (e.g. nginx,curl); the template is then named custom-<hash>",
            default="",
            parse=_package_list,
        ),
        Option("flavor", "name part after the version, e.g. 'nginx' (default: standard)"),
        Option("mirror", "Debian mirror URL (default: the one apt uses)"),
        Option("timeout", "seconds debootstrap may take", cli=False),
    )

    def offers(self) -> list[Offer]:
        return [Offer(self.name, f"debian-{suite}", "debian", {"suite": suite}) for suite in sorted(SUITES)]

    def build(self, dest_dir, options, progress, cancel, force):
        kwargs = {key: options[key] for key in ("suite", "flavor", "mirror", "timeout") if options.get(key)}
        return build_debian(
            dest_dir,
            extra_packages=options.get("packages") or [],
            progress=progress,
            cancel=cancel,
            force=force,
            **kwargs,
        )


register(DebianBuilder())
