"""An isolated id range asked for through the API: the node allocates it, so a tenant may ask; a clone of the
container gets one of its own.  A user-supplied lxc.idmap stays a superuser's."""

from __future__ import annotations

import os

import pytest
from rest_framework.test import APIClient

from engine.idmap import IdMap
from engine.root_settings import root_equivalent, section_of
from tests.webui.api_helpers import create_body, fresh_throttles, template_row  # noqa: F401
from tests.webui.conftest import wait_job
from webui.models import Container, Job

pytestmark = pytest.mark.django_db(transaction=True)


def follow(response) -> Job:
    assert response.status_code == 202, response.content
    job = wait_job(Job.objects.get(pk=response.json()["job"]["id"]), timeout=120)
    assert job.status == "ok", list(job.lines.values_list("text", flat=True))
    return job


def own_map(engine, ctid: int) -> IdMap:
    lines = engine.config(ctid).current.raw_values("lxc.idmap")
    assert len(lines) == 2, lines
    return IdMap.from_lxc_lines(lines)


def test_a_tenant_creates_an_isolated_container_and_clones_it(
    agent, node, stored_busybox, ctid_factory, engine, make_user
):
    tenant = APIClient()
    tenant.force_authenticate(make_user("tenant", "ContainerAdmin", "/"))
    template_row(node, stored_busybox.removeprefix("local:vztmpl/"))
    ctid, copy, plain = ctid_factory(), ctid_factory(), ctid_factory()

    refused = tenant.post(
        "/api/containers/",
        create_body(node, ctid, template=stored_busybox, unprivileged=False, isolated_idmap=True),
        format="json",
    )
    assert refused.status_code == 400 and "isolated_idmap" in refused.json()["error"]["fields"], refused.content
    assert not Job.objects.exists()

    follow(
        tenant.post(
            "/api/containers/",
            create_body(node, ctid, template=stored_busybox, memory=128, swap=0, disk_size=0, isolated_idmap=True),
            format="json",
        )
    )
    follow(
        tenant.post(
            "/api/containers/",
            create_body(node, plain, template=stored_busybox, memory=128, swap=0, disk_size=0),
            format="json",
        )
    )
    assert engine.config(plain).current.raw_values("lxc.idmap") == []  # the default map, as before
    idmap = own_map(engine, ctid)
    assert idmap != engine.idmap and idmap.count == 65536
    assert abs(idmap.uid_base - engine.idmap.uid_base) >= 65536
    assert os.stat(engine._rootfs(engine.config(ctid)) / "bin" / "busybox").st_uid == idmap.uid_base

    # The clone (a tenant's, checked on the node) gets a range of its own, its files shifted into it.
    follow(tenant.post(f"/api/containers/{ctid}/clone/", {"newid": copy, "full": True}, format="json"))
    copy_map = own_map(engine, copy)
    assert abs(copy_map.uid_base - idmap.uid_base) >= 65536
    assert os.stat(engine._rootfs(engine.config(copy)) / "bin" / "busybox").st_uid == copy_map.uid_base
    engine.start(copy)
    with open(f"/proc/{engine.status(copy).pid}/uid_map") as handle:
        assert handle.read().split() == ["0", str(copy_map.uid_base), "65536"]
    for c in (copy, ctid, plain):
        engine.destroy(c, force=True)
        Container.objects.filter(ctid=c).delete()


def test_a_user_supplied_id_map_stays_root_equivalent():
    assert "lxc.idmap" in root_equivalent(
        section_of({}, [("lxc.idmap", "u 0 1048576 65536"), ("lxc.idmap", "g 0 1048576 65536")])
    )
