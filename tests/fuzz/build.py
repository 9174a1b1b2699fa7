"""Builds of the C accelerators for the sanitizer and fuzzing runs, beside the normal one.

``python -m tests.fuzz.build sanitize|fuzz`` compiles every module of ``hatch_build.py``'s tables
into ``build/<flavour>/plugins/_native/`` (the normal build in ``plugins/_native/`` that the rest
of the suite uses is left alone); ``PIPELINE_NATIVE_DIR=build/<flavour>/plugins/_native`` makes
``plugins._native.load`` take them instead (see ``plugins/_native/__init__.py``).

* ``sanitize``: gcc, AddressSanitizer and UndefinedBehaviorSanitizer, UB not recoverable (the
  first report aborts the process); run with gcc's ``libasan.so`` preloaded.
* ``fuzz``: clang, the same sanitizers plus ``-fsanitize=fuzzer-no-link`` (libFuzzer's edge
  counters and comparison tracing in every module), for atheris; run with atheris'
  ``asan_with_fuzzer.so`` preloaded (libFuzzer and clang's ASan/UBSan runtime in one library).

Both drop ``NDEBUG`` (CPython's header asserts check how the C code uses its macros) and
``-fwrapv`` (so a signed overflow is reported, not silently wrapped). Rebuilds only what changed.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]

COMMON = ["-O1", "-g", "-fno-omit-frame-pointer", "-UNDEBUG", "-fno-wrapv", "-Wall"]
FLAVOURS: dict[str, tuple[str, list[str], list[str]]] = {
    # name -> (compiler, compile flags, link flags)
    "sanitize": (
        "gcc",
        [*COMMON, "-fsanitize=address,undefined", "-fno-sanitize-recover=undefined"],
        ["-fsanitize=address,undefined"],
    ),
    "fuzz": (
        "clang",
        [
            *COMMON,
            "-fsanitize=fuzzer-no-link,address,undefined",
            "-fno-sanitize-recover=undefined",
            # clang warns about the gcc-only flags of CPython's own CFLAGS
            "-Wno-unused-command-line-argument",
        ],
        ["-fsanitize=fuzzer-no-link,address,undefined"],
    ),
}


def output_dir(flavour: str) -> Path:
    """Where ``flavour``'s modules go: ``PIPELINE_NATIVE_DIR`` is this plus ``plugins/_native``."""
    return ROOT / "build" / flavour


def native_dir(flavour: str) -> Path:
    return output_dir(flavour) / "plugins" / "_native"


def build(flavour: str) -> list[Path]:
    compiler, flags, link_flags = FLAVOURS[flavour]
    sys.path.insert(0, str(ROOT))
    import hatch_build

    os.environ["CC"] = compiler
    os.environ.pop("LDSHARED", None)  # derived from CC (CPython's own starts with "gcc")
    built = hatch_build.compile_native(
        ROOT,
        strict=True,
        output=output_dir(flavour),
        build_temp=ROOT / "build" / f"{flavour}-obj",
        flags=flags,
        link_flags=link_flags,
    )
    return [output_dir(flavour) / path for path in built]


def main(argv: list[str]) -> int:
    if len(argv) != 1 or argv[0] not in FLAVOURS:
        print(f"usage: python -m tests.fuzz.build {{{'|'.join(FLAVOURS)}}}", file=sys.stderr)
        return 2
    for path in build(argv[0]):
        print(path.relative_to(ROOT))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
