"""mkdocs hook: ``<!-- settings-table: module.Class -->`` becomes a table of every field.

The tables are made from the pydantic models at build time, so a field added to a
backend's settings shows up in the docs with its type, default and limits without anyone
copying it by hand; its meaning comes from ``Field(description=...)`` or the ``#:``
comment above it.
"""

from __future__ import annotations

import importlib
import inspect
import re
import types
import typing
from typing import Any

from pydantic import BaseModel, SecretStr
from pydantic.fields import FieldInfo

MARKER = re.compile(r"^<!-- settings-table: ([\w.]+) -->$", re.MULTILINE)
LIMITS = {"gt": ">", "ge": "≥", "lt": "<", "le": "≤", "pattern": "matches"}


def _comments(cls: type) -> dict[str, str]:
    """``#:`` comments above each field, in the class and its bases."""
    found: dict[str, str] = {}
    for klass in reversed(cls.__mro__):
        try:
            lines = inspect.getsource(klass).splitlines()
        except (OSError, TypeError):
            continue
        pending: list[str] = []
        for line in lines:
            stripped = line.strip()
            if stripped.startswith("#:"):
                pending.append(stripped[2:].strip())
                continue
            match = re.match(r"(\w+)\s*:", stripped)
            if match and pending:
                found[match.group(1)] = " ".join(pending)
            pending = []
    return found


def _type(annotation: Any) -> str:
    if annotation is type(None):
        return "None"
    if isinstance(annotation, type) and not typing.get_args(annotation):
        return annotation.__name__
    origin = typing.get_origin(annotation)
    args = typing.get_args(annotation)
    if origin is typing.Literal:
        return " \\| ".join(repr(a) for a in args)
    if origin in (typing.Union, types.UnionType):
        return " \\| ".join(_type(a) for a in args)
    if origin is not None and args:
        return f"{getattr(origin, '__name__', origin)}[{', '.join(_type(a) for a in args)}]"
    return str(annotation).replace("typing.", "")


def _default(field: FieldInfo) -> str:
    if field.is_required():
        return "required"
    value = field.get_default(call_default_factory=True)
    if isinstance(value, SecretStr):
        return f"`{value.get_secret_value()!r}` (secret)"
    return f"`{value!r}`"


def _limits(field: FieldInfo) -> str:
    parts = []
    for item in field.metadata:
        for name, sign in LIMITS.items():
            value = getattr(item, name, None)
            if value is not None:
                parts.append(f"{sign} `{value}`")
    return ", ".join(parts)


def table(path: str) -> str:
    module_name, _, class_name = path.rpartition(".")
    cls = getattr(importlib.import_module(module_name), class_name)
    if not (isinstance(cls, type) and issubclass(cls, BaseModel)):
        raise TypeError(f"settings-table: {path} is not a pydantic model")
    comments = _comments(cls)
    rows = [
        "| option | type | default | limits | meaning |",
        "|---|---|---|---|---|",
    ]
    for name, field in cls.model_fields.items():
        if name == "backend":
            continue
        meaning = (field.description or comments.get(name, "")).replace("|", "\\|")
        rows.append(
            f"| `{name}` | {_type(field.annotation)} | {_default(field)} | "
            f"{_limits(field)} | {meaning} |"
        )
    return "\n".join(rows)


def on_page_markdown(markdown: str, **kwargs: Any) -> str:
    return MARKER.sub(lambda m: table(m.group(1)), markdown)
