"""Where the benchmarks find the project and their templates, and the settings both sides share.

Importing it puts the project on ``sys.path``, so the benchmarks (run as ``python bench/x.py``)
import the engine as the node does.
"""

from __future__ import annotations

import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from engine.idmap import IdMap  # noqa: E402

TEMPLATE_CACHE = Path.home() / ".cache" / "caisson" / "templates"
DEBIAN_GLOB = "debian-12-standard_*_amd64.tar.zst"
CGROUP_PARENT = "caisson-bench"  # the in-process engine's containers
CLI_CGROUP_PARENT = "caisson"  # what ``python -m engine`` uses (the CLI has no option for it)
LXC_IDMAP = IdMap(100000, 100000, 65536)
MEMORY_MB = 256
LXCFS_HOOKS = "/usr/share/lxc/config/common.conf.d/00-lxcfs.conf"
