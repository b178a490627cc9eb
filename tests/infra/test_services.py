"""Gateway, worker, identity, registry and cost guards in the synthesized stacks."""

from __future__ import annotations

import json

from aws_cdk.assertions import Capture, Match

from cdk.gateway import HEALTH_CHECK_PATH
from cdk.identity import INVOKE_SCOPE, RESOURCE_SERVER_ID
from cdk.metrics import DIMENSION, FLEET_STATE, NAMESPACE, QUEUE_DEPTH, WORKER_HEARTBEAT
from services.registry import keys
from tests.infra.conftest import Synthesized
from tests.infra.helpers import flatten, ref_id

INVOKE = f"{RESOURCE_SERVER_ID}/{INVOKE_SCOPE}"


def _container(env: Synthesized, task) -> dict:
    task_id = env.logical_id(task.node.default_child)
    (container,) = env.json["Resources"][task_id]["Properties"]["ContainerDefinitions"]
    return container


def test_https_listener_and_http_redirect(prod: Synthesized) -> None:
    """With a certificate: HTTPS on 443 with a TLS 1.2+ policy, HTTP 80 only redirects."""
    prod.template.has_resource_properties(
        "AWS::ElasticLoadBalancingV2::Listener",
        {
            "Port": 443,
            "Protocol": "HTTPS",
            "Certificates": [{"CertificateArn": prod.config.certificate_arn}],
            "SslPolicy": Match.string_like_regexp("TLS13"),
            "DefaultActions": [Match.object_like({"Type": "forward"})],
        },
    )
    prod.template.has_resource_properties(
        "AWS::ElasticLoadBalancingV2::Listener",
        {
            "Port": 80,
            "Protocol": "HTTP",
            "DefaultActions": [
                {
                    "Type": "redirect",
                    "RedirectConfig": {
                        "Port": "443",
                        "Protocol": "HTTPS",
                        "StatusCode": "HTTP_301",
                    },
                }
            ],
        },
    )
    prod.template.resource_count_is("AWS::ElasticLoadBalancingV2::Listener", 2)


def test_dev_without_domain_serves_https_through_cloudfront(dev: Synthesized) -> None:
    """dev (no domain): CloudFront terminates HTTPS and reaches an internal ALB as a VPC origin."""
    ((_, distribution),) = dev.resources("AWS::CloudFront::Distribution").items()
    config = distribution["Properties"]["DistributionConfig"]
    behavior = config["DefaultCacheBehavior"]
    assert behavior["ViewerProtocolPolicy"] == "https-only"
    assert set(behavior["AllowedMethods"]) >= {"GET", "POST", "DELETE", "OPTIONS"}
    # Managed policies: CachingDisabled, AllViewerExceptHostHeader (forwards Authorization).
    assert behavior["CachePolicyId"] == "4135ea2d-6df8-44a3-9df3-4b5a84be39ad"
    assert behavior["OriginRequestPolicyId"] == "b689b0a8-53d0-40ab-baf2-68738e2966ac"
    (origin,) = config["Origins"]
    alb_id = dev.logical_id(dev.stack.gateway.load_balancer.node.default_child)
    assert ref_id(origin["DomainName"]) == alb_id
    vpc_origin = origin["VpcOriginConfig"]
    assert vpc_origin["OriginReadTimeout"] == dev.config.cloudfront_read_timeout_seconds
    assert ref_id(vpc_origin["VpcOriginId"]) in dev.resources("AWS::CloudFront::VpcOrigin")
    (endpoint,) = dev.props("AWS::CloudFront::VpcOrigin")
    assert ref_id(endpoint["VpcOriginEndpointConfig"]["Arn"]) == alb_id
    assert dev.stack.gateway.url.startswith("https://")


def test_dev_has_no_internet_facing_listener(dev: Synthesized) -> None:
    """dev's ALB is internal: its one HTTP listener is reachable from inside the VPC only."""
    (alb,) = dev.props("AWS::ElasticLoadBalancingV2::LoadBalancer")
    assert alb["Scheme"] == "internal"
    private = {ref_id(s) for s in alb["Subnets"]}
    assert private == {
        dev.logical_id(s.node.default_child) for s in dev.stack.network.vpc.isolated_subnets
    }
    sg = dev.json["Resources"][
        dev.logical_id(dev.stack.gateway.alb_security_group.node.default_child)
    ]
    ingress = sg["Properties"]["SecurityGroupIngress"]
    assert [(r["CidrIp"], r["FromPort"], r["ToPort"]) for r in ingress] == [
        ("10.20.0.0/22", 80, 80)
    ]


def test_target_group_health_check_and_draining(env: Synthesized) -> None:
    """The ALB checks /health on the container port and drains for the configured time."""
    env.template.has_resource_properties(
        "AWS::ElasticLoadBalancingV2::TargetGroup",
        {
            "HealthCheckPath": HEALTH_CHECK_PATH,
            "Port": 8080,
            "Protocol": "HTTP",
            "TargetType": "ip",
            "TargetGroupAttributes": Match.array_with(
                [
                    {
                        "Key": "deregistration_delay.timeout_seconds",
                        "Value": str(env.config.deregistration_delay_seconds),
                    }
                ]
            ),
        },
    )


def test_alb_idle_timeout_and_access_logs(env: Synthesized) -> None:
    """The ALB (public with a domain, internal behind CloudFront) logs and times out as set."""
    attributes = Capture()
    scheme = "internet-facing" if env.config.edge == "alb" else "internal"
    env.template.has_resource_properties(
        "AWS::ElasticLoadBalancingV2::LoadBalancer",
        {
            "Scheme": scheme,
            "LoadBalancerAttributes": attributes,
        },
    )
    attrs = {a["Key"]: a["Value"] for a in attributes.as_array()}
    assert attrs["idle_timeout.timeout_seconds"] == str(env.config.alb_idle_timeout_seconds)
    assert attrs["access_logs.s3.enabled"] == "true"
    assert attrs["routing.http.drop_invalid_header_fields.enabled"] == "true"


def test_tasks_run_in_private_subnets_without_public_ips(env: Synthesized) -> None:
    """Gateway and worker tasks get no public IP and sit in the private subnets only."""
    private = {env.logical_id(s.node.default_child) for s in env.stack.network.vpc.isolated_subnets}
    assert len(private) == 2
    for service in env.props("AWS::ECS::Service"):
        vpc = service["NetworkConfiguration"]["AwsvpcConfiguration"]
        assert vpc["AssignPublicIp"] == "DISABLED"
        assert {ref_id(s) for s in vpc["Subnets"]} == private
    (asg,) = env.props("AWS::AutoScaling::AutoScalingGroup")
    assert {ref_id(s) for s in asg["VPCZoneIdentifier"]} == private


def test_gateway_container_contract(env: Synthesized) -> None:
    """Gateway runs on 8080 with the SSM registry, controls the GPU fleet and publishes backlog."""
    container = _container(env, env.stack.gateway.task_definition)
    assert container["Command"] == ["python", "-m", "services.gateway"]
    assert container["PortMappings"][0]["ContainerPort"] == 8080
    assert {e["Name"]: e["Value"] for e in container["Environment"]} == {
        "TINYLLAMA_ENV": env.config.name,
        "TINYLLAMA_REGISTRY": "ssm",
        "TINYLLAMA_FLEET": "aws",
        "TINYLLAMA_PUBLISH_METRICS": "true",
        "TINYLLAMA_REQUIRED_SCOPE": INVOKE,
    }


def test_worker_task_reserves_one_gpu(env: Synthesized) -> None:
    """Each worker task reserves exactly one GPU and runs `python -m services.worker`."""
    container = _container(env, env.stack.worker.task_definition)
    assert container["ResourceRequirements"] == [{"Type": "GPU", "Value": "1"}]
    assert container["Command"] == ["python", "-m", "services.worker"]
    assert {e["Name"]: e["Value"] for e in container["Environment"]}.items() >= {
        "TINYLLAMA_ENV": env.config.name,
        "TINYLLAMA_REGISTRY": "ssm",
        "TINYLLAMA_PUBLISH_METRICS": "true",  # WorkerHeartbeat feeds the WorkerSilent alarm
        "TINYLLAMA_CACHE_TOKENS": "65536",  # a static slot holds the model's whole context
    }.items()


def test_gpu_hosts_use_ecs_gpu_ami_resolved_at_deploy(env: Synthesized) -> None:
    """The launch template's AMI is the ECS AL2023 GPU image, read from SSM at deploy."""
    (lt,) = env.props("AWS::EC2::LaunchTemplate")
    data = lt["LaunchTemplateData"]
    parameter = env.json["Parameters"][data["ImageId"]["Ref"]]
    assert parameter["Default"] == (
        "/aws/service/ecs/optimized-ami/amazon-linux-2023/gpu/recommended/image_id"
    )
    assert data["InstanceType"] == env.config.gpu_instance_type
    assert data["MetadataOptions"]["HttpTokens"] == "required"
    assert all(d["Ebs"]["Encrypted"] for d in data["BlockDeviceMappings"])


def test_gpu_fleet_scales_to_zero(env: Synthesized) -> None:
    """No GPU at rest: ASG min 0, service desired 0, scaling target min 0, managed scaling."""
    (asg,) = env.props("AWS::AutoScaling::AutoScalingGroup")
    assert asg["MinSize"] == "0"
    worker = env.json["Resources"][env.logical_id(env.stack.worker.service.node.default_child)]
    assert worker["Properties"]["DesiredCount"] == 0
    env.template.has_resource_properties(
        "AWS::ApplicationAutoScaling::ScalableTarget",
        {
            "MinCapacity": 0,
            "MaxCapacity": env.config.gpu_max_instances,
            "ResourceId": {
                "Fn::Join": [
                    "",
                    [
                        "service/",
                        Match.any_value(),
                        "/",
                        {"Fn::GetAtt": [Match.any_value(), "Name"]},
                    ],
                ]
            },
        },
    )
    env.template.has_resource_properties(
        "AWS::ECS::CapacityProvider",
        {
            "AutoScalingGroupProvider": Match.object_like(
                {"ManagedScaling": Match.object_like({"Status": "ENABLED"})}
            )
        },
    )


def test_only_a_silent_gateway_stops_the_worker_and_no_alarm_starts_it(env: Synthesized) -> None:
    """GatewaySilent (no FleetState for the idle period) sets the count to 0; nothing scales out.

    Queue-depth alarms re-ran their step scaling every minute in ALARM and undid the
    gateway's own starts and stops; only the absence of a gateway needs a backstop.
    """
    reports = {
        "Namespace": NAMESPACE,
        "MetricName": FLEET_STATE,
        "Dimensions": [{"Name": DIMENSION, "Value": env.config.name}],
    }
    env.template.has_resource_properties(
        "AWS::CloudWatch::Alarm",
        {
            "ComparisonOperator": "LessThanOrEqualToThreshold",
            "Threshold": 0,
            "EvaluationPeriods": env.config.worker_idle_stop_minutes,
            "TreatMissingData": "breaching",
            "AlarmActions": [Match.any_value()],
            "Metrics": Match.array_with(
                [
                    Match.object_like({"Expression": "FILL(reports, 0)"}),
                    Match.object_like(
                        {
                            "MetricStat": Match.object_like(
                                {"Metric": reports, "Stat": "SampleCount"}
                            )
                        }
                    ),
                ]
            ),
        },
    )
    step_policies = {
        name
        for name, resource in env.resources("AWS::ApplicationAutoScaling::ScalingPolicy").items()
        if "StepScalingPolicyConfiguration" in resource["Properties"]
    }
    assert len(step_policies) == 1  # the stop; nothing scales the worker out
    (stop,) = step_policies
    config = env.resources("AWS::ApplicationAutoScaling::ScalingPolicy")[stop]["Properties"]
    assert config["StepScalingPolicyConfiguration"]["StepAdjustments"] == [
        {"MetricIntervalUpperBound": 0, "ScalingAdjustment": 0}
    ]
    driving = [
        alarm
        for alarm in env.props("AWS::CloudWatch::Alarm")
        if {"Ref": stop} in alarm.get("AlarmActions", [])
    ]
    assert len(driving) == 1
    assert QUEUE_DEPTH not in json.dumps(driving[0])


def test_gateway_autoscales_on_cpu_and_requests(env: Synthesized) -> None:
    """Gateway target tracking on CPU and ALBRequestCountPerTarget."""
    for metric in ("ECSServiceAverageCPUUtilization", "ALBRequestCountPerTarget"):
        env.template.has_resource_properties(
            "AWS::ApplicationAutoScaling::ScalingPolicy",
            {
                "TargetTrackingScalingPolicyConfiguration": Match.object_like(
                    {
                        "PredefinedMetricSpecification": Match.object_like(
                            {"PredefinedMetricType": metric}
                        )
                    }
                )
            },
        )


def test_cognito_clients(env: Synthesized) -> None:
    """Desktop: public PKCE code flow, no secret. Machine: client credentials + scopes."""
    identity = env.stack.identity
    clients = env.resources("AWS::Cognito::UserPoolClient")
    desktop = clients[env.logical_id(identity.desktop_client.node.default_child)]["Properties"]
    machine = clients[env.logical_id(identity.machine_client.node.default_child)]["Properties"]
    assert desktop["GenerateSecret"] is False
    assert desktop["AllowedOAuthFlows"] == ["code"]
    assert "client_credentials" not in desktop["AllowedOAuthFlows"]
    assert machine["GenerateSecret"] is True
    assert machine["AllowedOAuthFlows"] == ["client_credentials"]
    scopes = {flatten(s) for s in machine["AllowedOAuthScopes"]}
    assert {s.split("/")[-1] for s in scopes} == {"invoke", "admin"}
    for client in (desktop, machine):
        assert client["AccessTokenValidity"] == env.config.access_token_minutes
        assert client["TokenValidityUnits"]["AccessToken"] == "minutes"
    (server,) = env.props("AWS::Cognito::UserPoolResourceServer")
    assert server["Identifier"] == "tinyllama"
    assert {s["ScopeName"] for s in server["Scopes"]} == {"admin", "invoke"}
    env.template.has_resource_properties(
        "AWS::Cognito::UserPool",
        {
            "AdminCreateUserConfig": {"AllowAdminCreateUserOnly": True},
            "MfaConfiguration": "ON" if env.config.mfa_required else "OPTIONAL",
        },
    )


def _scope_names(env: Synthesized, scopes: list) -> set[str]:
    """OAuth scope strings, with the resource server's Ref replaced by its identifier."""
    servers = env.resources("AWS::Cognito::UserPoolResourceServer")
    text = {flatten(s) for s in scopes}
    for server_id, server in servers.items():
        identifier = server["Properties"]["Identifier"]
        text = {t.replace(f"<{server_id}>", identifier) for t in text}
    return text


def test_gateway_requires_the_invoke_scope_every_app_client_may_request(env: Synthesized) -> None:
    """The gateway demands tinyllama/invoke, and both app clients are allowed to ask for it."""
    container = _container(env, env.stack.gateway.task_definition)
    variables = {e["Name"]: e["Value"] for e in container["Environment"]}
    assert variables["TINYLLAMA_REQUIRED_SCOPE"] == INVOKE
    clients = env.props("AWS::Cognito::UserPoolClient")
    assert len(clients) == 2
    for client in clients:
        assert INVOKE in _scope_names(env, client["AllowedOAuthScopes"])


def test_registry_holds_every_key_under_env_path(env: Synthesized) -> None:
    """Every key of services/registry/keys.py is written under /tinyllama/<env>/."""
    params = {p["Name"]: p["Value"] for p in env.props("AWS::SSM::Parameter")}
    expected = {f"/tinyllama/{env.config.name}/{k}" for k in keys.ALL_KEYS}
    assert set(params) == expected

    def value(key: str) -> str:
        return flatten(params[f"/tinyllama/{env.config.name}/{key}"])

    assert value(keys.QUEUE_NAME) == "arq:queue"
    assert value(keys.JWT_ADMIN_SCOPE) == "tinyllama/admin"
    assert value(keys.REDIS_URL).startswith("rediss://<")
    assert value(keys.REDIS_URL).endswith("/0")
    assert value(keys.JWT_ISSUER).startswith("https://cognito-idp.us-east-1.amazonaws.com/<")
    assert value(keys.JWT_JWKS_URL) == value(keys.JWT_ISSUER) + "/.well-known/jwks.json"
    assert value(keys.GPU_INSTANCE_TYPE) == env.config.gpu_instance_type
    assert float(value(keys.GPU_HOURLY_PRICE_USD)) == env.config.gpu_hourly_price_usd
    assert float(value(keys.BUDGET_HARD_STOP_USD)) == env.config.budget_hard_stop_usd
    client_ids = params[f"/tinyllama/{env.config.name}/{keys.JWT_CLIENT_IDS}"]
    assert "Fn::Join" in client_ids  # a JSON list rendered at deploy time
    assert flatten(client_ids).startswith('["<')


def test_log_groups_have_retention(env: Synthesized) -> None:
    """No log group keeps logs forever (cost)."""
    for props in env.props("AWS::Logs::LogGroup"):
        assert props["RetentionInDays"] == env.config.log_retention_days


def test_alarms_notify_the_operator(env: Synthesized) -> None:
    """ALB 5xx, queue backlog and age, and a silent running worker page the SNS topic."""
    topic = env.logical_id(env.stack.observability.topic.node.default_child)
    alarms = [
        p for p in env.props("AWS::CloudWatch::Alarm") if p.get("AlarmActions") == [{"Ref": topic}]
    ]
    text = json.dumps(alarms)
    assert "HTTPCode_ELB_5XX_Count" in text
    assert "HTTPCode_Target_5XX_Count" in text
    assert "QueueDepth" in text
    assert "QueueOldestJobAgeSeconds" in text
    (composite,) = env.props("AWS::CloudWatch::CompositeAlarm")
    assert composite["AlarmActions"] == [{"Ref": topic}]
    rule = flatten(composite["AlarmRule"])
    heartbeat = env.logical_id(env.stack.observability.heartbeat_alarm.node.default_child)
    running = env.logical_id(env.stack.observability.worker_running_alarm.node.default_child)
    assert f'ALARM("<{heartbeat}.Arn>")' in rule
    assert " AND " in rule
    assert f'ALARM("<{running}.Arn>")' in rule
    env.template.has_resource_properties(
        "AWS::SNS::Subscription", {"Protocol": "email", "Endpoint": env.config.alarm_emails[0]}
    )


def test_missing_worker_heartbeat_is_breaching(env: Synthesized) -> None:
    """No heartbeat counts as a failure, not as 'no data'."""
    env.template.has_resource_properties(
        "AWS::CloudWatch::Alarm",
        {
            "Namespace": NAMESPACE,
            "MetricName": WORKER_HEARTBEAT,
            "Dimensions": [{"Name": DIMENSION, "Value": env.config.name}],
            "TreatMissingData": "breaching",
        },
    )


def test_budget_emails_at_warn_and_hard_stop(env: Synthesized) -> None:
    """A monthly cost budget for this env's tag emails at warn, hard stop and forecast."""
    c = env.config
    (budget,) = env.props("AWS::Budgets::Budget")
    assert budget["Budget"]["BudgetLimit"] == {"Amount": c.budget_monthly_usd, "Unit": "USD"}
    assert budget["Budget"]["CostFilters"] == {"TagKeyValue": [f"user:tinyllama:env${c.name}"]}
    thresholds = {
        (n["Notification"]["NotificationType"], n["Notification"]["Threshold"])
        for n in budget["NotificationsWithSubscribers"]
    }
    assert thresholds == {
        ("ACTUAL", c.budget_warn_usd),
        ("ACTUAL", c.budget_hard_stop_usd),
        ("FORECASTED", c.budget_monthly_usd),
    }
    for n in budget["NotificationsWithSubscribers"]:
        assert n["Subscribers"] == [
            {"SubscriptionType": "EMAIL", "Address": a} for a in c.budget_emails
        ]
