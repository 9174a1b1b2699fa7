"""Optional C accelerators of the agent components' per-span loops.

Each module here is compiled at install time when a C compiler is available (see
``hatch_build.py``); every caller keeps a pure-Python path that gives the same results, used
when the module is missing or ``PIPELINE_NATIVE=0`` is set. The package name starts with ``_``:
it is not a plugin.
"""

from __future__ import annotations

import importlib
import os
from types import ModuleType


def load(name: str) -> ModuleType | None:
    """The compiled module ``plugins._native.<name>``, or ``None`` if it was not built or
    ``PIPELINE_NATIVE=0`` disables the accelerators."""
    if os.environ.get("PIPELINE_NATIVE", "1").strip().lower() in ("0", "false", "no", "off"):
        return None
    try:
        return importlib.import_module(f"plugins._native.{name}")
    except ImportError:
        return None
