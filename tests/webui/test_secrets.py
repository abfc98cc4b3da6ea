"""Root's password given at create is hashed before anything is queued, stored or audited (issue: secrets in
clear); SSH keys stay out of the audit log's text.  Checked from an Auditor's side, through the API and in the
database, and inside the container: its shadow has the hash, and the hash is the password's."""

from __future__ import annotations

import json
import subprocess

import pytest
from django.db import connection

from tests.webui.api_helpers import client_for, create_body, fresh_throttles, template_row  # noqa: F401
from tests.webui.conftest import wait_job
from webui.models import AuditEntry, Job, JobLine

pytestmark = pytest.mark.django_db(transaction=True)

PASSWORD = "Clear-Text-Pw-4711"
KEY = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIOMqqnkVzrm0SdG6UOoqKLsabgH5C9okWi0dh2l9GKJl alice@example"
KEY_BLOB = KEY.split()[1]


def _dump(sql: str) -> str:
    with connection.cursor() as cursor:
        cursor.execute(sql)
        return json.dumps(cursor.fetchall(), default=str)


def test_a_create_password_is_never_kept_in_clear(agent, node, stored_busybox, ctid_factory, engine, make_user, roles):
    from webui.models import AccessEntry

    user = make_user("tenant", "ContainerAdmin", node.path)
    AccessEntry.objects.create(user=user, role=roles["ContainerAdmin"], path="/storage/local")  # room for its disk
    auditor = make_user("auditor", "Auditor", "/")
    template_row(node, stored_busybox.removeprefix("local:vztmpl/"))
    ctid = ctid_factory()
    body = create_body(
        node,
        ctid,
        template=stored_busybox,
        password=PASSWORD,
        password_confirm=PASSWORD,
        ssh_public_keys=KEY,
        memory=64,
        swap=0,
        disk_size=1,
    )
    response = client_for(user).post("/api/containers/", body, format="json")
    assert response.status_code == 202, response.content
    job = wait_job(Job.objects.get(pk=response.json()["job"]["id"]))
    assert job.status == "ok", list(job.lines.values_list("text", flat=True))

    # The Auditor's view through the API: the audit log, the job and its log.
    reader = client_for(auditor)
    audit = reader.get("/api/audit/", {"limit": 1000})
    assert audit.status_code == 200
    seen = (
        audit.content.decode()
        + reader.get(f"/api/jobs/{job.pk}/").content.decode()
        + reader.get(f"/api/jobs/{job.pk}/log/").content.decode()
    )
    assert PASSWORD not in seen and KEY_BLOB not in seen
    entry = AuditEntry.objects.get(action="vzcreate", path=f"/ct/{ctid}")
    assert entry.detail["params"]["password_hash"] == "set" and entry.detail["params"]["ssh_public_keys"] == "1 key(s)"

    # The database itself: job parameters, job log lines, audit rows.
    stored = (
        _dump(f"SELECT params FROM {Job._meta.db_table}")
        + _dump(f"SELECT text FROM {JobLine._meta.db_table}")
        + _dump(f"SELECT detail FROM {AuditEntry._meta.db_table}")
    )
    assert PASSWORD not in stored and KEY_BLOB not in _dump(f"SELECT detail FROM {AuditEntry._meta.db_table}")
    hashed = Job.objects.get(pk=job.pk).params["password_hash"]
    assert hashed.startswith("$6$")
    # The worker's log file neither.
    assert PASSWORD.encode() not in agent.log.read_bytes()

    # Inside: root's shadow entry is that hash, and hashing the password with its salt gives it back.
    engine.start(ctid)
    try:
        code, out, _ = engine.exec_output(ctid, ["/bin/sh", "-c", "grep ^root: /etc/shadow | cut -d: -f2"])
        assert code == 0 and out.decode().strip() == hashed
    finally:
        engine.stop(ctid)
    salt = hashed.split("$")[2]
    again = subprocess.run(
        ["openssl", "passwd", "-6", "-salt", salt, "-stdin"],
        input=PASSWORD + "\n",
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    assert again == hashed


def test_a_bad_password_is_refused_before_anything_is_queued(node):
    from django.core.exceptions import ValidationError

    from webui.models.queue import submit

    with pytest.raises(ValidationError, match="at least 5"):
        submit("vzcreate", node, "/ct/4711", "4711", params={"template": "x", "password": "abc"})
    assert not Job.objects.exists() and not AuditEntry.objects.exists()


def test_the_migration_scrubs_rows_left_in_clear(node):
    from importlib import import_module

    from django.apps import apps

    Job.objects.create(
        node=node,
        kind="vzcreate",
        path="/ct/4712",
        target="4712",
        params={"template": "x", "password": PASSWORD, "ssh_public_keys": KEY},
    )
    AuditEntry.objects.create(
        username="old",
        action="vzcreate",
        path="/ct/4712",
        detail={"job": 1, "params": {"password": PASSWORD, "ssh_public_keys": KEY}},
    )
    import_module("webui.migrations.0007_scrub_clear_passwords").scrub(apps, None)
    params = Job.objects.get(target="4712").params
    assert "password" not in params and params["password_hash"].startswith("$6$")
    detail = AuditEntry.objects.get(username="old").detail
    assert detail["params"] == {"password_hash": "set", "ssh_public_keys": "1 key(s)"}
