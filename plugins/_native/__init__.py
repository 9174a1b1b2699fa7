"""Optional C accelerators of the agent components' per-span loops.

Each module here is compiled at install time when a C compiler is available (see
``hatch_build.py``); every caller keeps a pure-Python path that gives the same results, used
when the module is missing or ``PIPELINE_NATIVE=0`` is set. The package name starts with ``_``:
it is not a plugin.

``PIPELINE_NATIVE_DIR`` names another directory of these modules, looked in first: the
sanitizer and fuzzing builds (``tests/fuzz/build.py``, run by ``scripts/native_check.sh``) are
tested that way without touching the normal build.
"""

from __future__ import annotations

import importlib
import logging
import os
from types import ModuleType

log = logging.getLogger("pipeline.native")

if os.environ.get("PIPELINE_NATIVE_DIR"):
    __path__.insert(0, os.path.abspath(os.environ["PIPELINE_NATIVE_DIR"]))
_warned: set[str] = set()


def load(name: str) -> ModuleType | None:
    """The compiled module ``plugins._native.<name>``, or ``None`` if it was not built or
    ``PIPELINE_NATIVE=0`` disables the accelerators. A module that was not built is reported
    once per process (a warning: the pure-Python path costs several times the CPU)."""
    if os.environ.get("PIPELINE_NATIVE", "1").strip().lower() in ("0", "false", "no", "off"):
        return None
    try:
        return importlib.import_module(f"plugins._native.{name}")
    except ImportError as exc:
        if name not in _warned:
            _warned.add(name)
            if name == "_h2server":
                log.warning(
                    "the native gRPC server (plugins._native._h2server) is not built (%s); "
                    "grpcio's server is used (same answers, several times the CPU per "
                    "request). Install libnghttp2's headers (apt install libnghttp2-dev) and "
                    "reinstall to build it.",
                    exc,
                )
            else:
                log.warning(
                    "C accelerator plugins._native.%s is not built (%s); using the pure-Python "
                    "path (same results, several times the CPU). Reinstall with a C compiler "
                    "and the Python headers to build it.",
                    name,
                    exc,
                )
        return None


# libnghttp2 releases that fixed remote denial-of-service bugs a server must not have, and the
# API each fix added: a library older than the release but exporting that function has the fix
# backported (Debian 12's 1.52.0-1+deb12u1 and +deb12u2 do)
NGHTTP2_FIXES = (
    (0x013900, "RESET_RATE_LIMIT", "1.57.0", "Rapid Reset, CVE-2023-44487"),
    (0x013D00, "MAX_CONTINUATIONS", "1.61.0", "CONTINUATION flood, CVE-2024-28182"),
)


def nghttp2_missing_fixes(module: ModuleType) -> list[str]:
    """The fixes the libnghttp2 loaded by ``_h2server`` lacks: neither its version is at least
    the fixed release nor does it export the function the fix added."""
    version = int(getattr(module, "RUNTIME_VERSION_NUM", 0))
    return [
        f"{name} (fixed in {release})"
        for fixed, symbol, release, name in NGHTTP2_FIXES
        if version < fixed and not getattr(module, symbol, False)
    ]


def load_h2(env: str) -> ModuleType | None:
    """``_h2server`` (the native gRPC server and client) unless the environment variable
    ``env`` (``PIPELINE_GRPC_SERVER`` / ``PIPELINE_GRPC_CLIENT``) says ``grpcio``; ``native``
    is the default, anything else a ``ValueError``. The server is not used on a libnghttp2
    that lacks a fix of :data:`NGHTTP2_FIXES` (a warning says so; grpcio serves instead)."""
    choice = os.environ.get(env, "native").strip().lower()
    if choice not in ("native", "grpcio"):
        raise ValueError(f"{env}={choice!r}: expected 'native' or 'grpcio'")
    module = load("_h2server") if choice == "native" else None
    if module is not None and env == "PIPELINE_GRPC_SERVER":
        missing = nghttp2_missing_fixes(module)
        if missing:
            if "nghttp2" not in _warned:
                _warned.add("nghttp2")
                log.warning(
                    "the native gRPC server is not used: libnghttp2 %s lacks the fixes of %s; "
                    "grpcio's server is used instead (same answers, several times the CPU per "
                    "request). Upgrade libnghttp2 (or take your distribution's security "
                    "update) to use it.",
                    getattr(module, "RUNTIME_VERSION", "?"),
                    ", ".join(missing),
                )
            return None
    return module
