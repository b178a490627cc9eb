"""Seed files: a flat ``key -> value`` document used by ``bootstrap`` and ``export json``.

JSON or TOML (by file suffix). A value is a string, a number, a boolean, a
list, or a table that marks it secure::

    {
      "queue/name": "arq:queue",
      "queue/max-depth": 100,
      "jwt/client-ids": ["desktop", "machine"],
      "redis/password": {"value": "hunter2", "secure": true}
    }

``{"value": ..., "type": "SecureString"}`` is accepted as well. Numbers,
booleans and lists are stored as text (``100``, ``true``, JSON).
"""

from __future__ import annotations

import json
import tomllib
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from services.registry.backend import SECURE_STRING, STRING, Parameter, check_key
from services.registry.errors import RegistryError


def load_seed_file(path: str | Path) -> list[Parameter]:
    """Read a JSON or TOML seed file into parameters; raise ``RegistryError`` if it is bad."""
    path = Path(path)
    try:
        raw = path.read_bytes()
    except OSError as error:
        raise RegistryError(f"cannot read seed file {path}: {error.strerror}") from None
    try:
        if path.suffix.lower() == ".toml":
            data: Any = tomllib.loads(raw.decode("utf-8"))
        else:
            data = json.loads(raw)
    except (ValueError, UnicodeDecodeError) as error:
        raise RegistryError(f"cannot parse seed file {path}: {error}") from None
    if not isinstance(data, dict):
        raise RegistryError(f"seed file {path} must hold an object of key -> value")
    return parse_seed(data, source=str(path))


def parse_seed(data: Mapping[str, Any], *, source: str = "seed") -> list[Parameter]:
    """Turn a ``key -> value`` mapping into parameters, sorted by key."""
    parameters = []
    for key, entry in sorted(data.items()):
        try:
            parameters.append(_parse_entry(check_key(key), entry))
        except ValueError as error:
            raise RegistryError(f"{source}: key {key!r}: {error}") from None
    return parameters


def dump_seed(parameters: Iterable[Parameter]) -> dict[str, Any]:
    """Return the seed document for ``parameters`` (secure values in plain text, marked)."""
    return {
        parameter.key: {"value": parameter.value, "secure": True}
        if parameter.secure
        else parameter.value
        for parameter in parameters
    }


def format_value(value: object) -> str:
    """Turn a value from a JSON/TOML seed file into the string the registry stores.

    Booleans become ``true``/``false`` (which :func:`parse_bool` reads back),
    lists and tables become JSON, numbers their usual text.
    """
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return value
    if isinstance(value, int | float):
        return str(value)
    if isinstance(value, list | dict):
        return json.dumps(value, separators=(",", ":"))
    raise ValueError(f"unsupported value type {type(value).__name__}")


def _parse_entry(key: str, entry: Any) -> Parameter:
    if not isinstance(entry, dict):
        return Parameter(key, format_value(entry))
    if "value" not in entry or set(entry) - {"value", "secure", "type"}:
        raise ValueError('a table needs "value" and may have only "secure" or "type" besides')
    secure = entry.get("secure", False)
    kind = entry.get("type", SECURE_STRING if secure else STRING)
    if not isinstance(secure, bool) or kind not in (STRING, SECURE_STRING):
        raise ValueError('"secure" must be true/false and "type" String or SecureString')
    if secure and kind != SECURE_STRING:
        raise ValueError('"secure": true contradicts "type": "String"')
    return Parameter(key, format_value(entry["value"]), secure=kind == SECURE_STRING)
