"""The strict base of every serializer that reads a body: a JSON client hears that a number was expected.

DRF's fields, like Django's forms, were made lenient: ``"701"`` passes as an
integer, ``true`` as 1, ``5`` as the text "5".  Here each value's JSON type
must be the field's own (a bool is never a number, a number never a bool or
a string), fields the serializer does not know are refused, and every
message is keyed by the field's name.  ``form_serializer`` builds one from
the forms a page validates with, so the API checks the types and the shared
form checks the meaning: the fields are declared once, in the form.
"""

from __future__ import annotations

from django import forms
from django.core.exceptions import ValidationError as DjangoValidationError
from django.db import models
from django.http import QueryDict
from rest_framework import serializers


def _got(value) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    return type(value).__name__


class StrictField:
    """Refuses a value whose JSON type is not one of ``json_types`` before the field's own checks."""

    json_types: tuple[type, ...] = ()
    wanted = ""

    def to_internal_value(self, data):
        from_form = isinstance(data, str) and self.context.get("form")
        if not from_form and (
            isinstance(data, bool) and bool not in self.json_types or not isinstance(data, self.json_types)
        ):
            raise serializers.ValidationError(f"expected {self.wanted}, got {_got(data)}")
        return super().to_internal_value(data)


class IntegerField(StrictField, serializers.IntegerField):
    json_types, wanted = (int,), "an integer"


class FloatField(StrictField, serializers.FloatField):
    json_types, wanted = (int, float), "a number"


class BooleanField(StrictField, serializers.BooleanField):
    json_types, wanted = (bool,), "true or false"


class CharField(StrictField, serializers.CharField):
    json_types, wanted = (str,), "a string"


class ChoiceField(StrictField, serializers.ChoiceField):
    json_types, wanted = (str,), "a string"


class DateTimeField(StrictField, serializers.DateTimeField):
    json_types, wanted = (str,), "a date and time (ISO 8601)"


class StrictInput:
    """Unknown fields refused, each by its name; a body that is not an object refused as a whole."""

    def to_internal_value(self, data):
        if not isinstance(data, dict):
            raise serializers.ValidationError({"non_field_errors": ["the body must be a JSON object"]})
        errors = {name: ["unknown field"] for name in sorted(set(data) - set(self.fields))}
        try:
            values = super().to_internal_value(data)
        except serializers.ValidationError as exc:
            errors.update(exc.detail)
        if errors:
            raise serializers.ValidationError(errors)
        return values


class StrictSerializer(StrictInput, serializers.Serializer):
    """A body of the fields declared here, each of its own JSON type."""


class StrictModelSerializer(StrictInput, serializers.ModelSerializer):
    """A model's fields as strict fields (the model's validators kept); unknown fields refused."""

    serializer_field_mapping = {
        **serializers.ModelSerializer.serializer_field_mapping,
        models.CharField: CharField,
        models.TextField: CharField,
        models.BooleanField: BooleanField,
        models.IntegerField: IntegerField,
        models.PositiveIntegerField: IntegerField,
        models.BigIntegerField: IntegerField,
        models.FloatField: FloatField,
        models.DateTimeField: DateTimeField,
    }


def _field_for(field: forms.Field) -> serializers.Field:
    """The strict serializer field of a form field: its JSON type, its range and choices, its help."""
    options = {"required": False, "help_text": field.help_text or None}
    initial = field.initial() if callable(field.initial) else field.initial
    if initial is not None:
        options["default"] = initial
    if isinstance(field, forms.BooleanField):
        return BooleanField(**options)
    if isinstance(field, forms.IntegerField | forms.FloatField):
        bounds = {"min_value": field.min_value, "max_value": field.max_value}
        kind = IntegerField if isinstance(field, forms.IntegerField) else FloatField
        return kind(**{k: v for k, v in bounds.items() if v is not None}, **options)
    if isinstance(field, forms.ModelMultipleChoiceField):
        return serializers.JSONField(**options)
    if isinstance(field, forms.ChoiceField) and not isinstance(field, forms.ModelChoiceField):
        return ChoiceField(choices=[c for c, _ in field.choices], **options)
    if isinstance(field, forms.CharField | forms.ModelChoiceField):
        return CharField(allow_blank=True, trim_whitespace=False, **options)
    return serializers.JSONField(**options)  # a field that reads several shapes checks them itself


def form_serializer(name: str, form_classes, overrides: dict | None = None) -> type[StrictSerializer]:
    """A strict serializer with one field per field of ``form_classes`` (``overrides`` by name replace some)."""
    fields = {key: _field_for(field) for form in form_classes for key, field in form.base_fields.items()}
    fields.update(overrides or {})
    forms_named = ", ".join(form.__name__ for form in form_classes)
    doc = f"The fields of {forms_named}, their JSON types checked; the form checks what they mean."
    return type(name, (StrictSerializer,), {**fields, "__doc__": doc})


def form_validated(serializer_class, post) -> dict:
    """A page's form post checked by ``serializer_class``: its strings read as each field's type, keys that are
    not the serializer's (the CSRF token, ``next``) not its business, an empty value a field left out.
    Refusals are Django ``ValidationError`` keyed by field, as the actions raise them."""
    data = {name: post.get(name) for name in serializer_class().fields if post.get(name, "") != ""}
    return _checked(serializer_class(data=data, context={"form": True}))


def read(serializer_class, data) -> dict:
    """An action's input, from a page (a ``QueryDict``: ``form_validated``) or a JSON body (strict, a null a
    field left out); refused with a Django ``ValidationError`` keyed by field either way."""
    if isinstance(data, QueryDict):
        return form_validated(serializer_class, data)
    if isinstance(data, dict):
        data = {k: v for k, v in data.items() if v is not None}
    return _checked(serializer_class(data=data))


def _checked(serializer) -> dict:
    if not serializer.is_valid():
        raise DjangoValidationError(
            {
                key: [str(m) for m in (messages if isinstance(messages, list) else [messages])]
                for key, messages in serializer.errors.items()
            }
        )
    return dict(serializer.validated_data)


def validated(serializer_class, data, partial: bool = False) -> dict:
    """``data`` checked by ``serializer_class`` (400 with field errors); a null is a field left out."""
    if isinstance(data, dict):
        data = {k: v for k, v in data.items() if v is not None}
    serializer = serializer_class(data=data, partial=partial)
    serializer.is_valid(raise_exception=True)
    return dict(serializer.validated_data)
