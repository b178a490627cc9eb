"""Just enough Dockerfile, compose and source parsing for the static container tests."""

from __future__ import annotations

import ast
import dataclasses
import fnmatch
import json
import re
import shlex
from collections.abc import Iterable, Mapping
from pathlib import Path

ENV_NAME = re.compile(r"^(TINYLLAMA_[A-Z0-9_]+|REDIS_URL)$")
_INTERPOLATION = re.compile(r"\$\{(?P<name>[A-Za-z_][A-Za-z0-9_]*)(?::?-(?P<default>[^}]*))?\}")


@dataclasses.dataclass(frozen=True)
class Instruction:
    """One Dockerfile instruction, continuation lines joined."""

    keyword: str
    value: str

    def exec_form(self) -> list[str] | None:
        """The JSON (exec) form of CMD/ENTRYPOINT/HEALTHCHECK CMD, or None for shell form."""
        text = self.value
        if self.keyword == "HEALTHCHECK":
            match = re.search(r"\bCMD\s+(.*)$", text, re.DOTALL)
            if match is None:
                return None
            text = match.group(1)
        text = text.strip()
        if not text.startswith("["):
            return None
        return json.loads(text)


@dataclasses.dataclass(frozen=True)
class Stage:
    """A ``FROM`` and the instructions up to the next one."""

    base: str
    name: str | None
    instructions: tuple[Instruction, ...]

    def all(self, keyword: str) -> list[Instruction]:
        """Every instruction of this kind, in order."""
        return [i for i in self.instructions if i.keyword == keyword]

    def env(self) -> dict[str, str]:
        """The ``ENV`` names and values this stage sets."""
        values: dict[str, str] = {}
        for instruction in self.all("ENV"):
            for item in shlex.split(instruction.value):
                name, _, value = item.partition("=")
                values[name] = value
        return values


def parse_dockerfile(text: str) -> list[Stage]:
    """Split a Dockerfile into stages (comments dropped, continuations joined)."""
    logical: list[str] = []
    pending = ""
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue  # Docker drops comment lines, even inside a continuation
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        logical.append(pending + line)
        pending = ""
    if pending:
        logical.append(pending)
    raw_stages: list[tuple[str, str | None, list[Instruction]]] = []
    for line in logical:
        keyword, _, value = line.partition(" ")
        keyword = keyword.upper()
        if keyword == "FROM":
            words = value.split()
            name = words[2] if len(words) >= 3 and words[1].upper() == "AS" else None
            raw_stages.append((words[0], name, []))
        elif raw_stages:
            raw_stages[-1][2].append(Instruction(keyword=keyword, value=value.strip()))
    return [Stage(base=b, name=n, instructions=tuple(i)) for b, n, i in raw_stages]


def interpolate(value: str, environ: Mapping[str, str] | None = None) -> str:
    """Resolve compose's ``${VAR}``/``${VAR:-default}`` the way compose would."""
    environ = environ or {}

    def replace(match: re.Match[str]) -> str:
        found = environ.get(match.group("name"))
        if found:
            return found
        return match.group("default") or ""

    return _INTERPOLATION.sub(replace, value)


def service_environment(service: Mapping[str, object]) -> dict[str, str]:
    """A compose service's ``environment`` as a mapping, defaults interpolated."""
    raw = service.get("environment") or {}
    if isinstance(raw, list):
        raw = dict(item.partition("=")[::2] for item in raw)
    return {str(k): interpolate(str(v)) for k, v in dict(raw).items()}


def env_names_in_sources(paths: Iterable[Path]) -> set[str]:
    """Every string literal in ``paths`` that looks like one of our variable names."""
    names: set[str] = set()
    for path in paths:
        for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
            if (
                isinstance(node, ast.Constant)
                and isinstance(node.value, str)
                and ENV_NAME.match(node.value)
            ):
                names.add(node.value)
    return names


def module_path(root: Path, module: str) -> Path | None:
    """The file ``python -m module`` would run from ``root``, or None."""
    base = root.joinpath(*module.split("."))
    for candidate in (base / "__main__.py", base.with_suffix(".py")):
        if candidate.is_file():
            return candidate
    return None


def imported_modules(code: str) -> set[str]:
    """Top-level-qualified names of the modules ``code`` imports."""
    modules: set[str] = set()
    for node in ast.walk(ast.parse(code)):
        if isinstance(node, ast.Import):
            modules.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            modules.add(node.module)
    return modules


def module_exists(root: Path, module: str) -> bool:
    """True if ``module`` is a package or module file under ``root``."""
    base = root.joinpath(*module.split("."))
    return (base / "__init__.py").is_file() or base.with_suffix(".py").is_file()


def dockerignore_patterns(text: str) -> list[tuple[bool, str]]:
    """(negated, pattern) pairs of a .dockerignore, in order."""
    patterns = []
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        negated = line.startswith("!")
        patterns.append((negated, line.lstrip("!").strip("/")))
    return patterns


def is_ignored(path: str, patterns: list[tuple[bool, str]]) -> bool:
    """Whether .dockerignore drops ``path`` (or a folder above it); last match wins."""
    parts = path.strip("/").split("/")
    prefixes = ["/".join(parts[: i + 1]) for i in range(len(parts))]
    ignored = False
    for negated, pattern in patterns:
        for prefix in prefixes:
            candidates = [pattern]
            if pattern.startswith("**/"):
                candidates.append(pattern[3:])
            if any(fnmatch.fnmatchcase(prefix, p) for p in candidates) or (
                pattern.startswith("**/")
                and fnmatch.fnmatchcase(prefix.rsplit("/", 1)[-1], pattern[3:])
            ):
                ignored = not negated
                break
    return ignored
