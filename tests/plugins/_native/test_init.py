"""``plugins._native.load``: the compiled accelerators, or ``None``."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from plugins._native import load

# hatch_build.EXTENSIONS and LIBRARY_EXTENSIONS
MODULES = (
    "_agentscan",
    "_tracewire",
    "_spanscan",
    "_otlpvalid",
    "_h2server",
    "_route",
    "_tailscan",
)


@pytest.mark.parametrize("name", MODULES)
def test_accelerator_is_built(name: str) -> None:
    """Under CI the install must have compiled every accelerator (a missing one would leave
    only the pure-Python paths tested); elsewhere a missing compiler is allowed."""
    if load(name) is None and not os.environ.get("CI"):
        pytest.skip(f"plugins._native.{name} is not built (no C compiler at install time?)")
    assert load(name) is not None


def test_pipeline_native_0_disables_them(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PIPELINE_NATIVE", "0")
    assert all(load(name) is None for name in MODULES)


def test_unknown_module_is_none_and_reported_once(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level("WARNING", logger="pipeline.native"):
        assert load("_no_such_accelerator") is None
        assert load("_no_such_accelerator") is None
    warnings = [r for r in caplog.records if "_no_such_accelerator" in r.getMessage()]
    assert len(warnings) == 1
    assert "pure-Python path" in warnings[0].getMessage()


def test_modules_list_matches_the_build_hook() -> None:
    import ast
    from pathlib import Path

    hook = Path(__file__).resolve().parents[3] / "hatch_build.py"
    tree = ast.parse(hook.read_text())
    names: set[str] = set()
    for node in ast.walk(tree):
        target = getattr(node, "target", None)
        if isinstance(node, ast.AnnAssign) and getattr(target, "id", "") in (
            "EXTENSIONS",
            "LIBRARY_EXTENSIONS",
        ):
            assert isinstance(node.value, ast.Dict)
            names |= {
                str(k.value).rsplit(".", 1)[-1]
                for k in node.value.keys
                if isinstance(k, ast.Constant)
            }
    assert names == set(MODULES)


def test_a_missing_grpc_server_says_what_to_install(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    import importlib

    import plugins._native as native

    real = importlib.import_module

    def fake(name: str, package: str | None = None) -> object:
        if name == "plugins._native._h2server":
            raise ImportError("No module named 'plugins._native._h2server'")
        return real(name, package)

    monkeypatch.setattr(importlib, "import_module", fake)
    monkeypatch.setattr(native, "_warned", set())
    with caplog.at_level("WARNING", logger="pipeline.native"):
        assert load("_h2server") is None
    (record,) = [r for r in caplog.records if "_h2server" in r.getMessage()]
    assert "grpcio's server is used" in record.getMessage()
    assert "libnghttp2-dev" in record.getMessage()


def test_load_h2_follows_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    from plugins._native import load_h2

    monkeypatch.setenv("PIPELINE_GRPC_CLIENT", "grpcio")
    assert load_h2("PIPELINE_GRPC_CLIENT") is None
    monkeypatch.setenv("PIPELINE_GRPC_CLIENT", "nghttp3")
    with pytest.raises(ValueError, match="PIPELINE_GRPC_CLIENT='nghttp3'"):
        load_h2("PIPELINE_GRPC_CLIENT")
    monkeypatch.setenv("PIPELINE_GRPC_CLIENT", "native")
    assert load_h2("PIPELINE_GRPC_CLIENT") is load("_h2server")


def test_the_modules_come_from_pipeline_native_dir_when_it_is_set() -> None:
    """The sanitizer job (scripts/native_check.sh) runs these tests on another build named by
    ``PIPELINE_NATIVE_DIR``: every module must then come from there (else the job would test
    the normal build); otherwise from the package's own directory."""
    import plugins._native as native

    expected = Path(os.environ.get("PIPELINE_NATIVE_DIR") or Path(native.__file__).parent)
    for name in MODULES:
        module = load(name)
        if module is None and not os.environ.get("CI"):
            continue
        assert module is not None and module.__file__ is not None
        assert Path(module.__file__).parent.resolve() == expected.resolve(), name


def test_pipeline_native_dir_is_looked_in_first(tmp_path: Path) -> None:
    import shutil
    import subprocess
    import sys

    module = load("_otlpvalid")
    if module is None or module.__file__ is None:
        if os.environ.get("CI"):
            raise AssertionError("plugins._native._otlpvalid is not built")
        pytest.skip("plugins._native._otlpvalid is not built")
    copy = tmp_path / Path(module.__file__).name
    shutil.copy(module.__file__, copy)
    code = "from plugins._native import load; print(load('_otlpvalid').__file__)"
    out = subprocess.run(
        [sys.executable, "-c", code],
        env={**os.environ, "PIPELINE_NATIVE_DIR": str(tmp_path)},
        capture_output=True,
        text=True,
        check=True,
        cwd=Path(__file__).resolve().parents[3],
    )
    assert out.stdout.strip() == str(copy)


def test_a_libnghttp2_without_the_dos_fixes_is_not_used_by_the_server(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    import types

    import plugins._native as native

    def fake(version: int, reset: bool, continuations: bool) -> types.ModuleType:
        module = types.ModuleType("_h2server")
        module.RUNTIME_VERSION_NUM = version  # type: ignore[attr-defined]
        module.RUNTIME_VERSION = f"{version >> 16}.{(version >> 8) & 255}.0"  # type: ignore[attr-defined]
        module.RESET_RATE_LIMIT = reset  # type: ignore[attr-defined]
        module.MAX_CONTINUATIONS = continuations  # type: ignore[attr-defined]
        return module

    # 1.52.0 as Debian 12 ships it (both fixes backported): used
    assert native.nghttp2_missing_fixes(fake(0x013400, True, True)) == []
    # upstream 1.61.0 without the symbols we probe for cannot exist, but the version suffices
    assert native.nghttp2_missing_fixes(fake(0x013D00, False, False)) == []
    # 1.58.0: Rapid Reset fixed by version, CONTINUATION flood not
    assert native.nghttp2_missing_fixes(fake(0x013A00, False, False)) == [
        "CONTINUATION flood, CVE-2024-28182 (fixed in 1.61.0)"
    ]
    old = fake(0x013400, False, False)
    monkeypatch.setattr(native, "load", lambda name: old)
    monkeypatch.delenv("PIPELINE_GRPC_SERVER", raising=False)
    native._warned.discard("nghttp2")
    with caplog.at_level("WARNING", logger="pipeline.native"):
        assert native.load_h2("PIPELINE_GRPC_SERVER") is None
        assert native.load_h2("PIPELINE_GRPC_CLIENT") is old  # the client is not refused
    (warning,) = [r.getMessage() for r in caplog.records if "libnghttp2" in r.getMessage()]
    assert "Rapid Reset, CVE-2023-44487" in warning and "grpcio" in warning
    # the module built here reports its library
    real = load("_h2server")
    if real is not None:
        assert real.RUNTIME_VERSION and native.nghttp2_missing_fixes(real) == []
