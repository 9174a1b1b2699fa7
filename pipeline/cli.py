"""The ``pipeline`` command: run, validate, components, top."""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import signal
import sys
from importlib import resources
from pathlib import Path
from typing import Any

from pipeline._version import __version__
from pipeline.config import Config, load_config
from pipeline.errors import ConfigErrors
from pipeline.pluginmanager import default_registry
from pipeline.telemetry import LOGGER_NAME, configure_logging

log = logging.getLogger(f"{LOGGER_NAME}.cli")


def default_config_path() -> str:
    """The built-in default config: ``configs/gateway.yaml`` of the source tree, or the copy
    packaged in the wheel."""
    source = Path(__file__).resolve().parent.parent / "configs" / "gateway.yaml"
    if source.is_file():
        return str(source)
    return str(resources.files("pipeline") / "_data" / "gateway.yaml")


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="pipeline",
        description="A telemetry gateway for AI-agent systems, in the shape of the "
        "OpenTelemetry Collector.",
    )
    parser.add_argument("--version", action="version", version=f"pipeline {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")

    def add_config(p: argparse.ArgumentParser) -> None:
        p.add_argument(
            "--config",
            "-c",
            action="extend",
            nargs="+",
            metavar="FILE",
            default=[],
            help="config file(s), merged in order: maps merge, lists replace "
            "(default: the built-in configs/gateway.yaml)",
        )

    run = sub.add_parser("run", help="run the gateway")
    add_config(run)
    run.add_argument(
        "--log-format", choices=["text", "json"], help="override service.telemetry.logs.encoding"
    )
    run.add_argument(
        "--watch-config",
        action="store_true",
        help="reload the config when its files change (SIGHUP reloads it in any case)",
    )
    run.add_argument(
        "--workers",
        type=int,
        metavar="N",
        help="worker processes sharing the receiving ports (0: one per core); overrides "
        "service.workers",
    )
    run.add_argument(
        "--log-level",
        choices=["debug", "info", "warn", "error"],
        help="override service.telemetry.logs.level",
    )
    validate = sub.add_parser("validate", help="check config files and exit (0 valid, 1 not)")
    add_config(validate)
    validate.add_argument(
        "--check-endpoints",
        action="store_true",
        help="also check that every endpoint can be bound now",
    )
    top = sub.add_parser(
        "top",
        help="live per-component view of a running gateway (from its console extension)",
    )
    top.add_argument(
        "--endpoint",
        default="localhost:55679",
        help="the console extension's host:port (default localhost:55679)",
    )
    top.add_argument("--url", help="the console's base URL instead (http://... or https://...)")
    top.add_argument("--token", help="the bearer token, when the console has auth")
    top.add_argument("--token-file", metavar="FILE", help="read the token from this file")
    top.add_argument("--interval", type=float, default=2.0, help="seconds between frames")
    top.add_argument("--once", action="store_true", help="print one frame and exit")
    top.add_argument("--cacert", metavar="FILE", help="CA file to verify an HTTPS console")
    top.add_argument(
        "--insecure", action="store_true", help="do not verify an HTTPS console's certificate"
    )
    components = sub.add_parser("components", help="list every registered component type")
    components.add_argument("--json", action="store_true", help="print JSON instead of a table")
    return parser


def _load(files: list[str]) -> Config | None:
    try:
        config = load_config(files or [default_config_path()], default_registry())
    except ConfigErrors as exc:
        print(
            f"invalid configuration ({len(exc.errors)} error"
            f"{'s' if len(exc.errors) != 1 else ''}):",
            file=sys.stderr,
        )
        for err in exc.errors:
            print(f"  error: {err}", file=sys.stderr)
        return None
    for warning in config.warnings:
        log.warning("%s", warning)
    return config


def cmd_run(args: argparse.Namespace) -> int:
    configure_logging(args.log_level or "info", "json" if args.log_format == "json" else "console")
    from pipeline.reload import fingerprint

    files = args.config or [default_config_path()]
    read = fingerprint(files) if args.watch_config else None
    config = _load(args.config)
    if config is None:
        return 1
    logs = config.service.telemetry.logs
    encoding = {"text": "console", "json": "json"}.get(args.log_format or "", logs.encoding)
    configure_logging(args.log_level or logs.level, encoding)
    from pipeline import workers

    worker = workers.enter_from_env()
    if worker is not None:
        # the supervisor forwards SIGHUP: a worker still starting ignores it (the service
        # installs its reload handler once it runs)
        signal.signal(signal.SIGHUP, signal.SIG_IGN)
        logging.getLogger(LOGGER_NAME).handlers[0].addFilter(workers.WorkerLogFilter(worker.index))
        worker.acknowledge = config.service.worker_acknowledge
    else:
        for warning in config.warnings:
            log.warning("%s", warning)
        if args.workers is not None and args.workers < 0:
            print("cannot start: --workers must be 0 (one per core) or more", file=sys.stderr)
            return 1
        count = workers.resolve_count(
            args.workers if args.workers is not None else config.service.workers
        )
        if count > 1:
            if config.service.durability is not None:
                from pipeline.config import DURABILITY_WITH_WORKERS

                print(
                    f"cannot start (1 error):\n  error: {DURABILITY_WITH_WORKERS}", file=sys.stderr
                )
                return 1
            return workers.supervise(
                _ARGV, count, config.service.shutdown_timeout, config.service.worker_routing
            )
    from pipeline._malloc import PeriodicTrim, malloc_trim, tune_allocator
    from pipeline.netedge import FDS, raise_fd_limit
    from pipeline.service import Service

    trim = malloc_trim() if tune_allocator() else None
    soft, _ = raise_fd_limit()  # as the Go runtime does for the Collector
    if soft < 1024:
        log.warning(
            "the process may open only %d file descriptors (RLIMIT_NOFILE); receivers leave "
            "the last %d to the health and metrics endpoints, exporters and files",
            soft,
            FDS.reserve,
        )
    service = Service(config)
    service.config_files = files
    service.config_fingerprint = read

    async def main() -> int:
        trimmer = PeriodicTrim(trim) if trim is not None else None
        if trimmer is not None:
            trimmer.start()
        if worker is not None:
            await worker.open()  # the siblings hand this worker what it owns
        try:
            return await service.run(freeze_gc=True, watch_config=args.watch_config)
        finally:
            if worker is not None:
                await worker.close()
            if trimmer is not None:
                trimmer.cancel()

    try:
        return asyncio.run(main())
    except ConfigErrors as exc:
        print(
            f"cannot start ({len(exc.errors)} error{'s' if len(exc.errors) != 1 else ''}):",
            file=sys.stderr,
        )
        for err in exc.errors:
            print(f"  error: {err}", file=sys.stderr)
        return 1
    except Exception as exc:
        log.error("the gateway failed to start: %s", exc)
        return 1


def cmd_validate(args: argparse.Namespace) -> int:
    configure_logging("warn", "console")
    config = _load(args.config)
    if config is None:
        return 1
    if args.check_endpoints:
        from pipeline.service import check_endpoints

        errors = check_endpoints(config)
        if errors:
            print(f"invalid configuration ({len(errors)} errors):", file=sys.stderr)
            for err in errors:
                print(f"  error: {err}", file=sys.stderr)
            return 1
    for warning in config.warnings:
        print(f"  warning: {warning}", file=sys.stderr)
    print(f"configuration is valid: {len(config.pipelines)} pipeline(s)")
    return 0


def cmd_top(args: argparse.Namespace) -> int:
    import ssl

    from pipeline.top import run

    url = args.url or f"http://{args.endpoint}"
    token = args.token
    if args.token_file:
        try:
            token = Path(args.token_file).read_text().strip()
        except OSError as exc:
            print(f"pipeline top: cannot read {args.token_file}: {exc.strerror}", file=sys.stderr)
            return 1
    context = None
    if url.startswith("https://"):
        context = ssl.create_default_context(cafile=args.cacert)
        if args.insecure:
            context.check_hostname = False
            context.verify_mode = ssl.CERT_NONE
    if args.interval <= 0:
        print("pipeline top: --interval must be positive", file=sys.stderr)
        return 2
    return run(url, token, args.interval, args.once, context)


def cmd_components(args: argparse.Namespace) -> int:
    rows: list[dict[str, Any]] = []
    for entry in default_registry().entries():
        f = entry.factory
        rows.append(
            {
                "kind": str(f.kind),
                "type": f.type,
                "signals": {k: str(v) for k, v in f.signal_stability().items()},
                "distribution": entry.distribution,
                "plugin": entry.plugin,
                "description": f.description,
            }
        )
    if args.json:
        print(json.dumps(rows, indent=2))
        return 0
    header = ("KIND", "TYPE", "SIGNALS (STABILITY)", "DISTRIBUTION")
    table = [header] + [
        (
            r["kind"],
            r["type"],
            ", ".join(f"{k} ({v})" for k, v in r["signals"].items()),
            r["distribution"],
        )
        for r in rows
    ]
    widths = [max(len(row[i]) for row in table) for i in range(len(header))]
    for row in table:
        print("  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip())
    return 0


_ARGV: list[str] = []  # the arguments main() was given (a supervisor's workers get them too)


def main(argv: list[str] | None = None) -> int:
    global _ARGV
    _ARGV = list(sys.argv[1:] if argv is None else argv)
    args = _parser().parse_args(argv)
    if args.command is None:
        _parser().print_help()
        return 2
    handler = {
        "run": cmd_run,
        "validate": cmd_validate,
        "components": cmd_components,
        "top": cmd_top,
    }[args.command]
    try:
        return handler(args)
    except KeyboardInterrupt:
        return 130


def entry() -> None:  # pragma: no cover
    sys.exit(main())


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
