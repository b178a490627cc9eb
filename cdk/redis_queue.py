"""Queue: the ElastiCache Redis replication group that carries ARQ jobs."""

from __future__ import annotations

from aws_cdk import RemovalPolicy, Token
from aws_cdk import aws_ec2 as ec2
from aws_cdk import aws_elasticache as elasticache
from aws_cdk import aws_secretsmanager as secretsmanager
from constructs import Construct

from cdk.nag import acknowledge

REDIS_PORT = 6379
ENGINE_VERSION = "7.1"


class Queue(Construct):
    """Non-cluster Redis (ARQ can't use cluster mode), TLS in transit, AUTH token.

    Nothing may connect until ``allow_from`` names a client security group.
    """

    def __init__(
        self,
        scope: Construct,
        construct_id: str,
        *,
        vpc: ec2.IVpc,
        subnets: ec2.SubnetSelection,
        node_type: str,
        nodes: int,
        removal_policy: RemovalPolicy,
    ) -> None:
        super().__init__(scope, construct_id)
        self.auth_secret = secretsmanager.Secret(
            self,
            "AuthToken",
            description="ElastiCache Redis AUTH token (REDIS_PASSWORD)",
            generate_secret_string=secretsmanager.SecretStringGenerator(
                password_length=64, exclude_punctuation=True, include_space=False
            ),
            removal_policy=removal_policy,
        )
        self.security_group = ec2.SecurityGroup(
            self,
            "SecurityGroup",
            vpc=vpc,
            allow_all_outbound=False,
            description="Redis: ingress only from the gateway and worker tasks",
        )
        subnet_group = elasticache.CfnSubnetGroup(
            self,
            "SubnetGroup",
            description="TinyLlama Redis private subnets",
            subnet_ids=vpc.select_subnets(
                subnet_type=subnets.subnet_type, subnet_group_name=subnets.subnet_group_name
            ).subnet_ids,
        )
        multi_az = nodes > 1
        self.replication_group = elasticache.CfnReplicationGroup(
            self,
            "ReplicationGroup",
            replication_group_description="TinyLlama ARQ queue and job event streams",
            engine="redis",
            engine_version=ENGINE_VERSION,
            cache_node_type=node_type,
            num_cache_clusters=nodes,
            automatic_failover_enabled=multi_az,
            multi_az_enabled=multi_az,
            port=REDIS_PORT,
            cache_subnet_group_name=subnet_group.ref,
            security_group_ids=[self.security_group.security_group_id],
            transit_encryption_enabled=True,
            transit_encryption_mode="required",
            at_rest_encryption_enabled=True,
            auth_token=self.auth_secret.secret_value.unsafe_unwrap(),
            snapshot_retention_limit=1 if multi_az else 0,
            auto_minor_version_upgrade=True,
        )
        self.replication_group.node.add_dependency(subnet_group)
        acknowledge(
            self.replication_group,
            "AwsSolutions-AEC5",
            reason="6379 is ARQ's and redis-py's default; the port is no secret, the "
            "security group (gateway and worker only), TLS and AUTH are the protection",
        )
        if not multi_az:
            acknowledge(
                self.replication_group,
                "AwsSolutions-AEC4",
                reason="single node in non-production to keep cost down; jobs are "
                "re-submittable and the queue holds no system of record",
            )
        acknowledge(
            self.auth_secret,
            "AwsSolutions-SMG4",
            reason="rotating an ElastiCache AUTH token needs a coordinated ROTATE/SET "
            "and task restarts; rotated by the runbook in cdk/README.md instead",
        )

    def allow_from(self, peer: ec2.ISecurityGroup, *, description: str) -> None:
        """Let ``peer`` connect to Redis on its port, and nothing else."""
        self.security_group.add_ingress_rule(peer, ec2.Port.tcp(REDIS_PORT), description)

    @property
    def url(self) -> str:
        """``rediss://host:port/0`` of the primary, without the password."""
        host = self.replication_group.attr_primary_end_point_address
        port = Token.as_string(self.replication_group.attr_primary_end_point_port)
        return f"rediss://{host}:{port}/0"
