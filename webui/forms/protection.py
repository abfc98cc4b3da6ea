"""The protection policy and notification target forms, shared by Datacenter -> Protection, the API and the CLI.

As the backup job form, they are bound to the row's current values with the
given ones on top, so fields left out of a change keep their value.  A
policy's ``backup`` part is a backup job's fields (``ScheduleForm``) without
the container selection, which is the policy's.
"""

from __future__ import annotations

from django import forms
from django.core.validators import MinValueValidator

from webui.forms.backups import ContainerIdsField, ScheduleForm, check_selected_ctids, fill_defaults, one_of, pool_field
from webui.models import NotificationTarget, ProtectionPolicy
from webui.models.protection import SNAP_KEEP_FIELDS

SELECTION_FIELDS = ("selection", "ctids", "pool", "tag")
BACKUP_FIELDS = tuple(f for f in ScheduleForm.Meta.fields if f not in SELECTION_FIELDS)


class Bound(forms.ModelForm):
    """A model form bound to the instance's values, ``data`` on top."""

    related: dict[str, str] = {}  # many-to-one / many-to-many field -> the slug the form takes

    def __init__(self, data, instance=None):
        instance = instance or self._meta.model()
        current = {}
        for name in self._meta.fields:
            value = getattr(instance, name) if name not in self.related else None
            if name in self.related and instance._meta.get_field(name).many_to_many:
                rows = getattr(instance, name).all() if instance.pk else []
                value = [getattr(o, self.related[name]) for o in rows]
            elif name in self.related and getattr(instance, name) is not None:
                value = getattr(getattr(instance, name), self.related[name])
            current[name] = value
        super().__init__({**current, **data}, instance=instance)
        for field in self.fields.values():
            if getattr(field, "choices", None) and not isinstance(field, forms.ModelChoiceField):
                field.error_messages.update(one_of(c for c, _ in field.choices if c))


class TargetForm(Bound):
    class Meta:
        model = NotificationTarget
        fields = ["name", "kind", "mail_to", "url", "enabled", "comment"]


class SlugsField(forms.ModelMultipleChoiceField):
    def clean(self, value):
        if isinstance(value, str):
            value = [v for v in value.replace(",", " ").split() if v]
        return super().clean(value)


class PolicyForm(Bound):
    related = {"pool": "name", "targets": "name"}
    ctids = ContainerIdsField(required=False)
    pool = pool_field()
    targets = SlugsField(
        queryset=NotificationTarget.objects.all(),
        to_field_name="name",
        required=False,
        error_messages={"invalid_choice": "no notification target '%(value)s'"},
    )

    class Meta:
        model = ProtectionPolicy
        fields = [
            "name",
            "enabled",
            "comment",
            "selection",
            "ctids",
            "pool",
            "tag",
            "snapshot_schedule",
            "snapshot_pattern",
            "snapshot_expiry",
            "snapshot_stopped",
            *SNAP_KEEP_FIELDS,
            "targets",
            "notify_when",
            "restore_test",
            "restore_test_command",
            "restore_test_port",
            "restore_test_schedule",
            "restore_test_network",
        ]

    def __init__(self, data, instance=None):
        super().__init__(data, instance)
        for name in SNAP_KEEP_FIELDS:
            self.fields[name].validators = [
                MinValueValidator(0, f"{name[5:].replace('_', '-')} must be 0 or more, not %(show_value)s")
            ]
        for name in ("selection", "notify_when", "snapshot_pattern"):
            self.fields[name].required = False

    def clean(self):
        data = super().clean()
        fill_defaults(self, data, ("selection", "notify_when", "snapshot_pattern"))
        check_selected_ctids(self, data, ProtectionPolicy.Selection.INCLUDE)
        return data


def backup_form(policy: ProtectionPolicy, data: dict) -> ScheduleForm:
    """The policy's backup job form: ``data`` (backup fields only) plus the policy's selection."""
    unknown = sorted(set(data) - set(BACKUP_FIELDS))
    if unknown:
        raise forms.ValidationError(
            {"backup": [f"{', '.join(unknown)}: not a backup field (the selection is the policy's)"]}
        )
    selection = policy.backup_selection()
    selection["pool"] = selection["pool"].name if selection["pool"] else None
    return ScheduleForm({**data, **selection}, policy.backup)
