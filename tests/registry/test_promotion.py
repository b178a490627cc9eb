"""Promotion copies values between environments, showing a masked diff first."""

from __future__ import annotations

import pytest

from services.registry import Parameter, Registry, RegistryError
from services.registry.promotion import Status, plan_promotion, promote
from tests.registry.support import RunCli


@pytest.fixture
def environments(registry: Registry, env_name: str) -> tuple[Registry, Registry]:
    """A source ("dev") and target ("qa") environment with overlapping keys."""
    dev, qa = registry, registry.for_env(f"{env_name}-qa")
    dev.put("model/id", "tiny-v2")
    dev.put("queue/max-depth", "100")
    dev.put("redis/password", "dev-secret-value", secure=True)
    dev.put("budget/warn-usd", "50")
    qa.put("model/id", "tiny-v1")
    qa.put("queue/max-depth", "100")
    qa.put("api/url", "https://qa.example.com")
    return dev, qa


def test_plan_classifies_added_changed_unchanged() -> None:
    """plan_promotion marks keys as added, changed (value or type) or unchanged."""
    plan = plan_promotion(
        [Parameter("a", "1"), Parameter("b", "2"), Parameter("c", "3"), Parameter("d", "4", True)],
        [Parameter("b", "2"), Parameter("c", "x"), Parameter("d", "4"), Parameter("z", "9")],
        source_env="dev",
        target_env="qa",
    )

    assert {change.key: change.status for change in plan.changes} == {
        "a": Status.ADDED,
        "b": Status.UNCHANGED,
        "c": Status.CHANGED,
        "d": Status.CHANGED,
    }
    assert plan.only_in_target == ("z",)


def test_dry_run_prints_diff_and_changes_nothing(
    environments: tuple[Registry, Registry], run_cli: RunCli
) -> None:
    """``promote --dry-run`` prints the masked diff and leaves the target as it was."""
    dev, qa = environments
    before = {p.key: (p.value, p.secure) for p in qa.parameters()}

    result = run_cli("promote", "--from", dev.env, "--to", qa.env, "--dry-run")

    assert result.code == 0
    lines = result.out.splitlines()
    assert "+ budget/warn-usd = '50'" in lines
    assert "~ model/id: 'tiny-v1' -> 'tiny-v2'" in lines
    assert "+ redis/password = ********** (SecureString)" in lines
    assert "= queue/max-depth" in lines
    assert "2 added, 1 changed, 1 unchanged; 1 only in" in result.out
    assert lines[-1] == "dry run: nothing written"
    assert "dev-secret-value" not in result.out + result.err
    qa.refresh()
    assert {p.key: (p.value, p.secure) for p in qa.parameters()} == before


def test_promotion_copies_and_keeps_secure_strings_secure(
    environments: tuple[Registry, Registry], run_cli: RunCli
) -> None:
    """A real promotion copies added and changed keys; a SecureString stays a SecureString."""
    dev, qa = environments

    result = run_cli("promote", "--from", dev.env, "--to", qa.env)

    assert result.code == 0
    assert "dev-secret-value" not in result.out
    qa.refresh()
    assert qa.get("model/id") == "tiny-v2"
    assert qa.get("budget/warn-usd") == "50"
    assert qa.parameter("redis/password").secure
    assert qa.get("redis/password").reveal() == "dev-secret-value"
    assert qa.get("api/url") == "https://qa.example.com"  # only in target: left alone


def test_second_promotion_finds_nothing_to_do(environments: tuple[Registry, Registry]) -> None:
    """After a promotion every promoted key reports unchanged."""
    dev, qa = environments
    promote(dev, qa)

    plan = promote(dev, qa, dry_run=True)

    assert {change.status for change in plan.changes} == {Status.UNCHANGED}


def test_promotion_can_be_limited_to_a_prefix(environments: tuple[Registry, Registry]) -> None:
    """With a prefix, only keys below it are compared and copied."""
    dev, qa = environments

    plan = promote(dev, qa, prefix="budget")

    assert [change.key for change in plan.changes] == ["budget/warn-usd"]
    assert qa.get("model/id") == "tiny-v1"


def test_promotion_onto_itself_is_refused(registry: Registry) -> None:
    """Promoting an environment onto itself raises RegistryError."""
    with pytest.raises(RegistryError, match="onto itself"):
        promote(registry, registry.for_env(registry.env))
