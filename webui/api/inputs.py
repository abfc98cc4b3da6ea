"""JSON bodies checked for their types before the shared forms and actions see them.

Django's forms were made for HTML posts, where every value is a string:
they would read ``"yes"`` as a true checkbox and ``[1]`` as the text "[1]".
A JSON client deserves to hear that a number was expected, so each value's
JSON type is checked against the kind of form field that takes it; what the
value means is still checked once, by the form.  Fields left out take the
form's initial value, as the wizard shows them.
"""
from __future__ import annotations

from django import forms
from django.core.exceptions import ValidationError


def _kind(field: forms.Field) -> tuple[tuple[type, ...], str]:
    if isinstance(field, forms.BooleanField):
        return (bool,), "true or false"
    if isinstance(field, forms.IntegerField):
        return (int,), "an integer"
    if isinstance(field, forms.FloatField):
        return (int, float), "a number"
    return (str,), "a string"


def check_type(name: str, value, types: tuple[type, ...], wanted: str) -> str | None:
    """An error message when ``value`` is not of ``types`` (a bool is never a number here)."""
    if isinstance(value, bool) and bool not in types:
        return f"expected {wanted}, got {'true' if value else 'false'}"
    if not isinstance(value, types):
        return f"expected {wanted}, got {type(value).__name__ if value is not None else 'null'}"
    return None


def body_object(data) -> dict:
    if not isinstance(data, dict):
        raise ValidationError({"non_field_errors": ["the body must be a JSON object"]})
    return data


def form_data(data, form_classes) -> dict:
    """``data`` (a parsed JSON body) as the forms' data: types checked, unknown keys refused, defaults filled."""
    data = body_object(data)
    fields = {name: field for form in form_classes for name, field in form.base_fields.items()}
    errors: dict[str, list[str]] = {}
    result: dict = {}
    for key in data:
        if key not in fields:
            errors[key] = ["unknown field"]
    for name, field in fields.items():
        value = data.get(name)
        if value is None:
            initial = field.initial() if callable(field.initial) else field.initial
            if initial is not None:
                result[name] = initial
            continue
        types, wanted = _kind(field)
        message = check_type(name, value, types, wanted)
        if message:
            errors[name] = [message]
        else:
            result[name] = value
    if errors:
        raise ValidationError(errors)
    return result
