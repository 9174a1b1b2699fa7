#!/usr/bin/env bash
# Sets up the gateway and runs it on the built-in default config (configs/gateway.yaml).
# Usage: bash scripts/run.sh [--config FILE ...]
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/setup.sh
setup_venv
exec .venv/bin/pipeline run "$@"
