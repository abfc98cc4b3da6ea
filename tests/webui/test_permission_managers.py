"""Whoever holds Permissions.Modify manages access, but never superusers, and hands out nothing they do not
hold: through ``/api/access/`` and through the admin."""

from __future__ import annotations

import pytest
from django.contrib.auth.models import Group, Permission, User
from rest_framework.test import APIClient

from tests.webui.api_helpers import error_of
from webui.models import AccessEntry, Role

pytestmark = pytest.mark.django_db


@pytest.fixture
def manager(make_user, roles):
    """Permissions.Modify (and seeing things) on /, nothing else: the narrowest role that could try."""
    role = Role.objects.create(
        name="PermManager", privileges=["Permissions.Modify", "Sys.Audit", "VM.Audit", "Datastore.Audit", "Pool.Audit"]
    )
    user = make_user("manager")
    AccessEntry.objects.create(user=user, role=role, path="/")
    return user


def api(user) -> APIClient:
    client = APIClient()
    client.force_authenticate(user)
    return client


def refused(response, *words) -> None:
    assert response.status_code == 403, response.content
    assert all(w in error_of(response)["message"] for w in words), error_of(response)["message"]


def test_a_manager_grants_only_what_they_hold(manager, make_user):
    client, other = api(manager), make_user("other")
    entries = AccessEntry.objects.count()
    refused(
        client.post("/api/access/acl/", {"path": "/", "user": "manager", "role": "Administrator"}, format="json"),
        "Sys.Modify",
        "on /",
    )
    refused(
        client.post("/api/access/acl/", {"path": "/ct/100", "user": "other", "role": "ContainerAdmin"}, format="json"),
        "VM.Allocate",
    )
    assert AccessEntry.objects.count() == entries
    response = client.post("/api/access/acl/", {"path": "/", "user": "other", "role": "Auditor"}, format="json")
    assert response.status_code == 201, response.content  # Auditor's privileges are all the manager's
    admin_grant = AccessEntry.objects.create(user=other, role=Role.objects.get(name="Administrator"), path="/")
    refused(client.delete(f"/api/access/acl/{admin_grant.pk}/"), "Sys.Modify")
    assert AccessEntry.objects.filter(pk=admin_grant.pk).exists()


def test_a_manager_makes_no_role_beyond_what_they_hold(manager):
    client = api(manager)
    refused(
        client.post("/api/access/roles/", {"name": "Wide", "privileges": ["VM.Allocate"]}, format="json"), "VM.Allocate"
    )
    assert not Role.objects.filter(name="Wide").exists()
    Role.objects.create(name="Narrow", privileges=["VM.Audit"])
    refused(
        client.patch("/api/access/roles/Narrow/", {"privileges": ["VM.Audit", "Sys.Modify"]}, format="json"),
        "Sys.Modify",
    )
    assert Role.objects.get(name="Narrow").privileges == ["VM.Audit"]


def test_a_manager_cannot_touch_a_superuser(manager, make_user):
    root = make_user("root", superuser=True)
    client = api(manager)
    refused(client.patch("/api/access/users/root/", {"email": "mine@example.org"}, format="json"), "superuser")
    refused(client.patch("/api/access/users/root/", {"password": "takeover-123"}, format="json"), "superuser")
    refused(client.post("/api/access/users/root/disable/"), "superuser")
    refused(
        client.post("/api/access/acl/", {"path": "/", "user": "root", "role": "NoAccess"}, format="json"), "superuser"
    )
    root.refresh_from_db()
    assert root.is_active and root.email == "root@example.org" and root.check_password("correct horse battery")
    assert not AccessEntry.objects.filter(user=root).exists()
    response = client.patch("/api/access/users/manager/", {"is_superuser": True}, format="json")
    manager.refresh_from_db()
    assert not manager.is_superuser and response.status_code in (200, 400)


def test_joining_a_group_hands_out_its_grants(manager, roles):
    admins = Group.objects.create(name="admins")
    AccessEntry.objects.create(group=admins, role=roles["Administrator"], path="/")
    client = api(manager)
    refused(client.patch("/api/access/users/manager/", {"groups": ["admins"]}, format="json"), "group 'admins'")
    refused(
        client.post(
            "/api/access/users/", {"username": "sock", "password": "puppet-123", "groups": ["admins"]}, format="json"
        ),
        "group 'admins'",
    )
    assert not manager.groups.exists() and not User.objects.filter(username="sock").exists()


def test_the_admin_keeps_the_same_rules(manager, make_user, client):
    root = make_user("root", superuser=True)
    manager.is_staff = True
    manager.save()
    manager.user_permissions.set(Permission.objects.filter(content_type__app_label__in=["auth", "webui"]))
    client.force_login(manager)
    assert client.get(f"/admin/auth/user/{root.pk}/change/").status_code in (200, 403)
    response = client.post(
        f"/admin/auth/user/{root.pk}/change/",
        {
            "username": "root",
            "email": "x@example.org",
            "is_active": "on",
            "date_joined_0": "2026-01-01",
            "date_joined_1": "00:00:00",
        },
    )
    root.refresh_from_db()
    assert root.email == "root@example.org" and response.status_code == 403
    assert client.post(f"/admin/auth/user/{root.pk}/delete/", {"post": "yes"}).status_code == 403
    assert User.objects.filter(pk=root.pk).exists()
    response = client.post(
        f"/admin/auth/user/{manager.pk}/change/",
        {
            "username": "manager",
            "email": "m@example.org",
            "is_active": "on",
            "is_staff": "on",
            "is_superuser": "on",
            "date_joined_0": "2026-01-01",
            "date_joined_1": "00:00:00",
        },
    )
    manager.refresh_from_db()
    assert not manager.is_superuser
    response = client.post(
        "/admin/webui/accessentry/add/",
        {"path": "/", "user": manager.pk, "role": Role.objects.get(name="Administrator").pk, "propagate": "on"},
    )
    assert response.status_code == 403
    assert not AccessEntry.objects.filter(user=manager, role__name="Administrator").exists()
    # Without Permissions.Modify the staff flag and Django's permissions open none of it.
    AccessEntry.objects.filter(user=manager).delete()
    assert client.get("/admin/webui/accessentry/").status_code == 403
