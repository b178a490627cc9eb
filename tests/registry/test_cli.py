"""The registry CLI: commands, exit codes and one-line error messages."""

from __future__ import annotations

import io
import json
import subprocess
import sys
from pathlib import Path

import pytest

from services.registry import Registry
from tests.registry.support import RunCli

REPO_ROOT = Path(__file__).resolve().parents[2]


def test_put_then_get_prints_the_value(run_cli: RunCli, env_name: str) -> None:
    """``put`` reports the full path; ``get`` prints the value alone."""
    put = run_cli("put", "model/id", "tiny")
    got = run_cli("get", "model/id")

    assert (put.code, put.out) == (0, f"wrote /tinyllama/{env_name}/model/id (String)\n")
    assert (got.code, got.out, got.err) == (0, "tiny\n", "")


def test_get_of_a_secure_string_is_masked_unless_revealed(run_cli: RunCli) -> None:
    """``get`` masks a SecureString and says how to reveal it; ``--reveal`` prints it."""
    run_cli("put", "redis/password", "hunter2-very-secret", "--secure")

    masked = run_cli("get", "redis/password")
    revealed = run_cli("get", "redis/password", "--reveal")

    assert masked.out == "**********\n"
    assert "--reveal" in masked.err
    assert revealed.out == "hunter2-very-secret\n"


def test_put_reads_the_value_from_stdin(
    run_cli: RunCli, registry: Registry, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``put KEY -`` reads the value from stdin, keeping it out of shell history."""
    monkeypatch.setattr(sys, "stdin", io.StringIO("from-stdin\n"))

    result = run_cli("put", "redis/password", "-", "--secure")

    assert result.code == 0
    assert registry.get("redis/password").reveal() == "from-stdin"
    assert registry.parameter("redis/password").secure


def test_list_masks_secure_values_unless_revealed(run_cli: RunCli, registry: Registry) -> None:
    """``list`` prints key, type and value per line, SecureStrings masked unless ``--reveal``."""
    registry.put("queue/name", "arq:queue")
    registry.put("redis/password", "hunter2-very-secret", secure=True)
    registry.put("model/id", "tiny")

    masked = run_cli("list")
    revealed = run_cli("list", "--reveal")
    under_queue = run_cli("list", "queue")

    assert masked.out.splitlines() == [
        "model/id\tString\ttiny",
        "queue/name\tString\tarq:queue",
        "redis/password\tSecureString\t**********",
    ]
    assert "redis/password\tSecureString\thunter2-very-secret" in revealed.out
    assert under_queue.out == "queue/name\tString\tarq:queue\n"


def test_delete_removes_and_reports(run_cli: RunCli, registry: Registry, env_name: str) -> None:
    """``delete`` removes the key and prints its path; a second delete fails with exit 2."""
    registry.put("model/id", "tiny")

    first = run_cli("delete", "model/id")
    second = run_cli("delete", "model/id")

    assert (first.code, first.out) == (0, f"deleted /tinyllama/{env_name}/model/id\n")
    assert second.code == 2


def test_missing_key_exits_2_with_one_line(run_cli: RunCli, env_name: str) -> None:
    """A missing key prints one 'error:' line naming path and environment, and exits 2."""
    result = run_cli("get", "model/id")

    assert result.code == 2
    assert result.out == ""
    assert result.err == (
        f"error: registry key 'model/id' is not set in environment '{env_name}' "
        f"(parameter /tinyllama/{env_name}/model/id)\n"
    )


def test_unknown_backend_exits_2(run_cli: RunCli) -> None:
    """An unknown TINYLLAMA_REGISTRY exits 2 with a one-line message, no traceback."""
    result = run_cli("list", environ={"TINYLLAMA_REGISTRY": "vault"})

    assert result.code == 2
    assert result.err.startswith("error: unknown registry backend 'vault'")
    assert result.err.count("\n") == 1


def test_bad_registry_file_exits_2(run_cli: RunCli, tmp_path: Path) -> None:
    """A malformed registry file exits 2 with a one-line message naming the file."""
    bad = tmp_path / "bad.json"
    bad.write_text("{oops")

    result = run_cli("--backend", "file", "--file", str(bad), "list")

    assert result.code == 2
    assert str(bad) in result.err
    assert result.err.count("\n") == 1


def test_usage_errors_exit_2(run_cli: RunCli) -> None:
    """An unknown command or a missing argument is a usage error with exit status 2."""
    assert run_cli("frobnicate").code == 2
    assert run_cli("get").code == 2


def test_options_work_after_the_command(run_cli: RunCli, registry: Registry) -> None:
    """``--env`` given after the command selects the environment like one given before."""
    other = registry.for_env(f"{registry.env}-qa")
    other.put("model/id", "qa-model")

    before = run_cli("--env", other.env, "get", "model/id")
    after = run_cli("get", "model/id", "--env", other.env)

    assert before.out == after.out == "qa-model\n"


def test_bootstrap_seeds_from_json(run_cli: RunCli, registry: Registry, tmp_path: Path) -> None:
    """``bootstrap --from-file`` writes every key, typed values as text, secure ones secure."""
    seed = tmp_path / "seed.json"
    seed.write_text(
        json.dumps(
            {
                "queue/max-depth": 100,
                "jwt/client-ids": ["desktop", "machine"],
                "flags/enabled": True,
                "redis/password": {"value": "hunter2-very-secret", "secure": True},
            }
        )
    )

    result = run_cli("bootstrap", "--from-file", str(seed))

    assert result.code == 0
    assert registry.get("queue/max-depth") == "100"
    assert json.loads(registry.get("jwt/client-ids")) == ["desktop", "machine"]
    assert registry.get("flags/enabled") == "true"
    assert registry.parameter("redis/password").secure
    assert "hunter2" not in result.out + result.err
    assert "warning: flags/enabled is not in services.registry.keys" in result.err


def test_bootstrap_seeds_from_toml(run_cli: RunCli, registry: Registry, tmp_path: Path) -> None:
    """A TOML seed file works the same way, including the secure table form."""
    seed = tmp_path / "seed.toml"
    seed.write_text(
        '"model/id" = "tiny"\n"redis/password" = { value = "pw-1234", type = "SecureString" }\n'
    )

    result = run_cli("bootstrap", "--from-file", str(seed))

    assert result.code == 0
    assert registry.get("model/id") == "tiny"
    assert registry.get("redis/password").reveal() == "pw-1234"
    assert registry.parameter("redis/password").secure


@pytest.mark.parametrize(
    "content",
    ["[1, 2]", '{"model/id": {"value": "x", "secure": "yes"}}', '{"bad key": "x"}', "{nope"],
)
def test_bad_seed_file_exits_2(run_cli: RunCli, tmp_path: Path, content: str) -> None:
    """A malformed seed file exits 2 with one line naming the file, and writes nothing."""
    seed = tmp_path / "seed.json"
    seed.write_text(content)

    result = run_cli("bootstrap", "--from-file", str(seed))

    assert result.code == 2
    assert result.err.startswith("error: ")
    assert result.err.count("\n") == 1
    assert run_cli("list").out == ""


def test_module_entry_point_runs(tmp_path: Path) -> None:
    """``python -m services.registry`` runs main() and returns its exit status."""
    command = [sys.executable, "-m", "services.registry", "--file", str(tmp_path / "r.json")]
    env = {"PATH": "/usr/bin:/bin", "TINYLLAMA_ENV": "dev"}

    put = subprocess.run(
        [*command, "put", "model/id", "tiny"], cwd=REPO_ROOT, env=env, capture_output=True
    )
    missing = subprocess.run(
        [*command, "get", "nope"], cwd=REPO_ROOT, env=env, capture_output=True, text=True
    )

    assert put.returncode == 0
    assert missing.returncode == 2
    assert missing.stderr == (
        "error: registry key 'nope' is not set in environment 'dev' "
        "(parameter /tinyllama/dev/nope)\n"
    )
