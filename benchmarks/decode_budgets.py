"""Hostile input against a gateway process: what each decoder's worst case costs.

    .venv/bin/python -m benchmarks.decode_budgets [--compare DIR] [--source DIR] [--cases a,b]
        [--out FILE]

The audit's amplification cases (issue 13), each sent to a fresh gateway subprocess (OTLP/HTTP,
Jaeger Thrift over HTTP and UDP, a Prometheus scrape when the case needs one; a ``blackhole``
exporter) while a probe sends a one-span OTLP/HTTP request every 20 ms. For each case: the
answer, the gateway's CPU-seconds from just before the input until it is idle again
(utime + stime from /proc), its peak RSS (VmHWM) and RSS before the case, the probe's worst
latency (how long the event loop could serve nobody), and what the gateway counted
(``otelcol_receiver_refused_requests`` by reason) or logged.

``--compare DIR`` runs each case against another checkout first (for example ``git archive``
of an older commit, with the built extensions copied in) and reports both side by side;
``--source DIR`` runs only that checkout. Figures move with the machine's load: quote them
as orders of magnitude, not to the percent.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
from aiohttp import web

ROOT = Path(__file__).resolve().parent.parent
CLK_TCK = os.sysconf("SC_CLK_TCK")
MiB = 1 << 20


def free_port(kind: int = socket.SOCK_STREAM) -> int:
    with socket.socket(socket.AF_INET, kind) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


def status_mib(pid: int, key: str) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(key + ":"):
            return int(line.split()[1]) / 1024
    return float("nan")


# -- inputs ---------------------------------------------------------------------------------
def varint(n: int) -> bytes:
    out = bytearray()
    while True:
        b = n & 0x7F
        n >>= 7
        if n:
            out.append(b | 0x80)
        else:
            out.append(b)
            return bytes(out)


def compact_batch_of(element: bytes, n: int, in_span: bool = False) -> bytes:
    """A compact-Thrift Batch: ``n`` copies of ``element`` as its spans, or as the tags of
    its one span (written by hand: field headers are 1 byte, lists ``0xfc`` + a varint)."""
    if not in_span:
        return b"\x29\xfc" + varint(n) + element * n + b"\x00"
    # one span: traceIdLow, traceIdHigh, spanId (i64 = 6), operationName (string = 8),
    # startTime (delta 3, i64), tags (delta 2, list = 9)
    span = b"\x16\x02\x16\x02\x16\x02\x28\x00\x36\x02" + b"\x29\xfc" + varint(n)
    return b"\x29\x1c" + span + element * n + b"\x00\x00"


def emit_batch(batch: bytes) -> bytes:
    """An agent datagram (compact ``emitBatch``, oneway) around an encoded Batch."""
    return b"\x82\x81\x01\x09emitBatch" + b"\x1c" + batch + b"\x00"


def json_spans(n: int) -> bytes:
    span = {
        "traceId": "0102030405060708090a0b0c0d0e0f10",
        "spanId": "1112131415161718",
        "parentSpanId": "2122232425262728",
        "name": "llm.call",
        "kind": 3,
        "startTimeUnixNano": "1700000000000000000",
        "endTimeUnixNano": "1700000000100000000",
        "attributes": [
            {"key": f"gen_ai.attr{k}", "value": {"stringValue": "value-value-value-"}}
            for k in range(5)
        ]
        + [{"key": "tokens", "value": {"intValue": "812"}}],
        "events": [{"name": "token", "timeUnixNano": "1700000000050000000"}],
    }
    doc = {"resourceSpans": [{"scopeSpans": [{"spans": [span] * n}]}]}
    return json.dumps(doc, separators=(",", ":")).encode()


def one_span() -> bytes:
    """The probe: an ExportTraceServiceRequest with one span."""
    from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
        ExportTraceServiceRequest,
    )

    req = ExportTraceServiceRequest()
    req.resource_spans.add().scope_spans.add().spans.add(
        trace_id=b"\x01" * 16, span_id=b"\x02" * 8, name="probe"
    )
    return bytes(req.SerializeToString())


ONE_SPAN = one_span()


# -- the gateway ------------------------------------------------------------------------------
@dataclass
class Gateway:
    proc: subprocess.Popen[bytes]
    log: Path
    ports: dict[str, int]

    def metric(self, name: str, **labels: str) -> float:
        import urllib.request

        url = f"http://127.0.0.1:{self.ports['metrics']}/metrics"
        with urllib.request.urlopen(url, timeout=10) as r:
            text = r.read().decode()
        total = 0.0
        for line in text.splitlines():
            if not line.startswith(name + "{"):
                continue
            if all(f'{k}="{v}"' in line for k, v in labels.items()):
                total += float(line.rsplit(" ", 1)[1])
        return total


CONFIG = """
receivers:
  otlp:
    protocols:
      http: {{endpoint: "127.0.0.1:{http}"}}
  jaeger:
    protocols:
      thrift_http: {{endpoint: "127.0.0.1:{jaeger_http}"}}
      thrift_compact: {{endpoint: "127.0.0.1:{jaeger_udp}"}}
{prometheus}
exporters:
  blackhole: {{}}
service:
  telemetry:
    logs: {{level: info, encoding: json}}
    metrics: {{address: "127.0.0.1:{metrics}"}}
  pipelines:
    traces: {{receivers: [otlp, jaeger], exporters: [blackhole]}}
    metrics: {{receivers: [otlp{scrape}], exporters: [blackhole]}}
"""

PROMETHEUS = """
  prometheus:
    config:
      scrape_configs:
        - job_name: big
          scrape_interval: 10s
          scrape_timeout: 10s
          static_configs: [{{targets: ["127.0.0.1:{target}"]}}]
"""


def start(cmd: list[str], log: Path, cwd: Path, env: dict[str, str]) -> subprocess.Popen[bytes]:
    with open(log, "wb") as out:
        return subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, cwd=cwd, env=env)


def read_from(path: Path, offset: int) -> bytes:
    with open(path, "rb") as f:
        f.seek(offset)
        return f.read()


@contextlib.asynccontextmanager
async def gateway(source: Path, scrape_target: int | None = None) -> AsyncIterator[Gateway]:
    ports = {
        "http": free_port(),
        "jaeger_http": free_port(),
        "jaeger_udp": free_port(socket.SOCK_DGRAM),
        "metrics": free_port(),
    }
    prometheus = PROMETHEUS.format(target=scrape_target) if scrape_target else ""
    text = CONFIG.format(
        prometheus=prometheus, scrape=", prometheus" if scrape_target else "", **ports
    )
    workdir = Path(tempfile.mkdtemp(prefix="decode-budgets-"))
    (workdir / "config.yaml").write_text(text)
    log = workdir / "gateway.log"
    env = {
        **os.environ,
        "PYTHONPATH": str(source),
        "PIPELINE_PLUGINS": "benchmarks.blackhole",
        "PIPELINE_TEST": "",
    }
    proc = start(
        [sys.executable, "-m", "pipeline", "run", "--config", str(workdir / "config.yaml")],
        log,
        source,
        env,
    )
    try:
        deadline = time.monotonic() + 30
        while b"everything is ready" not in log.read_bytes():
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError("the gateway did not start:\n" + log.read_text())
            await asyncio.sleep(0.05)
        yield Gateway(proc, log, ports)
    finally:
        proc.terminate()
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


async def settle(pid: int, quiet: float = 1.0, within: float = 180.0) -> None:
    """Until the process has used (almost) no CPU for ``quiet`` seconds."""
    deadline = time.monotonic() + within
    last = cpu_seconds(pid)
    still_since = time.monotonic()
    while time.monotonic() < deadline:
        await asyncio.sleep(0.25)
        now = cpu_seconds(pid)
        if now - last > 0.03:
            still_since = time.monotonic()
        last = now
        if time.monotonic() - still_since >= quiet:
            return


@dataclass
class Result:
    case: str
    answer: str = ""
    cpu_s: float = 0.0
    rss_before_mib: float = 0.0
    peak_rss_mib: float = 0.0
    probe_worst_s: float = 0.0
    probes: int = 0
    counted: dict[str, float] = field(default_factory=dict)
    log_bytes: int = 0
    log_errors: int = 0


async def measure(
    gw: Gateway, case: str, send: Callable[[aiohttp.ClientSession], Awaitable[str]]
) -> Result:
    pid = gw.proc.pid
    result = Result(case, rss_before_mib=status_mib(pid, "VmRSS"))
    log_before = gw.log.stat().st_size
    cpu_before = cpu_seconds(pid)
    probe_url = f"http://127.0.0.1:{gw.ports['http']}/v1/traces"
    latencies: list[float] = []
    timeout = aiohttp.ClientTimeout(total=600)
    async with aiohttp.ClientSession(timeout=timeout) as session:
        task = asyncio.ensure_future(send(session))
        while not task.done():
            t0 = time.monotonic()
            async with session.post(
                probe_url, data=ONE_SPAN, headers={"Content-Type": "application/x-protobuf"}
            ) as resp:
                await resp.read()
            latencies.append(time.monotonic() - t0)
            await asyncio.sleep(0.02)
        result.answer = await task
    await settle(pid)
    result.cpu_s = cpu_seconds(pid) - cpu_before
    result.peak_rss_mib = status_mib(pid, "VmHWM")
    result.probe_worst_s = max(latencies, default=0.0)
    result.probes = len(latencies)
    tail = read_from(gw.log, log_before)
    result.log_bytes = len(tail)
    result.log_errors = tail.count(b'"level": "ERROR"') + tail.count(b'"level":"ERROR"')
    result.log_errors += tail.count(b"Traceback")
    for transport in ("http", "thrift_compact", "scrape"):
        for reason in (
            "malformed",
            "too_large",
            "queue_full",
            "kernel_dropped",
            "client_disconnected",
            "body_size_limit",
            "sample_limit",
        ):
            n = gw.metric(
                "otelcol_receiver_refused_requests_total", transport=transport, reason=reason
            )
            if n:
                result.counted[f"{transport}/{reason}"] = n
    return result


async def post(
    session: aiohttp.ClientSession, url: str, body: bytes, content_type: str
) -> tuple[int, str]:
    async with session.post(url, data=body, headers={"Content-Type": content_type}) as resp:
        return resp.status, (await resp.text(errors="replace"))[:100]


# -- cases ----------------------------------------------------------------------------------
async def jaeger_http(gw: Gateway, body: bytes) -> Callable[[Any], Awaitable[str]]:
    url = f"http://127.0.0.1:{gw.ports['jaeger_http']}/api/traces"

    async def send(session: aiohttp.ClientSession) -> str:
        status, text = await post(session, url, body, "application/vnd.apache.thrift.compact")
        return f"{status} {text}"

    return send


async def case_jaeger_http_empty_spans(source: Path) -> Result:
    body = compact_batch_of(b"\x00", 19 * MiB)
    async with gateway(source) as gw:
        return await measure(gw, "jaeger-http-19MiB-empty-spans", await jaeger_http(gw, body))


async def case_jaeger_http_tiny_tags(source: Path) -> Result:
    tag = b"\x18\x00\x15\x00\x00"  # key "" (string, delta 1), vType 0 (i32, delta 1), stop
    body = compact_batch_of(tag, 19 * MiB // 5, in_span=True)
    async with gateway(source) as gw:
        return await measure(gw, "jaeger-http-19MiB-valid-tags", await jaeger_http(gw, body))


async def case_jaeger_udp_empty_spans(source: Path) -> Result:
    datagram = emit_batch(compact_batch_of(b"\x00", 64_900))
    assert len(datagram) <= 65_000, len(datagram)

    async with gateway(source) as gw:

        async def send(_: aiohttp.ClientSession) -> str:
            with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
                for _ in range(10 * 50):  # 50 a second for 10 s
                    s.sendto(datagram, ("127.0.0.1", gw.ports["jaeger_udp"]))
                    await asyncio.sleep(0.02)
            return "500 datagrams in 10 s"

        return await measure(gw, "jaeger-udp-50/s-empty-spans", send)


async def case_scrape_1m_series(source: Path) -> Result:
    lines = [
        f'agent_tool_calls_total{{agent="agent-{i:07d}",tool="t{i % 10}"}} {i}\n'
        for i in range(1_000_000)
    ]
    body = ("# TYPE agent_tool_calls_total counter\n" + "".join(lines)).encode()
    del lines
    armed, scraped = asyncio.Event(), asyncio.Event()

    async def handle(_: web.Request) -> web.Response:
        if not armed.is_set() or scraped.is_set():  # only the one scrape measured is big
            return web.Response(body=b"small 1\n", content_type="text/plain")
        scraped.set()
        return web.Response(body=body, content_type="text/plain")

    app = web.Application()
    app.router.add_get("/metrics", handle)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    port = free_port()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    try:
        async with gateway(source, scrape_target=port) as gw:

            async def send(_: aiohttp.ClientSession) -> str:
                armed.set()
                await asyncio.wait_for(scraped.wait(), 30)
                return f"scraped {len(body) / MiB:.0f} MiB"

            return await measure(gw, "scrape-1M-series", send)
    finally:
        await runner.cleanup()


async def json_case(source: Path, name: str, body: bytes) -> Result:
    async with gateway(source) as gw:
        url = f"http://127.0.0.1:{gw.ports['http']}/v1/traces"

        async def send(session: aiohttp.ClientSession) -> str:
            status, text = await post(session, url, body, "application/json")
            return f"{status} {text}"

        return await measure(gw, name, send)


async def case_json_large(source: Path) -> Result:
    return await json_case(source, "otlp-json-11.8MiB", json_spans(17_300))


async def case_json_tiny_values(source: Path) -> Result:
    body = b'{"resourceSpans":[],"x":[' + b"[]," * 6_000_000 + b"[]]}"
    return await json_case(source, "otlp-json-17MiB-empty-arrays", body)


async def case_json_deep(source: Path) -> Result:
    return await json_case(source, "otlp-json-100k-deep", b"[" * 100_000)


async def case_json_malformed_flood(source: Path) -> Result:
    async with gateway(source) as gw:
        url = f"http://127.0.0.1:{gw.ports['http']}/v1/traces"

        async def send(session: aiohttp.ClientSession) -> str:
            statuses: dict[int, int] = {}
            for _ in range(1000):
                status, _ = await post(session, url, b'{"resourceSpans": [', "application/json")
                statuses[status] = statuses.get(status, 0) + 1
            return f"statuses {statuses}"

        return await measure(gw, "otlp-json-1000-malformed", send)


async def case_disconnects(source: Path) -> Result:
    async with gateway(source) as gw:

        async def send(_: aiohttp.ClientSession) -> str:
            for i in range(1000):
                _, writer = await asyncio.open_connection("127.0.0.1", gw.ports["http"])
                framing = (
                    b"Content-Length: 1000\r\n\r\n{"
                    if i % 2
                    else b"Transfer-Encoding: chunked\r\n\r\n5\r\n{"
                )
                writer.write(
                    b"POST /v1/traces HTTP/1.1\r\nHost: x\r\n"
                    b"Content-Type: application/json\r\n" + framing
                )
                await writer.drain()
                writer.close()
                await writer.wait_closed()
            await asyncio.sleep(0.5)
            return "1000 clients gone mid-body"

        return await measure(gw, "otlp-http-1000-disconnects", send)


CASES: dict[str, Callable[[Path], Awaitable[Result]]] = {
    "jaeger-http-empty-spans": case_jaeger_http_empty_spans,
    "jaeger-http-tiny-tags": case_jaeger_http_tiny_tags,
    "jaeger-udp-empty-spans": case_jaeger_udp_empty_spans,
    "scrape-1m-series": case_scrape_1m_series,
    "json-large": case_json_large,
    "json-tiny-values": case_json_tiny_values,
    "json-deep": case_json_deep,
    "json-malformed-flood": case_json_malformed_flood,
    "disconnects": case_disconnects,
}


def report(results: list[Result], source: Path) -> str:
    out = [
        f"# Decode budgets: hostile input against `{source}`",
        "",
        "| case | answer | CPU-s | RSS before / peak (MiB) | probe worst (s) | counted | "
        "log bytes / errors |",
        "|---|---|---:|---|---:|---|---|",
    ]
    for r in results:
        out.append(
            f"| {r.case} | {_answer(r)} | {r.cpu_s:.2f} | {r.rss_before_mib:.0f} / "
            f"{r.peak_rss_mib:.0f} | {r.probe_worst_s:.3f} ({r.probes} probes) | "
            f"{_counted(r)} | {r.log_bytes} / {r.log_errors} |"
        )
    return "\n".join(out) + "\n"


def _answer(r: Result) -> str:
    return r.answer.replace("|", "/").replace("\n", " ")[:80]


def _counted(r: Result) -> str:
    return ", ".join(f"{k} {v:g}" for k, v in r.counted.items()) or "-"


def compare(pairs: list[tuple[Result, Result]], before: Path, after: Path) -> str:
    out = [
        "# Decode budgets: the audit's hostile inputs, before and after",
        "",
        f"Before: `{before}`; after: `{after}`; each case on a fresh gateway, one after the "
        "other in the same run (`python -m benchmarks.decode_budgets --compare <before>`).",
        "",
        "| case | answer before / after | CPU-s before / after | peak RSS MiB before / after "
        "(RSS at start) | probe worst s before / after | refusals counted before / after | "
        "error lines logged before / after |",
        "|---|---|---|---|---|---|---|",
    ]
    for b, a in pairs:
        out.append(
            f"| {a.case} | {_answer(b)} / {_answer(a)} | {b.cpu_s:.2f} / {a.cpu_s:.2f} | "
            f"{b.peak_rss_mib:.0f} / {a.peak_rss_mib:.0f} ({a.rss_before_mib:.0f}) | "
            f"{b.probe_worst_s:.3f} / {a.probe_worst_s:.3f} | {_counted(b)} / {_counted(a)} | "
            f"{b.log_errors} / {a.log_errors} |"
        )
    return "\n".join(out) + "\n"


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--source", type=Path, default=ROOT)
    parser.add_argument("--compare", type=Path, help="another checkout: before / after table")
    parser.add_argument("--cases", default=",".join(CASES))
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    source = args.source.resolve()
    results = []
    pairs = []
    for name in args.cases.split(","):
        if args.compare:
            before = await CASES[name](args.compare.resolve())
            print(json.dumps({"before": before.__dict__}), flush=True)
        result = await CASES[name](source)
        print(json.dumps(result.__dict__), flush=True)
        results.append(result)
        if args.compare:
            pairs.append((before, result))
    text = compare(pairs, args.compare, source) if args.compare else report(results, source)
    print(text)
    if args.out:
        args.out.write_text(text)


if __name__ == "__main__":
    asyncio.run(main())
