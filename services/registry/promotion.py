"""Copy values from one environment to another, showing the difference first."""

from __future__ import annotations

import enum
from collections.abc import Sequence
from dataclasses import dataclass

from services.registry.backend import Parameter
from services.registry.errors import RegistryError
from services.registry.registry import Registry
from services.registry.secret import MASK


class Status(enum.Enum):
    """What promotion does to one key of the target environment."""

    ADDED = "added"
    CHANGED = "changed"
    UNCHANGED = "unchanged"


@dataclass(frozen=True, slots=True)
class Change:
    """One key of the source and its counterpart in the target (``None`` if absent)."""

    source: Parameter
    target: Parameter | None

    @property
    def key(self) -> str:
        """The key this change is about."""
        return self.source.key

    @property
    def status(self) -> Status:
        """Added, changed (value or type) or unchanged."""
        if self.target is None:
            return Status.ADDED
        if (self.target.value, self.target.secure) != (self.source.value, self.source.secure):
            return Status.CHANGED
        return Status.UNCHANGED


@dataclass(frozen=True, slots=True)
class Plan:
    """Everything promotion would do from ``source_env`` to ``target_env``."""

    source_env: str
    target_env: str
    changes: tuple[Change, ...]
    only_in_target: tuple[str, ...]

    def of(self, status: Status) -> list[Change]:
        """Return the changes with ``status``."""
        return [change for change in self.changes if change.status is status]

    def describe(self) -> list[str]:
        """Diff lines (``+`` added, ``~`` changed, ``=`` unchanged), secure values masked."""
        lines = []
        for change in self.changes:
            source, target = change.source, change.target
            if change.status is Status.ADDED:
                lines.append(f"+ {change.key} = {_shown(source)}")
            elif change.status is Status.CHANGED and target is not None:
                lines.append(f"~ {change.key}: {_shown(target)} -> {_shown(source)}")
            else:
                lines.append(f"= {change.key}")
        counts = ", ".join(f"{len(self.of(status))} {status.value}" for status in Status)
        summary = f"{self.source_env} -> {self.target_env}: {counts}"
        if self.only_in_target:
            summary += f"; {len(self.only_in_target)} only in {self.target_env} (left alone)"
        return [*lines, summary]


def plan_promotion(
    source: Sequence[Parameter],
    target: Sequence[Parameter],
    *,
    source_env: str,
    target_env: str,
) -> Plan:
    """Compare two environments' parameters; a pure function, nothing is written."""
    existing = {parameter.key: parameter for parameter in target}
    source_keys = {parameter.key for parameter in source}
    return Plan(
        source_env=source_env,
        target_env=target_env,
        changes=tuple(
            Change(parameter, existing.get(parameter.key))
            for parameter in sorted(source, key=lambda parameter: parameter.key)
        ),
        only_in_target=tuple(sorted(set(existing) - source_keys)),
    )


def promote(source: Registry, target: Registry, *, prefix: str = "", dry_run: bool = False) -> Plan:
    """Copy added and changed keys under ``prefix`` into ``target``, keeping their types.

    Keys that exist only in the target are left alone: promotion never deletes.
    """
    if source.env == target.env:
        raise RegistryError(f"cannot promote environment {source.env!r} onto itself")
    # A stale cached listing would make the plan lie about what it changes.
    source.refresh()
    target.refresh()
    plan = plan_promotion(
        source.parameters(prefix),
        target.parameters(prefix),
        source_env=source.env,
        target_env=target.env,
    )
    if not dry_run:
        for change in plan.of(Status.ADDED) + plan.of(Status.CHANGED):
            target.put(change.key, change.source.value, secure=change.source.secure)
    return plan


def _shown(parameter: Parameter) -> str:
    if parameter.secure:
        return f"{MASK} (SecureString)"
    return repr(parameter.value)
