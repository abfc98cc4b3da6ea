#!/usr/bin/env python3
"""Pull and unpack an OCI image from a registry on loopback: Caisson's pull into the template store plus its
layer-by-layer extraction into a rootfs, against ``skopeo copy`` into an OCI layout plus ``umoci unpack``.

The image (about 100 MB compressed: a busybox base and four layers of 128 MB of files in all, gzip) is
built here and pushed to Debian's docker-registry bound to 127.0.0.1, started and stopped by this
script. Both sides fetch the whole image each sample (nothing cached between samples), alternating,
and unpack with ids shifted into the same 65536-id range (``umoci unpack --uid-map/--gid-map``).
Caisson's side also packs the Proxmox-format archive (``<name>.tar``), checks every blob's digest again
and each layer's diff id, and refuses any entry that would leave the root. Goal: within 1.2x.
"""

from __future__ import annotations

import os
import random
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from common import REPO, Report, alternate, entry, ms_since, parser

from engine.idmap import IdMap
from engine.oci.layers import extract_image
from engine.oci.pull import pull
from engine.oci.registry import Settings

sys.path.insert(0, str(REPO))
from tests.engine import registry_lab  # noqa: E402
from tests.engine.oci_images import ImageBuilder, busybox_base  # noqa: E402

GOAL = 1.2
IDMAP = IdMap(100000, 100000, 65536)


def big_image(total_mb: int = 100, layers: int = 4) -> ImageBuilder:
    """A busybox base and ``layers`` layers of files, mostly incompressible (as binaries and media are)."""
    rng = random.Random(20)
    image = ImageBuilder()
    image.add_layer(busybox_base())
    per_layer = total_mb * 1024 * 1024 // layers
    for n in range(layers):
        entries = [(f"opt/layer{n}", "d", None, 0o755, 0, 0)]
        size = 0
        i = 0
        while size < per_layer:
            length = rng.choice((4096, 32768, 262144, 1048576))
            data = rng.randbytes(length * 3 // 4) + b"text " * (length // 20)
            entries.append((f"opt/layer{n}/f{i:05d}", "f", data, 0o644, 1000, 1000))
            size += len(data)
            i += 1
        image.add_layer(entries)
    image.config = {"Cmd": ["/bin/sh"], "Env": ["PATH=/bin"]}
    return image


def main() -> None:
    p = parser(__doc__.splitlines()[0], runs=5, warmup=1)
    p.add_argument("--size", type=int, default=128, help="uncompressed MB of files (default %(default)s: ~100 MB gzip)")
    args = p.parse_args()
    if os.geteuid() != 0:
        sys.exit("the benchmark needs root (ownership of the unpacked files)")
    if not registry_lab.available() or not shutil.which("umoci"):
        sys.exit("needs skopeo, umoci and docker-registry (Debian packages)")
    work = Path(tempfile.mkdtemp(prefix="caisson-bench-oci-", dir="/var/tmp"))
    try:
        print(f"building a {args.size} MB image", file=sys.stderr)
        layout = big_image(args.size).write_layout(work / "image")
        compressed = sum(f.stat().st_size for f in (layout / "blobs/sha256").iterdir())
        with registry_lab.registry(work / "registry") as address:
            registry_lab.push(layout, address, "bench/big:1.0")
            reference = f"{address}/bench/big:1.0"
            Settings(insecure=[address]).save(work / "node")

            def caisson() -> float:
                cache, rootfs = work / "cache", work / "caisson-rootfs"
                start = time.perf_counter_ns()
                archive = pull(work / "node", cache, reference)
                extract_image(archive, rootfs, IDMAP)
                elapsed = ms_since(start)
                shutil.rmtree(cache)
                shutil.rmtree(rootfs)
                return elapsed

            def skopeo_umoci() -> float:
                oci, bundle = work / "oci", work / "umoci-bundle"
                start = time.perf_counter_ns()
                subprocess.run(
                    ["skopeo", "copy", "--src-tls-verify=false", f"docker://{reference}", f"oci:{oci}:1.0"],
                    check=True,
                    capture_output=True,
                )
                subprocess.run(
                    [
                        "umoci",
                        "unpack",
                        "--uid-map",
                        "0:100000:65536",
                        "--gid-map",
                        "0:100000:65536",
                        "--image",
                        f"{oci}:1.0",
                        str(bundle),
                    ],
                    check=True,
                    capture_output=True,
                )
                elapsed = ms_since(start)
                shutil.rmtree(oci)
                shutil.rmtree(bundle)
                return elapsed

            samples = alternate(
                [("caisson", caisson), ("peer", skopeo_umoci)], args.runs, args.warmup, label="oci pull+unpack"
            )
        report = Report(
            f"pull + unpack of a {compressed / 1048576:.0f} MB image (5 layers) from a loopback registry",
            {"runs": args.runs, "order": "Caisson peer …"},
            against="skopeo+umoci",
        )
        report.add(
            "pull (skopeo to OCI archive, digests) + unpack (checked, id-shifted) vs skopeo copy + umoci unpack",
            samples["caisson"],
            samples["peer"],
            goal=GOAL,
        )
        report.finish(args.json)
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    entry(main)
