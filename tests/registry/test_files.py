"""The file backend: documented layout, atomic writes, missing and bad files."""

from __future__ import annotations

import json
import os
import stat
from pathlib import Path

import pytest

from services.registry import BackendError, FileBackend, Parameter, Registry


def test_file_layout_is_env_then_key(tmp_path: Path) -> None:
    """Writes produce {"<env>": {"<key>": {"value": ..., "type": ...}}}."""
    path = tmp_path / "registry.json"
    backend = FileBackend(path)

    backend.write("dev", Parameter("queue/name", "arq:queue"))
    backend.write("dev", Parameter("redis/password", "pw", secure=True))

    assert json.loads(path.read_text()) == {
        "dev": {
            "queue/name": {"value": "arq:queue", "type": "String"},
            "redis/password": {"value": "pw", "type": "SecureString"},
        }
    }


def test_bare_strings_are_read_as_string_parameters(tmp_path: Path) -> None:
    """A hand-written ``"key": "value"`` entry reads as a String."""
    path = tmp_path / "registry.json"
    path.write_text(json.dumps({"dev": {"model/id": "tiny"}}))

    assert FileBackend(path).read("dev", "model/id") == Parameter("model/id", "tiny")


def test_missing_file_is_an_empty_registry(tmp_path: Path) -> None:
    """A file that does not exist reads as empty and is created on first write."""
    path = tmp_path / "var" / "registry.json"
    backend = FileBackend(path)

    assert backend.read("dev", "model/id") is None
    assert backend.read_prefix("dev", "") == []
    backend.write("dev", Parameter("model/id", "tiny"))
    assert path.exists()


def test_write_replaces_the_file_atomically(tmp_path: Path) -> None:
    """A write renames a new file into place: old readers keep the old inode, no temp remains."""
    path = tmp_path / "registry.json"
    backend = FileBackend(path)
    backend.write("dev", Parameter("model/id", "old"))
    old_inode = path.stat().st_ino

    with path.open() as reader:
        backend.write("dev", Parameter("model/id", "new"))
        assert json.load(reader)["dev"]["model/id"]["value"] == "old"

    assert path.stat().st_ino != old_inode
    assert FileBackend(path).read("dev", "model/id") == Parameter("model/id", "new")
    assert sorted(os.listdir(tmp_path)) == ["registry.json"]


def test_file_is_private_to_its_owner(tmp_path: Path) -> None:
    """The file may hold secrets, so it is written with mode 0600."""
    path = tmp_path / "registry.json"

    FileBackend(path).write("dev", Parameter("redis/password", "pw", secure=True))

    assert stat.S_IMODE(path.stat().st_mode) == 0o600


def test_delete_of_last_key_drops_the_environment(tmp_path: Path) -> None:
    """Deleting an environment's last key leaves no empty environment behind."""
    path = tmp_path / "registry.json"
    backend = FileBackend(path)
    backend.write("dev", Parameter("model/id", "tiny"))

    assert backend.delete("dev", "model/id") is True
    assert backend.delete("dev", "model/id") is False
    assert json.loads(path.read_text()) == {}


@pytest.mark.parametrize(
    "content",
    ["{not json", '["a list"]', '{"dev": "not an object"}', '{"dev": {"k": {"value": 1}}}'],
)
def test_bad_file_raises_backend_error_naming_it(tmp_path: Path, content: str) -> None:
    """A malformed file raises BackendError naming the file instead of a traceback."""
    path = tmp_path / "registry.json"
    path.write_text(content)

    with pytest.raises(BackendError, match=r"registry\.json"):
        FileBackend(path).read("dev", "k")


def test_toml_file_is_read(tmp_path: Path) -> None:
    """A .toml file with the same layout is readable, tables and bare strings alike."""
    path = tmp_path / "registry.toml"
    path.write_text(
        '[dev]\n"model/id" = "tiny"\n"redis/password" = { value = "pw", type = "SecureString" }\n'
    )
    registry = Registry("dev", FileBackend(path))

    assert registry.get("model/id") == "tiny"
    assert registry.parameter("redis/password").secure


def test_toml_file_is_read_only(tmp_path: Path) -> None:
    """Writing to a TOML registry raises BackendError pointing at JSON."""
    path = tmp_path / "registry.toml"
    path.write_text('[dev]\n"model/id" = "tiny"\n')

    with pytest.raises(BackendError, match="read-only"):
        FileBackend(path).write("dev", Parameter("model/id", "other"))
    assert "tiny" in path.read_text()
