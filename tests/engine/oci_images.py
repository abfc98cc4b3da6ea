"""OCI images built by the tests: an OCI image layout directory from lists of tar entries, packed as an
OCI archive (the tar of that layout, as ``skopeo copy ... oci-archive:`` writes it) when asked."""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import shutil
import tarfile
from pathlib import Path

BUSYBOX = Path("/bin/busybox")
APPLETS = ("sh", "echo", "sleep", "cat", "ls", "id", "pwd", "true", "env", "ip", "ping", "touch")

# (name, kind, data/link, mode, uid, gid); kind: f file, d dir, l symlink
Entry = tuple


def layer_bytes(entries: list[Entry]) -> bytes:
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for name, kind, payload, mode, uid, gid in entries:
            info = tarfile.TarInfo(name)
            info.mode, info.uid, info.gid, info.mtime = mode, uid, gid, 1_700_000_000
            if kind == "d":
                info.type = tarfile.DIRTYPE
                tar.addfile(info)
            elif kind == "l":
                info.type, info.linkname = tarfile.SYMTYPE, payload
                tar.addfile(info)
            else:
                data = payload if isinstance(payload, bytes) else payload.encode()
                info.size = len(data)
                tar.addfile(info, io.BytesIO(data))
    return raw.getvalue()


def busybox_base() -> list[Entry]:
    """A base layer: a static busybox with a few applets, root and an ``app`` user."""
    entries = [
        ("bin", "d", None, 0o755, 0, 0),
        ("bin/busybox", "f", BUSYBOX.read_bytes(), 0o755, 0, 0),
        *((f"bin/{a}", "l", "busybox", 0o777, 0, 0) for a in APPLETS),
        ("etc", "d", None, 0o755, 0, 0),
        ("etc/passwd", "f", "root:x:0:0:root:/root:/bin/sh\napp:x:1000:1000:app:/home/app:/bin/sh\n", 0o644, 0, 0),
        ("etc/group", "f", "root:x:0:\napp:x:1000:\nextra:x:1001:app\n", 0o644, 0, 0),
        ("tmp", "d", None, 0o1777, 0, 0),
    ]
    return entries


class ImageBuilder:
    """Layers, then config; ``write_layout`` makes an OCI image layout, ``write_archive`` its tar."""

    def __init__(self, compress: bool = True):
        self.layers: list[bytes] = []
        self.compress = compress
        self.config: dict = {}

    def add_layer(self, entries: list[Entry]) -> None:
        self.layers.append(layer_bytes(entries))

    def _blobs(self) -> tuple[dict[str, bytes], str]:
        blobs: dict[str, bytes] = {}

        def put(data: bytes) -> str:
            digest = "sha256:" + hashlib.sha256(data).hexdigest()
            blobs[digest] = data
            return digest

        layer_descs, diff_ids = [], []
        for raw in self.layers:
            diff_ids.append("sha256:" + hashlib.sha256(raw).hexdigest())
            data = gzip.compress(raw, mtime=0) if self.compress else raw
            media = "application/vnd.oci.image.layer.v1.tar" + ("+gzip" if self.compress else "")
            layer_descs.append({"mediaType": media, "digest": put(data), "size": len(data)})
        config = {
            "architecture": "amd64",
            "os": "linux",
            "config": self.config,
            "rootfs": {"type": "layers", "diff_ids": diff_ids},
        }
        config_bytes = json.dumps(config).encode()
        manifest = {
            "schemaVersion": 2,
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "config": {
                "mediaType": "application/vnd.oci.image.config.v1+json",
                "digest": put(config_bytes),
                "size": len(config_bytes),
            },
            "layers": layer_descs,
        }
        manifest_bytes = json.dumps(manifest).encode()
        return blobs, json.dumps(
            {
                "schemaVersion": 2,
                "manifests": [
                    {
                        "mediaType": "application/vnd.oci.image.manifest.v1+json",
                        "digest": put(manifest_bytes),
                        "size": len(manifest_bytes),
                        "annotations": {"org.opencontainers.image.ref.name": "latest"},
                    }
                ],
            }
        )

    def write_layout(self, path: Path) -> Path:
        blobs, index = self._blobs()
        if path.exists():
            shutil.rmtree(path)
        (path / "blobs" / "sha256").mkdir(parents=True)
        for digest, data in blobs.items():
            (path / "blobs" / "sha256" / digest[7:]).write_bytes(data)
        (path / "oci-layout").write_text('{"imageLayoutVersion": "1.0.0"}')
        (path / "index.json").write_text(index)
        return path

    def write_archive(self, path: Path, tamper=None) -> Path:
        """The OCI archive; ``tamper(blobs)`` may change blobs after their digests were taken."""
        blobs, index = self._blobs()
        if tamper is not None:
            tamper(blobs)
        with tarfile.open(path, "w") as tar:
            for name, data in [
                ("oci-layout", b'{"imageLayoutVersion": "1.0.0"}'),
                ("index.json", index.encode()),
                *((f"blobs/sha256/{d[7:]}", b) for d, b in blobs.items()),
            ]:
                info = tarfile.TarInfo(name)
                info.size = len(data)
                tar.addfile(info, io.BytesIO(data))
        return path


APP_SCRIPT = (
    'echo "greeting=$GREETING cwd=$(pwd) uid=$(id -u) gid=$(id -g)"; '
    "trap 'echo \"stopping on USR1\"; exit 0' USR1; "
    "while :; do sleep 1; done"
)


def app_image() -> ImageBuilder:
    """busybox in three layers, with a whiteout, an opaque directory, an entrypoint, env and a stop signal."""
    image = ImageBuilder()
    image.add_layer(busybox_base())
    image.add_layer(
        [
            ("etc/removed", "f", "gone later\n", 0o644, 0, 0),
            ("data", "d", None, 0o755, 1000, 1000),
            ("data/old", "f", "from layer 2\n", 0o644, 1000, 1000),
            ("data/sub", "d", None, 0o755, 0, 0),
            ("data/sub/deep", "f", "deep\n", 0o644, 0, 0),
        ]
    )
    image.add_layer(
        [
            ("etc/.wh.removed", "f", "", 0o644, 0, 0),
            ("data", "d", None, 0o755, 1000, 1000),
            ("data/.wh..wh..opq", "f", "", 0o644, 0, 0),
            ("data/new", "f", "from layer 3\n", 0o644, 1000, 1000),
        ]
    )
    image.config = {
        "Entrypoint": ["/bin/sh", "-c"],
        "Cmd": [APP_SCRIPT],
        "Env": ["PATH=/bin", "GREETING=hello-oci"],
        "User": "app",
        "WorkingDir": "/data",
        "StopSignal": "SIGUSR1",
        "Volumes": {"/srv/vol": {}},
    }
    return image
