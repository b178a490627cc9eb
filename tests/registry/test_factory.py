"""``open_registry``: bootstrap variables choose the environment and backend."""

from __future__ import annotations

from pathlib import Path

import pytest

from services.registry import FileBackend, RegistryError, open_registry


def test_defaults_are_local_environment_and_file_backend() -> None:
    """With no bootstrap variables: environment 'local', file backend on var/registry.json."""
    registry = open_registry(environ={})

    assert registry.env == "local"
    assert isinstance(registry.backend, FileBackend)
    assert registry.backend.path == Path("var/registry.json")


def test_only_the_given_mapping_is_read(monkeypatch: pytest.MonkeyPatch) -> None:
    """open_registry reads the mapping it is given, not the process environment."""
    monkeypatch.setenv("TINYLLAMA_ENV", "prod")
    monkeypatch.setenv("TINYLLAMA_REGISTRY", "ssm")

    registry = open_registry(environ={})

    assert registry.env == "local"
    assert isinstance(registry.backend, FileBackend)


def test_file_variable_selects_the_file(tmp_path: Path) -> None:
    """TINYLLAMA_REGISTRY_FILE and TINYLLAMA_ENV pick the file and the environment."""
    path = tmp_path / "elsewhere.json"
    registry = open_registry(environ={"TINYLLAMA_ENV": "dev", "TINYLLAMA_REGISTRY_FILE": str(path)})
    registry.put("model/id", "tiny")

    assert registry.env == "dev"
    assert '"dev"' in path.read_text()


def test_unknown_backend_is_refused() -> None:
    """An unknown TINYLLAMA_REGISTRY value raises RegistryError naming it and the choices."""
    with pytest.raises(RegistryError, match=r"'vault'.*file, ssm"):
        open_registry(environ={"TINYLLAMA_REGISTRY": "vault"})
