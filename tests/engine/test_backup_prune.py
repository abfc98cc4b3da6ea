"""Retention with Proxmox Backup Server's rules, on simulated calendars worked out by hand from its documentation."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from engine.backup.prune import Backup, PruneOptions, prune
from engine.errors import ValidationError


def at(text: str) -> float:
    return datetime.fromisoformat(text).replace(tzinfo=UTC).timestamp()


def run(times: list[str], protected: tuple[str, ...] = (), **keep) -> dict[str, str]:
    """{time: reason kept, or 'remove'} for backups of container 100 at the given UTC times."""
    backups = [Backup(at(t), 100, t in protected, t) for t in times]
    return {d.backup.name: (d.reason if d.keep else "remove") for d in prune(backups, PruneOptions(**keep), UTC)}


def test_keep_last_keeps_the_newest():
    times = [f"2025-01-0{d} 02:00" for d in range(1, 6)]
    assert run(times, keep_last=3) == {
        "2025-01-05 02:00": "keep-last",
        "2025-01-04 02:00": "keep-last",
        "2025-01-03 02:00": "keep-last",
        "2025-01-02 02:00": "remove",
        "2025-01-01 02:00": "remove",
    }


def test_daily_keeps_the_latest_of_each_day_and_days_without_backups_do_not_count():
    times = ["2025-01-01 10:00", "2025-01-01 12:00", "2025-01-03 09:00", "2025-01-03 18:00", "2025-01-04 08:00"]
    assert run(times, keep_daily=2) == {
        "2025-01-04 08:00": "keep-daily",
        "2025-01-03 18:00": "keep-daily",
        "2025-01-03 09:00": "remove",
        "2025-01-01 12:00": "remove",
        "2025-01-01 10:00": "remove",
    }


def test_a_later_rule_skips_periods_an_earlier_rule_covered():
    times = ["2025-01-03 08:00", "2025-01-03 06:00", "2025-01-02 18:00", "2025-01-01 12:00"]
    assert run(times, keep_last=1, keep_daily=2) == {
        "2025-01-03 08:00": "keep-last",
        "2025-01-03 06:00": "remove",
        "2025-01-02 18:00": "keep-daily",
        "2025-01-01 12:00": "keep-daily",
    }


def test_weeks_are_iso_weeks_across_the_year_end():
    # 2024-12-30 is the Monday of ISO week 2025-W01; 2024-12-29 is the Sunday of 2024-W52.
    times = ["2025-01-05 02:00", "2024-12-30 02:00", "2024-12-29 02:00"]
    assert run(times, keep_weekly=2) == {
        "2025-01-05 02:00": "keep-weekly",
        "2024-12-30 02:00": "remove",
        "2024-12-29 02:00": "keep-weekly",
    }


def test_monthly_then_yearly():
    times = [
        "2025-03-15 00:00",
        "2025-03-01 00:00",
        "2025-02-10 00:00",
        "2025-01-05 00:00",
        "2024-12-31 00:00",
        "2023-06-01 00:00",
    ]
    assert run(times, keep_monthly=2, keep_yearly=2) == {
        "2025-03-15 00:00": "keep-monthly",
        "2025-03-01 00:00": "remove",
        "2025-02-10 00:00": "keep-monthly",
        "2025-01-05 00:00": "remove",
        "2024-12-31 00:00": "keep-yearly",
        "2023-06-01 00:00": "keep-yearly",
    }


def test_protected_backups_are_kept_and_do_not_count():
    times = ["2025-01-04 02:00", "2025-01-03 02:00", "2025-01-02 02:00", "2025-01-01 02:00"]
    assert run(times, protected=("2025-01-04 02:00", "2025-01-01 02:00"), keep_last=1) == {
        "2025-01-04 02:00": "protected",
        "2025-01-03 02:00": "keep-last",
        "2025-01-02 02:00": "remove",
        "2025-01-01 02:00": "protected",
    }


def test_no_rule_keeps_everything_and_containers_are_pruned_apart():
    backups = [
        Backup(at("2025-01-01 00:00"), 100),
        Backup(at("2025-01-02 00:00"), 100),
        Backup(at("2025-01-01 00:00"), 200),
    ]
    assert all(d.keep and d.reason == "keep-all" for d in prune(backups, PruneOptions()))
    decisions = prune(backups, PruneOptions(keep_last=1))
    assert [(d.backup.ctid, d.keep) for d in decisions] == [(100, True), (100, False), (200, True)]


def test_a_quarter_of_daily_backups():
    """Daily at 02:00 from 1 January to 31 March 2025 with keep-daily=7, keep-weekly=4, keep-monthly=3.

    Worked by hand: the 7 days are 25..31 March (31 March is the Monday of W14, 25..30 March are in W13);
    the weekly rule skips W13 and W14 and keeps the Sundays 23, 16, 9 and 2 March (W12..W09), marking the
    other days of those weeks (24..28 February among them) for removal; the monthly rule skips March (already
    covered) and the days already marked, so it keeps 23 February (not the 28th) and 31 January: fewer than 3,
    as no older month has a backup. This is the order of marking in Proxmox Backup Server's prune.
    """
    start = datetime(2025, 1, 1, 2, 0)
    times = [(start + timedelta(days=i)).isoformat(sep=" ", timespec="minutes") for i in range(90)]
    assert times[-1] == "2025-03-31 02:00"
    result = run(times, keep_daily=7, keep_weekly=4, keep_monthly=3)
    kept = {t: r for t, r in result.items() if r != "remove"}
    expected = {f"2025-03-{d:02d} 02:00": "keep-daily" for d in range(25, 32)}
    expected |= {f"2025-03-{d:02d} 02:00": "keep-weekly" for d in (2, 9, 16, 23)}
    expected |= {"2025-02-23 02:00": "keep-monthly", "2025-01-31 02:00": "keep-monthly"}
    assert kept == expected
    assert len(result) - len(kept) == 90 - 13


def test_options_parse_and_refuse_bad_values():
    assert PruneOptions.parse("keep-last=3,keep-daily=7") == PruneOptions(keep_last=3, keep_daily=7)
    assert PruneOptions.parse("keep-last=3,keep-daily=7").render() == "keep-last=3,keep-daily=7"
    with pytest.raises(ValidationError, match="keep-often"):
        PruneOptions.parse("keep-often=3")
    with pytest.raises(ValidationError, match="whole number"):
        PruneOptions.parse("keep-last=x")
    with pytest.raises(ValidationError, match="keep-last"):
        PruneOptions(keep_last=-1)


def test_keep_all_keeps_everything_and_refuses_other_rules():
    """Proxmox's prune-backups keep-all: a boolean; with a rule above 0 it is refused, with rules at 0 it wins."""
    options = PruneOptions.parse("keep-all=1")
    assert options == PruneOptions(keep_all=True) and not options.active() and options.render() == "keep-all=1"
    times = ["2025-01-01 00:00", "2025-01-02 00:00", "2025-01-03 00:00"]
    assert run(times, keep_all=True) == {t: "keep-all" for t in times}
    assert PruneOptions.parse("keep-all=1,keep-last=0").active() is False
    assert PruneOptions.parse("keep-all=0,keep-last=2") == PruneOptions(keep_all=False, keep_last=2)
    with pytest.raises(ValidationError, match="keep-all cannot be set together with other options"):
        PruneOptions.parse("keep-all=1,keep-daily=7")
    with pytest.raises(ValidationError, match="keep-all"):
        PruneOptions.parse("keep-all=maybe")


def test_prune_cli_keep_all(tmp_path):
    import json
    import subprocess
    import sys
    from pathlib import Path

    for stamp in ("2025_01_01-00_00_00", "2025_01_02-00_00_00"):
        (tmp_path / f"vzdump-lxc-101-{stamp}.tar.zst").write_bytes(b"x")
    root = Path(__file__).resolve().parents[2]

    def cli(*args):
        return subprocess.run(
            [
                sys.executable,
                "-m",
                "engine.backup",
                "--root",
                str(tmp_path / "state"),
                "-o",
                "json",
                "prune",
                "--dumpdir",
                str(tmp_path),
                *args,
            ],
            cwd=root,
            capture_output=True,
            text=True,
        )

    done = cli("--keep-all")
    assert done.returncode == 0, done.stderr
    assert [row["action"] for row in json.loads(done.stdout)] == ["keep", "keep"]
    refused = cli("--keep-all", "--keep-last", "1")
    assert refused.returncode != 0 and "keep-all cannot be set together" in refused.stderr
    assert len(list(tmp_path.glob("vzdump-*"))) == 2
