"""What the benchmarks share: statistics, the result table, and the two sides (Caisson and LXC).

Method (``/work/shared/BENCH.md``): both sides run in one process on the same
template, alternating A B A B after warm-ups; each row quotes the median with
min and max, and the ratio Caisson/LXC is taken pair by pair (sample i of
Caisson over sample i of LXC), then summarised the same way.

Everything a benchmark makes (containers of both kinds, their cgroups, temp
dirs) is registered with a :class:`Session` as soon as it exists and is torn
down on exit, error, Ctrl-C or SIGTERM.
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from paths import (  # noqa: E402,F401
    CGROUP_PARENT,
    CLI_CGROUP_PARENT,
    DEBIAN_GLOB,
    LXC_IDMAP,
    LXCFS_HOOKS,
    MEMORY_MB,
    REPO,
    TEMPLATE_CACHE,
)
from report import Report, Row, entry, parser  # noqa: E402,F401
from session import Session  # noqa: E402,F401
from sides import CaissonSide, LxcSide  # noqa: E402,F401
from timing import (  # noqa: E402,F401
    alternate,
    engine_version,
    fmt,
    hyperfine,
    ms_since,
    pair_ratios,
    reap_children,
    run,
    summary,
    timed_commands,
)
