"""Describes a config model's keys for `gateway drivers`: name, type, default
and description, one line each, so a technician can write a sensor's keys
without opening the source."""

from __future__ import annotations

import types
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
    if fields._check_secret in validators:
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
    names = {bool: "true/false", int: "whole number", float: "number", str: "text"}
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
    if isinstance(value, float) and field.metadata and any(getattr(m, "func", None) is fields.parse_duration
                                                           for m in field.metadata):
        return f"default {value:g}s"
    return f"default {value!r}"


def describe_keys(model: type[BaseModel], skip: set[str] = frozenset()) -> list[str]:
    rows = []
    for key, field in model.model_fields.items():
        if key in skip:
            continue
        rows.append((key, _type_name(field.annotation, list(field.metadata)), _default(field), field.description or ""))
    if not rows:
        return ["(no keys of its own)"]
    width = [max(len(r[i]) for r in rows) for i in range(3)]
    return [f"{k:<{width[0]}}  {t:<{width[1]}}  {d:<{width[2]}}  {desc}".rstrip() for k, t, d, desc in rows]
