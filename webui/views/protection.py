"""Datacenter -> Protection: the protection policies and notification targets on one page.

One table of policies (what each selects, its snapshot schedule, pattern,
expiry and retention, its backup job, where it notifies, its next runs
and last run), a form to add or edit one with its backup part, and the
notification targets with their own form.  Forms post with ``data-async``
as every page does; the actions are ``webui.actions.protection``.
"""

from __future__ import annotations

from django.core.exceptions import PermissionDenied
from django.shortcuts import get_object_or_404, render
from django.urls import reverse
from django.views.decorators.http import require_POST

from webui.access import access_for
from webui.actions import protection
from webui.api.serializers.protection import preview
from webui.eol import report as eol_report
from webui.models import Container, Job, NotificationTarget, Pool, ProtectionPolicy, RestoreTest
from webui.models.backups import BACKUP_MODES, KEEP_FIELDS
from webui.models.protection import SNAP_KEEP_FIELDS
from webui.views.common import object_action, save_action

POLICY_TEXT = ("name", "comment", "selection", "ctids", "pool", "tag", "snapshot_schedule", "snapshot_pattern")
BACKUP_TEXT = ("schedule", "storage", "mode", *KEEP_FIELDS)


def protection_page(request, pk: int | None = None):
    access = access_for(request)
    if not access.can("Sys.Audit", path="/"):
        raise PermissionDenied("permission denied: Sys.Audit on / is required to see protection policies")
    editing = get_object_or_404(ProtectionPolicy, pk=pk) if pk else None
    policies = list(ProtectionPolicy.objects.select_related("pool", "backup").prefetch_related("targets"))
    for policy in policies:
        policy.upcoming = preview(policy, count=3)
        kinds = Job.objects.filter(kind="snapshotjob", target=str(policy.pk))
        policy.last_job = kinds.first()
    backup = editing.backup if editing else None
    return render(
        request,
        "webui/protection.html",
        {
            "policies": policies,
            "editing": editing,
            "backup": backup,
            "targets": NotificationTarget.objects.all(),
            "restore_tests": RestoreTest.objects.select_related("policy")[:20],
            "eol_rows": eol_report([c for c in Container.objects.select_related("node") if access.can("VM.Audit", c)]),
            "can_modify": access.can("Sys.Modify", path="/"),
            "pools": Pool.objects.all(),
            "modes": BACKUP_MODES,
            "selections": ProtectionPolicy.Selection.choices,
            "notify_whens": ProtectionPolicy.NotifyWhen.choices,
            "target_kinds": NotificationTarget.Kind.choices,
            "restore_networks": ProtectionPolicy._meta.get_field("restore_test_network").choices,
            "snap_keep": [
                (k, k[5:].replace("_", "-"), getattr(editing, k) if editing else None) for k in SNAP_KEEP_FIELDS
            ],
            "backup_keep": [(k, k.replace("_", "-"), getattr(backup, k) if backup else None) for k in KEEP_FIELDS],
            "editing_targets": [t.name for t in editing.targets.all()] if editing else [],
        },
    )


def _policy_data(post) -> dict:
    data = {k: post.get(k, "") for k in POLICY_TEXT}
    data["snapshot_expiry"] = post.get("snapshot_expiry", "")
    for k in SNAP_KEEP_FIELDS:
        data[k] = post.get(k) or None
    data["enabled"] = post.get("enabled") == "1"
    data["snapshot_stopped"] = post.get("snapshot_stopped") == "1"
    data["targets"] = post.getlist("targets")
    data["notify_when"] = post.get("notify_when", "")
    data["restore_test"] = post.get("restore_test") == "1"
    data["restore_test_command"] = post.get("restore_test_command", "")
    data["restore_test_port"] = post.get("restore_test_port") or None
    data["restore_test_schedule"] = post.get("restore_test_schedule", "")
    data["restore_test_network"] = post.get("restore_test_network", "none")
    if post.get("backup_schedule", "").strip():
        data["backup"] = {k: post.get(f"backup_{k}") or None for k in BACKUP_TEXT}
        data["backup"]["enabled"] = data["enabled"]
    else:
        data["backup"] = None  # no backup schedule: the policy has no backup job
    return data


@require_POST
def policy_save(request, pk: int | None = None):
    policy = get_object_or_404(ProtectionPolicy, pk=pk) if pk else None
    return save_action(
        request,
        protection.save_policy,
        _policy_data(request.POST),
        policy,
        "protection policy saved",
        reverse("protection"),
    )


@require_POST
def policy_delete(request, pk: int):
    policy = get_object_or_404(ProtectionPolicy, pk=pk)
    return object_action(
        request, policy, protection.delete_policy, f"policy {policy.name} removed", reverse("protection")
    )


@require_POST
def policy_run(request, pk: int):
    policy = get_object_or_404(ProtectionPolicy, pk=pk)
    return object_action(
        request,
        policy,
        protection.run_now,
        f"snapshots of policy {policy.name} started (job {{job.pk}})",
        reverse("protection"),
    )


@require_POST
def policy_restore_test(request, pk: int):
    policy = get_object_or_404(ProtectionPolicy, pk=pk)
    return object_action(
        request,
        policy,
        protection.restore_test_now,
        f"restore test of policy {policy.name} started (job {{job.pk}})",
        reverse("protection"),
    )


@require_POST
def target_save(request):
    post = request.POST
    target = NotificationTarget.objects.filter(name=post.get("name", "")).first()
    data = {k: post.get(k, "") for k in ("name", "kind", "mail_to", "url", "comment")}
    data["enabled"] = post.get("enabled") == "1"
    if post.get("headers", "").strip():
        data["headers"] = post["headers"]  # "Name: value" lines, checked with the rest by the action
    return save_action(
        request,
        protection.save_target,
        data,
        target,
        f"notification target {data['name']} saved",
        reverse("protection"),
    )


@require_POST
def target_delete(request, name: str):
    target = get_object_or_404(NotificationTarget, name=name)
    return object_action(
        request, target, protection.delete_target, f"notification target {name} removed", reverse("protection")
    )
