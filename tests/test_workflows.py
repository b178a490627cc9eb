"""The GitHub Actions workflows: what they call exists, and deploys go where the stack trusts."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
import yaml

from cdk.config import load_config
from services.registry.keys import RELEASE_COMMIT, RELEASE_PREFIX
from tests.support import ROOT

WORKFLOWS = ROOT / ".github" / "workflows"
ACTIONS = ROOT / ".github" / "actions"
MAKE_CALL = re.compile(r"(?:^|&&|;|\|\|)\s*make\s+([\w-]+(?:[ \t]+[\w-]+)*)", re.MULTILINE)
REPO_PATH = re.compile(r"(?<![\w./-])((?:\.ci|cdk|docker|requirements|scripts)/[\w./-]+)")


def _load(path: Path) -> dict[str, Any]:
    return yaml.safe_load(path.read_text())


def _documents() -> dict[Path, dict[str, Any]]:
    files = sorted(WORKFLOWS.glob("*.yml")) + sorted(ACTIONS.glob("*/action.yml"))
    return {path: _load(path) for path in files}


def _steps(document: dict[str, Any]) -> list[dict[str, Any]]:
    if "runs" in document:  # a composite action
        return document["runs"]["steps"]
    return [step for job in document["jobs"].values() for step in job.get("steps", [])]


def _runs(document: dict[str, Any]) -> str:
    return "\n".join(step["run"] for step in _steps(document) if "run" in step)


def _make_targets() -> set[str]:
    text = (ROOT / "Makefile").read_text()
    return set(re.findall(r"^([\w-]+)\s*:(?!=)", text, flags=re.MULTILINE))


def test_both_workflows_exist() -> None:
    """ci.yml and deploy.yml are there (actionlint checks them in make lint)."""
    assert {p.name for p in WORKFLOWS.glob("*.yml")} >= {"ci.yml", "deploy.yml"}


@pytest.mark.parametrize("path", list(_documents()), ids=lambda p: str(p.relative_to(ROOT)))
def test_every_make_target_and_script_a_workflow_calls_exists(path: Path) -> None:
    """Each `make X`, repo script, requirements file and local action named in a run exists."""
    document = _documents()[path]
    runs = _runs(document)
    targets = _make_targets()
    for call in MAKE_CALL.findall(runs):
        for target in call.split():
            assert target in targets, f"{path.name}: make {target}"
    for relative in REPO_PATH.findall(runs):
        assert (ROOT / relative).exists(), f"{path.name}: {relative}"
    for step in _steps(document):
        uses = step.get("uses", "")
        if uses.startswith("./"):
            assert (ROOT / uses / "action.yml").is_file(), f"{path.name}: {uses}"
    for job in document.get("jobs", {}).values():
        uses = job.get("uses", "")
        if uses.startswith("./"):
            assert (ROOT / uses).is_file(), f"{path.name}: {uses}"


def test_ci_runs_what_ci_run_runs() -> None:
    """ci.yml: make install, make test (lint, actionlint, tests) and make test-compose."""
    runs = _runs(_load(WORKFLOWS / "ci.yml"))
    ci_run = (ROOT / ".ci" / "run").read_text()
    for target in ("install", "test", "test-compose"):
        assert f"make {target}" in ci_run
        assert re.search(rf"\bmake {target}\b", runs), target


def test_deploy_jobs_use_oidc_in_the_environment_the_stack_trusts() -> None:
    """dev -> qa -> prod, each with id-token: write in the GitHub environment its role trusts."""
    jobs = _load(WORKFLOWS / "deploy.yml")["jobs"]
    assert [jobs[name].get("needs") for name in ("dev", "qa", "prod")] == ["ci", "dev", "qa"]
    for name in ("dev", "qa", "prod"):
        job = jobs[name]
        assert job["permissions"]["id-token"] == "write"
        assert job["environment"] == load_config(name).github_environment
        deploys = [s for s in job["steps"] if s.get("uses") == "./.github/actions/deploy"]
        assert [s["with"]["environment"] for s in deploys] == [name]


def test_promotion_carries_the_release_from_the_environment_before() -> None:
    """qa and prod promote release/ from the environment cdk/config.py names."""
    jobs = _load(WORKFLOWS / "deploy.yml")["jobs"]
    for name in ("qa", "prod"):
        (promote,) = [
            s for s in jobs[name]["steps"] if s.get("uses") == "./.github/actions/promote"
        ]
        assert promote["with"] == {
            **promote["with"],
            "source": load_config(name).promote_from,
            "target": name,
        }
    promote_runs = _runs(_load(ACTIONS / "promote" / "action.yml"))
    assert f"--prefix {RELEASE_PREFIX}" in promote_runs
    assert f"get {RELEASE_COMMIT}" in promote_runs
    assert f"put {RELEASE_COMMIT}" in _runs(_load(WORKFLOWS / "deploy.yml"))


def test_deploy_action_diffs_before_it_deploys_then_exports_and_smoke_tests() -> None:
    """cdk diff, cdk deploy -c env=..., registry export into $GITHUB_ENV, then the smoke test."""
    runs = _runs(_load(ACTIONS / "deploy" / "action.yml"))
    order = [
        "npx cdk diff",
        "npx cdk deploy",
        "export --format github",
        "cdk/smoke-test.sh",
    ]
    positions = [runs.index(marker) for marker in order]
    assert positions == sorted(positions)
    assert '-c "env=$ENV_NAME"' in runs
    steps = _steps(_load(ACTIONS / "deploy" / "action.yml"))
    (credentials,) = [s for s in steps if "configure-aws-credentials" in s.get("uses", "")]
    assert credentials["with"]["role-to-assume"] == "${{ inputs.role-to-assume }}"
