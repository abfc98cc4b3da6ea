"""Datacenter -> Protection through Django's test client: what each user sees, saving a policy with its backup
part and a notification target, and a refusal that names the field."""

from __future__ import annotations

import pytest
from django.contrib.messages import get_messages
from django.core.cache import cache
from django.test import Client

from tests.webui.conftest import PASSWORD
from webui.models import BackupSchedule, NotificationTarget, ProtectionPolicy

pytestmark = pytest.mark.django_db


@pytest.fixture(autouse=True)
def clean_cache():
    cache.clear()
    yield
    cache.clear()


def signed_in(user) -> Client:
    client = Client()
    assert client.login(username=user.username, password=PASSWORD)
    return client


def test_protection_page_saves_a_policy_and_a_target(make_user, node):
    admin = signed_in(make_user("pp-page-admin", superuser=True))
    page = admin.get("/datacenter/protection/")
    assert page.status_code == 200 and b"No protection policies yet." in page.content
    assert b'href="/datacenter/protection/"' in page.content  # the tree's entry

    done = admin.post(
        "/datacenter/protection/targets/save",
        {"name": "ops", "kind": "mail", "mail_to": "ops@example.org", "enabled": "1"},
    )
    assert done.status_code == 302 and NotificationTarget.objects.get().mail_list == ["ops@example.org"]
    form = {
        "name": "web",
        "enabled": "1",
        "selection": "tag",
        "tag": "web",
        "snapshot_schedule": "*/6:00",
        "snapshot_pattern": "auto%d",
        "snapshot_expiry": "3d",
        "snap_keep_daily": "3",
        "backup_schedule": "sun 01:00",
        "backup_storage": "local",
        "backup_mode": "snapshot",
        "backup_keep_weekly": "4",
        "targets": ["ops"],
        "notify_when": "failure",
    }
    done = admin.post("/datacenter/protection/save", form)
    assert done.status_code == 302, done.content
    policy = ProtectionPolicy.objects.get()
    assert policy.snap_keep_daily == 3 and policy.backup.keep_weekly == 4 and policy.backup.tag == "web"
    page = admin.get("/datacenter/protection/").content.decode()
    assert 'data-policy="web"' in page and "daily=3" in page and "weekly=4" in page and "snapshot</div>" in page

    # A bad expiry is refused with a message naming it, and nothing changes; no backup schedule drops the job.
    refused = admin.post(f"/datacenter/protection/{policy.pk}/save", {**form, "snapshot_expiry": "soon"})
    assert refused.status_code == 302
    assert any("snapshot_expiry" in str(m) or "expiry" in str(m) for m in get_messages(refused.wsgi_request))
    policy.refresh_from_db()
    assert policy.snapshot_expiry == "3d"
    admin.post(f"/datacenter/protection/{policy.pk}/save", {**form, "backup_schedule": ""})
    assert not BackupSchedule.objects.exists()


def test_who_sees_the_page_and_its_forms(make_user, node):
    ProtectionPolicy.objects.create(name="seen")
    auditor = signed_in(make_user("pp-page-auditor", "Auditor", "/"))
    page = auditor.get("/datacenter/protection/")
    assert page.status_code == 200 and b'data-policy="seen"' in page.content and b'id="policy-form"' not in page.content
    assert auditor.post("/datacenter/protection/save", {"name": "x"}).status_code == 403
    stranger = signed_in(make_user("pp-page-nobody"))
    assert stranger.get("/datacenter/protection/").status_code == 403
    assert list(ProtectionPolicy.objects.values_list("name", flat=True)) == ["seen"]
