"""The environment table and the app's reading of ``-c env=NAME``."""

from __future__ import annotations

from pathlib import Path

import pytest

from cdk.app import config_from_context
from cdk.config import (
    ENVIRONMENTS,
    MIN_ORIGIN_READ_TIMEOUT_S,
    ConfigError,
    load_config,
    with_overrides,
)
from services.gateway.settings import GatewaySettings
from tests.infra.conftest import TEST_CERTIFICATE_ARN, new_app


def test_environments_are_dev_qa_prod() -> None:
    """The table offers exactly the three environments the issue names."""
    assert set(ENVIRONMENTS) == {"dev", "qa", "prod"}


def test_unknown_environment_is_rejected_with_the_choices() -> None:
    """A typo in ``-c env=`` fails loudly and lists the valid names."""
    with pytest.raises(ConfigError, match=r"unknown environment 'staging'.*dev, prod, qa"):
        load_config("staging")


def test_app_context_unknown_environment_is_rejected(tmp_path: Path) -> None:
    """The app itself refuses an unknown ``env`` context value."""
    with pytest.raises(ConfigError, match="unknown environment 'nope'"):
        config_from_context(new_app(tmp_path, env="nope"))


def test_app_context_without_environment_is_rejected(tmp_path: Path) -> None:
    """No ``-c env=`` means no stack, not a silent default environment."""
    with pytest.raises(ConfigError, match="choose an environment"):
        config_from_context(new_app(tmp_path))


def test_app_context_certificate_overrides_table(tmp_path: Path) -> None:
    """``-c certificate_arn=`` reaches the config (and turns HTTPS on)."""
    config = config_from_context(
        new_app(tmp_path, env="prod", certificate_arn=TEST_CERTIFICATE_ARN)
    )
    assert config.certificate_arn == TEST_CERTIFICATE_ARN
    assert config.edge == "alb"


def test_environment_without_domain_gets_https_from_cloudfront() -> None:
    """dev and qa (no certificate, no domain) are served by CloudFront; prod by its own domain."""
    assert load_config("dev").edge == load_config("qa").edge == "cloudfront"
    assert load_config("prod").edge == "alb"


def test_prod_requests_a_dns_validated_certificate_for_its_domain(tmp_path: Path) -> None:
    """prod with only api_domain_name synthesizes HTTPS with a certificate the stack requests."""
    from aws_cdk.assertions import Match

    from tests.infra.conftest import synthesize

    template = synthesize(load_config("prod"), tmp_path).template  # cdk-nag runs here too
    template.has_resource_properties(
        "AWS::CertificateManager::Certificate",
        {"DomainName": "api.tinyllama.example.com", "ValidationMethod": "DNS"},
    )
    template.has_resource_properties(
        "AWS::ElasticLoadBalancingV2::Listener",
        {"Port": 443, "Protocol": "HTTPS", "Certificates": Match.any_value()},
    )


def test_certificate_must_be_an_acm_arn() -> None:
    """A malformed certificate ARN is caught before deploy."""
    with pytest.raises(ConfigError, match="not an ACM certificate ARN"):
        load_config("prod", certificate_arn="arn:aws:iam::111111111111:server-certificate/x")


def test_budget_thresholds_must_be_ordered() -> None:
    """Warning <= hard stop <= monthly budget, or the cost guard makes no sense."""
    with pytest.raises(ConfigError, match="budget"):
        with_overrides(load_config("dev"), budget_warn_usd=500.0)


def test_budget_needs_a_recipient() -> None:
    """A budget that tells nobody protects nobody from a surprise GPU bill."""
    with pytest.raises(ConfigError, match="budget_emails"):
        with_overrides(load_config("dev"), budget_emails=())


def test_bound_account_needs_explicit_azs() -> None:
    """Binding an account without AZs would make synth look AZs up (not offline)."""
    with pytest.raises(ConfigError, match="availability_zones"):
        with_overrides(load_config("dev"), account="111111111111")


def test_nat_defaults_to_zero() -> None:
    """NAT gateways cost money: every environment starts with none."""
    assert all(
        load_config(n, certificate_arn=TEST_CERTIFICATE_ARN).nat_gateways == 0 for n in ENVIRONMENTS
    )


def test_origin_read_timeout_outlasts_sync_waits_and_sse_pings() -> None:
    """CloudFront's read timeout must exceed the gateway's sync wait and two SSE pings, max 120."""
    assert MIN_ORIGIN_READ_TIMEOUT_S > GatewaySettings.wait_timeout_s
    assert MIN_ORIGIN_READ_TIMEOUT_S > 2 * GatewaySettings.sse_ping_s
    dev = load_config("dev")
    for bad in (MIN_ORIGIN_READ_TIMEOUT_S - 1, 121):
        with pytest.raises(ConfigError, match="cloudfront_read_timeout_seconds"):
            with_overrides(dev, cloudfront_read_timeout_seconds=bad)


def test_promotion_comes_from_another_known_environment() -> None:
    """qa deploys what passed dev, prod what passed qa; nothing promotes from itself."""
    assert [load_config(n).promote_from for n in ("dev", "qa", "prod")] == [None, "dev", "qa"]
    for bad in ("qa", "staging"):
        with pytest.raises(ConfigError, match="promote_from"):
            with_overrides(load_config("qa"), promote_from=bad)
