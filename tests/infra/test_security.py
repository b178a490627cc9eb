"""Who may reach what, and what each role may do, in the synthesized stacks."""

from __future__ import annotations

from aws_cdk.assertions import Match

from cdk.metrics import NAMESPACE
from cdk.redis_queue import REDIS_PORT
from cdk.registry import READ_ACTIONS
from tests.infra.conftest import Synthesized
from tests.infra.helpers import as_list, flatten, identity_statements, ref_id, statements_of_role

# Actions AWS offers only on Resource "*", each with the reason it is needed.
STAR_RESOURCE_ACTIONS = {
    "ecr:GetAuthorizationToken",  # image pulls (no resource-level permission)
    "ecs:DiscoverPollEndpoint",  # ECS agent bootstrap (no resource-level permission)
    "ecs:Poll",
    "ecs:StartTelemetrySession",  # limited by the ecs:cluster condition
    "cloudwatch:PutMetricData",  # limited by the cloudwatch:namespace condition
    "autoscaling:DescribeAutoScalingGroups",  # the gateway reads the GPU group's state
    "autoscaling:DescribeAutoScalingInstances",  # a GPU host looks up its own group
}


def _sg_id(env: Synthesized, construct) -> str:
    return env.logical_id(construct.node.default_child)


def _ingress_into(env: Synthesized, sg_id: str) -> list[dict]:
    rules = [
        p for p in env.props("AWS::EC2::SecurityGroupIngress") if ref_id(p["GroupId"]) == sg_id
    ]
    inline = env.json["Resources"][sg_id]["Properties"].get("SecurityGroupIngress", [])
    return rules + inline


def test_redis_accepts_only_gateway_and_worker_on_6379(env: Synthesized) -> None:
    """Redis ingress: port 6379 from the gateway and worker task groups, nothing else."""
    stack = env.stack
    rules = _ingress_into(env, _sg_id(env, stack.queue.security_group))
    assert rules
    assert all(r["FromPort"] == REDIS_PORT == r["ToPort"] for r in rules)
    assert all("CidrIp" not in r and "CidrIpv6" not in r for r in rules)
    sources = {ref_id(r["SourceSecurityGroupId"]) for r in rules}
    assert sources == {
        _sg_id(env, stack.gateway.security_group),
        _sg_id(env, stack.worker.security_group),
    }


def test_redis_is_tls_auth_non_cluster(env: Synthesized) -> None:
    """Redis: TLS required, AUTH token from Secrets Manager, encrypted, no cluster mode."""
    (rg,) = env.props("AWS::ElastiCache::ReplicationGroup")
    assert rg["TransitEncryptionEnabled"] is True
    assert rg["TransitEncryptionMode"] == "required"
    assert rg["AtRestEncryptionEnabled"] is True
    assert "{{resolve:secretsmanager:" in flatten(rg["AuthToken"])
    assert "NumNodeGroups" not in rg
    assert "NodeGroupConfiguration" not in rg
    assert rg["Engine"] == "redis"


def test_alb_accepts_only_443_and_80(prod: Synthesized) -> None:
    """The public ALB opens HTTPS and the HTTP redirect port, no other port."""
    sg = prod.json["Resources"][_sg_id(prod, prod.stack.gateway.alb_security_group)]
    ports = {(r["FromPort"], r["ToPort"]) for r in sg["Properties"]["SecurityGroupIngress"]}
    assert ports == {(443, 443), (80, 80)}


def test_gateway_accepts_only_the_alb(env: Synthesized) -> None:
    """Gateway tasks take traffic only from the ALB's group, on the container port."""
    rules = _ingress_into(env, _sg_id(env, env.stack.gateway.security_group))
    assert rules
    assert {ref_id(r["SourceSecurityGroupId"]) for r in rules} == {
        _sg_id(env, env.stack.gateway.alb_security_group)
    }
    assert {(r["FromPort"], r["ToPort"]) for r in rules} == {(8080, 8080)}


def test_worker_and_gpu_hosts_accept_nothing(env: Synthesized) -> None:
    """Nothing may connect to worker tasks or GPU hosts."""
    for sg in (env.stack.worker.security_group, env.stack.worker.instance_security_group):
        assert _ingress_into(env, _sg_id(env, sg)) == []


def test_no_wildcard_actions_in_any_allow(env: Synthesized) -> None:
    """No identity policy allows ``*``, ``svc:*`` or any wildcard action."""
    for logical_id, statement in identity_statements(env.json):
        if statement["Effect"] != "Allow":
            continue
        for action in as_list(statement["Action"]):
            assert "*" not in action, (logical_id, action)


def test_resource_star_only_for_actions_that_require_it(env: Synthesized) -> None:
    """Resource ``*`` appears only with actions AWS offers no resource scoping for."""
    for logical_id, statement in identity_statements(env.json):
        if statement["Effect"] == "Allow" and "*" in as_list(statement["Resource"]):
            actions = set(as_list(statement["Action"]))
            assert actions <= STAR_RESOURCE_ACTIONS, (logical_id, actions)


def test_put_metric_data_is_limited_to_our_namespace(env: Synthesized) -> None:
    """Tasks may publish metrics only into the TinyLlama namespace."""
    found = [
        s
        for _, s in identity_statements(env.json)
        if "cloudwatch:PutMetricData" in as_list(s["Action"])
    ]
    assert len(found) == 2  # gateway and worker
    for statement in found:
        assert statement["Condition"] == {"StringEquals": {"cloudwatch:namespace": NAMESPACE}}


def _task_role_ids(env: Synthesized) -> set[str]:
    return {
        env.logical_id(task.task_role.node.default_child)
        for task in (env.stack.gateway.task_definition, env.stack.worker.task_definition)
    }


def test_ssm_reads_only_on_env_registry_path(env: Synthesized) -> None:
    """Every SSM grant of the task roles is a read on /tinyllama/<env> and /tinyllama/<env>/*."""
    path = f"arn:aws:ssm:us-east-1:<AWS::AccountId>:parameter/tinyllama/{env.config.name}"
    found = [
        s
        for role_id in _task_role_ids(env)
        for s in statements_of_role(env.json, role_id)
        if any(a.startswith("ssm:") for a in as_list(s["Action"]))
    ]
    assert len(found) == 2  # gateway and worker task roles
    for statement in found:
        assert sorted(as_list(statement["Action"])) == sorted(READ_ACTIONS)
        resources = [flatten(r) for r in statement["Resource"]]
        assert resources == [path, f"{path}/*"]


def test_only_the_deploy_role_writes_the_registry_and_only_release_keys(env: Synthesized) -> None:
    """No role but CI's may PutParameter, and only under /tinyllama/<env>/release/."""
    deploy_role = env.logical_id(env.stack.deploy_role.role.node.default_child)
    writes = [
        (logical_id, s)
        for logical_id, s in identity_statements(env.json)
        if "ssm:PutParameter" in as_list(s["Action"])
    ]
    ((policy_id, statement),) = writes
    assert {"Ref": deploy_role} in env.json["Resources"][policy_id]["Properties"]["Roles"]
    assert as_list(statement["Action"]) == ["ssm:PutParameter"]
    assert flatten(statement["Resource"]).endswith(
        f":parameter/tinyllama/{env.config.name}/release/*"
    )


def test_task_roles_read_registry(env: Synthesized) -> None:
    """Both task roles get the registry grant (services read config from SSM)."""
    for task in (env.stack.gateway.task_definition, env.stack.worker.task_definition):
        role_id = env.logical_id(task.task_role.node.default_child)
        actions = {a for s in statements_of_role(env.json, role_id) for a in as_list(s["Action"])}
        assert set(READ_ACTIONS) <= actions


def test_gateway_controls_only_the_worker_service(env: Synthesized) -> None:
    """The gateway may describe/update the worker service and no other ECS resource."""
    role_id = env.logical_id(env.stack.gateway.task_definition.task_role.node.default_child)
    ecs = [
        s
        for s in statements_of_role(env.json, role_id)
        if any(a.startswith("ecs:") for a in as_list(s["Action"]))
    ]
    assert len(ecs) == 1
    assert sorted(ecs[0]["Action"]) == ["ecs:DescribeServices", "ecs:UpdateService"]
    worker_service = env.logical_id(env.stack.worker.service.node.default_child)
    assert ecs[0]["Resource"] == {"Ref": worker_service}


def test_worker_cannot_control_the_fleet(env: Synthesized) -> None:
    """The worker task role has no ECS permissions (it can't start GPUs)."""
    role_id = env.logical_id(env.stack.worker.task_definition.task_role.node.default_child)
    actions = {a for s in statements_of_role(env.json, role_id) for a in as_list(s["Action"])}
    assert not [a for a in actions if a.startswith("ecs:")]


def test_redis_password_is_an_ecs_secret(env: Synthesized) -> None:
    """REDIS_PASSWORD is injected from Secrets Manager, never a plain env var."""
    secret_id = env.logical_id(env.stack.queue.auth_secret.node.default_child)
    env.template.has_resource_properties(
        "AWS::ECS::TaskDefinition",
        {
            "ContainerDefinitions": [
                Match.object_like(
                    {
                        "Secrets": [{"Name": "REDIS_PASSWORD", "ValueFrom": {"Ref": secret_id}}],
                        "Environment": Match.not_(
                            Match.array_with([Match.object_like({"Name": "REDIS_PASSWORD"})])
                        ),
                    }
                )
            ],
        },
    )


def test_deploy_role_trusts_only_the_configured_repo(env: Synthesized) -> None:
    """GitHub OIDC trust pins audience and subject to the configured repository."""
    stack = env.stack
    role = env.json["Resources"][env.logical_id(stack.deploy_role.role.node.default_child)]
    (trust,) = role["Properties"]["AssumeRolePolicyDocument"]["Statement"]
    assert trust["Action"] == "sts:AssumeRoleWithWebIdentity"
    assert trust["Condition"] == {
        "StringEquals": {
            "token.actions.githubusercontent.com:aud": "sts.amazonaws.com",
            "token.actions.githubusercontent.com:sub": stack.deploy_role.subject,
        }
    }
    assert stack.deploy_role.subject.startswith(f"repo:{env.config.github_repo}:")


def test_deploy_role_can_only_assume_cdk_bootstrap_roles(env: Synthesized) -> None:
    """The CI role deploys only through this account's cdk-hnb659fds-* roles."""
    role_id = env.logical_id(env.stack.deploy_role.role.node.default_child)
    statements = statements_of_role(env.json, role_id)
    (statement,) = [s for s in statements if "sts:AssumeRole" in as_list(s["Action"])]
    assert sorted(statement["Action"]) == ["sts:AssumeRole", "sts:TagSession"]
    assert flatten(statement["Resource"]) == (
        "arn:<AWS::Partition>:iam::<AWS::AccountId>:role/"
        "cdk-hnb659fds-*-<AWS::AccountId>-<AWS::Region>"
    )
    tag = statement["Condition"]["StringEquals"]["iam:ResourceTag/aws-cdk:bootstrap-role"]
    assert set(tag) == {"deploy", "file-publishing", "image-publishing", "lookup"}


def _rules_of(env: Synthesized, listener_id: str) -> list[dict]:
    return [
        p
        for p in env.props("AWS::ElasticLoadBalancingV2::ListenerRule")
        if ref_id(p["ListenerArn"]) == listener_id
    ]


def _paths(rule: dict) -> set[str]:
    return {
        value
        for condition in rule["Conditions"]
        if condition["Field"] == "path-pattern"
        for value in condition.get("PathPatternConfig", {}).get(
            "Values", condition.get("Values", [])
        )
    }


def test_metrics_is_never_forwarded_by_a_public_listener(env: Synthesized) -> None:
    """Every public listener answers /metrics and /metrics/* with a fixed 404, before any rule."""
    listeners = env.resources("AWS::ElasticLoadBalancingV2::Listener")
    assert len(listeners) == (2 if env.config.edge == "alb" else 1)
    for listener_id in listeners:
        rules = _rules_of(env, listener_id)
        (hiding,) = [r for r in rules if _paths(r) >= {"/metrics", "/metrics/*"}]
        (action,) = hiding["Actions"]
        assert action["Type"] == "fixed-response"
        assert action["FixedResponseConfig"]["StatusCode"] == "404"
        # Rules are evaluated lowest number first, and the default action only after all.
        assert hiding["Priority"] == min(r["Priority"] for r in rules) == 1


def test_internal_listener_behind_cloudfront_hides_metrics_too(dev: Synthesized) -> None:
    """CloudFront's origin (the internal HTTP listener) forwards to the gateway, except /metrics."""
    ((listener_id, listener),) = dev.resources("AWS::ElasticLoadBalancingV2::Listener").items()
    assert listener["Properties"]["Protocol"] == "HTTP"
    assert [a["Type"] for a in listener["Properties"]["DefaultActions"]] == ["forward"]
    (rule,) = _rules_of(dev, listener_id)
    assert _paths(rule) == {"/metrics", "/metrics/*"}
    assert rule["Actions"][0]["Type"] == "fixed-response"


def test_no_internet_facing_listener_forwards_plain_http(env: Synthesized) -> None:
    """An internet-facing HTTP listener only redirects: nothing reaches /infer in clear."""
    (alb_id,) = env.resources("AWS::ElasticLoadBalancingV2::LoadBalancer")
    public = env.json["Resources"][alb_id]["Properties"]["Scheme"] == "internet-facing"
    for listener_id, listener in env.resources("AWS::ElasticLoadBalancingV2::Listener").items():
        props = listener["Properties"]
        if not public or props["Protocol"] != "HTTP":
            continue
        assert [a["Type"] for a in props["DefaultActions"]] == ["redirect"]
        for rule in _rules_of(env, listener_id):
            assert all(a["Type"] != "forward" for a in rule["Actions"])
    assert public == (env.config.edge == "alb")


def test_deploy_role_does_only_what_the_pipeline_needs(env: Synthesized) -> None:
    """Besides deploying: read its registry, promote releases, read the machine client."""
    role_id = env.logical_id(env.stack.deploy_role.role.node.default_child)
    statements = statements_of_role(env.json, role_id)
    actions = {a for s in statements for a in as_list(s["Action"])}
    assert actions == {
        "sts:AssumeRole",
        "sts:TagSession",
        *READ_ACTIONS,
        "ssm:PutParameter",
        "cognito-idp:DescribeUserPoolClient",
    }
    (describe,) = [
        s for s in statements if "cognito-idp:DescribeUserPoolClient" in as_list(s["Action"])
    ]
    pool = env.logical_id(env.stack.identity.user_pool.node.default_child)
    assert describe["Resource"] == {"Fn::GetAtt": [pool, "Arn"]}
    reads = {
        flatten(r)
        for s in statements
        if "ssm:GetParametersByPath" in as_list(s["Action"])
        for r in as_list(s["Resource"])
    }
    own = f"arn:aws:ssm:us-east-1:<AWS::AccountId>:parameter/tinyllama/{env.config.name}"
    expected = {own, f"{own}/*"}
    if env.config.promote_from:
        source = own.rsplit("/", 1)[0] + f"/{env.config.promote_from}/release"
        expected |= {source, f"{source}/*"}
    assert reads == expected
