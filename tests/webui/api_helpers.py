"""What the API tests share: clients signed in as a user, and a create body that passes the wizard's checks."""

from __future__ import annotations

import pytest
from django.core.cache import cache
from django.utils import timezone
from rest_framework.test import APIClient


@pytest.fixture(autouse=True)
def fresh_throttles(settings):
    """Throttle counters live in the cache; each test starts with none.  (And passwords hash fast: the
    permission matrix makes a handful of users per test.)"""
    settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]
    cache.clear()
    yield
    cache.clear()


def client_for(user) -> APIClient:
    client = APIClient()
    if user is not None:
        client.force_login(user)
    return client


def template_row(node, name="busybox-1.36.1-1_amd64.tar.zst"):
    from webui.models import StoredTemplate

    return StoredTemplate.objects.get_or_create(
        node=node, name=name, defaults={"size": 1 << 20, "modified": timezone.now()}
    )[0]


def create_body(node, ctid, /, **changes) -> dict:
    body = {
        "node": node.name,
        "ctid": ctid,
        "hostname": f"web{ctid}",
        "password": "s3cret!",
        "password_confirm": "s3cret!",
        "template": f"local:vztmpl/{template_row(node).name}",
    }
    body.update(changes)
    return body


def error_of(response) -> dict:
    assert set(response.json()) == {"error"}, response.json()
    return response.json()["error"]
