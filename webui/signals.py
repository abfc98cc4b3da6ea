"""Tell a user's open sockets at once when their login or access ends; drop a gone container's grants.

Every console socket and live socket of a user joins the channel-layer group
``user.<id>``. Logout (with the session it ended), deactivation, deletion,
and any change that could withdraw a privilege (an access entry, a role, a
group membership) send ``{"type": "user.access", ...}`` there after commit;
the consumers re-check their access on the spot (``webui.console``,
``webui.consumers``). The consumers' periodic checks stay as a backstop.
"""

from __future__ import annotations

import logging

from asgiref.sync import async_to_sync
from django.db import transaction

log = logging.getLogger(__name__)


def user_group(user_id: int) -> str:
    return f"user.{user_id}"


def _send(user_ids, reason: str, session: str | None = None) -> None:
    from channels.layers import get_channel_layer

    layer = get_channel_layer()
    if layer is None:
        return
    for user_id in sorted({u for u in user_ids if u}):
        try:
            async_to_sync(layer.group_send)(
                user_group(user_id), {"type": "user.access", "reason": reason, "session": session}
            )
        except Exception:  # noqa: BLE001 - the periodic checks still end what this could not reach
            log.warning("access change of user %s not pushed to its sockets", user_id, exc_info=True)


def notify(user_ids, reason: str = "access", session: str | None = None) -> None:
    """Push to the users' sockets once the current transaction commits (at once outside one)."""
    user_ids = set(user_ids)
    if user_ids:
        transaction.on_commit(lambda: _send(user_ids, reason, session))


def _members(group_ids) -> set[int]:
    from django.contrib.auth import get_user_model

    group_ids = [g for g in group_ids if g]
    if not group_ids:
        return set()
    return set(get_user_model().objects.filter(groups__in=group_ids).values_list("id", flat=True))


def _entry_users(entries) -> set[int]:
    users, groups = set(), set()
    for user_id, group_id in entries:
        (users.add(user_id) if user_id else groups.add(group_id))
    return users | _members(groups)


def on_logout(sender, request, user, **kwargs) -> None:
    if user is None:
        return
    session = getattr(getattr(request, "session", None), "session_key", None)
    notify([user.pk], "logout", session)


def on_user_saved(sender, instance, created, **kwargs) -> None:
    if not created and not instance.is_active:
        notify([instance.pk], "deactivated")


def on_user_deleted(sender, instance, **kwargs) -> None:
    notify([instance.pk], "deleted")


def on_entry_before_save(sender, instance, **kwargs) -> None:
    if instance.pk:  # an edited entry may have been someone else's: tell them too
        instance._caisson_before = list(sender.objects.filter(pk=instance.pk).values_list("user_id", "group_id"))


def on_entry_saved(sender, instance, **kwargs) -> None:
    notify(_entry_users([(instance.user_id, instance.group_id), *getattr(instance, "_caisson_before", ())]))


def on_entry_deleted(sender, instance, **kwargs) -> None:
    # pre_delete: a group deleted with its entries still has its members here.
    notify(_entry_users([(instance.user_id, instance.group_id)]))


def on_role_changed(sender, instance, **kwargs) -> None:
    notify(_entry_users(instance.entries.values_list("user_id", "group_id")))


def on_membership(sender, instance, action, reverse, model, pk_set, **kwargs) -> None:
    if action not in ("post_add", "post_remove", "pre_clear"):
        return
    if not reverse:  # user.groups.add/remove/clear
        notify([instance.pk])
    elif action == "pre_clear":  # group.user_set.clear()
        notify(instance.user_set.values_list("id", flat=True))
    else:
        notify(pk_set or ())


def on_container_deleted(sender, instance, **kwargs) -> None:
    """A container's row goes (destroyed, a failed create, restore or clone, or gone from its node): its
    ACL entries go with it, as Proxmox removes a guest's, so that nothing granted on it passes to the
    next container given its ID.  Its pool membership is its row's; its place in backup jobs goes when
    it is destroyed (``BackupSchedule.forget_container``).  Archives keep their own ID-based checks."""
    from webui.models import AccessEntry

    AccessEntry.objects.filter(path=instance.path).delete()


def connect() -> None:
    from django.contrib.auth import get_user_model
    from django.contrib.auth.signals import user_logged_out
    from django.db.models.signals import m2m_changed, post_delete, post_save, pre_delete, pre_save

    from webui.models import AccessEntry, Container, Role

    user_model = get_user_model()
    user_logged_out.connect(on_logout, dispatch_uid="caisson.access.logout")
    post_save.connect(on_user_saved, sender=user_model, dispatch_uid="caisson.access.user_saved")
    post_delete.connect(on_user_deleted, sender=user_model, dispatch_uid="caisson.access.user_deleted")
    pre_save.connect(on_entry_before_save, sender=AccessEntry, dispatch_uid="caisson.access.entry_before")
    post_save.connect(on_entry_saved, sender=AccessEntry, dispatch_uid="caisson.access.entry_saved")
    pre_delete.connect(on_entry_deleted, sender=AccessEntry, dispatch_uid="caisson.access.entry_deleted")
    post_save.connect(on_role_changed, sender=Role, dispatch_uid="caisson.access.role_saved")
    pre_delete.connect(on_role_changed, sender=Role, dispatch_uid="caisson.access.role_deleted")
    post_delete.connect(on_container_deleted, sender=Container, dispatch_uid="caisson.access.container_deleted")
    m2m_changed.connect(on_membership, sender=user_model.groups.through, dispatch_uid="caisson.access.membership")
