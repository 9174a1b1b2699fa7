"""One fuzz target under atheris (libFuzzer): ``python -m tests.fuzz.run TARGET [libFuzzer args]``.

The arguments after the target's name go to libFuzzer as they are (``-max_total_time=60``,
``-runs=N``, corpus directories, one input file to replay, ``-merge=1``...). ``tests/fuzz/check.py``
runs every target this way with the environment it needs: for the targets that drive the C
accelerators, ``PIPELINE_NATIVE_DIR`` naming the build of ``tests/fuzz/build.py fuzz`` and
atheris' ``asan_with_fuzzer.so`` preloaded, so libFuzzer sees the C code's edges and comparisons
and AddressSanitizer/UBSan check it; for the Python decoders, atheris instruments the modules
the target names.
"""

from __future__ import annotations

import contextlib
import os
import sys

import atheris

from tests.fuzz.targets import TARGETS


def main() -> None:
    if len(sys.argv) < 2 or sys.argv[1] not in TARGETS:
        names = ", ".join(TARGETS)
        sys.exit(f"usage: python -m tests.fuzz.run TARGET [libFuzzer args]; targets: {names}")
    target = TARGETS[sys.argv[1]]
    instrumenting = (
        atheris.instrument_imports(include=list(target.instrument))
        if target.instrument
        else contextlib.nullcontext()
    )
    with instrumenting:
        one_input = target.setup()
    native_dir = os.environ.get("PIPELINE_NATIVE_DIR")
    if target.native and native_dir:  # the instrumented build is the one under test
        for name, module in sys.modules.items():
            if name.startswith("plugins._native._"):
                assert os.path.dirname(module.__file__ or "") == os.path.abspath(native_dir), name
    atheris.Setup([sys.argv[0], *sys.argv[2:]], one_input)
    atheris.Fuzz()


if __name__ == "__main__":
    main()
