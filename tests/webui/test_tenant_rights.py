"""Tenants' rights through the real API, from the side of a user with the narrowest role that could try:
root-equivalent settings, backup archives, pools, storage, a destroyed container's grants, and the
managers of permissions.  Each refusal is a 403 naming the privilege or key, and nothing changed."""

from __future__ import annotations

import pytest
from django.utils import timezone
from rest_framework.test import APIClient

from tests.webui.api_helpers import create_body, error_of
from webui.models import AccessEntry, BackupArchive, Container, Job, Pool, Role

pytestmark = pytest.mark.django_db

ROOTFS = "local:subvol-{ctid}-disk-0,size=8G"


def api(user) -> APIClient:
    client = APIClient()
    client.force_authenticate(user)
    return client


def grant(user, role: str, path: str, privileges: list[str] | None = None) -> None:
    role_row = Role.objects.get_or_create(name=role, defaults={"privileges": privileges or []})[0]
    AccessEntry.objects.create(user=user, role=role_row, path=path)


def refused(response, *words: str) -> str:
    assert response.status_code == 403, response.content
    message = error_of(response)["message"]
    assert all(word in message for word in words), message
    return message


def ct(node, ctid: int, status: str = "stopped", **config) -> Container:
    values = {"hostname": f"t{ctid}", "unprivileged": "1", "rootfs": ROOTFS.format(ctid=ctid), **config}
    return Container.objects.create(
        ctid=ctid,
        node=node,
        status=status,
        hostname=values["hostname"],
        unprivileged=values["unprivileged"] == "1",
        config=values,
    )


@pytest.fixture
def tenant(make_user, node):
    """ContainerAdmin on one node, and room on the storage ``local``: what a tenant is usually given."""
    user = make_user("tenant", "ContainerAdmin", node.path)
    grant(user, "SpaceOnly", "/storage/local", ["Datastore.AllocateSpace", "Datastore.Audit"])
    return user


# ---- item 1: root-equivalent settings ----------------------------------------------------------------
@pytest.mark.parametrize(
    ("changes", "key"),
    [({"unprivileged": False, "nesting": False}, "unprivileged")],
)
def test_a_tenant_cannot_create_a_privileged_container(tenant, make_user, node, changes, key):
    response = api(tenant).post("/api/containers/", create_body(node, 4501, **changes), format="json")
    refused(response, key, "superuser")
    assert not Job.objects.exists() and not Container.objects.exists()
    response = api(make_user("root", superuser=True)).post(
        "/api/containers/", create_body(node, 4501, **changes), format="json"
    )
    assert response.status_code == 202, response.content
    assert Job.objects.get().params["options"]["unprivileged"] == "0"


def test_create_needs_room_on_the_target_storage(make_user, node):
    user = make_user("no-space", "ContainerAdmin", node.path)
    refused(
        api(user).post("/api/containers/", create_body(node, 4502), format="json"),
        "Datastore.AllocateSpace",
        "/storage/local",
    )
    assert not Job.objects.exists() and not Container.objects.exists()


@pytest.mark.parametrize(
    ("changes", "key"),
    [
        ({"mp0": "/srv,mp=/mnt/host"}, "mp0"),
        ({"features": "nesting=1,fuse=1"}, "features"),
        ({"features": "keyctl=1"}, "features"),
        ({"dev0": "/dev/net/tun"}, "dev0"),
        ({"hookscript": "local:snippets/hook.sh"}, "hookscript"),
    ],
)
def test_a_tenant_cannot_set_root_equivalent_keys_in_a_config_edit(tenant, node, changes, key):
    container = ct(node, 4510)
    before = dict(container.config)
    refused(api(tenant).put("/api/containers/4510/config/", {"changes": changes}, format="json"), key, "superuser")
    container.refresh_from_db()
    assert container.config == before and not Job.objects.exists()


def test_the_wizard_refuses_nesting_for_a_privileged_container(make_user, node):
    root = make_user("root-n", superuser=True)
    body = create_body(node, 4503, unprivileged=False, nesting=True)
    response = api(root).post("/api/containers/", body, format="json")
    assert response.status_code == 400 and "unprivileged" in response.json()["error"]["fields"]["nesting"][0]
    assert not Job.objects.exists()


def test_features_of_a_privileged_container_and_its_bind_mounts_stay_a_superusers(tenant, node, make_user):
    ct(node, 4511, unprivileged="0", mp0="/srv/share,mp=/share")
    client = api(tenant)
    refused(
        client.put("/api/containers/4511/config/", {"changes": {"features": "nesting=1"}}, format="json"),
        "features",
        "privileged",
    )
    refused(client.put("/api/containers/4511/config/", {"delete": ["mp0"]}, format="json"), "mp0")
    # What does not touch them stays the tenant's to change.
    assert client.put("/api/containers/4511/config/", {"changes": {"memory": 1024}}, format="json").status_code == 202
    assert Job.objects.count() == 1
    root = api(make_user("root", superuser=True))
    assert (
        root.put(
            "/api/containers/4511/config/", {"changes": {"features": "nesting=1,fuse=1"}}, format="json"
        ).status_code
        == 202
    )


def test_a_mount_point_volume_needs_room_on_its_storage(tenant, node):
    ct(node, 4512)
    client = api(tenant)
    refused(
        client.put("/api/containers/4512/config/", {"changes": {"mp1": "other:4,mp=/data"}}, format="json"),
        "Datastore.AllocateSpace",
        "/storage/other",
    )
    assert not Job.objects.exists()
    response = client.put("/api/containers/4512/config/", {"changes": {"mp1": "local:4,mp=/data"}}, format="json")
    assert response.status_code == 202, response.content


def test_a_clone_of_a_privileged_container_is_a_superusers(tenant, node):
    ct(node, 4520, unprivileged="0")
    refused(
        api(tenant).post("/api/containers/4520/clone/", {"newid": 4521}, format="json"), "unprivileged", "superuser"
    )
    assert not Job.objects.exists() and not Container.objects.filter(ctid=4521).exists()


def test_clone_and_resize_need_room_on_the_storage_they_allocate_on(tenant, node, make_user):
    ct(node, 4522)
    client = api(tenant)
    refused(
        client.post("/api/containers/4522/clone/", {"newid": 4523, "storage": "fast"}, format="json"),
        "Datastore.AllocateSpace",
        "/storage/fast",
    )
    assert not Container.objects.filter(ctid=4523).exists()
    no_space = api(make_user("no-space", "ContainerAdmin", node.path))
    refused(no_space.post("/api/containers/4522/clone/", {"newid": 4523}, format="json"), "/storage/local")
    refused(
        no_space.put("/api/containers/4522/resize/", {"disk": "rootfs", "size": "+1G"}, format="json"),
        "Datastore.AllocateSpace",
        "/storage/local",
    )
    assert not Job.objects.exists()
    assert (
        client.put("/api/containers/4522/resize/", {"disk": "rootfs", "size": "+1G"}, format="json").status_code == 202
    )


# ---- item 4: backup archives ---------------------------------------------------------------------------
@pytest.fixture
def archive(node):
    ct(node, 4530)
    return BackupArchive.objects.create(
        node=node,
        storage="local",
        ctid=4530,
        size=1,
        format="zstd",
        name="vzdump-lxc-4530-2026_01_02-03_04_05.tar.zst",
        time=timezone.now(),
    )


def test_room_on_a_storage_opens_no_archive_of_another_tenant(make_user, archive):
    user = make_user("space-only")
    grant(user, "SpaceOnly", "/storage/local", ["Datastore.AllocateSpace", "Datastore.Audit"])
    client = api(user)
    assert client.get("/api/backups/").json()["results"] == []
    for method, url, body in (
        ("post", "restore/", {"ctid": 4539}),
        ("post", "verify/", {}),
        ("post", "protect/", {"protected": True}),
        ("post", "protect/", {"notes": "x"}),
        ("delete", "", None),
    ):
        response = getattr(client, method)(f"/api/backups/{archive.pk}/{url}", body, format="json")
        assert response.status_code in (403, 404), response.content
        if response.status_code == 403:
            refused(response, "VM.Backup", "/ct/4530")
    assert not Job.objects.exists() and not Container.objects.filter(ctid=4539).exists()
    # Without the list filter (a user who can see it some other way), the action itself still refuses.
    from django.core.exceptions import PermissionDenied

    from webui.access import Access
    from webui.actions import backups

    with pytest.raises(PermissionDenied, match="VM.Backup on /ct/4530"):
        backups.delete(Access(user), archive)


def test_vm_backup_without_the_storage_opens_nothing_either(make_user, archive):
    user = make_user("backup-only")
    grant(user, "BackupOnly", "/ct/4530", ["VM.Audit", "VM.Backup"])
    client = api(user)
    assert client.get("/api/backups/").json()["results"] == []
    from django.core.exceptions import PermissionDenied

    from webui.access import Access
    from webui.actions import backups

    with pytest.raises(PermissionDenied, match="Datastore.AllocateSpace on /storage/local"):
        backups.verify(Access(user), archive)
    assert not Job.objects.exists()


def test_an_archive_of_a_gone_container_answers_to_grants_on_its_node(tenant, make_user, archive, node):
    Container.objects.filter(ctid=4530).delete()
    client = api(tenant)
    assert [a["ctid"] for a in client.get("/api/backups/").json()["results"]] == [4530]
    assert client.post(f"/api/backups/{archive.pk}/verify/", {}, format="json").status_code == 202
    stranger = make_user("other-node", "ContainerAdmin", "/nodes/elsewhere")
    grant(stranger, "SpaceOnly", "/storage/local")
    assert api(stranger).get("/api/backups/").json()["results"] == []


def test_restore_over_a_container_needs_vm_allocate_on_it(make_user, archive):
    user = make_user("restorer")
    grant(user, "BackupAndSpace", "/", ["VM.Audit", "VM.Backup", "Datastore.AllocateSpace", "Datastore.Audit"])
    response = api(user).post(f"/api/backups/{archive.pk}/restore/", {"ctid": 4530, "force": True}, format="json")
    refused(response, "VM.Allocate", "/ct/4530")
    assert not Job.objects.exists()


# ---- item 7: pools, and what a destroyed container leaves -------------------------------------------
def test_moving_a_container_into_ones_pool_needs_vm_allocate_on_it(make_user, node):
    ct(node, 4540)
    pool = Pool.objects.create(name="mine")
    user = make_user("pooler", "Auditor", "/")
    grant(user, "PoolAdmin", "/", ["Pool.Allocate", "Pool.Audit"])
    refused(api(user).put("/api/containers/4540/pool/", {"pool": pool.name}, format="json"), "VM.Allocate", "/ct/4540")
    assert Container.objects.get(ctid=4540).pool is None


def test_a_gone_containers_grants_pass_to_no_successor(make_user, node):
    """The row goes however the container went (destroyed, failed create, gone from its node)."""
    ct(node, 4550)
    user = make_user("owner", "ContainerAdmin", "/ct/4550")
    assert api(user).get("/api/containers/4550/").status_code == 200
    Container.objects.filter(ctid=4550).delete()
    assert not AccessEntry.objects.filter(path="/ct/4550").exists()
    ct(node, 4550)  # the next container given the ID
    assert api(user).get("/api/containers/4550/").status_code == 404


def test_the_pages_mark_a_privileged_container_as_root_equivalent(tenant, node, client):
    ct(node, 4560, unprivileged="0")
    ct(node, 4561)
    client.force_login(tenant)
    page = client.get("/ct/4560/").content.decode()
    assert 'id="ct-privileged"' in page and "root-equivalent" in page
    assert 'data-ct-privileged="4560"' in page and 'data-ct-privileged="4561"' not in page  # the tree
    assert 'id="ct-privileged"' not in client.get("/ct/4561/").content.decode()
