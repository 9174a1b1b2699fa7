"""Every seed and every past finding of the fuzz targets (``tests/fuzz/corpus/<target>/`` and
``tests/fuzz/regressions/<target>/``) replayed through its target on every test run, on whatever
build of the C modules the run uses (the normal one; the sanitized one in the native job)."""

from __future__ import annotations

import gc
import os
import sys
import time
import tracemalloc
from pathlib import Path

import pytest

from tests.fuzz.targets import TARGETS, OneInput
from tests.plugins._native_support import require_native

HERE = Path(__file__).parent
CORPUS, REGRESSIONS = HERE / "corpus", HERE / "regressions"

# every C module the targets drive must be there (under CI; skipped elsewhere without a compiler)
for _name in ("_otlpvalid", "_tracewire", "_agentscan", "_spanscan", "_h2server", "_tailscan"):
    require_native(_name)


def inputs(root: Path) -> list[tuple[str, Path]]:
    return [
        (target, path)
        for target in sorted(TARGETS)
        if (root / target).is_dir()
        for path in sorted((root / target).iterdir())
        if path.is_file()
    ]


_one_inputs: dict[str, OneInput] = {}


def one_input(target: str) -> OneInput:
    if target not in _one_inputs:
        _one_inputs[target] = TARGETS[target].setup()
    return _one_inputs[target]


def test_every_target_has_seeds_and_only_known_targets_have_files() -> None:
    for root in (CORPUS, REGRESSIONS):
        if root.is_dir():
            assert {p.name for p in root.iterdir() if p.is_dir()} <= set(TARGETS), root
    missing = [t for t in TARGETS if not any((CORPUS / t).glob("*"))]
    assert missing == [], f"targets without seeds (run python -m tests.fuzz.seeds): {missing}"


@pytest.mark.parametrize(("target", "path"), inputs(CORPUS), ids=lambda v: getattr(v, "name", v))
def test_seed(target: str, path: Path) -> None:
    one_input(target)(path.read_bytes())


@pytest.mark.parametrize(
    ("target", "path"), inputs(REGRESSIONS), ids=lambda v: getattr(v, "name", v)
)
def test_past_finding(target: str, path: Path) -> None:
    one_input(target)(path.read_bytes())


LEAK_CHECKED = [t.name for t in TARGETS.values() if t.native and t.leak_check]


def leak_check_budget(config: pytest.Config) -> float:
    """Seconds a leak check may take: pytest-timeout's timeout (``--timeout``, else
    ``PYTEST_TIMEOUT``, else ``timeout`` in pyproject) less a fifth, so that the check fails
    by itself, saying why."""
    timeout = config.getoption("timeout", None)  # --timeout=0: no timeout, no budget
    if timeout is None:
        timeout = os.environ.get("PYTEST_TIMEOUT") or config.getini("timeout")
    seconds = float(timeout or 0)
    return seconds * 0.8 if seconds > 0 else float("inf")


def clear_caches() -> None:
    """Empties the gateway's bounded ``functools`` caches (filled by the random ids of the
    workflow stamps, they would look like a slow leak until full). The unbounded ones stay:
    one that grew call after call would be a leak, and emptied, their next call would build
    again what the process builds once (the dialect tables: a plugin manager, the entry points)
    and move third-party caches."""
    for name, module in list(sys.modules.items()):
        if name.split(".")[0] in ("pipeline", "plugins"):
            for value in list(vars(module).values()):
                info = getattr(value, "cache_info", None)
                if callable(getattr(value, "cache_clear", None)) and (
                    info is None or info().maxsize is not None
                ):
                    value.cache_clear()


# calls measured per target at least: a leak of one object per call grows the count by as many,
# while what the interpreter keeps between the two counts (tracing only the measured calls)
# varies by a few blocks; a leak on half of the inputs only (the refused ones) still fails
LEAK_CALLS = 96
# untraced replays first: what is made once (interned strings, tables, caches, the memories of
# the connectors) is made, and costs nothing under tracemalloc
LEAK_WARMUP = 3


@pytest.mark.parametrize("target", LEAK_CHECKED)
def test_no_objects_are_left_behind(target: str, request: pytest.FixtureRequest) -> None:
    """The C paths keep no reference they should have dropped: replaying a target's inputs
    again and again does not grow the number of live Python allocations (LeakSanitizer cannot
    tell CPython's own allocations from ours; this can). The inputs are replayed untraced
    first, then at least :data:`LEAK_CALLS` calls under tracemalloc, which traces only what
    they allocate: the live blocks it counts after them (less those before them) are what
    they left behind, a few blocks when nothing leaks, one block per call at least when one
    object (or a few bytes of the Python allocators) leaks per call."""
    one = one_input(target)
    data = [p.read_bytes() for t, p in inputs(CORPUS) + inputs(REGRESSIONS) if t == target]
    data += [d[: len(d) // 2] for d in data]  # and refused ones
    replays = -(-LEAK_CALLS // len(data))
    budget = leak_check_budget(request.config)
    deadline = time.monotonic() + budget
    done = 0

    def replay() -> None:
        nonlocal done
        for d in data:
            one(d)
            if time.monotonic() > deadline:
                # a clean failure saying why, before pytest-timeout's alarm lands somewhere
                # in the C code or pytest's own machinery (an INTERNALERROR, no summary)
                pytest.fail(
                    f"leak check of {target}: {done} of {LEAK_WARMUP + replays} replays of "
                    f"its {len(data)} inputs done when its {budget:.0f} s budget (the test "
                    f"timeout less a fifth) ran out: the machine is loaded or the target got "
                    f"slower; run it alone: pytest "
                    f"tests/fuzz/test_corpus.py -k 'no_objects and {target}'",
                    pytrace=False,
                )
        done += 1

    def live_blocks() -> int:
        clear_caches()
        gc.collect()
        return sum(stat.count for stat in tracemalloc.take_snapshot().statistics("filename"))

    for _ in range(LEAK_WARMUP):
        replay()
    tracemalloc.start()
    try:
        before = live_blocks()
        for _ in range(replays):
            replay()
        after = live_blocks()
    finally:
        tracemalloc.stop()
    calls = replays * len(data)
    assert after - before < calls / 2, f"{after - before} more live blocks after {calls} calls"
