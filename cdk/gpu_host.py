"""What a GPU host does at boot: ECS agent settings and the warm-pool lifecycle script.

A host is launched once into the warm pool. There it pulls the worker image and
fetches the model onto its own EBS volume, completes the launch lifecycle action,
and Auto Scaling stops it (only its volume bills). A start boots it again with the
image and the model already on disk; the ECS agent (``ECS_WARM_POOLS_CHECK``) only
registers once the host is headed for ``InService``, and ``prefer-cached`` makes it
use the pulled image instead of pulling again.

The script runs on every boot (a systemd unit), follows the instance's target
lifecycle state from instance metadata, and completes the pending lifecycle action
at each transition: a host that enters, leaves or returns to the warm pool never
waits out the hook's timeout while it bills.
"""

from __future__ import annotations

from aws_cdk import aws_ec2 as ec2

LIFECYCLE_HOOK_NAME = "tinyllama-prepare"
HOST_CACHE_DIR = "/var/lib/tinyllama/cache"  # on the root EBS volume: survives stop/start
CONTAINER_CACHE_DIR = "/var/cache/tinyllama"  # TINYLLAMA_CACHE_DIR in docker/worker.Dockerfile
CONTAINER_UID = 10001  # the worker image's unprivileged user (owns the cache)

ECS_AGENT_SETTINGS = (
    "ECS_WARM_POOLS_CHECK=true",  # no registration while the host is warming or warm
    "ECS_IMAGE_PULL_BEHAVIOR=prefer-cached",  # the image pulled while warming is used
)

LIFECYCLE_SCRIPT = r"""#!/bin/bash
# tinyllama-lifecycle: completes this GPU host's Auto Scaling lifecycle actions.
# Environment (from /etc/tinyllama/lifecycle.env): WORKER_IMAGE, MODEL_ID, ENV_NAME,
# LIFECYCLE_HOOK, AWS_REGION, HOST_CACHE_DIR, CONTAINER_CACHE_DIR.
set -uo pipefail
export AWS_DEFAULT_REGION="$AWS_REGION"
PREPARED=/var/lib/tinyllama/prepared

imds() {
  local token
  token=$(curl -sf -X PUT http://169.254.169.254/latest/api/token \
    -H 'X-aws-ec2-metadata-token-ttl-seconds: 60') || return 1
  curl -sf -H "X-aws-ec2-metadata-token: $token" "http://169.254.169.254/latest/$1"
}

prepare() {  # once per worker image: pull it and put the model on this volume
  if [ -f "$PREPARED" ] && [ "$(cat "$PREPARED")" = "$WORKER_IMAGE" ]; then return 0; fi
  aws ecr get-login-password | docker login --username AWS --password-stdin "${WORKER_IMAGE%%/*}" \
    && docker pull "$WORKER_IMAGE" \
    && docker run --rm --network host \
      -v "$HOST_CACHE_DIR:$CONTAINER_CACHE_DIR" \
      -e TINYLLAMA_ENV="$ENV_NAME" -e TINYLLAMA_MODEL="$MODEL_ID" -e AWS_REGION="$AWS_REGION" \
      "$WORKER_IMAGE" python -m services.worker.prefetch \
    && echo "$WORKER_IMAGE" > "$PREPARED"
}

complete_action() {  # tell Auto Scaling this transition may proceed (a few tries)
  local group
  for _ in 1 2 3 4 5 6; do
    group=$(aws autoscaling describe-auto-scaling-instances --instance-ids "$INSTANCE_ID" \
      --query 'AutoScalingInstances[0].AutoScalingGroupName' --output text) \
      && aws autoscaling complete-lifecycle-action --lifecycle-action-result CONTINUE \
        --lifecycle-hook-name "$LIFECYCLE_HOOK" --auto-scaling-group-name "$group" \
        --instance-id "$INSTANCE_ID" \
      && return 0
    sleep 5
  done
  echo "tinyllama-lifecycle: no pending lifecycle action completed" >&2
}

command -v aws >/dev/null || dnf install -y -q awscli-2
until INSTANCE_ID=$(imds meta-data/instance-id); do sleep 1; done
last=""
while true; do
  state=$(imds meta-data/autoscaling/target-lifecycle-state || true)
  if [ -n "$state" ] && [ "$state" != "$last" ]; then
    echo "tinyllama-lifecycle: target state $state"
    case "$state" in
      Warmed:*)
        prepare || echo "tinyllama-lifecycle: prepare failed; the ECS agent will pull at start" >&2
        complete_action ;;
      InService) complete_action ;;
    esac
    last=$state
  fi
  sleep 1
done
"""

SYSTEMD_UNIT = """[Unit]
Description=TinyLlama GPU host: warm-pool lifecycle actions
After=network-online.target docker.service
Wants=network-online.target

[Service]
EnvironmentFile=/etc/tinyllama/lifecycle.env
ExecStart=/usr/local/sbin/tinyllama-lifecycle
Restart=always
RestartSec=2

[Install]
WantedBy=multi-user.target
"""


def add_host_setup(
    user_data: ec2.UserData,
    *,
    worker_image: str,
    model_id: str,
    env_name: str,
    region: str,
) -> None:
    """Append the agent settings, the cache folder and the lifecycle service to ``user_data``.

    ``worker_image`` and ``region`` may be tokens (resolved at deploy).
    """
    environment = {
        "WORKER_IMAGE": worker_image,
        "MODEL_ID": model_id,
        "ENV_NAME": env_name,
        "LIFECYCLE_HOOK": LIFECYCLE_HOOK_NAME,
        "AWS_REGION": region,
        "HOST_CACHE_DIR": HOST_CACHE_DIR,
        "CONTAINER_CACHE_DIR": CONTAINER_CACHE_DIR,
    }
    user_data.add_commands(
        "cat >> /etc/ecs/ecs.config <<'EOF'",
        *ECS_AGENT_SETTINGS,
        "EOF",
        f"mkdir -p /etc/tinyllama {HOST_CACHE_DIR}",
        f"chown {CONTAINER_UID}:{CONTAINER_UID} {HOST_CACHE_DIR}",
        "cat > /etc/tinyllama/lifecycle.env <<'EOF'",
        *(f"{name}={value}" for name, value in environment.items()),
        "EOF",
        "cat > /usr/local/sbin/tinyllama-lifecycle <<'EOF'",
        LIFECYCLE_SCRIPT.rstrip("\n"),
        "EOF",
        "chmod 755 /usr/local/sbin/tinyllama-lifecycle",
        "cat > /etc/systemd/system/tinyllama-lifecycle.service <<'EOF'",
        SYSTEMD_UNIT.rstrip("\n"),
        "EOF",
        "systemctl daemon-reload",
        "systemctl enable --now --no-block tinyllama-lifecycle.service",
    )
