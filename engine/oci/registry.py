"""Talking to registries through Debian's ``skopeo``: the node's registry settings (mirrors, registries
reached without TLS), credentials handed over without ever touching argv or a lasting file, tag lists.

Why skopeo: it is what Proxmox VE and Incus pull with, Debian ships it, and it does what a registry
client must get right (token auth, manifest lists, platform choice, digest checks of every blob,
retries); Python's registry clients are thin or unmaintained.

Settings live in ``<root>/template/oci.json``::

    {"mirrors": {"docker.io": ["mirror.example:5000"]}, "insecure": ["127.0.0.1:5000"]}

and reach skopeo as a ``registries.conf`` written for each run.
Credentials (a user name and password or token) go into an ``auth.json`` in a private 0700 directory
made for that run and removed when it ends; skopeo reads them from there, never from its command line
(which every user of the host can read in /proc).
"""

from __future__ import annotations

import base64
import contextlib
import json
import os
import re
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from engine.config import write_atomic
from engine.errors import EngineError, HostError, NotFound, ValidationError
from engine.oci.reference import Reference, parse

SKOPEO = "skopeo"
_LOCATION = re.compile(r"^[A-Za-z0-9.-]+(?::\d+)?(?:/[a-z0-9._/-]+)?$")
TIMEOUT = 300.0


class RegistryError(EngineError):
    """The registry refused or could not be reached; the message is skopeo's, credentials never in it."""


@dataclass(frozen=True)
class Credentials:
    username: str
    password: str = field(repr=False)

    def __post_init__(self):
        if not self.username or any(c in self.username for c in ":\n\r\0"):
            raise ValidationError("registry user name: required, without ':' or line breaks", key="username")
        if not self.password or any(c in self.password for c in "\n\r\0"):
            raise ValidationError("registry password: required, on one line", key="password")


@dataclass
class Settings:
    mirrors: dict[str, list[str]] = field(default_factory=dict)
    insecure: list[str] = field(default_factory=list)

    @classmethod
    def load(cls, root: Path) -> Settings:
        path = settings_path(root)
        try:
            data = json.loads(path.read_text())
        except FileNotFoundError:
            return cls()
        except OSError as exc:
            raise HostError(f"{path}: {exc.strerror}") from None
        except ValueError as exc:
            raise ValidationError(f"{path}: not valid JSON: {exc}") from None
        settings = cls({k: list(v) for k, v in (data.get("mirrors") or {}).items()}, list(data.get("insecure") or []))
        settings.check()
        return settings

    def check(self) -> None:
        for registry, locations in self.mirrors.items():
            for where in [registry, *locations]:
                if not _LOCATION.match(where):
                    raise ValidationError(f"registry mirror: {where!r} is not host[:port][/path]", key="mirror")
        for where in self.insecure:
            if not _LOCATION.match(where):
                raise ValidationError(f"insecure registry: {where!r} is not host[:port]", key="insecure")

    def save(self, root: Path) -> None:
        self.check()
        path = settings_path(root)
        path.parent.mkdir(parents=True, exist_ok=True)
        # no secret in it; the web server reads it too (tag listing)
        text = json.dumps({"mirrors": self.mirrors, "insecure": self.insecure}, indent=2) + "\n"
        write_atomic(path, text, mode=0o644)

    def registries_conf(self) -> str:
        """containers-registries.conf(5), version 2."""
        lines = ['unqualified-search-registries = ["docker.io"]', ""]
        for registry in sorted(set(self.mirrors) | set(self.insecure)):
            lines += ["[[registry]]", f'prefix = "{registry}"', f'location = "{registry}"']
            lines.append(f"insecure = {'true' if registry in self.insecure else 'false'}")
            for mirror in self.mirrors.get(registry, []):
                insecure = "true" if mirror.split("/")[0] in self.insecure else "false"
                lines += ["[[registry.mirror]]", f'location = "{mirror}"', f"insecure = {insecure}"]
            lines.append("")
        return "\n".join(lines)


def settings_path(root: Path) -> Path:
    return Path(root) / "template" / "oci.json"


@dataclass
class Session:
    """How to run skopeo for one pull or listing: ``argv(verb, ...)`` and ``env``."""

    conf: str
    auth: str
    tls: bool
    env: dict

    def argv(self, verb: str, *args: str, side: str = "") -> list[str]:
        """``side`` is ``src-`` for copy's source options."""
        tls = [f"--{side}tls-verify=false"] if not self.tls else []
        return [SKOPEO, "--registries-conf", self.conf, verb, f"--{side}authfile", self.auth, *tls, *args]


def check_registry(reference: Reference, settings: Settings) -> None:
    """Refuse a registry that resolves to a link-local address (cloud metadata services live there), as
    template downloads do; a mirror the node's settings name is the administrator's choice."""
    from engine.templates.download import DownloadError, check_url

    if reference.registry in settings.mirrors:
        return
    try:
        check_url(f"https://{reference.registry}/")
    except DownloadError:
        pass  # a name that does not resolve: skopeo says so in its own words


@contextlib.contextmanager
def session(settings: Settings, reference: Reference, credentials: Credentials | None) -> Iterator[Session]:
    """The options and environment of one skopeo run, in a private directory removed at the end.
    (skopeo 1.9 reads the registries.conf of its global ``--registries-conf`` only, not the environment.)"""
    check_registry(reference, settings)
    private = Path(tempfile.mkdtemp(prefix="caisson-skopeo-"))  # 0700
    try:
        conf = private / "registries.conf"
        conf.write_text(settings.registries_conf())
        env = {
            "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
            "HOME": str(private),  # no one's ~/.docker/config.json or containers/auth.json
            "XDG_RUNTIME_DIR": str(private),
            "TMPDIR": os.environ.get("CAISSON_OCI_TMPDIR", "/var/tmp"),
        }
        auth = private / "none.json"  # anonymous: not root's stored logins
        if credentials is not None:
            auth = private / "auth.json"
            token = base64.b64encode(f"{credentials.username}:{credentials.password}".encode()).decode()
            fd = os.open(auth, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
            with os.fdopen(fd, "w") as f:
                json.dump({"auths": {reference.registry: {"auth": token}}}, f)
        yield Session(str(conf), str(auth), reference.registry not in settings.insecure, env)
    finally:
        shutil.rmtree(private, ignore_errors=True)


def run(argv: list[str], env: dict, timeout: float = TIMEOUT) -> str:
    """skopeo's output; its complaint as a RegistryError."""
    try:
        done = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=timeout, check=False)
    except FileNotFoundError:
        raise HostError("skopeo is not installed (Debian package 'skopeo')") from None
    except subprocess.TimeoutExpired:
        raise RegistryError(f"skopeo {argv[3]} did not answer within {timeout:g} s") from None
    if done.returncode != 0:
        raise error_of(done.stderr, argv[3])
    return done.stdout


def error_of(stderr: str, verb: str) -> EngineError:
    lines = [line for line in stderr.strip().splitlines() if line.strip()]
    text = (lines[-1] if lines else f"skopeo {verb} failed").removeprefix("time=").strip()
    message = re.sub(r'^.*?msg="?', "", text).rstrip('"') if 'msg="' in text else text
    if "digest" in message.lower() and ("match" in message.lower() or "mismatch" in message.lower()):
        return ValidationError(f"digest mismatch: {message}", key="digest")
    if "manifest unknown" in message or "name unknown" in message or "not found" in message:
        return NotFound(f"image not found: {message}")
    return RegistryError(message)


def list_tags(root: Path, repository: str, credentials: Credentials | None = None) -> list[str]:
    """The tags of a repository (``registry/repo``), sorted."""
    reference = parse(repository, default_tag=None)
    if reference.tag or reference.digest:
        raise ValidationError("tags: name a repository without a tag or digest", key="reference")
    settings = Settings.load(root)
    with session(settings, reference, credentials) as skopeo:
        out = run(skopeo.argv("list-tags", f"docker://{reference.repo}"), skopeo.env)
    try:
        tags = json.loads(out).get("Tags") or []
    except ValueError:
        raise RegistryError(f"skopeo list-tags: unreadable answer for {reference.repo}") from None
    return sorted(str(t) for t in tags)
