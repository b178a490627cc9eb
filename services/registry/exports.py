"""Render parameters for other tools: shell, dotenv, GitHub Actions, JSON.

Every format carries the real (decrypted) values: exporting is how values
reach a process. Variable names are ``TINYLLAMA_`` plus the key in upper
snake case (``cognito/user-pool-id`` -> ``TINYLLAMA_COGNITO_USER_POOL_ID``).
"""

from __future__ import annotations

import json
import re
import shlex
import uuid
from collections.abc import Sequence

from services.registry.backend import Parameter
from services.registry.errors import RegistryError
from services.registry.seeds import dump_seed

FORMATS = ("env", "dotenv", "github", "json")
VARIABLE_PREFIX = "TINYLLAMA_"


def variable_name(key: str) -> str:
    """Return the environment variable name of a registry key."""
    return VARIABLE_PREFIX + re.sub(r"[^A-Za-z0-9]", "_", key).upper()


def render(parameters: Sequence[Parameter], *, fmt: str) -> str:
    """Render ``parameters`` in format ``fmt`` (one of :data:`FORMATS`)."""
    renderers = {
        "env": render_shell,
        "dotenv": render_dotenv,
        "github": render_github_env,
        "json": render_json,
    }
    if fmt not in renderers:
        raise RegistryError(f"unknown export format {fmt!r}: use one of {', '.join(FORMATS)}")
    return renderers[fmt](parameters)


def render_shell(parameters: Sequence[Parameter]) -> str:
    """``export NAME=value`` lines, shell-quoted, for ``eval`` or ``source``."""
    return "".join(
        f"export {name}={shlex.quote(parameter.value)}\n" for name, parameter in _named(parameters)
    )


def render_dotenv(parameters: Sequence[Parameter]) -> str:
    """``NAME=value`` lines for a ``.env`` file (python-dotenv, docker compose)."""
    return "".join(
        f"{name}={_dotenv_quote(parameter.value)}\n" for name, parameter in _named(parameters)
    )


def render_github_env(parameters: Sequence[Parameter]) -> str:
    """Text to append to ``$GITHUB_ENV``; multi-line values use the heredoc form."""
    lines = []
    for name, parameter in _named(parameters):
        value = parameter.value
        if "\n" in value or "\r" in value:
            delimiter = f"ghadelimiter_{uuid.uuid4().hex}"
            lines.append(f"{name}<<{delimiter}\n{value}\n{delimiter}\n")
        else:
            lines.append(f"{name}={value}\n")
    return "".join(lines)


def render_github_masks(parameters: Sequence[Parameter]) -> str:
    """``::add-mask::`` commands so the Actions runner hides secure values in its logs."""
    return "".join(
        f"::add-mask::{line}\n"
        for parameter in parameters
        if parameter.secure
        for line in parameter.value.splitlines()
        if line.strip()
    )


def render_json(parameters: Sequence[Parameter]) -> str:
    """A JSON object in the seed format, so ``bootstrap --from-file`` can read it back."""
    return json.dumps(dump_seed(parameters), indent=2, ensure_ascii=False) + "\n"


def _named(parameters: Sequence[Parameter]) -> list[tuple[str, Parameter]]:
    named: dict[str, Parameter] = {}
    for parameter in parameters:
        name = variable_name(parameter.key)
        if name in named:
            # Silently dropping one of two values would be worse than refusing.
            raise RegistryError(
                f"keys {named[name].key!r} and {parameter.key!r} both export as {name}"
            )
        named[name] = parameter
    return list(named.items())


def _dotenv_quote(value: str) -> str:
    # Single quotes are literal in python-dotenv and docker compose (no escapes,
    # no ${VAR} expansion); only values they cannot hold get double quotes.
    if "'" not in value and "\n" not in value and "\r" not in value:
        return f"'{value}'"
    escaped = (
        value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n").replace("\r", "\\r")
    )
    return f'"{escaped}"'
