"""Local template builders: make rootfs tarballs on this host instead of downloading them.

A template is a zstd-compressed tar of a plain rootfs (host-root-owned, not
shifted), named the way Proxmox names its templates
(``busybox-1.35.0-1_amd64.tar.zst``, ``debian-12-standard_12.7-1_amd64.tar.zst``)
so that the template store lists local and downloaded ones alike. The archive
conventions every builder follows are in :mod:`engine.builders.common`.

Each builder is a module registering a :class:`Builder` (its options, the
catalog entries it offers, its build) in :mod:`engine.builders.registry`;
importing this package loads them all.

Jobs call :func:`build` (one entry point for every builder) with two hooks:
``progress(step_done, steps_total, text)``, where ``step_done`` may be
fractional inside a step (a Debian build counts packages), and ``cancel``, a
``threading.Event``: once set, the build stops at its next check (a running
debootstrap is killed with its whole process group), removes its build
directory and raises :class:`Cancelled`; no template is left in the store.
"""

from __future__ import annotations

from engine.builders.busybox import build_busybox
from engine.builders.common import (
    TEMPLATE_SUFFIX,
    Progress,
    add_tree,
    atomic_file,
    check_cancel,
    debian_arch,
    default_template_dir,
    existing_templates,
    mounts_under,
    remove_build_dir,
    unmount_under,
    zstd_tar,
)
from engine.builders.debian import build_debian
from engine.builders.registry import Builder, Offer, Option, build, find_offer, names, offers
from engine.builders.registry import get as get_builder
from engine.errors import Cancelled

__all__ = [
    "TEMPLATE_SUFFIX",
    "Builder",
    "Cancelled",
    "Offer",
    "Option",
    "Progress",
    "add_tree",
    "atomic_file",
    "build",
    "build_busybox",
    "build_debian",
    "check_cancel",
    "debian_arch",
    "default_template_dir",
    "existing_templates",
    "find_offer",
    "get_builder",
    "mounts_under",
    "names",
    "offers",
    "remove_build_dir",
    "unmount_under",
    "zstd_tar",
]
