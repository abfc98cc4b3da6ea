"""The templates page's "pull from registry" form in Chromium: tags listed from a registry on loopback, the
pull run by the node agent, the archive appearing in the store live."""

from __future__ import annotations

import pytest

from engine.oci.registry import Settings
from tests.engine import registry_lab
from tests.engine.oci_images import app_image
from tests.webui.test_browser import browser, expect, login, page  # noqa: F401 - fixtures

LIVE = 60_000
pytestmark = pytest.mark.skipif(not registry_lab.available(), reason="needs docker-registry and skopeo")


@pytest.fixture(scope="module")
def registry(tmp_path_factory):
    layout = app_image().write_layout(tmp_path_factory.mktemp("image") / "layout")
    with registry_lab.registry(tmp_path_factory.mktemp("registry")) as address:
        for tag in ("1.0", "1.1"):
            registry_lab.push(layout, address, f"web/app:{tag}")
        yield address


@pytest.mark.django_db(transaction=True)
def test_pull_from_a_registry_with_its_tags_listed(page, web, agent, node, make_user, engine, registry):  # noqa: F811
    Settings(insecure=[registry]).save(engine.layout.root)
    make_user("admin", superuser=True)
    try:
        login(page, web, "admin")
        page.goto(f"{web}/templates/?node={node.name}")
        expect(page.locator("body")).to_have_attribute("data-live", "ready")
        page.fill("#oci-reference", f"{registry}/web/app")
        page.click("#oci-list-tags")
        expect(page.locator("#oci-tags-note")).to_have_text("2 tag(s): 1.0, 1.1")
        assert page.locator("#oci-tags option").evaluate_all("os => os.map(o => o.value)") == [
            f"{registry}/web/app:1.0",
            f"{registry}/web/app:1.1",
        ]
        page.fill("#oci-reference", f"{registry}/web/app:1.1")
        page.click("#oci-pull")
        expect(page.locator('#template-store [data-stored="app_1.1.tar"]')).to_be_visible(timeout=LIVE)
        assert (engine.layout.templates / "app_1.1.tar").is_file()
    finally:
        (engine.layout.templates / "app_1.1.tar").unlink(missing_ok=True)
        Settings().save(engine.layout.root)
