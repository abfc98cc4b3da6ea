"""Node-aware pages in a real Chromium: the wizard's choices follow the chosen node, and the datacenter's node
list follows the nodes' heartbeats (a row goes offline when its ticks stop, online again with its load when
the real agent ticks)."""

from __future__ import annotations

import re
from datetime import timedelta

import pytest
from django.conf import settings
from django.utils import timezone

from tests.webui.api_helpers import template_row
from tests.webui.test_browser import LIVE, browser, expect, login, page  # noqa: F401 - fixtures
from tests.webui.test_node_pages import two_nodes
from webui.models import Container, Node, StorageMirror

pytestmark = pytest.mark.django_db(transaction=True)


def visible_options(page, name: str) -> list[str]:  # noqa: F811
    return page.eval_on_selector(
        f"select[name={name}]", "(s) => [...s.options].filter((o) => !o.hidden && o.value).map((o) => o.value)"
    )


def test_the_wizards_choices_change_with_the_node(page, web, node, make_user):  # noqa: F811
    a, b = two_nodes(node)
    Node.objects.filter(pk=a.pk).update(last_seen=timezone.now())
    make_user("wizard", superuser=True)
    login(page, web, "wizard")
    page.goto(f"{web}/create/")
    busybox = f"local:vztmpl/{template_row(a).name}"
    debian = "local:vztmpl/debian-12-standard_12.7-1_amd64.tar.zst"
    for chosen, storage, bridge, template in ((b, "fast", "vmbr8", debian), (a, "local", "vmbr7", busybox)):
        page.select_option("#id_node", chosen.name)
        assert visible_options(page, "storage") == [storage]
        assert page.input_value("#id_storage") == storage  # the node's first storage is picked for it
        assert visible_options(page, "bridge") == [bridge]
        assert visible_options(page, "template") == [template]


def test_the_node_list_follows_the_heartbeats(page, web, agent, node, make_user):  # noqa: F811
    from tasks.celery import app

    Node.objects.create(name="node-b", info={"load": [3.5, 2, 1]}, last_seen=timezone.now() - timedelta(hours=1))
    Container.objects.create(ctid=4700, node=Node.objects.get(name="node-b"), status="stopped")
    # This node: no load reported yet, and its last heartbeat nearly as old as the offline limit.
    Node.objects.filter(pk=node.pk).update(
        info={}, last_seen=timezone.now() - timedelta(seconds=settings.CAISSON_NODE_OFFLINE_AFTER - 6)
    )
    make_user("dc", superuser=True)
    login(page, web, "dc")
    here, other = (page.locator(f'tr[data-node-row="{name}"]') for name in (node.name, "node-b"))
    expect(other.locator("[data-node-status]")).to_have_text("offline")
    expect(other.locator('[data-metric="containers"]')).to_have_text("0 running of 1")
    expect(here.locator('[data-metric="load"]')).to_have_text("–")
    # No tick comes: the row goes offline by itself, as the server would now say.
    expect(here.locator("[data-node-status]")).to_have_text("offline", timeout=LIVE)
    # The real agent ticks: heartbeat and metrics, pushed to the page.
    app.send_task("caisson.node.tick", queue=node.queue)
    expect(here.locator("[data-node-status]")).to_have_text("online", timeout=LIVE)
    expect(here.locator('[data-metric="load"]')).to_have_text(re.compile(r"^\d+\.\d\d, \d+\.\d\d, \d+\.\d\d$"))
    count = Container.objects.filter(node=node).count()
    running = Container.objects.filter(node=node, status="running").count()
    expect(here.locator('[data-metric="containers"]')).to_have_text(f"{running} running of {count}")
    expect(other.locator("[data-node-status]")).to_have_text("offline")

    # The node's page: its load card follows the ticks too.
    Node.objects.filter(pk=node.pk).update(info={})
    page.goto(f"{web}/nodes/{node.name}/")
    expect(page.locator("body")).to_have_attribute("data-live", "ready")
    card = page.locator(f'[data-node-row="{node.name}"] [data-metric="load"]')
    expect(card).to_have_text("–")
    app.send_task("caisson.node.tick", queue=node.queue)
    expect(card).to_have_text(re.compile(r"^\d+\.\d\d, \d+\.\d\d, \d+\.\d\d$"), timeout=LIVE)


def test_a_node_going_offline_and_coming_back_changes_the_tree_live(
    page,  # noqa: F811
    web,
    agent,
    node,
    make_user,
    services_env,
    cgroup_parent,
    busybox_template,
    engine,
    ctid_factory,
    tmp_path,
):
    """The server announces the transition (tasks.presence): the tree's node icon and its containers change
    without a reload, where before only the node list's timer marked a row offline."""
    from tasks.celery import app
    from tasks.presence import announce_offline
    from tests.webui.api_helpers import client_for
    from tests.webui.test_cluster import wait_for
    from tests.webui.test_three_nodes import ExtraNode, create_on

    admin = make_user("dc", superuser=True)
    extra = ExtraNode(services_env, admin, "node-b", tmp_path / "node-b", cgroup_parent, busybox_template, engine)
    try:
        extra.start()
        wait_for(lambda: StorageMirror.objects.filter(node__name="node-b", name="local").exists(), "node-b's storage")
        ctid = ctid_factory()
        create_on(client_for(admin), Node.objects.get(name="node-b"), ctid, busybox_template.name)
        login(page, web, "dc")
        icon = page.locator('li.node[data-node="node-b"] .icon-node')
        leaf = page.locator(f'[data-ct-status-icon="{ctid}"]')
        expect(icon).to_have_class(re.compile(r"\bonline\b"))
        expect(leaf).to_have_class(re.compile(r"\bstatus-running\b"))
        expect(page.locator("body")).to_have_attribute("data-live", "ready")

        extra.kill()  # no heartbeat from node-b any more; its last one is backdated past the offline limit
        Node.objects.filter(name="node-b").update(last_seen=timezone.now() - timedelta(hours=1))
        app.send_task("caisson.node.tick", queue=node.queue)  # this node's tick sees node-b's silence
        expect(icon).to_have_class(re.compile(r"\boffline\b"), timeout=LIVE)
        expect(leaf).to_have_class(re.compile(r"\bstatus-unknown\b"))
        expect(page.locator('tr[data-node-row="node-b"] [data-node-status]')).to_have_text("offline")
        assert announce_offline() == []  # announced once for this transition, by the agent's tick

        extra.start()  # back: its heartbeat announces the return
        expect(icon).to_have_class(re.compile(r"\bonline\b"), timeout=LIVE)
        expect(page.locator('tr[data-node-row="node-b"] [data-node-status]')).to_have_text("online")
    finally:
        extra.cleanup()
