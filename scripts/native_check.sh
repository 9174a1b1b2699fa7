#!/usr/bin/env bash
# The native-code job: the C accelerators built with ASan and UBSan and their tests run on that
# build, then every fuzz target of tests/fuzz/targets.py fuzzed with atheris and libFuzzer
# (see docs/testing.md). Run by scripts/test.sh (so by CI); alone:
#   bash scripts/native_check.sh [TARGET...]      FUZZ_SECONDS=600 for a longer run per target
# Needs gcc (ASan/UBSan runtimes), clang (libFuzzer's instrumentation) and atheris; installs the
# missing ones when it can (root + apt-get, pip). Under CI (CI set) a missing tool is an error.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/setup.sh
setup_venv test

ATHERIS_VERSION=3.0.0  # the newest release with a wheel for CPython 3.11 (3.1.0 has none)

missing() {
  echo "native check: $1" >&2
  if [ -n "${CI:-}" ]; then exit 1; fi
  echo "native check: skipped (not under CI); install it and run: bash scripts/native_check.sh" >&2
  exit 0
}

if ! command -v clang >/dev/null 2>&1; then
  if [ "$(id -u)" = "0" ] && command -v apt-get >/dev/null 2>&1; then
    echo "installing: clang (libFuzzer's coverage instrumentation for the fuzzing build)"
    apt-get update -qq >/dev/null 2>&1 || true
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq clang >/dev/null || true
  fi
  command -v clang >/dev/null 2>&1 || missing "clang is not installed (apt-get install clang)"
fi
[ -f "$(gcc -print-file-name=libasan.so)" ] || \
  missing "gcc's AddressSanitizer runtime is missing (apt-get install libasan8 libubsan1)"
if ! .venv/bin/python -c "import atheris" >/dev/null 2>&1; then
  .venv/bin/python -m pip install --quiet --only-binary :all: "atheris==$ATHERIS_VERSION" || true
  .venv/bin/python -c "import atheris" >/dev/null 2>&1 || \
    missing "atheris $ATHERIS_VERSION could not be installed (pip install atheris==$ATHERIS_VERSION)"
fi

exec .venv/bin/python -m tests.fuzz.check "$@"
