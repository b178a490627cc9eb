"""A registry backend kept in one local file, for laptops, tests and CI.

Layout (JSON; TOML with the same shape can be read but not written)::

    {
      "local": {
        "queue/name": {"value": "arq:queue", "type": "String"},
        "redis/password": {"value": "hunter2", "type": "SecureString"}
      }
    }

A bare string (``"queue/name": "arq:queue"``) is read as a ``String``.
``SecureString`` values are stored in plain text: the file is created with
mode 0600 and lives in ``var/`` (git-ignored), but it is no vault.

Writes go to a temporary file in the same folder that is then renamed over
the original, so a reader never sees a half-written file. Two processes
writing at the same moment can still lose one update (last rename wins).
"""

from __future__ import annotations

import json
import os
import tempfile
import tomllib
from pathlib import Path
from typing import Any

from services.registry.backend import SECURE_STRING, STRING, Parameter, is_under
from services.registry.errors import BackendError

_Document = dict[str, dict[str, Parameter]]


class FileBackend:
    """Parameters in a JSON (read/write) or TOML (read-only) file; missing file = empty."""

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)

    def __repr__(self) -> str:
        return f"FileBackend({str(self.path)!r})"

    def read(self, env: str, key: str) -> Parameter | None:
        """Return the parameter, or ``None`` when it is not set."""
        return self._load().get(env, {}).get(key)

    def read_prefix(self, env: str, prefix: str) -> list[Parameter]:
        """Return every parameter of ``env`` under ``prefix``, sorted by key."""
        found = self._load().get(env, {})
        return [found[key] for key in sorted(found) if is_under(key, prefix)]

    def write(self, env: str, parameter: Parameter) -> None:
        """Create or overwrite a parameter and save the file atomically."""
        document = self._load()
        document.setdefault(env, {})[parameter.key] = parameter
        self._save(document)

    def delete(self, env: str, key: str) -> bool:
        """Remove a parameter; return whether it existed."""
        document = self._load()
        if document.get(env, {}).pop(key, None) is None:
            return False
        if not document[env]:
            del document[env]
        self._save(document)
        return True

    def _load(self) -> _Document:
        try:
            raw = self.path.read_bytes()
        except FileNotFoundError:
            return {}
        except OSError as error:
            raise BackendError(f"cannot read registry file {self.path}: {error.strerror}") from None
        try:
            if self._is_toml():
                data: Any = tomllib.loads(raw.decode("utf-8"))
            else:
                data = json.loads(raw) if raw.strip() else {}
        except (ValueError, UnicodeDecodeError) as error:
            raise BackendError(f"cannot parse registry file {self.path}: {error}") from None
        return _parse_document(data, source=self.path)

    def _save(self, document: _Document) -> None:
        if self._is_toml():
            raise BackendError(
                f"registry file {self.path} is TOML, which is read-only; use a .json file"
            )
        data = {
            env: {
                key: {"value": parameter.value, "type": parameter.type_name}
                for key, parameter in sorted(entries.items())
            }
            for env, entries in sorted(document.items())
        }
        text = json.dumps(data, indent=2, ensure_ascii=False) + "\n"
        write_atomically(self.path, text)

    def _is_toml(self) -> bool:
        return self.path.suffix.lower() == ".toml"


def write_atomically(path: Path, text: str) -> None:
    """Replace ``path`` with ``text`` so readers see the old or the new file, never half."""
    path.parent.mkdir(parents=True, exist_ok=True)
    # mkstemp creates the file with mode 0600, which suits a file holding secrets.
    handle, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    replaced = False
    try:
        with os.fdopen(handle, "w", encoding="utf-8") as stream:
            stream.write(text)
            stream.flush()
            os.fsync(stream.fileno())
        os.replace(temporary, path)
        replaced = True
    finally:
        if not replaced:
            Path(temporary).unlink(missing_ok=True)


def _parse_document(data: Any, *, source: Path) -> _Document:
    if not isinstance(data, dict):
        raise BackendError(f"registry file {source} must hold an object of environments")
    document: _Document = {}
    for env, entries in data.items():
        if not isinstance(entries, dict):
            raise BackendError(f"registry file {source}: environment {env!r} must be an object")
        document[env] = {
            key: _parse_entry(key, entry, where=f"{source} [{env}]")
            for key, entry in entries.items()
        }
    return document


def _parse_entry(key: str, entry: Any, *, where: str) -> Parameter:
    if isinstance(entry, str):
        return Parameter(key, entry)
    if isinstance(entry, dict) and isinstance(entry.get("value"), str):
        kind = entry.get("type", STRING)
        if kind in (STRING, SECURE_STRING):
            return Parameter(key, entry["value"], secure=kind == SECURE_STRING)
    raise BackendError(
        f"registry file {where}: key {key!r} must be a string or "
        '{"value": "...", "type": "String|SecureString"}'
    )
