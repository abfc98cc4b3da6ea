"""What an idle cluster costs per node tick, with 1, 2 and 3 node agents on this machine, N running containers
each: Redis commands (``INFO commandstats`` deltas), the SQL statements of each tick (counted in the agent,
``bench/sql_counting_agent.py``) and PostgreSQL's transactions and row writes (``pg_stat_database``).

Each node is a real agent (``tasks.agent``) with its own node name, queue, state root, run directory and
cgroup parent, its containers real busybox ones made with the engine before it starts; one ``celery beat``
sends every node's tick every ``--interval`` seconds. Nodes are added one by one and each configuration is
measured over ``--seconds``. Everything runs on a database of its own (created on the server of
``DATABASE_URL``, dropped at the end), Redis databases 7-9 of ``REDIS_URL`` (flushed at the start and the
end) and temp state, all removed at the end. There is no peer tool to compare with: the figures feed
``docs/scaling.md``.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import signal
import statistics
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from bench.web import Bench, wait_until  # noqa: E402

REDIS_DBS = "7,8,9"


class Cluster(Bench):
    """``bench/web.py``'s set-up (its own database) with agents of several nodes and no web server."""

    def __init__(self, args, stack: contextlib.ExitStack):
        super().__init__(args, stack)  # each node's agent gets its own name, state root and cgroup parent
        self.env.update(CAISSON_REDIS_DBS=REDIS_DBS, CAISSON_SAMPLE_INTERVAL=str(args.interval))
        os.environ.update(self.env)
        self.engines = []

    def database(self) -> None:
        super().database()  # created, migrated, dropped at the end
        self.stack.callback(self._flush_redis)
        self._flush_redis()

    def _flush_redis(self) -> None:
        for db in REDIS_DBS.split(","):
            self.redis(int(db)).flushdb()

    @staticmethod
    def redis(db: int | None = None):
        import redis
        from django.conf import settings

        url = settings.CELERY_BROKER_URL
        return redis.Redis.from_url(url if db is None else url.rsplit("/", 1)[0] + f"/{db}")

    def start(self, name: str, argv: list[str], **env) -> tuple[subprocess.Popen, Path]:
        log = self.workdir / f"{name}.log"
        with open(log, "wb") as out:
            process = subprocess.Popen(
                argv, cwd=REPO, env={**self.env, **env}, stdout=out, stderr=subprocess.STDOUT, start_new_session=True
            )
        self.stack.callback(self._stop, process)
        return process, log

    @staticmethod
    def _stop(process: subprocess.Popen) -> None:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGTERM)
            try:
                process.wait(20)
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait()

    def beat(self) -> None:
        argv = [sys.executable, "-m", "celery", "-A", "tasks.celery", "beat", "--max-interval", "1"]
        argv += ["--pidfile", str(self.workdir / "beat.pid"), "-S", "django_celery_beat.schedulers:DatabaseScheduler"]
        self.start("beat", argv)

    def node(self, k: int, template: Path) -> None:
        """Node ``bench<k>``: N running busybox containers, then its agent with SQL counting."""
        from engine.lifecycle import Engine

        root = self.workdir / f"node{k}"
        cgroup = f"caisson-bench-cluster-{os.getpid()}-{k}"
        engine = Engine(root=root / "state", run_dir=root / "run", cgroup_parent=cgroup, reaper=True)
        self.engines.append((engine, cgroup))
        if len(self.engines) == 1:
            self.stack.callback(self._destroy_containers)
        for i in range(self.args.containers):
            ctid = 1000 * k + i
            engine.create(ctid, template, {"hostname": f"n{k}c{i}", "memory": "64", "swap": "0"})
            engine.start(ctid)
        env = dict(
            CAISSON_NODE=f"bench{k}",
            CAISSON_ROOT=str(root / "state"),
            CAISSON_RUN=str(root / "run"),
            CAISSON_CGROUP_PARENT=cgroup,
            CAISSON_SQL_COUNTS=str(self.counts(k)),
        )
        argv = [sys.executable, "-m", "bench.sql_counting_agent", "--concurrency", "2", "--loglevel", "WARNING"]
        process, log = self.start(f"agent{k}", argv, **env)
        wait_until(lambda: len(self.ticks(k)) >= 2, f"the ticks of node bench{k}", process, log, timeout=120)

    def counts(self, k: int) -> Path:
        return self.workdir / f"sql{k}.txt"

    def ticks(self, k: int) -> list[int]:
        """The statements of each tick node ``k`` has run so far."""
        path = self.counts(k)
        lines = path.read_text().splitlines() if path.exists() else []
        return [int(line.split()[1]) for line in lines if line.startswith("caisson.node.tick ")]

    def _destroy_containers(self) -> None:
        for engine, cgroup in self.engines:
            for ctid in engine.ids():
                with contextlib.suppress(Exception):
                    engine.destroy(ctid, force=True)
            for path in Path("/sys/fs/cgroup").glob(f"**/{cgroup}"):
                with contextlib.suppress(OSError):
                    path.rmdir()

    def counters(self) -> dict[str, float]:
        from django.db import connection

        info = self.redis().info("commandstats")
        stats = self.redis().info("stats")
        with connection.cursor() as cursor:
            cursor.execute("SELECT pg_stat_clear_snapshot()")
            cursor.execute(
                "SELECT xact_commit, tup_inserted + tup_updated + tup_deleted FROM pg_stat_database WHERE datname = %s",
                [self.dbname],
            )
            commits, writes = cursor.fetchone()
        return {
            "redis": sum(v["calls"] for v in info.values()),
            "redis_in": stats["total_net_input_bytes"],
            "commits": commits,
            "writes": writes,
            "time": time.monotonic(),
        }

    def measure(self, nodes: int) -> dict:
        time.sleep(2 * self.args.interval)  # settle: the last node's first ticks and mirror writes are done
        before_ticks = [len(self.ticks(k)) for k in range(1, nodes + 1)]
        before = self.counters()
        time.sleep(self.args.seconds)
        time.sleep(1)  # PostgreSQL's statistics are flushed by each backend within a second
        after = self.counters()
        statements = [s for k in range(1, nodes + 1) for s in self.ticks(k)[before_ticks[k - 1] :]]
        seconds = after["time"] - before["time"] - 1
        ticks = len(statements)
        delta = {key: after[key] - before[key] for key in ("redis", "redis_in", "commits", "writes")}
        return {
            "nodes": nodes,
            "ticks": ticks,
            "redis_per_s": delta["redis"] / seconds,
            "redis_per_tick": delta["redis"] / ticks,
            "bytes_per_tick": delta["redis_in"] / ticks,
            "sql_per_tick": statistics.median(statements),
            "sql_range": (min(statements), max(statements)),
            "commits_per_tick": delta["commits"] / ticks,
            "writes_per_tick": delta["writes"] / ticks,
        }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--nodes", type=int, default=3)
    parser.add_argument("--containers", type=int, default=5, help="running busybox containers per node")
    parser.add_argument("--interval", type=int, default=2, help="seconds between a node's ticks")
    parser.add_argument("--seconds", type=int, default=30, help="length of each measurement")
    args = parser.parse_args()
    from engine.builders.busybox import build_busybox

    with contextlib.ExitStack() as stack:
        cluster = Cluster(args, stack)
        cluster.database()
        template = build_busybox(cluster.workdir / "templates")
        cluster.beat()
        rows = []
        for k in range(1, args.nodes + 1):
            cluster.node(k, template)
            rows.append(cluster.measure(k))
            print(f"measured {k} node(s)", file=sys.stderr)
    print(
        f"{args.containers} running busybox containers per node, a tick every {args.interval} s, {args.seconds} s each"
    )
    print(
        "| nodes | ticks | Redis cmds/s | Redis cmds per tick | Redis bytes in per tick | SQL statements per tick "
        "(median, min-max) | PG commits per tick | PG row writes per tick |"
    )
    print("|---|---|---|---|---|---|---|---|")
    for r in rows:
        lo, hi = r["sql_range"]
        print(
            f"| {r['nodes']} | {r['ticks']} | {r['redis_per_s']:.0f} | {r['redis_per_tick']:.0f} | "
            f"{r['bytes_per_tick']:.0f} | {r['sql_per_tick']:.0f} ({lo}-{hi}) | {r['commits_per_tick']:.1f} | "
            f"{r['writes_per_tick']:.0f} |"
        )


if __name__ == "__main__":
    main()
