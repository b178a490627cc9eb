"""Parsing of setting values from text: the one place booleans and lists are read."""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from typing import Any

_TRUE = frozenset({"1", "true", "yes", "on"})
_FALSE = frozenset({"0", "false", "no", "off"})


def parse_bool(text: str, *, name: str = "value") -> bool:
    """Read a boolean the way people write one; anything else is an error, never ``False``."""
    lowered = text.strip().lower()
    if lowered in _TRUE:
        return True
    if lowered in _FALSE:
        return False
    raise ValueError(f"{name} must be one of true/false/1/0/yes/no/on/off, got {text!r}")


def parse_list(text: str) -> tuple[str, ...]:
    """A JSON list of strings, or a comma-separated list; blanks dropped."""
    stripped = text.strip()
    if stripped.startswith("["):
        items = json.loads(stripped)
        if not isinstance(items, list) or not all(isinstance(i, str) for i in items):
            raise ValueError(f"expected a JSON list of strings, got {text!r}")
        return tuple(i.strip() for i in items if i.strip())
    return tuple(part.strip() for part in stripped.split(",") if part.strip())


def present(environ: Mapping[str, str], name: str) -> str | None:
    """``environ[name]``, with unset and empty both meaning "not given"."""
    value = environ.get(name)
    return value if value not in (None, "") else None


def read_fields(
    environ: Mapping[str, str], *, fields: Mapping[str, tuple[str, Callable[[str], Any]]]
) -> dict[str, Any]:
    """Settings fields from variables: ``{field: (VARIABLE, parse)}``; unset ones are skipped.

    ``parse`` is ``str``, ``int``, ``float`` or ``bool`` (read with :func:`parse_bool`);
    a malformed value raises ``ValueError`` naming the variable.
    """
    values: dict[str, Any] = {}
    for field, (name, parse) in fields.items():
        raw = present(environ, name)
        if raw is None:
            continue
        if parse is bool:
            values[field] = parse_bool(raw, name=name)
            continue
        try:
            values[field] = parse(raw)
        except ValueError:
            kind = getattr(parse, "__name__", "value")
            raise ValueError(f"{name} must be a valid {kind}, got {raw!r}") from None
    return values
