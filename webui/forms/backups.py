"""The backup job form: one ``ModelForm`` that the Datacenter -> Backup page and ``/api/backup-schedules/`` both
validate with (the API's serializer checks the JSON types first, then hands the values here).

Fields left out of a change keep their value: the form is bound to the
schedule's current values with the given ones on top.
"""

from __future__ import annotations

import re

from django import forms
from django.core.exceptions import ValidationError
from django.core.validators import MinValueValidator

from webui.models import BackupSchedule, Container, Node, Pool, StorageMirror
from webui.models.backups import KEEP_FIELDS, STORAGE_NAME
from webui.models.inventory import CTID_MAX, CTID_MIN

SPLIT = re.compile(r"[\s,;]+")


def container_ids(value, key: str) -> list[int]:
    """A list of container IDs from a list or a comma/space-separated string (sorted, without repeats)."""
    if value in (None, ""):
        return []
    items = SPLIT.split(value.strip()) if isinstance(value, str) else value
    if not isinstance(items, list | tuple):
        raise ValidationError({key: ["a list of container IDs"]})
    result = []
    for item in items:
        if item in ("", None):
            continue
        try:
            number = int(item)
            if isinstance(item, bool) or isinstance(item, float) or not CTID_MIN <= number <= CTID_MAX:
                raise ValueError
        except (TypeError, ValueError):
            raise ValidationError({key: [f"'{item}' is not a container ID ({CTID_MIN}..{CTID_MAX})"]}) from None
        result.append(number)
    return sorted(set(result))


def check_storage(storage, nodes: list[Node] | None = None) -> str:
    """A storage that holds backups: ``local`` (every node has it) or one a node reports with backup content."""
    if not isinstance(storage, str) or not re.match(STORAGE_NAME, storage):
        raise ValidationError({"storage": [f"'{storage}' is not a storage name"]})
    if storage == "local":
        return storage
    found = StorageMirror.objects.filter(name=storage)
    if nodes:
        found = found.filter(node__in=nodes)
    found = list(found)
    if not found:
        raise ValidationError(
            {
                "storage": [
                    f"storage '{storage}' does not exist"
                    + (f" on node {', '.join(n.name for n in nodes)}" if nodes else "")
                ]
            }
        )
    if not any("backup" in (s.content or []) and s.enabled for s in found):
        raise ValidationError(
            {"storage": [f"storage '{storage}' does not hold backups (content 'backup' is not enabled on it)"]}
        )
    return storage


class ContainerIdsField(forms.Field):
    def to_python(self, value):
        try:
            return container_ids(value, "ctids")
        except ValidationError as exc:
            raise ValidationError(exc.message_dict["ctids"]) from None


class NamesField(forms.ModelMultipleChoiceField):
    """Node names as a list or a comma/space-separated string."""

    def clean(self, value):
        if isinstance(value, str):
            value = [n for n in SPLIT.split(value) if n]
        if value is not None and not (isinstance(value, list | tuple) and all(isinstance(n, str) for n in value)):
            raise ValidationError("a list of node names")
        return super().clean(value)


def one_of(choices) -> dict[str, str]:
    return {"invalid_choice": f"'%(value)s' is not one of {', '.join(str(c) for c in choices)}"}


def pool_field() -> forms.ModelChoiceField:
    """The optional pool a backup job or a protection policy selects its containers by, given by name."""
    return forms.ModelChoiceField(
        queryset=Pool.objects.all(),
        to_field_name="name",
        required=False,
        error_messages={"invalid_choice": "that pool does not exist"},
    )


def check_selected_ctids(form: forms.ModelForm, data: dict, include) -> None:
    """With ``selection`` set to ``include``, every listed container must exist (an error on ``ctids``)."""
    if data.get("selection") == include and "ctids" not in form.errors:
        ctids = data.get("ctids") or []
        known = set(Container.objects.filter(ctid__in=ctids).values_list("ctid", flat=True))
        unknown = [c for c in ctids if c not in known]
        if unknown:
            form.add_error("ctids", f"CT {', '.join(map(str, unknown))} does not exist")


def fill_defaults(form: forms.ModelForm, data: dict, names) -> None:
    """An optional field left empty takes the model's default (the form marks them ``required = False``)."""
    for name in names:
        if not data.get(name) and name not in form.errors:
            data[name] = form._meta.model._meta.get_field(name).default


class ScheduleForm(forms.ModelForm):
    ctids = ContainerIdsField(required=False)
    pool = pool_field()
    nodes = NamesField(
        queryset=Node.objects.all(),
        to_field_name="name",
        required=False,
        error_messages={"invalid_choice": "unknown node '%(value)s'"},
    )

    class Meta:
        model = BackupSchedule
        fields = [
            "enabled",
            "schedule",
            "selection",
            "ctids",
            "pool",
            "tag",
            "nodes",
            "storage",
            "mode",
            "compress",
            *KEEP_FIELDS,
            "mail_to",
            "mail_when",
            "notes",
            "comment",
        ]

    def __init__(self, data, instance: BackupSchedule | None = None):
        """``data``: the fields to change; the others keep the schedule's values (a new one's defaults)."""
        instance = instance or BackupSchedule()
        current = {name: getattr(instance, name) for name in self.Meta.fields if name not in ("pool", "nodes")}
        current["pool"] = instance.pool.name if instance.pool_id else None
        current["nodes"] = [n.name for n in instance.nodes.all()] if instance.pk else []
        super().__init__({**current, **data}, instance=instance)
        for name in ("selection", "mode", "compress", "mail_when"):
            self.fields[name].error_messages.update(one_of(c for c, _ in self.fields[name].choices if c))
        for name in KEEP_FIELDS:
            self.fields[name].validators = [
                MinValueValidator(0, f"{name.replace('_', '-')} must be 0 or more, not %(show_value)s")
            ]
        for name in ("storage", "mode", "compress", "mail_when", "selection"):
            self.fields[name].required = False  # empty: the model's default
        self.fields["schedule"].error_messages["required"] = (
            "a schedule is required (e.g. 'mon..fri 02:00' or '0 2 * * *')"
        )
        self.fields["notes"].strip = False

    def clean(self):
        data = super().clean()
        fill_defaults(self, data, ("storage", "mode", "compress", "mail_when", "selection"))
        check_selected_ctids(self, data, BackupSchedule.Selection.INCLUDE)
        if "storage" not in self.errors:
            try:
                check_storage(data["storage"], list(data.get("nodes") or []) or None)
            except ValidationError as exc:
                self.add_error("storage", exc.message_dict["storage"])
        return data
