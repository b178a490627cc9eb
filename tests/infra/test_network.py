"""Network: CIDR, subnet tiers, and a way out for every private subnet."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import aws_cdk as cdk
from aws_cdk import aws_ec2 as ec2
from aws_cdk.assertions import Match, Template

from cdk.config import VPC_CIDR
from cdk.network import INTERFACE_ENDPOINTS, Network
from tests.infra.helpers import flatten

REQUIRED_SERVICES = ("ecr.api", "ecr.dkr", "logs", "ssm", "sts", "secretsmanager")


def _network(stack: cdk.Stack, nat: int) -> tuple[Network, dict[str, Any]]:
    network = Network(
        stack,
        "Net",
        cidr=VPC_CIDR,
        nat_gateways=nat,
        log_retention=7,
        removal_policy=cdk.RemovalPolicy.DESTROY,
    )
    client = ec2.SecurityGroup(stack, "Client", vpc=network.vpc)
    network.allow_endpoints_from(client, description="client")
    return network, Template.from_stack(stack).to_json()


def _private_route_tables(template: dict[str, Any]) -> list[str]:
    return [
        assoc["Properties"]["RouteTableId"]["Ref"]
        for logical_id, assoc in template["Resources"].items()
        if assoc["Type"] == "AWS::EC2::SubnetRouteTableAssociation" and "private" in logical_id
    ]


def test_vpc_is_10_20_0_0_22_over_two_azs(bare_stack: Callable[[], cdk.Stack]) -> None:
    """The VPC uses the agreed CIDR and spreads both tiers over two AZs."""
    network, template = _network(bare_stack(), nat=0)
    Template.from_json(template).has_resource_properties(
        "AWS::EC2::VPC", {"CidrBlock": "10.20.0.0/22"}
    )
    assert len(network.vpc.availability_zones) == 2
    assert len(network.vpc.public_subnets) == 2
    assert len(network.vpc.isolated_subnets) == 2


def test_without_nat_private_subnets_reach_aws_through_endpoints(
    bare_stack: Callable[[], cdk.Stack],
) -> None:
    """No NAT: private subnets have no internet route but endpoints for every AWS API used."""
    _, template = _network(bare_stack(), nat=0)
    routes = [
        r["Properties"] for r in template["Resources"].values() if r["Type"] == "AWS::EC2::Route"
    ]
    private_tables = set(_private_route_tables(template))
    assert private_tables
    assert not [r for r in routes if r["RouteTableId"]["Ref"] in private_tables]
    endpoints = [
        r["Properties"]
        for r in template["Resources"].values()
        if r["Type"] == "AWS::EC2::VPCEndpoint"
    ]
    names = {flatten(e["ServiceName"]) for e in endpoints}
    for service in REQUIRED_SERVICES:
        assert any(n.endswith(f".{service}") for n in names), service
    s3 = [e for e in endpoints if flatten(e["ServiceName"]).endswith(".s3")]
    assert s3
    assert s3[0]["VpcEndpointType"] == "Gateway"
    assert {t["Ref"] for t in s3[0]["RouteTableIds"]} == private_tables
    assert len(endpoints) == len(INTERFACE_ENDPOINTS) + 1


def test_endpoints_accept_https_only_from_named_groups(
    bare_stack: Callable[[], cdk.Stack],
) -> None:
    """Endpoint security group: 443 from the app's groups, never from a CIDR."""
    _, template = _network(bare_stack(), nat=0)
    t = Template.from_json(template)
    t.has_resource_properties(
        "AWS::EC2::SecurityGroupIngress",
        {
            "FromPort": 443,
            "ToPort": 443,
            "IpProtocol": "tcp",
            "SourceSecurityGroupId": Match.any_value(),
        },
    )
    for sg in t.find_resources("AWS::EC2::SecurityGroup").values():
        assert "SecurityGroupIngress" not in sg["Properties"]


def test_with_nat_private_subnets_route_to_nat(bare_stack: Callable[[], cdk.Stack]) -> None:
    """With NAT, each private subnet's default route goes to a NAT gateway."""
    _, template = _network(bare_stack(), nat=1)
    private_tables = set(_private_route_tables(template))
    nat_routes = [
        r["Properties"]
        for r in template["Resources"].values()
        if r["Type"] == "AWS::EC2::Route" and "NatGatewayId" in r["Properties"]
    ]
    assert {r["RouteTableId"]["Ref"] for r in nat_routes} == private_tables
    assert all(r["DestinationCidrBlock"] == "0.0.0.0/0" for r in nat_routes)


def test_flow_logs_capture_rejected_traffic(bare_stack: Callable[[], cdk.Stack]) -> None:
    """Rejected traffic is logged (to a log group with retention)."""
    _, template = _network(bare_stack(), nat=0)
    t = Template.from_json(template)
    t.has_resource_properties("AWS::EC2::FlowLog", {"TrafficType": "REJECT"})
    t.has_resource_properties("AWS::Logs::LogGroup", {"RetentionInDays": 7})


def _aws_apis_called() -> set[str]:
    """Every AWS API the services (``aws_client("...")``) and the GPU host script call."""
    import re
    from pathlib import Path

    from cdk.gpu_host import LIFECYCLE_SCRIPT

    root = Path(__file__).resolve().parents[2] / "services"
    called = {
        name
        for path in root.rglob("*.py")
        for name in re.findall(r'aws_client\(\s*"([a-z0-9-]+)"', path.read_text())
    }
    called |= set(re.findall(r"\baws ([a-z0-9-]+) [a-z-]+", LIFECYCLE_SCRIPT))
    return called


# Client name -> the endpoint service suffix it resolves to, where they differ.
ENDPOINT_OF_CLIENT = {"cloudwatch": "monitoring", "ecr": "ecr.api"}


def test_without_nat_every_aws_api_the_code_calls_has_an_endpoint(
    bare_stack: Callable[[], cdk.Stack],
) -> None:
    """No NAT: each AWS API called by the gateway, the worker or a GPU host has a VPC endpoint."""
    _, template = _network(bare_stack(), nat=0)
    names = {
        flatten(r["Properties"]["ServiceName"])
        for r in template["Resources"].values()
        if r["Type"] == "AWS::EC2::VPCEndpoint"
    }
    called = _aws_apis_called()
    assert {"autoscaling", "ecs", "cloudwatch", "ecr"} <= called  # the scan finds them
    missing = {
        api
        for api in called
        if not any(n.endswith("." + ENDPOINT_OF_CLIENT.get(api, api)) for n in names)
    }
    assert not missing, f"no VPC endpoint for {sorted(missing)}"
