#!/usr/bin/env bash
# Install what `cdk synth` and tests/infra need: the Python packages into the
# project venv and the pinned CDK CLI (package-lock.json) into node_modules/.
# Usage: cdk/install.sh [path-to-venv]   (default: .venv)
set -euo pipefail
cd "$(dirname "$0")/.."
venv="${1:-.venv}"
"$venv/bin/python" -m pip install -q -r requirements/cdk.txt
npm ci --no-audit --no-fund --loglevel=error
