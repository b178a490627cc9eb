#!/usr/bin/env bash
# Smoke test of a deployed environment, as the deploy pipeline runs it after `cdk deploy`:
#   1. GET /health answers 200;
#   2. a client-credentials token from the stack's machine client (Cognito);
#   3. an authenticated POST /infer?mode=async, then GET /jobs/{id} until it succeeds
#      (a stopped GPU fleet starts first: the job waits in the queue, so allow minutes).
#
# Reads what `python -m services.registry --env ENV export --format github` exported:
# TINYLLAMA_API_URL, TINYLLAMA_COGNITO_USER_POOL_ID, TINYLLAMA_COGNITO_MACHINE_CLIENT_ID,
# TINYLLAMA_COGNITO_DOMAIN. Needs AWS credentials that may
# cognito-idp:DescribeUserPoolClient on the pool (the CI deploy role may), curl, python3.
#   SMOKE_TIMEOUT_S   how long the job may take, cold start included (default 900)
set -euo pipefail
: "${TINYLLAMA_API_URL:?export the registry first}" "${TINYLLAMA_COGNITO_USER_POOL_ID:?}"
: "${TINYLLAMA_COGNITO_MACHINE_CLIENT_ID:?}" "${TINYLLAMA_COGNITO_DOMAIN:?}"
api=${TINYLLAMA_API_URL%/}
timeout_s=${SMOKE_TIMEOUT_S:-900}

json() {  # json FIELD: read one field of the JSON document on stdin
  python3 -c 'import json, sys; print(json.load(sys.stdin)[sys.argv[1]])' "$1"
}

echo "smoke: GET $api/health"
curl -fsS --max-time 30 --retry 10 --retry-delay 10 --retry-all-errors "$api/health" >/dev/null

secret=$(aws cognito-idp describe-user-pool-client \
  --user-pool-id "$TINYLLAMA_COGNITO_USER_POOL_ID" \
  --client-id "$TINYLLAMA_COGNITO_MACHINE_CLIENT_ID" \
  --query UserPoolClient.ClientSecret --output text)
echo "::add-mask::$secret"
token=$(curl -fsS --max-time 30 -u "$TINYLLAMA_COGNITO_MACHINE_CLIENT_ID:$secret" \
  -d grant_type=client_credentials -d scope=tinyllama/invoke \
  "${TINYLLAMA_COGNITO_DOMAIN%/}/oauth2/token" | json access_token)
echo "::add-mask::$token"

echo "smoke: POST $api/infer?mode=async"
job=$(curl -fsS --max-time 30 -X POST "$api/infer?mode=async" \
  -H "Authorization: Bearer $token" -H 'Content-Type: application/json' \
  -d '{"prompt": "Say hello in French.", "max_new_tokens": 16, "idle": 1}' | json id)

deadline=$((SECONDS + timeout_s))
while :; do
  status=$(curl -fsS --max-time 30 -H "Authorization: Bearer $token" "$api/jobs/$job" | json status)
  case "$status" in
    succeeded) echo "smoke: job $job succeeded after $((SECONDS + timeout_s - deadline)) s"; exit 0 ;;
    failed | cancelled | expired) echo "smoke: job $job ended $status" >&2; exit 1 ;;
  esac
  if ((SECONDS > deadline)); then
    echo "smoke: job $job still $status after $timeout_s s" >&2
    exit 1
  fi
  sleep 5
done
