"""Parsing of setting values from text: the one place booleans and lists are read."""

from __future__ import annotations

import json

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
