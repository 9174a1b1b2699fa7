#!/usr/bin/env bash
# Sets up everything the tests need and runs the whole suite: lint, types, tests, and (without
# arguments) the native-code job: sanitizers and fuzzing of the C accelerators and decoders.
# Usage: bash scripts/test.sh [pytest args...]
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/setup.sh
setup_venv test
install_test_programs
install_npm_clients
echo "== ruff"; .venv/bin/ruff check pipeline plugins tests benchmarks examples hatch_build.py
.venv/bin/ruff format --check pipeline plugins tests benchmarks examples hatch_build.py
echo "== mypy"; .venv/bin/mypy
echo "== pytest"; .venv/bin/pytest "$@"
if [ $# -eq 0 ]; then echo "== native (scripts/native_check.sh)"; bash scripts/native_check.sh; fi
