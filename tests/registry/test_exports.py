"""Export formats: shell, dotenv, GitHub Actions and JSON carry values exactly."""

from __future__ import annotations

import json
import re
import subprocess
from pathlib import Path

import pytest

from services.registry import Parameter, Registry, RegistryError
from services.registry.exports import render, variable_name
from services.registry.seeds import parse_seed
from tests.registry.support import RunCli

AWKWARD = 'it\'s "quoted" $HOME `ls` \\ back\nsecond line'
PARAMETERS = [
    Parameter("api/url", "https://api.example.com/v1?a=1&b=2"),
    Parameter("cognito/user-pool-id", "us-east-1_AbC"),
    Parameter("notes/awkward", AWKWARD),
    Parameter("redis/password", "pa ss'word", secure=True),
]


def test_variable_names_are_upper_snake_with_prefix() -> None:
    """Keys become TINYLLAMA_ plus upper snake case."""
    assert variable_name("cognito/user-pool-id") == "TINYLLAMA_COGNITO_USER_POOL_ID"
    assert variable_name("gpu/hourly-price-usd") == "TINYLLAMA_GPU_HOURLY_PRICE_USD"


def test_colliding_variable_names_are_refused() -> None:
    """Two keys that map to one variable name raise instead of dropping a value."""
    with pytest.raises(RegistryError, match="TINYLLAMA_A_B"):
        render([Parameter("a/b", "1"), Parameter("a-b", "2")], fmt="env")


def test_env_format_survives_a_real_shell() -> None:
    """``eval`` of the env export in bash yields every value byte for byte."""
    script = render(PARAMETERS, fmt="env")
    shown = subprocess.run(
        [
            "bash",
            "-c",
            'eval "$1"; printf "%s\\0" "$TINYLLAMA_NOTES_AWKWARD" '
            '"$TINYLLAMA_REDIS_PASSWORD" "$TINYLLAMA_API_URL"',
            "bash",
            script,
        ],
        check=True,
        capture_output=True,
        text=True,
    ).stdout.split("\0")[:-1]

    assert shown == [AWKWARD, "pa ss'word", "https://api.example.com/v1?a=1&b=2"]
    assert script.startswith("export TINYLLAMA_API_URL=")


def test_dotenv_format_round_trips_through_python_dotenv(tmp_path: Path) -> None:
    """python-dotenv reads the dotenv export back to the same values."""
    dotenv = pytest.importorskip("dotenv")
    path = tmp_path / ".env"
    path.write_text(render(PARAMETERS, fmt="dotenv"))

    values = dotenv.dotenv_values(path)

    assert values == {variable_name(p.key): p.value for p in PARAMETERS}


def test_github_format_uses_heredoc_for_multiline_values() -> None:
    """Single-line values are NAME=value; multi-line ones use NAME<<DELIM ... DELIM."""
    text = render(PARAMETERS, fmt="github")

    assert "TINYLLAMA_API_URL=https://api.example.com/v1?a=1&b=2\n" in text
    heredoc = re.search(r"TINYLLAMA_NOTES_AWKWARD<<(\S+)\n(.*)\n\1\n", text, re.DOTALL)
    assert heredoc is not None
    assert heredoc.group(2) == AWKWARD


def test_json_format_round_trips_through_the_seed_reader() -> None:
    """The JSON export is a seed document that bootstrap reads back identically."""
    document = json.loads(render(PARAMETERS, fmt="json"))

    assert document["redis/password"] == {"value": "pa ss'word", "secure": True}
    assert parse_seed(document) == PARAMETERS


def _seed(registry: Registry) -> None:
    registry.put("api/url", "https://api.example.com")
    registry.put("notes/awkward", AWKWARD)
    registry.put("redis/password", "hunter2-very-secret", secure=True)


def test_cli_export_env_prints_shell_lines(registry: Registry, run_cli: RunCli) -> None:
    """``export --format env`` prints one shell-quoted export line per key, values decrypted."""
    _seed(registry)

    result = run_cli("export", "--format", "env")

    assert result.code == 0
    assert "export TINYLLAMA_API_URL=https://api.example.com\n" in result.out
    assert "export TINYLLAMA_REDIS_PASSWORD=hunter2-very-secret\n" in result.out


def test_cli_export_dotenv_prints_quoted_lines(registry: Registry, run_cli: RunCli) -> None:
    """``export --format dotenv`` prints NAME='value' lines."""
    _seed(registry)

    result = run_cli("export", "--format", "dotenv")

    assert result.code == 0
    assert "TINYLLAMA_API_URL='https://api.example.com'\n" in result.out


def test_cli_export_json_prints_a_seed_object(registry: Registry, run_cli: RunCli) -> None:
    """``export --format json`` prints an object with secure values marked."""
    _seed(registry)

    result = run_cli("export", "--format", "json")

    assert result.code == 0
    assert json.loads(result.out) == {
        "api/url": "https://api.example.com",
        "notes/awkward": AWKWARD,
        "redis/password": {"value": "hunter2-very-secret", "secure": True},
    }


def test_cli_export_github_appends_to_github_env(
    registry: Registry,
    run_cli: RunCli,
    tmp_path: Path,
) -> None:
    """``export --format github`` appends to $GITHUB_ENV and asks the runner to mask secrets."""
    _seed(registry)
    github_env = tmp_path / "github_env"
    github_env.write_text("EARLIER=1\n")

    result = run_cli("export", "--format", "github", environ={"GITHUB_ENV": str(github_env)})

    written = github_env.read_text()
    assert result.code == 0
    assert written.startswith("EARLIER=1\nTINYLLAMA_API_URL=https://api.example.com\n")
    assert "TINYLLAMA_REDIS_PASSWORD=hunter2-very-secret\n" in written
    assert re.search(r"TINYLLAMA_NOTES_AWKWARD<<(\S+)\n.*\n\1\n", written, re.DOTALL)
    assert result.out == "::add-mask::hunter2-very-secret\n"


def test_cli_export_github_without_github_env_fails(registry: Registry, run_cli: RunCli) -> None:
    """Without GITHUB_ENV, the github export exits 2 with a one-line error."""
    _seed(registry)

    result = run_cli("export", "--format", "github")

    assert result.code == 2
    assert result.err == "error: export --format github needs GITHUB_ENV (set by GitHub Actions)\n"
