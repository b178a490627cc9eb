"""Every registry key the system uses, relative to ``/tinyllama/<env>/``.

CDK writes these, services read them; both import the names from here so
that the contract between infrastructure and code is not held by strings
scattered across the tree.
"""

from __future__ import annotations

API_URL = "api/url"

COGNITO_USER_POOL_ID = "cognito/user-pool-id"
COGNITO_DESKTOP_CLIENT_ID = "cognito/desktop-client-id"
COGNITO_MACHINE_CLIENT_ID = "cognito/machine-client-id"
COGNITO_DOMAIN = "cognito/domain"

JWT_ISSUER = "jwt/issuer"
JWT_JWKS_URL = "jwt/jwks-url"
JWT_CLIENT_IDS = "jwt/client-ids"  # JSON list of strings
JWT_ADMIN_SCOPE = "jwt/admin-scope"

REDIS_URL = "redis/url"  # rediss://host:port/0, without the password
REDIS_AUTH_SECRET_ARN = "redis/auth-secret-arn"

QUEUE_NAME = "queue/name"
QUEUE_MAX_DEPTH = "queue/max-depth"

GATEWAY_RATE_LIMIT = "gateway/rate-limit"  # requests per second per subject

MODEL_ID = "model/id"

GPU_CLUSTER = "gpu/cluster"
GPU_SERVICE = "gpu/service"
GPU_AUTO_SCALING_GROUP = "gpu/auto-scaling-group"  # the GPU hosts and their warm pool
GPU_INSTANCE_TYPE = "gpu/instance-type"
GPU_HOURLY_PRICE_USD = "gpu/hourly-price-usd"

BUDGET_MONTHLY_USD = "budget/monthly-usd"
BUDGET_WARN_USD = "budget/warn-usd"
BUDGET_HARD_STOP_USD = "budget/hard-stop-usd"

# Written by the deploy pipeline, not by CDK (so not in ALL_KEYS, which the stack
# writes): the commit that passed this environment. `registry promote --prefix release`
# carries it to the next environment (.github/workflows/deploy.yml).
RELEASE_PREFIX = "release"
RELEASE_COMMIT = f"{RELEASE_PREFIX}/commit"

ALL_KEYS: tuple[str, ...] = (
    API_URL,
    COGNITO_USER_POOL_ID,
    COGNITO_DESKTOP_CLIENT_ID,
    COGNITO_MACHINE_CLIENT_ID,
    COGNITO_DOMAIN,
    JWT_ISSUER,
    JWT_JWKS_URL,
    JWT_CLIENT_IDS,
    JWT_ADMIN_SCOPE,
    REDIS_URL,
    REDIS_AUTH_SECRET_ARN,
    QUEUE_NAME,
    QUEUE_MAX_DEPTH,
    GATEWAY_RATE_LIMIT,
    MODEL_ID,
    GPU_CLUSTER,
    GPU_SERVICE,
    GPU_AUTO_SCALING_GROUP,
    GPU_INSTANCE_TYPE,
    GPU_HOURLY_PRICE_USD,
    BUDGET_MONTHLY_USD,
    BUDGET_WARN_USD,
    BUDGET_HARD_STOP_USD,
)


def parameter_path(*, env: str, key: str) -> str:
    """Return the full SSM parameter name of ``key`` in environment ``env``."""
    return f"/tinyllama/{env}/{key}"
