"""The CDK app: the only place that reads context (``-c env=NAME``)."""

from __future__ import annotations

import aws_cdk as cdk
from cdk_nag import AwsSolutionsChecks

from cdk.config import ConfigError, EnvConfig, load_config
from cdk.stack import TinyLlamaStack, stack_name


def config_from_context(app: cdk.App) -> EnvConfig:
    """Return the environment chosen with ``-c env=NAME`` (and its overrides)."""
    name = app.node.try_get_context("env")
    if not name:
        raise ConfigError("choose an environment: cdk synth -c env=dev|qa|prod")
    certificate_arn = app.node.try_get_context("certificate_arn")
    return load_config(str(name), certificate_arn=str(certificate_arn) if certificate_arn else None)


def build(app: cdk.App, config: EnvConfig) -> TinyLlamaStack:
    """Add the environment's stack to ``app`` and check it with cdk-nag."""
    stack = TinyLlamaStack(app, stack_name(config.name), config=config)
    cdk.Validations.of(app).add_plugins(AwsSolutionsChecks(app))
    return stack


def main() -> None:
    """Synthesize the stack of the environment named in context."""
    app = cdk.App()
    build(app, config_from_context(app))
    app.synth()


if __name__ == "__main__":
    main()
