"""The native-code job: sanitizers and coverage-guided fuzzing (``scripts/native_check.sh``).

``python -m tests.fuzz.check [--seconds N] [--jobs N] [--no-sanitize] [--no-fuzz] [TARGET...]``;
``python -m tests.fuzz.check TARGET --replay FILE...`` runs inputs (a finding) through a target.

1. Builds the C accelerators twice beside the normal build (``tests/fuzz/build.py``): with gcc,
   ASan and UBSan (``build/sanitize``), and with clang, ASan, UBSan and libFuzzer's coverage
   instrumentation (``build/fuzz``).
2. Runs the tests that drive the C code (:data:`SANITIZED_TESTS`) on the sanitized build: gcc's
   ``libasan.so`` preloaded, ``PYTHONMALLOC=malloc`` (every Python object gets its own guarded
   allocation, so a C write past a ``bytes`` it filled is caught), reports written to
   ``build/sanitize/logs`` from every process the tests start. Leak detection is off: CPython
   does not free everything at exit, and what it keeps is allocated through the same frames as
   the objects the C code makes, so no suppression could tell a leak of ours from its own;
   ``tests/fuzz/test_corpus.py`` checks instead that the C entry points leave no objects behind.
3. Fuzzes every target of ``tests/fuzz/targets.py`` for ``--seconds`` (``FUZZ_SECONDS``, default
   10) from its seed corpus and past findings; new inputs go to ``build/fuzz/corpus/<target>``
   (kept between local runs), crashes to ``build/fuzz/findings/<target>/``. Under CI (``CI``
   set, or ``--deterministic``) each target instead runs its fixed number of executions
   (``Target.runs``, about 10 s each here) from a fixed seed (``FUZZ_SEED``, default 1) with
   ``PYTHONHASHSEED=0``: a CI run tries the same mutations in the same order each time (the
   coverage reached still varies a little: object addresses differ from run to run), so a
   verdict says much more about the change than about the draw. Exploration with random seeds
   and longer budgets is the local run's job (docs/testing.md); what it finds becomes a
   regression input, replayed on every run.

The builds and the steps of 2 and 3 share ``--jobs`` lanes (``FUZZ_JOBS``, default: the CPU
count); a step starts once its own build is done (the sanitized tests do not wait for the
fuzzing build, the longer one, nor the fuzz targets for the sanitized build). Any test
failure, sanitizer report, crash or broken property fails the job; the summary lists the
executions and coverage of every target and what to do with a finding.
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from tests.fuzz.build import ROOT, native_dir
from tests.fuzz.targets import TARGETS

# the tests that drive the C paths: the modules' own tests (twins, malformed input, HTTP/2
# sessions) and the components' tests that run on both paths
SANITIZED_TESTS = [
    "tests/fuzz/test_corpus.py",
    "tests/plugins/_native",
    "tests/plugins/test_workflowprocessor.py",
    "tests/plugins/test_workflow_type.py",
    "tests/plugins/test_agentmetricsconnector.py",
    "tests/plugins/test_agentmetrics_join_native.py",
    "tests/plugins/test_spanmetricsconnector.py",
    # tail_sampling's C paths (the timed tests of the file stay out: the sanitized build is slow)
    "tests/plugins/tailsampling/test_processor.py::test_decisions_the_same_with_and_without_the_scans_facts",
    "tests/plugins/tailsampling/test_processor.py::test_whole_requests_decided_the_same_with_and_without_the_c_walk",
    "tests/plugins/tailsampling/test_decide.py",
    "tests/plugins/redaction/test_fastcheck.py",
    "tests/plugins/test_otlpreceiver.py",
    "tests/plugins/otlpreceiver/test_grpc_native.py",
    "tests/plugins/otlpreceiver/test_grpc_server.py",
    "tests/plugins/otlpexporter/test_native_sender.py",
    "tests/plugins/otlpexporter/test_sender.py",
]

# --capture=sys: a UBSan report goes to the process's stderr (fd 2), kept in the step's log
PYTEST_ARGS = ["-q", "-p", "no:cacheprovider", "--capture=sys"]

ASAN_OPTIONS = [
    "detect_leaks=0",  # see the module's docstring
    "allocator_may_return_null=1",  # a huge request is a MemoryError, as without ASan
    "detect_stack_use_after_return=1",
    "check_initialization_order=1",
    "strict_string_checks=1",
    "quarantine_size_mb=64",
]
UBSAN_OPTIONS = ["print_stacktrace=1", "halt_on_error=1"]

# the first line of a sanitizer's or libFuzzer's report, or of an uncaught Python exception
REPORT = re.compile(r"ERROR: (AddressSanitizer|libFuzzer)|runtime error:|Uncaught Python exception")

FINDINGS = ROOT / "build" / "fuzz" / "findings"
WORK_CORPUS = ROOT / "build" / "fuzz" / "corpus"
FUZZ_LOGS = ROOT / "build" / "fuzz" / "logs"
SANITIZE_LOGS = ROOT / "build" / "sanitize" / "logs"
SEEDS = ROOT / "tests" / "fuzz" / "corpus"
REGRESSIONS = ROOT / "tests" / "fuzz" / "regressions"


@dataclass
class Step:
    name: str
    cmd: list[str]
    env: dict[str, str]
    log: Path
    proc: subprocess.Popen[bytes] | None = None
    started: float = 0.0
    seconds: float = 0.0
    rc: int | None = None
    notes: list[str] = field(default_factory=list)
    after: Step | None = None  # started once this step (its build) ended well; else skipped


def atheris_dir() -> Path:
    import atheris

    return Path(atheris.path())


def sanitize_env() -> dict[str, str]:
    SANITIZE_LOGS.mkdir(parents=True, exist_ok=True)
    libasan = subprocess.run(
        ["gcc", "-print-file-name=libasan.so"], capture_output=True, text=True, check=True
    ).stdout.strip()
    return {
        **os.environ,
        "PIPELINE_NATIVE_DIR": str(native_dir("sanitize")),
        "LD_PRELOAD": libasan,
        "PYTHONMALLOC": "malloc",
        "ASAN_OPTIONS": ":".join([*ASAN_OPTIONS, f"log_path={SANITIZE_LOGS}/asan"]),
        "UBSAN_OPTIONS": ":".join([*UBSAN_OPTIONS, f"log_path={SANITIZE_LOGS}/ubsan"]),
    }


def fuzz_env(native: bool) -> dict[str, str]:
    env = dict(os.environ)
    if native:
        env.update(
            PIPELINE_NATIVE_DIR=str(native_dir("fuzz")),
            LD_PRELOAD=str(atheris_dir() / "asan_with_fuzzer.so"),
            PYTHONMALLOC="malloc",
            ASAN_OPTIONS=":".join(ASAN_OPTIONS),
            UBSAN_OPTIONS=":".join(UBSAN_OPTIONS),
        )
    return env


def fuzz_step(name: str, seconds: int, deterministic: bool = False) -> Step:
    target = TARGETS[name]
    work = WORK_CORPUS / name
    findings = FINDINGS / name
    work.mkdir(parents=True, exist_ok=True)
    findings.mkdir(parents=True, exist_ok=True)
    corpora = [str(d) for d in (work, SEEDS / name, REGRESSIONS / name) if d.is_dir()]
    cmd = [
        sys.executable,
        "-m",
        "tests.fuzz.run",
        name,
        *(
            # a guard far beyond the runs' usual time, so a slow machine still ends
            [
                f"-runs={target.runs}",
                f"-seed={os.environ.get('FUZZ_SEED', '1')}",
                f"-max_total_time={max(seconds, 10) * 12}",
            ]
            if deterministic
            else [f"-max_total_time={seconds}"]
        ),
        "-timeout=10",  # one input taking this long is a finding (a hang or an amplification)
        "-rss_limit_mb=2048",
        f"-max_len={target.max_len}",
        "-print_final_stats=1",
        f"-artifact_prefix={findings}/",
        *corpora,
    ]
    env = fuzz_env(target.native)
    if deterministic:
        env["PYTHONHASHSEED"] = "0"
    return Step(f"fuzz {name}", cmd, env, FUZZ_LOGS / f"{name}.log")


def start(step: Step) -> None:
    step.log.parent.mkdir(parents=True, exist_ok=True)
    with step.log.open("wb") as out:
        step.proc = subprocess.Popen(
            step.cmd, cwd=ROOT, env=step.env, stdout=out, stderr=subprocess.STDOUT
        )
    step.started = time.monotonic()


def run_steps(steps: list[Step], jobs: int) -> None:
    """Runs ``steps`` in their order on ``jobs`` lanes, each once its ``after`` step ended (a
    step whose ``after`` failed is not run: ``rc`` stays ``None``)."""
    pending = list(steps)
    running: list[Step] = []
    while pending or running:
        for step in list(pending):
            if step.after is not None and step.after.rc is None:
                continue  # its build is still running
            if len(running) >= jobs:
                break
            pending.remove(step)
            if step.after is None or step.after.rc == 0:
                start(step)
                running.append(step)
        time.sleep(0.2)
        for step in list(running):
            assert step.proc is not None
            if step.proc.poll() is not None:
                step.rc = step.proc.returncode
                step.seconds = time.monotonic() - step.started
                running.remove(step)
                print(f"  {step.name}: {'ok' if step.rc == 0 else 'FAILED'} ({step.seconds:.0f}s)")


def fuzz_stats(log: Path) -> str:
    text = log.read_text(errors="replace")
    runs = re.search(r"stat::number_of_executed_units: (\d+)", text)
    inited = re.search(r"INITED cov: (\d+) ft: (\d+)", text)
    done = re.findall(r"#\d+\s+(?:DONE|NEW|REDUCE|pulse)\s+cov: (\d+) ft: (\d+) corp: (\d+)", text)
    parts = [f"{int(runs.group(1)):,} runs" if runs else "? runs"]
    if inited and done:
        cov, ft, corp = done[-1]
        parts.append(f"cov {inited.group(1)}->{cov} ft {inited.group(2)}->{ft} corpus {corp}")
    return ", ".join(parts)


def sanitizer_reports() -> list[Path]:
    return sorted(SANITIZE_LOGS.glob("*san.*")) if SANITIZE_LOGS.is_dir() else []


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.fuzz.check", description=__doc__)
    parser.add_argument("targets", nargs="*", help=f"default: all ({', '.join(TARGETS)})")
    parser.add_argument("--seconds", type=int, default=int(os.environ.get("FUZZ_SECONDS", "10")))
    parser.add_argument("--jobs", type=int, default=int(os.environ.get("FUZZ_JOBS", "0")))
    parser.add_argument("--no-sanitize", action="store_true", help="skip the sanitized tests")
    parser.add_argument("--no-fuzz", action="store_true", help="skip the fuzzing")
    parser.add_argument(
        "--deterministic",
        action="store_true",
        default=bool(os.environ.get("CI")),
        help="a fixed number of runs per target from a fixed seed (default under CI)",
    )
    parser.add_argument(
        "--replay",
        metavar="FILE",
        nargs="+",
        help="run these inputs through the one TARGET, on the fuzzing build with the sanitizers",
    )
    args = parser.parse_args(argv)
    if args.replay:
        if len(args.targets) != 1 or args.targets[0] not in TARGETS:
            parser.error("--replay needs one TARGET")
        subprocess.run([sys.executable, "-m", "tests.fuzz.build", "fuzz"], check=True, cwd=ROOT)
        cmd = [sys.executable, "-m", "tests.fuzz.run", args.targets[0], *args.replay]
        return subprocess.run(cmd, env=fuzz_env(TARGETS[args.targets[0]].native)).returncode
    unknown = [t for t in args.targets if t not in TARGETS]
    if unknown:
        parser.error(f"unknown target(s) {unknown}; targets: {', '.join(TARGETS)}")
    names = args.targets or list(TARGETS)
    jobs = args.jobs or os.cpu_count() or 1
    began = time.monotonic()

    flavours = ([] if args.no_sanitize else ["sanitize"]) + ([] if args.no_fuzz else ["fuzz"])
    print(f"== native: building {' and '.join(flavours)} (tests/fuzz/build.py)")
    builds = [
        Step(
            f"build {f}",
            [sys.executable, "-m", "tests.fuzz.build", f],
            dict(os.environ),
            ROOT / "build" / f"{f}.log",
        )
        for f in flavours
    ]
    built = dict(zip(flavours, builds, strict=True))

    steps: list[Step] = []
    if not args.no_sanitize:
        shutil.rmtree(SANITIZE_LOGS, ignore_errors=True)
        steps.append(
            Step(
                "pytest (ASan+UBSan build)",
                [sys.executable, "-m", "pytest", *PYTEST_ARGS, *SANITIZED_TESTS],
                sanitize_env(),
                ROOT / "build" / "sanitize" / "pytest.log",
                after=built["sanitize"],
            )
        )
    if not args.no_fuzz:
        shutil.rmtree(FINDINGS, ignore_errors=True)
        for name in names:
            step = fuzz_step(name, args.seconds, args.deterministic)
            step.after = built["fuzz"] if TARGETS[name].native else None
            steps.append(step)
    budget = "Target.runs from a fixed seed" if args.deterministic else f"{args.seconds}s"
    print(
        f"== native: {len(steps)} steps on {jobs} lane(s), each once its build is done, "
        f"{budget} per fuzz target"
    )
    run_steps([*builds, *steps], jobs)
    for step in builds:
        if step.rc != 0:
            print(step.log.read_text(errors="replace")[-6000:])
            print(f"native: {step.name} failed (log: {step.log})")
            return 1

    failed = False
    print("== native: summary")
    for step in steps:
        status = "ok" if step.rc == 0 else f"FAILED (exit {step.rc}, log: {step.log})"
        if step.name.startswith("fuzz "):
            status += f"; {fuzz_stats(step.log)}"
        else:
            tail = step.log.read_text(errors="replace").strip().splitlines()[-1:]
            status += f"; {tail[0] if tail else ''}"
        print(f"  {step.name:34s} {step.seconds:5.0f}s  {status}")
        if step.rc != 0:
            failed = True
            lines = step.log.read_text(errors="replace").splitlines()
            first = next((i for i, line in enumerate(lines) if REPORT.search(line)), None)
            shown = lines[first : first + 40] if first is not None else lines[-60:]
            print("\n".join(shown))
    reports = sanitizer_reports()
    for report in reports:
        failed = True
        print(f"sanitizer report {report}:\n{report.read_text(errors='replace')}")
    crashes = sorted(p for p in FINDINGS.glob("*/*") if p.is_file()) if FINDINGS.is_dir() else []
    if crashes:
        failed = True
        print("findings (replay one: python -m tests.fuzz.run TARGET FILE):")
        for path in crashes:
            print(f"  {path.relative_to(ROOT)}")
        print(
            "Fix the bug, then copy each input to tests/fuzz/regressions/<target>/ (named for "
            "what it found): pytest replays it on every run (tests/fuzz/test_corpus.py)."
        )
    print(f"== native: {'FAILED' if failed else 'passed'} in {time.monotonic() - began:.0f}s")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
