"""``manage.py policy``: the same checks and rights as the API, tables or JSON, and honest exit codes."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from tests.webui.conftest import REPO
from webui.models import AuditEntry, BackupSchedule, ProtectionPolicy

pytestmark = pytest.mark.django_db(transaction=True)


def policy_cli(env, *args) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "manage.py", "policy", *args], cwd=REPO, env=env, capture_output=True, text=True, timeout=120
    )


def test_policy_command(services_env, make_user, node):
    make_user("cli-admin", superuser=True)
    make_user("cli-auditor", "Auditor", "/")
    env = {**services_env, "CAISSON_ADMIN_USER": "cli-admin"}
    done = policy_cli(env, "target-set", "ops", "kind=webhook", "url=http://127.0.0.1:9/hook")
    assert done.returncode == 0, done.stderr
    done = policy_cli(env, "target-set", "ops", 'headers={"Authorization": "Bearer cli-s3cr3t"}')
    assert done.returncode == 0, done.stderr
    shown = policy_cli(env, "targets").stdout + policy_cli(env, "-o", "json", "targets").stdout
    assert "SECRET HEADERS" in shown and "Authorization" in shown and "cli-s3cr3t" not in shown
    bad = policy_cli(env, "target-set", "ops", 'headers={"Host": "x"}')
    assert bad.returncode == 2 and "header 'Host' is set by Caisson itself" in bad.stderr
    done = policy_cli(
        env,
        "create",
        "nightly",
        "snapshot_schedule=hourly",
        "snapshot_expiry=1d",
        "snap_keep_last=3",
        'backup={"schedule": "02:00", "keep_daily": 7}',
        "targets=ops",
    )
    assert done.returncode == 0, done.stderr
    assert "nightly" in done.stdout.splitlines()[1] and "NEXT RUN" in done.stdout.splitlines()[0]
    policy = ProtectionPolicy.objects.get(name="nightly")
    assert policy.backup.keep_daily == 7 and [t.name for t in policy.targets.all()] == ["ops"]

    listed = json.loads(policy_cli(env, "-o", "json", "list").stdout)
    assert listed[0]["snap_keep_last"] == 3 and listed[0]["backup"]["schedule"] == "02:00"
    runs = json.loads(policy_cli(env, "-o", "json", "preview", "nightly", "count=4").stdout)
    assert len(runs) == 4 and {r["kind"] for r in runs} <= {"snapshot", "backup"}

    bad = policy_cli(env, "set", "nightly", "snapshot_expiry=soon")
    assert bad.returncode == 2 and "snapshot_expiry" in bad.stderr
    assert policy_cli(env, "show", "nowhere").returncode == 3
    assert policy_cli(env, "--user", "ghost", "list").returncode == 3
    denied = policy_cli(env, "--user", "cli-auditor", "set", "nightly", "enabled=false")
    assert denied.returncode == 4 and "permission denied" in denied.stderr
    assert policy_cli(env, "run", "nightly").returncode == 6  # no container selected anywhere
    policy.refresh_from_db()
    assert policy.enabled and policy.snapshot_expiry == "1d"

    assert policy_cli(env, "delete", "nightly").returncode == 0
    assert not ProtectionPolicy.objects.exists() and not BackupSchedule.objects.exists()
    assert AuditEntry.objects.filter(action="policy.delete", username="cli-admin").exists()
