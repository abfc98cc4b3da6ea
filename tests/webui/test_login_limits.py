"""Failed logins are limited on every login path (the page, Django's admin, API tokens), by normalised user
name, by address and by network (/24, /64), with one counter across paths and a clear 429 with the wait."""

from __future__ import annotations

import pytest
from django.test import Client
from rest_framework.test import APIClient

from tests.webui.api_helpers import fresh_throttles  # noqa: F401 - fixture: an empty cache per test
from tests.webui.conftest import PASSWORD
from webui.login_limits import network_of, normalise_username
from webui.models import ApiToken, AuditEntry

pytestmark = pytest.mark.django_db


def page_login(address: str, username: str, password: str = "wrong"):
    return Client(REMOTE_ADDR=address).post("/login/", {"username": username, "password": password})


def admin_login(address: str, username: str, password: str = "wrong"):
    return Client(REMOTE_ADDR=address).post("/admin/login/?next=/admin/", {"username": username, "password": password})


def token_login(address: str, value: str):
    client = APIClient(REMOTE_ADDR=address)
    client.credentials(HTTP_AUTHORIZATION=f"Token {value}")
    return client.get("/api/nodes/")


def test_user_names_and_networks_are_normalised():
    assert normalise_username(" Ｃａｒｏｌ ") == normalise_username("CAROL") == "carol"
    assert network_of("192.0.2.77") == "192.0.2.0/24" and network_of("::ffff:192.0.2.9") == "192.0.2.0/24"
    assert network_of("2001:db8:1:2:a:b:c:d") == "2001:db8:1:2::/64" and network_of("not an ip") is None


def test_spellings_of_one_name_share_its_counter(make_user, settings):
    settings.LOGIN_FAILURE_LIMIT = 3
    make_user("carol")
    for address, name in (("192.0.2.1", "Carol"), ("198.51.100.1", " carol "), ("203.0.113.1", "ｃａｒｏｌ")):
        assert page_login(address, name).status_code == 200
    refused = page_login("10.9.9.9", "carol", PASSWORD)  # the right password, from a fresh address
    assert refused.status_code == 429 and "try again in" in refused.content.decode()
    assert AuditEntry.objects.filter(action="login", outcome="failed").count() == 3


@pytest.mark.parametrize(
    "first, neighbour, outside",
    [
        ("192.0.2.1", "192.0.2.200", "192.0.3.1"),
        ("2001:db8:0:1::1", "2001:db8:0:1:ffff::9", "2001:db8:0:2::1"),
    ],
    ids=["ipv4-24", "ipv6-64"],
)
def test_a_network_is_limited_beside_each_address(make_user, settings, first, neighbour, outside):
    settings.LOGIN_FAILURE_LIMIT, settings.LOGIN_FAILURE_NETWORK_LIMIT = 100, 4
    make_user("dave")
    prefix = first.rsplit(".", 1)[0] + "." if "." in first else first.rsplit(":", 1)[0] + ":"
    for n in range(4):  # four addresses of one network, one failure each: no address reaches its own limit
        assert page_login(f"{prefix}{n + 10}", f"user{n}").status_code == 200
    assert page_login(neighbour, "dave", PASSWORD).status_code == 429
    assert page_login(outside, "dave", PASSWORD).status_code == 302


def test_the_admin_login_is_limited_and_shares_the_counters(make_user, settings):
    settings.LOGIN_FAILURE_LIMIT = 2
    make_user("erin", superuser=True)
    assert admin_login("192.0.2.5", "erin").status_code == 200
    assert page_login("192.0.2.5", "erin").status_code == 200
    refused = admin_login("192.0.2.5", "erin", PASSWORD)
    assert refused.status_code == 429 and "try again in" in refused.content.decode()
    assert page_login("192.0.2.5", "erin", PASSWORD).status_code == 429
    assert AuditEntry.objects.filter(username="erin", outcome="denied").count() == 2


def test_the_admin_login_still_works(make_user):
    make_user("frank", superuser=True)
    assert admin_login("192.0.2.6", "frank", PASSWORD).status_code == 302


def test_token_failures_count_by_name_and_refuse_with_429(make_user, settings):
    settings.LOGIN_FAILURE_LIMIT = 3
    user = make_user("grace", "Auditor", "/")
    _, value = ApiToken.issue(user, "ci")
    assert token_login("192.0.2.20", value).status_code == 200
    for address, name in (("192.0.2.21", "Grace"), ("198.51.100.21", "GRACE "), ("203.0.113.21", "grace")):
        assert token_login(address, f"{name}!ci=wrong").status_code == 401
    refused = token_login("10.1.1.1", value)
    assert refused.status_code == 429 and int(refused["Retry-After"]) > 0
    assert "try again in" in refused.json()["error"]["message"]
    # Token failures count for the page too: one limit per name, whatever the path.
    assert page_login("10.2.2.2", "grace", PASSWORD).status_code == 429
