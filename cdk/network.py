"""Network: the VPC, its subnets, and how private workloads reach AWS."""

from __future__ import annotations

from aws_cdk import RemovalPolicy
from aws_cdk import aws_ec2 as ec2
from constructs import Construct

from cdk.log_groups import create_log_group

# Interface endpoints private workloads need when there is no NAT gateway:
# image pulls (ECR), logs, registry reads (SSM), credentials (STS), the Redis
# AUTH secret, the ECS agent on the GPU hosts, custom metrics (monitoring), the
# Cognito JWKS the gateway verifies tokens with, and Auto Scaling (the gateway
# starts and stops the GPU group; a GPU host completes its lifecycle actions).
INTERFACE_ENDPOINTS: dict[str, ec2.InterfaceVpcEndpointAwsService] = {
    "EcrApi": ec2.InterfaceVpcEndpointAwsService.ECR,
    "EcrDocker": ec2.InterfaceVpcEndpointAwsService.ECR_DOCKER,
    "Logs": ec2.InterfaceVpcEndpointAwsService.CLOUDWATCH_LOGS,
    "Monitoring": ec2.InterfaceVpcEndpointAwsService.CLOUDWATCH_MONITORING,
    "Ssm": ec2.InterfaceVpcEndpointAwsService.SSM,
    "Sts": ec2.InterfaceVpcEndpointAwsService.STS,
    "SecretsManager": ec2.InterfaceVpcEndpointAwsService.SECRETS_MANAGER,
    "Ecs": ec2.InterfaceVpcEndpointAwsService.ECS,
    "EcsAgent": ec2.InterfaceVpcEndpointAwsService.ECS_AGENT,
    "EcsTelemetry": ec2.InterfaceVpcEndpointAwsService.ECS_TELEMETRY,
    "CognitoIdp": ec2.InterfaceVpcEndpointAwsService.COGNITO_IDP,
    "AutoScaling": ec2.InterfaceVpcEndpointAwsService.AUTOSCALING,
}


class Network(Construct):
    """VPC over two AZs with public subnets (ALB) and private subnets (tasks).

    With ``nat_gateways=0`` the private subnets are isolated and reach AWS
    only through VPC endpoints; with NAT they also reach the internet.
    """

    def __init__(
        self,
        scope: Construct,
        construct_id: str,
        *,
        cidr: str,
        nat_gateways: int,
        log_retention: int,
        removal_policy: RemovalPolicy,
    ) -> None:
        super().__init__(scope, construct_id)
        private_type = (
            ec2.SubnetType.PRIVATE_WITH_EGRESS if nat_gateways else ec2.SubnetType.PRIVATE_ISOLATED
        )
        self.vpc = ec2.Vpc(
            self,
            "Vpc",
            ip_addresses=ec2.IpAddresses.cidr(cidr),
            max_azs=2,
            nat_gateways=nat_gateways,
            subnet_configuration=[
                ec2.SubnetConfiguration(
                    name="public", subnet_type=ec2.SubnetType.PUBLIC, cidr_mask=25
                ),
                ec2.SubnetConfiguration(name="private", subnet_type=private_type, cidr_mask=24),
            ],
        )
        self.public_subnets = ec2.SubnetSelection(subnet_type=ec2.SubnetType.PUBLIC)
        self.private_subnets = ec2.SubnetSelection(subnet_type=private_type)

        flow_logs = create_log_group(
            self, "FlowLogs", days=log_retention, removal_policy=removal_policy
        )
        self.vpc.add_flow_log(
            "FlowLog",
            destination=ec2.FlowLogDestination.to_cloud_watch_logs(flow_logs),
            traffic_type=ec2.FlowLogTrafficType.REJECT,
        )

        # The S3 gateway endpoint is free (ECR image layers live in S3).
        self.vpc.add_gateway_endpoint(
            "S3", service=ec2.GatewayVpcEndpointAwsService.S3, subnets=[self.private_subnets]
        )
        self.interface_endpoints: dict[str, ec2.InterfaceVpcEndpoint] = {}
        self.endpoint_security_group: ec2.SecurityGroup | None = None
        if nat_gateways == 0:
            self.endpoint_security_group = ec2.SecurityGroup(
                self,
                "EndpointSecurityGroup",
                vpc=self.vpc,
                allow_all_outbound=False,
                description="VPC interface endpoints: HTTPS from the app tasks and hosts only",
            )
            for name, service in INTERFACE_ENDPOINTS.items():
                self.interface_endpoints[name] = self.vpc.add_interface_endpoint(
                    name,
                    service=service,
                    subnets=self.private_subnets,
                    private_dns_enabled=True,
                    open=False,
                    security_groups=[self.endpoint_security_group],
                )

    def allow_endpoints_from(self, peer: ec2.ISecurityGroup, *, description: str) -> None:
        """Let ``peer`` use the interface endpoints (HTTPS), when there are any."""
        if self.endpoint_security_group is not None:
            self.endpoint_security_group.add_ingress_rule(peer, ec2.Port.tcp(443), description)
