"""``plugins._native.load``: the compiled accelerators, or ``None``."""

from __future__ import annotations

import os

import pytest

from plugins._native import load

# hatch_build.EXTENSIONS and LIBRARY_EXTENSIONS
MODULES = ("_agentscan", "_tracewire", "_spanscan", "_otlpvalid", "_h2server")


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
