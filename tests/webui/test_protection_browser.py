"""Datacenter -> Protection in real Chromium: a policy added through the form, with its next runs and its backup
job, and a failed restore test's report (the step, the reason, the timings and the log) shown under the CSP.

``CAISSON_SCREENSHOTS=DIR`` keeps the pages' screenshots there."""

from __future__ import annotations

import os
import shutil

import pytest

from tests.webui.test_browser import browser, expect, login, page  # noqa: F401 - fixtures
from webui.models import Node, ProtectionPolicy, RestoreTest

pytestmark = pytest.mark.django_db(transaction=True)


def keep(element, tmp_path, name: str) -> None:
    shot = tmp_path / f"{name}.png"
    element.screenshot(path=str(shot))
    if os.environ.get("CAISSON_SCREENSHOTS"):
        shutil.copy(shot, os.path.join(os.environ["CAISSON_SCREENSHOTS"], shot.name))


def test_protection_page_adds_a_policy_and_shows_a_failed_restore_test(page, web, node, make_user, tmp_path):  # noqa: F811
    make_user("pp-browser", superuser=True)
    login(page, web, "pp-browser")
    page.click("text=Protection")
    page.wait_for_url(f"{web}/datacenter/protection/")
    page.fill("#policy-form input[name=name]", "web-tier")
    page.select_option("#policy-form select[name=selection]", "tag")
    page.fill("#policy-form input[name=tag]", "web")
    page.fill("#policy-form input[name=snapshot_schedule]", "*/4:00")
    page.fill("#policy-form input[name=snapshot_expiry]", "2d")
    page.fill("#policy-form input[name=snap_keep_daily]", "7")
    page.fill("#policy-form input[name=backup_schedule]", "sat 02:00")
    page.fill("#policy-form input[name=backup_keep_weekly]", "4")
    page.check("#policy-form input[name=restore_test]")
    page.fill("#policy-form input[name=restore_test_port]", "80")
    page.click("#policy-form button[type=submit]")
    page.wait_for_url(f"{web}/datacenter/protection/")
    row = page.locator('tr[data-policy="web-tier"]')
    expect(row).to_contain_text("*/4:00")
    expect(row).to_contain_text("weekly=4")
    expect(row.locator(".next-runs")).to_contain_text("snapshot")
    keep(page.locator("#policy-table"), tmp_path, "protection-policies")
    policy = ProtectionPolicy.objects.get(name="web-tier")
    assert policy.restore_test and policy.restore_test_port == 80 and policy.backup.schedule == "sat 02:00"

    RestoreTest.objects.create(
        node=Node.objects.get(pk=node.pk),
        ctid=4242,
        storage="local",
        archive="vzdump-lxc-4242-2026_12_01-02_00_00.tar.zst",
        policy=policy,
        passed=False,
        reason="boot: init exited during boot (the container stopped)",
        timings={"restore": 0.81, "start": 0.15, "boot": 1.1},
        log="restoring vzdump-lxc-4242-2026_12_01-02_00_00.tar.zst as CT 999999999\nFAILED at boot",
    )
    page.reload()
    failed = page.locator("#restore-test-table tr.failed")
    expect(failed).to_contain_text("FAILED: boot: init exited during boot")
    failed.locator("summary").click()
    expect(failed.locator("pre")).to_contain_text("FAILED at boot")
    keep(page.locator("#restore-test-table"), tmp_path, "protection-restore-test-failed")
