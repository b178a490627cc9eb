"""The GPU hosts' warm pool, lifecycle hook, boot script and who may start and stop them."""

from __future__ import annotations

from cdk.gpu_host import CONTAINER_CACHE_DIR, HOST_CACHE_DIR, LIFECYCLE_HOOK_NAME
from cdk.worker import GPU_VOLUME_THROUGHPUT_MIBPS
from tests.infra.conftest import Synthesized
from tests.infra.helpers import as_list, flatten, ref_id, statements_of_role


def _group_id(env: Synthesized) -> str:
    return env.logical_id(env.stack.worker.auto_scaling_group.node.default_child)


def _user_data(env: Synthesized) -> str:
    (lt,) = env.props("AWS::EC2::LaunchTemplate")
    return flatten(lt["LaunchTemplateData"]["UserData"]["Fn::Base64"])


def test_gpu_group_keeps_a_warm_pool_of_stopped_hosts(env: Synthesized) -> None:
    """Prepared hosts wait *stopped* (only EBS bills); none is kept running."""
    (pool,) = env.props("AWS::AutoScaling::WarmPool")
    assert ref_id(pool["AutoScalingGroupName"]) == _group_id(env)
    assert pool["PoolState"] == "Stopped"
    assert pool.get("MinSize", 0) == 0
    # Amazon ECS does not support ReuseOnScaleIn: a scaled-in host is replaced, not reused.
    assert pool.get("InstanceReusePolicy", {}).get("ReuseOnScaleIn", False) is False
    (group,) = env.props("AWS::AutoScaling::AutoScalingGroup")
    assert group["MinSize"] == "0"
    assert group["MaxSize"] == str(env.config.gpu_max_instances)


def test_launch_hook_holds_hosts_until_prepared(env: Synthesized) -> None:
    """One launch hook, named as the boot script expects, that never abandons a host."""
    hooks = [
        h
        for h in env.props("AWS::AutoScaling::LifecycleHook")
        if ref_id(h["AutoScalingGroupName"]) == _group_id(env)
    ]
    launching = [
        h for h in hooks if h["LifecycleTransition"] == "autoscaling:EC2_INSTANCE_LAUNCHING"
    ]
    (hook,) = launching
    assert hook["LifecycleHookName"] == LIFECYCLE_HOOK_NAME
    assert hook["DefaultResult"] == "CONTINUE"
    assert 600 <= hook["HeartbeatTimeout"] <= 3600
    assert '--lifecycle-hook-name "$LIFECYCLE_HOOK"' in _user_data(env)
    assert f"LIFECYCLE_HOOK={LIFECYCLE_HOOK_NAME}" in _user_data(env)


def test_boot_script_prepares_hosts_for_a_fast_start(env: Synthesized) -> None:
    """User data: agent waits out the warm pool, uses the pre-pulled image, prefetches the model."""
    user_data = _user_data(env)
    assert "ECS_WARM_POOLS_CHECK=true" in user_data
    assert "ECS_IMAGE_PULL_BEHAVIOR=prefer-cached" in user_data
    assert "autoscaling/target-lifecycle-state" in user_data
    assert 'docker pull "$WORKER_IMAGE"' in user_data
    assert "python -m services.worker.prefetch" in user_data
    assert f"MODEL_ID={env.config.model_id}" in user_data
    assert "systemctl enable --now --no-block tinyllama-lifecycle.service" in user_data


def test_worker_loads_the_model_from_the_host_volume(env: Synthesized) -> None:
    """The worker's cache is the host folder the boot script prefetched into."""
    task_id = env.logical_id(env.stack.worker.task_definition.node.default_child)
    task = env.json["Resources"][task_id]["Properties"]
    (volume,) = task["Volumes"]
    assert volume["Host"]["SourcePath"] == HOST_CACHE_DIR
    (container,) = task["ContainerDefinitions"]
    (mount,) = container["MountPoints"]
    assert (mount["SourceVolume"], mount["ContainerPath"]) == (volume["Name"], CONTAINER_CACHE_DIR)
    # Read at every start: faster than gp3's 125 MiB/s baseline (the start-time budget).
    (lt,) = env.props("AWS::EC2::LaunchTemplate")
    (root,) = lt["LaunchTemplateData"]["BlockDeviceMappings"]
    assert root["Ebs"]["Throughput"] == GPU_VOLUME_THROUGHPUT_MIBPS > 125


def test_capacity_provider_leaves_hosts_to_the_fleet_backend(env: Synthesized) -> None:
    """No managed termination protection: a drained host can be stopped at once."""
    (provider,) = env.props("AWS::ECS::CapacityProvider")
    asg = provider["AutoScalingGroupProvider"]
    assert asg["ManagedTerminationProtection"] == "DISABLED"
    assert asg["ManagedScaling"]["Status"] == "ENABLED"  # the backstop when no gateway acts


def test_gateway_may_start_and_stop_only_the_gpu_group(env: Synthesized) -> None:
    """SetDesiredCapacity on this group's ARN with its environment tag; Describe only reads."""
    role_id = env.logical_id(env.stack.gateway.task_definition.task_role.node.default_child)
    statements = statements_of_role(env.json, role_id)
    autoscaling = [s for s in statements if str(s["Action"]).startswith("autoscaling:")]
    by_action = {a: s for s in autoscaling for a in as_list(s["Action"])}
    assert set(by_action) == {
        "autoscaling:SetDesiredCapacity",
        "autoscaling:DescribeAutoScalingGroups",
    }
    write = by_action["autoscaling:SetDesiredCapacity"]
    assert flatten(write["Resource"]).endswith(f":autoScalingGroupName/<{_group_id(env)}>")
    assert write["Condition"] == {
        "StringEquals": {"autoscaling:ResourceTag/tinyllama:env": env.config.name}
    }


def test_hosts_complete_lifecycle_actions_of_their_own_group_only(env: Synthesized) -> None:
    """The instance role may complete lifecycle actions on this group, and pull the worker image."""
    role = env.stack.worker.auto_scaling_group.role
    role_id = env.logical_id(role.node.default_child)
    statements = statements_of_role(env.json, role_id)
    (complete,) = [
        s for s in statements if "autoscaling:CompleteLifecycleAction" in as_list(s["Action"])
    ]
    assert as_list(complete["Action"]) == ["autoscaling:CompleteLifecycleAction"]
    assert flatten(complete["Resource"]).endswith(f":autoScalingGroupName/<{_group_id(env)}>")
    pulls = [s for s in statements if "ecr:BatchGetImage" in as_list(s["Action"])]
    assert pulls
    assert all("*" not in flatten(s["Resource"]) for s in pulls)


def test_registry_names_the_gpu_group_for_the_gateway(env: Synthesized) -> None:
    """The gateway finds the group through gpu/auto-scaling-group in the registry."""
    name = f"/tinyllama/{env.config.name}/gpu/auto-scaling-group"
    (parameter,) = [p for p in env.props("AWS::SSM::Parameter") if p["Name"] == name]
    assert ref_id(parameter["Value"]) == _group_id(env)


def test_lifecycle_script_is_valid_bash(tmp_path) -> None:
    """The boot script parses (bash -n), and passes shellcheck where it is installed."""
    import shutil
    import subprocess

    from cdk.gpu_host import LIFECYCLE_SCRIPT

    script = tmp_path / "tinyllama-lifecycle"
    script.write_text(LIFECYCLE_SCRIPT)
    subprocess.run(["bash", "-n", str(script)], check=True)
    if shutil.which("shellcheck"):
        subprocess.run(["shellcheck", str(script)], check=True)


def test_gpu_hosts_may_read_the_model_bucket_they_prefetch_from(tmp_path) -> None:
    """With a model bucket, the GPU hosts' instance role (not only the task role) may read it."""
    from cdk.config import load_config, with_overrides
    from tests.infra.conftest import synthesize

    config = with_overrides(load_config("dev"), model_bucket_name="tinyllama-test-models")
    env = synthesize(config, tmp_path)
    # The role the launch template's instance profile carries.
    (profile,) = env.props("AWS::IAM::InstanceProfile")
    (instance_role,) = [ref_id(r) for r in profile["Roles"]]
    actions = {a for s in statements_of_role(env.json, instance_role) for a in as_list(s["Action"])}
    assert {"s3:GetObject", "s3:ListBucket"} <= actions


def test_warm_pool_is_created_after_its_launch_hook(env: Synthesized) -> None:
    """The pool's first hosts launch only once the hook exists, so they wait to be prepared."""
    hook_id = env.logical_id(env.stack.worker.prepare_hook.node.default_child)
    (pool,) = env.resources("AWS::AutoScaling::WarmPool").values()
    assert hook_id in as_list(pool.get("DependsOn", []))
