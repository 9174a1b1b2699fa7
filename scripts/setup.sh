# Sourced by scripts/run.sh and scripts/test.sh: creates .venv and installs the project.
PYTHON="${PYTHON:-python3}"

setup_venv() {
  local extra="${1:-}"
  if [ ! -x .venv/bin/python ]; then
    "$PYTHON" -m venv .venv
  fi
  local stamp=".venv/.installed-${extra:-run}"
  if [ ! -f "$stamp" ] || [ pyproject.toml -nt "$stamp" ]; then
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
