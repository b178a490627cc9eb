"""Whole-app checks: cdk-nag, cfn-lint, the CLI's offline synth, no lookups."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import aws_cdk as cdk
import pytest

from cdk.config import load_config, with_overrides
from cdk.stack import TinyLlamaStack
from tests.infra.conftest import REPO_ROOT, Synthesized, new_app

# cfn-lint's W3005 ("DependsOn is redundant") flags dependencies CDK adds on
# purpose (e.g. a service on its listener); it is a style warning, never a bug.
CFN_LINT_IGNORED = "W3005"


def _offline_env() -> dict[str, str]:
    """The environment for child processes: no AWS credentials, venv python first."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    env["AWS_EC2_METADATA_DISABLED"] = "true"
    return env


def test_nag_passes_with_every_finding_acknowledged(env: Synthesized) -> None:
    """cdk-nag AwsSolutions ran (synth would raise on a finding) and left no violation."""
    report = env.outdir / "validation-report.json"
    if report.exists():
        plugins = json.loads(report.read_text())["pluginReports"]
        assert [v for p in plugins for v in p.get("violations", [])] == []
    acknowledged = [
        (c.node.path, rule, reason)
        for c in env.app.node.find_all()
        for m in c.node.metadata
        if m.type == cdk.Validations.ACKNOWLEDGED_RULES_METADATA_KEY
        for rule, reason in m.data.items()
    ]
    assert any("AwsSolutions-" in rule for _, rule, _ in acknowledged)
    for path, rule, reason in acknowledged:
        assert len(reason.strip()) >= 20, (path, rule)


def test_nag_blocks_an_unacknowledged_finding(tmp_path: Path) -> None:
    """The nag plugin is wired in: a wildcard grant nobody acknowledged fails synth."""
    from aws_cdk import aws_iam as iam

    from cdk.app import build

    app = new_app(tmp_path)
    stack = build(app, load_config("dev"))
    stack.gateway.task_definition.task_role.add_to_principal_policy(
        iam.PolicyStatement(actions=["s3:GetObject"], resources=["arn:aws:s3:::some-bucket/*"])
    )
    with pytest.raises(RuntimeError, match=r"ValidationFailed(.|\n)*AwsSolutions-IAM5"):
        app.synth()


def test_cfn_lint_is_clean(dev: Synthesized, prod: Synthesized) -> None:
    """cfn-lint finds no error or warning (W3005 aside) in either template."""
    result = subprocess.run(
        [
            str(Path(sys.executable).parent / "cfn-lint"),
            "--ignore-checks",
            CFN_LINT_IGNORED,
            "--",
            str(dev.template_path),
            str(prod.template_path),
        ],
        capture_output=True,
        text=True,
        timeout=120,
        env=_offline_env(),
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_bound_account_synthesizes_without_lookups(tmp_path: Path) -> None:
    """A stack bound to an account uses the configured AZs: nothing to look up."""
    config = with_overrides(
        load_config("dev"),
        account="111111111111",
        availability_zones=("us-east-1a", "us-east-1b"),
    )
    app = new_app(tmp_path)
    stack = TinyLlamaStack(app, "Bound", config=config)
    assembly = app.synth()
    manifest = json.loads((Path(assembly.directory) / "manifest.json").read_text())
    assert not manifest.get("missing")
    assert stack.network.vpc.availability_zones == ["us-east-1a", "us-east-1b"]


@pytest.fixture(scope="module")
def npx() -> str:
    """The pinned CDK CLI must be installed (``npm ci``); the test never skips."""
    path = shutil.which("npx")
    assert path, "npx not found: install Node.js 20+"
    assert (REPO_ROOT / "node_modules" / ".bin" / "cdk").exists(), (
        "the pinned CDK CLI is missing: run `npm ci --no-audit --no-fund` at the repo root"
    )
    return path


def test_cli_synth_offline(npx: str, tmp_path: Path) -> None:
    """`npx cdk synth -c env=dev` works from the repo root with no network or credentials."""
    out = tmp_path / "cdk.out"
    result = subprocess.run(
        [npx, "--no-install", "cdk", "synth", "-c", "env=dev", "--quiet", "-o", str(out)],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=300,
        env=_offline_env(),
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    template = json.loads((out / "TinyLlama-dev.template.json").read_text())
    assert "AWS::ElastiCache::ReplicationGroup" in {
        r["Type"] for r in template["Resources"].values()
    }


def test_cli_rejects_unknown_environment(npx: str, tmp_path: Path) -> None:
    """`npx cdk synth -c env=nope` fails and says which environments exist."""
    result = subprocess.run(
        [
            npx,
            "--no-install",
            "cdk",
            "synth",
            "-c",
            "env=nope",
            "--quiet",
            "-o",
            str(tmp_path / "cdk.out"),
        ],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=300,
        env=_offline_env(),
        check=False,
    )
    assert result.returncode != 0
    assert "unknown environment 'nope'" in result.stdout + result.stderr
