"""Helpers for the tests of the C accelerators (``plugins/_native/``) and of the components
that use them: the accelerated path must be there under CI; elsewhere its tests are skipped
when no C compiler built it."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from types import ModuleType
from typing import Any

import pytest

from pipeline._pbwire import MASK64, encode_varint
from plugins._native import load


def _missing(name: str) -> str:
    needs = "a C compiler"
    if name == "_h2server":
        needs += " and libnghttp2's headers (apt install libnghttp2-dev)"
    return (
        f"the C accelerator plugins._native.{name} is not built (needs {needs}: "
        "reinstall with `pip install -e .`)"
    )


def require_native(name: str) -> ModuleType:
    """The compiled module, for a test module that only tests it: skips the whole module when
    it is not built, except under CI, where that is an error."""
    module = load(name)
    if module is None:
        if os.environ.get("CI"):
            raise RuntimeError(f"plugins._native.{name} was not built (CI requires it)")
        pytest.skip(_missing(name), allow_module_level=True)
    return module


def both_paths(name: str, disable: Callable[[pytest.MonkeyPatch], None] | None = None) -> Any:
    """An autouse fixture running every test of a module twice: on the accelerated path and on
    the pure-Python one (``disable`` turns the accelerator off; by default
    ``PIPELINE_NATIVE=0``, read when a component is created)."""

    @pytest.fixture(autouse=True, params=["native", "python"])
    def path(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
        if request.param == "python":
            if disable is None:
                monkeypatch.setenv("PIPELINE_NATIVE", "0")
            else:
                disable(monkeypatch)
        elif load(name) is None:
            if os.environ.get("CI"):
                pytest.fail(f"plugins._native.{name} was not built (CI requires it)")
            pytest.skip(_missing(name))
        yield str(request.param)

    return path


# -- hand encoding, so tests can write what protobuf's classes would not ------------------------
def varint(n: int) -> bytes:
    """``n`` as a protobuf varint (negative numbers as their 64-bit two's complement)."""
    return encode_varint(n & MASK64)


def ld(number: int, payload: bytes) -> bytes:
    """A length-delimited field."""
    return varint(number << 3 | 2) + varint(len(payload)) + payload


def vf(number: int, value: int) -> bytes:
    """A varint field."""
    return varint(number << 3) + varint(value)
