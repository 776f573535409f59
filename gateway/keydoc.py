"""Describes a config model's keys for `gateway drivers`: name, type, default
and description, one line each, so a technician can write a sensor's keys
without opening the source."""

from __future__ import annotations

import types
from pathlib import Path
from typing import Annotated, Any, Literal, Union, get_args, get_origin

from annotated_types import Ge, Gt, Le, Lt
from pydantic import BaseModel
from pydantic.fields import FieldInfo

from gateway.sdk import fields


def _type_name(annotation: Any, meta: list[Any]) -> str:
    validators = [getattr(m, "func", None) for m in meta]
    origin = get_origin(annotation)
    if origin is Annotated:
        inner, *extra = get_args(annotation)
        return _type_name(inner, meta + list(extra))
    if fields.parse_duration in validators:
        return "duration"
    if fields._check_name in validators:
        return "name"
    if fields._check_location in validators:
        return "[lat, lon]"
    if fields._check_secret in validators or fields._check_credential in validators:
        return "secret file"
    if fields._check_readable in validators:
        return "file"
    if origin is Literal:
        return " | ".join(repr(a) for a in get_args(annotation))
    if origin in (Union, types.UnionType):
        parts = [_type_name(a, meta) for a in get_args(annotation) if a is not type(None)]
        return " | ".join(parts)
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return "{" + ", ".join(annotation.model_fields) + "}"
    names = {bool: "true/false", int: "whole number", float: "number", str: "text", Path: "file path"}
    base = names.get(annotation, getattr(annotation, "__name__", str(annotation)))
    for m in meta:
        for cls, sign, attr in ((Gt, ">", "gt"), (Ge, ">=", "ge"), (Lt, "<", "lt"), (Le, "<=", "le")):
            if isinstance(m, cls):
                base += f" {sign} {getattr(m, attr):g}"
    return base


def _default(field: FieldInfo) -> str:
    if field.is_required():
        return "required"
    value = field.get_default(call_default_factory=True)
    if value is None:
        return "optional"
    if isinstance(value, Path):
        return f"default {value}"
    if isinstance(value, float) and field.metadata and any(getattr(m, "func", None) is fields.parse_duration
                                                           for m in field.metadata):
        return f"default {value:g}s"
    return f"default {value!r}"


def unit_of(field: FieldInfo) -> str | None:
    """The unit a key is in (`json_schema_extra={"unit": "m"}` on its Field), or None."""
    extra = field.json_schema_extra
    return extra.get("unit") if isinstance(extra, dict) else None


def type_text(field: FieldInfo) -> str:
    """What a key takes, with its range and unit: e.g. `number > 0 <= 10 m`."""
    unit = unit_of(field)
    return _type_name(field.annotation, list(field.metadata)) + (f" {unit}" if unit else "")


def key_rows(model: type[BaseModel], skip: set[str] = frozenset(), first: list[str] = ()) -> list[tuple[str, str, str, str]]:
    """(key, type with range and unit, default, description) of each key of a config model; `first` lead."""
    keys = [k for k in first if k in model.model_fields] + [k for k in model.model_fields if k not in first]
    return [(key, type_text(model.model_fields[key]), _default(model.model_fields[key]),
             model.model_fields[key].description or "") for key in keys if key not in skip]


def describe_keys(model: type[BaseModel], skip: set[str] = frozenset(), first: list[str] = ()) -> list[str]:
    """One line per key; the keys in `first` lead, in that order."""
    rows = key_rows(model, skip, first)
    if not rows:
        return ["(no keys of its own)"]
    width = [max(len(r[i]) for r in rows) for i in range(3)]
    return [f"{k:<{width[0]}}  {t:<{width[1]}}  {d:<{width[2]}}  {desc}".rstrip() for k, t, d, desc in rows]
