"""Benchmark: the agent pipeline in one process and in N worker processes (``--workers``),
beside rotel, in the same run.

Servers (each exporting to a blackhole: ``benchmarks/blackhole.py``, rotel's
``--exporter blackhole``), none pinned to a CPU (the workers need every core; the load
generators share them, as the issue's goal says: "the load generator included"):

* ``rotel``: rotel-agent, OTLP/gRPC in, blackhole out (the peer; its forward path);
* ``agent x1``: the gateway, otlp -> memory_limiter -> workflow -> batch -> blackhole, with
  agentmetrics (the agent pipeline of ``benchmarks/agent_pipeline.py``), one process;
* ``agent xN``: the same config with ``--workers N``.

Three measurements per server, each repeated (``--repeat``) and reported as medians:

* **cost**: a fixed rate (``--rate`` spans/s from ``--clients`` load generators): CPU seconds
  of the whole process tree (supervisor and workers) per million spans. The routing overhead
  is ``agent xN`` / ``agent x1``; beside it the wake-ups per client request (voluntary context
  switches of the server's processes), what a crossing between workers costs;
* **mid**: the same at a mid load (``--mid-rate``, default 200k spans/s, about half of one
  process's saturation on a quiet 2-core machine, from ``--mid-clients`` paced load
  generators), where both workers are busy: the figure the routing's cost goal is read on
  (at 20k each worker is mostly idle, and the ratio weighs two half-idle processes' fixed
  costs). Whether x1 kept up is reported (accepted spans/s against the rate asked);
* **saturation**: the load generators send as fast as they can for ``--seconds``; spans the
  gateway accepted per second (``otelcol_receiver_accepted_spans``: the receiver answers once
  the workflow processor took the spans; for rotel, spans its clients had acknowledged).

The load: every request encoded once, before the runs, into a file in /dev/shm
(``agent_pipeline.write_requests``: fresh trace ids written into 8 templates), each load
generator sending its slice of it (the page cache's, mapped): every server (rotel, x1, xN)
is sent the same bytes, and a load generator does nothing per request but hand the bytes to
libnghttp2 and read the answers. The saturation runs' file holds ``--pool-spans-per-s`` over
the seconds; a generator whose slice ran out stops early, counted ("out of requests").

What the harness costs (the rest of the 2 cores the servers do not get), per saturation run:
the load generators' CPU while sending, user and kernel apart (their start-up before, not in
the window); this benchmark process's CPU (its sampling thread: every server process's CPU
twice a second, from /proc; its scrapes); the gateway supervisor's CPU (the server's, no
worker's). Whether every accepted span came out: the blackhole exporter's
``otelcol_exporter_sent_spans`` (it counts a payload's spans, ``item_count()``, and drops it:
no encoding, no compression; rotel's blackhole likewise) against the spans the clients had
acknowledged. A scrape of a ``--workers`` gateway merges every worker's state (it costs N
workers more than one process), so the harness keeps its scrapes out of what it compares: a
run's counters are read by one scrape before its CPU window and one after it (the window
ends ``DRAIN_S`` after the load generators stopped, when the workflow wait and the batch
timeout have passed); a saturation run scrapes twice while the load is sent (halfway through
and at the end of the seconds: processed spans/s over the second half), and a drain not over
at the window's end is polled (every 0.5 s): those scrapes are counted, what a scrape costs
the server is measured after each run (idle, 20 scrapes: "CPU-ms a /metrics scrape"), and
their cost is taken out of the run's CPU-s and shown apart. The client
connections each worker holds are read halfway through the sending too, once every load
generator said it sends (they were read ~2 s after the launch: 0 / 0 when the generators
started slower than that on a loaded machine).

    python -m benchmarks.workers                  # writes benchmarks/results/workers.md
    python -m benchmarks.workers --repeat 1 --seconds 5 --out /tmp/w.md
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import resource
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

import psutil

from benchmarks.agent_pipeline import (
    AGENT,
    ROOT,
    Load,
    _telemetry_value,
    exporter_def,
    free_port,
    rotel_binary,
    write_requests,
)

# service.worker_routing and service.worker_acknowledge of the agent servers (--routing,
# --acknowledge)
ROUTING = {"value": "trace_id", "acknowledge": "owner"}
# --probe: the folder benchmarks.workers_probe writes into, one subfolder a server ("" none)
PROBE = {"folder": ""}


@dataclass
class Run:
    server: str
    mode: str  # cost | saturation
    sent_spans: int
    seconds: float
    cpu_s: float
    cpu_s_per_million: float
    accepted_per_s: float
    out_spans: float | None
    loadgen_cpu_s: float = 0.0  # CPU seconds of the load generator processes
    # of which while sending (their start-up: imports, building the requests, left out)
    loadgen_send_cpu_s: float = 0.0
    failed_requests: int = 0
    # why they failed: each kind (gRPC status, HTTP status and reset, or unanswered) with its
    # count and the first message the server gave with it
    failures: str = ""
    load_avg: float = 0.0  # the machine's 1-minute load average at the start
    others_cores: float = 0.0  # cores the rest of the machine used meanwhile (shared machine)
    # cores the server used while the load generators sent (its CPU-s above also count the
    # backlog it works off after they stopped)
    cores_sending: float = 0.0
    # spans the exporter sent per second over the second half of the sending: what the
    # pipeline processes (accepted spans wait in the workflow processor, wait_duration)
    processed_per_s: float = 0.0
    # voluntary context switches of the server's processes (their main threads: the event
    # loops) per client request: how often a process went to sleep and was woken up, the
    # cost of a crossing between workers (a wake-up of an idle process costs tens of µs)
    wakeups_per_request: float = 0.0
    # per worker process (the gateway's main process for x1), in worker order: the cores each
    # used while the load was sent, and the client connections each held halfway through (the
    # kernel's SO_REUSEPORT placement): which worker, if any, limits a saturation run
    worker_cores: str = ""
    worker_connections: str = ""
    # items whose crossing to their owner worker failed (refused by the owner, connection lost,
    # owner unreachable: otelcol_worker_forward_failed_items), over the run
    crossing_failed_items: float = 0.0
    # the harness's CPU (what is not the server's) while the load was sent: the load
    # generators' user and system (kernel: their sockets, loopback TCP) CPU seconds, and their
    # start-up's (imports, mapping the pre-encoded requests: before the sending, not in the
    # window); this benchmark process's (its sampling thread, its scrapes of /metrics), over
    # the load generators' whole run
    loadgen_user_s: float = 0.0
    loadgen_sys_s: float = 0.0
    loadgen_startup_s: float = 0.0
    bench_cpu_s: float = 0.0
    # the gateway's supervisor process (``--workers N``; none for x1) over the sending: the
    # server's, but no worker's
    supervisor_cpu_s: float = 0.0
    # /metrics scrapes of the server while the load was sent, and the server's CPU a scrape
    # costs (measured idle after the run: a merged scrape of every worker's state, N workers)
    scrapes: int = 0
    scrape_cpu_ms: float = 0.0
    # what those scrapes cost the server (scrapes x the CPU a scrape costs): taken out of
    # cpu_s (reported apart: the harness's doing, not the load's)
    scrapes_cpu_s: float = 0.0
    # the fixed rate asked of the load generators (cost and mid modes; 0 at saturation)
    rate: float = 0.0
    # load generators whose pre-encoded requests ran out before the seconds were over (each
    # stopped sending there: the rates are over the sending, still right)
    pools_exhausted: int = 0


def _cpu_at(samples: list[tuple[float, float]], when: float) -> float:
    """The CPU-s of sampled ``(time, cpu)`` pairs at ``when``, interpolated."""
    if not samples:
        return 0.0
    before = [x for x in samples if x[0] <= when]
    after = [x for x in samples if x[0] >= when]
    if not before:
        return samples[0][1]
    if not after:
        return samples[-1][1]
    (t0, c0), (t1, c1) = before[-1], after[0]
    return c0 if t1 <= t0 else c0 + (c1 - c0) * (when - t0) / (t1 - t0)


def _machine_busy() -> float:
    """CPU seconds the whole machine spent busy (every process, every core)."""
    t = psutil.cpu_times()
    return float(t.user + t.nice + t.system + t.irq + t.softirq + getattr(t, "steal", 0.0))


def _tree_wakeups(root: psutil.Process) -> int:
    """Voluntary context switches of ``root`` and its children (their main threads)."""
    total = 0
    for p in [root, *root.children(recursive=True)]:
        with contextlib.suppress(psutil.Error):
            total += p.num_ctx_switches().voluntary
    return total


def _workers(root: psutil.Process) -> list[psutil.Process]:
    """The worker processes of a supervisor (in worker order), or ``[root]`` itself."""
    found = []
    for p in root.children():
        with contextlib.suppress(psutil.Error, ValueError):
            text = p.environ().get("PIPELINE_WORKER", "")
            if text:
                found.append((int(text.split("/", 1)[0]), p))
    return [p for _, p in sorted(found, key=lambda x: x[0])] or [root]


def _proc_cpu(p: psutil.Process) -> float:
    with contextlib.suppress(psutil.Error):
        t = p.cpu_times()
        return float(t.user + t.system)
    return 0.0


def _connections(p: psutil.Process, port: int) -> int:
    """Established TCP connections of ``p`` on its local ``port`` (clients it serves)."""
    with contextlib.suppress(psutil.Error):
        return sum(
            1
            for c in p.net_connections(kind="tcp")
            if c.status == psutil.CONN_ESTABLISHED and c.laddr and c.laddr.port == port
        )
    return 0


def _tree_cpu(root: psutil.Process) -> float:
    total = 0.0
    for p in [root, *root.children(recursive=True)]:
        with contextlib.suppress(psutil.Error):
            t = p.cpu_times()
            total += t.user + t.system
    return total


@contextlib.contextmanager
def _server(kind: str, workers: int, workdir: Path) -> Iterator[tuple[psutil.Process, str, int]]:
    port = free_port()
    telemetry = free_port()
    if kind == "rotel":
        args = [
            rotel_binary(), "start",
            "--otlp-grpc-endpoint", f"127.0.0.1:{port}",
            "--otlp-http-endpoint", f"127.0.0.1:{free_port()}",
            "--exporter", "blackhole",
            "--pid-file", str(workdir / "rotel.pid"),
            "--log-file", str(workdir / "rotel.log"),
        ]  # fmt: skip
        env = dict(os.environ)
    else:
        text, eid = exporter_def(None)
        config = workdir / f"agent-{workers}.yaml"
        text = (
            AGENT.format(
                port=port,
                telemetry=telemetry,
                wait="1s",
                max_traces=100_000,
                max_bytes=256 << 20,
                spanmetrics_def="",
                spanmetrics_use="",
                exporter_def=text,
                exporter=eid,
                batch=8192,
            )
        ).replace(
            "service:\n",
            f"service:\n  worker_routing: {ROUTING['value']}\n"
            f"  worker_acknowledge: {ROUTING['acknowledge']}\n",
            1,
        )
        config.write_text(text)
        # info: the "ready" lines are waited for
        args = [sys.executable, "-m", "pipeline", "run", "--config", str(config)]
        args += ["--log-level", "info"]
        if workers != 1:
            args += ["--workers", str(workers)]
        env = {**os.environ, "PIPELINE_PLUGINS": "benchmarks.blackhole"}
        if PROBE["folder"] and workers != 1:  # where each worker waits (workers_probe)
            site = str(ROOT / "benchmarks" / "_probe_site")
            env["PYTHONPATH"] = os.pathsep.join(
                [site, str(ROOT)] + ([env["PYTHONPATH"]] if env.get("PYTHONPATH") else [])
            )
            env["PIPELINE_WORKERS_PROBE"] = str(
                Path(PROBE["folder"]) / f"x{workers}-{time.strftime('%H%M%S')}"
            )
    log = open(workdir / f"{kind}-{workers}.log", "wb")  # noqa: SIM115
    proc = subprocess.Popen(args, stdout=log, stderr=subprocess.STDOUT, cwd=ROOT, env=env)
    try:
        if kind != "rotel":
            deadline = time.monotonic() + 60
            want = b"every worker is ready" if workers != 1 else b"everything is ready"
            while want not in (workdir / f"{kind}-{workers}.log").read_bytes():
                if proc.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError((workdir / f"{kind}-{workers}.log").read_text()[-3000:])
                time.sleep(0.1)
        else:
            import grpc

            with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
                grpc.channel_ready_future(channel).result(timeout=30)
        yield psutil.Process(proc.pid), f"127.0.0.1:{port}", telemetry
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(60)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        log.close()


def _loads(
    endpoint: str,
    load: Load,
    clients: int,
    during: Callable[[float], None] | None = None,
) -> list[dict[str, Any]]:
    """``clients`` load generators at once (each its own process and connections), client
    ``i`` sending its share of the load's requests: with ``load.requests_file``, its slice of
    the file (:func:`requests_for`); ``during(time)`` is called once every load generator
    began sending (with the latest start), while they send."""
    procs = []
    for i in range(clients):
        each = replace(load, rate=load.rate / clients)
        if load.requests_file:
            per = load.requests_count // clients
            each = replace(each, requests_first=i * per, requests_count=per)
        args = [
            sys.executable, "-m", "benchmarks.agent_pipeline",
            "--load-only", endpoint, "--load-json", json.dumps(asdict(each)),
        ]  # fmt: skip
        procs.append(subprocess.Popen(args, stdout=subprocess.PIPE, cwd=ROOT))
    started = []
    for p in procs:  # {"sending": time}: connected, its requests ready, sending
        assert p.stdout is not None
        line = p.stdout.readline()
        with contextlib.suppress(ValueError):
            started.append(float(json.loads(line)["sending"]))
    if during is not None and len(started) == clients:
        during(max(started))
    out = []
    for p in procs:
        stdout, _ = p.communicate(timeout=600)
        if p.returncode != 0:
            raise RuntimeError("a load generator failed")
        out.append(json.loads(stdout.decode().strip().splitlines()[-1]))
    return out


def requests_for(load: Load, clients: int, folder: Path, spans_per_s: float) -> Load:
    """``load`` with its requests pre-encoded once into a file in ``folder``
    (:func:`benchmarks.agent_pipeline.write_requests`), enough for ``spans_per_s`` over its
    seconds (a fixed-rate load: its rate), cut into one slice per client: every server is
    sent the same bytes, and the load generators do nothing per request but send."""
    seconds_spans = min(load.rate, spans_per_s) * load.seconds
    per = max(1, int(seconds_spans / clients / load.spans_per_request))
    path = folder / f"requests-{int(load.rate)}-{clients}x{per}.bin"
    if not path.exists():
        write_requests(path, replace(load, id_seed=load.id_seed or 1), per * clients)
    return replace(load, requests_file=str(path), requests_count=per * clients)


# the counters a run reads, all from one scrape (:func:`_counters`)
_COUNTERS = {
    "accepted": "otelcol_receiver_accepted_spans_total",
    "out": "otelcol_exporter_sent_spans_total",
    "crossing_failed": "otelcol_worker_forward_failed_items_total",
}
# seconds after the load generators stopped before the end of a run's CPU window is read: the
# agent config's workflow wait (1 s) and batch timeout (200 ms) with a margin, so that one
# scrape after the window usually finds every span out (one that does not: counted, its cost
# taken out of the window's CPU, see measure)
DRAIN_S = 2.0


def _counters(telemetry: int) -> dict[str, float]:
    """The run's counters (:data:`_COUNTERS`) from one scrape of /metrics (0 when absent)."""
    from prometheus_client.parser import text_string_to_metric_families

    got = dict.fromkeys(_COUNTERS, 0.0)
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{telemetry}/metrics", timeout=5) as r:
            text = r.read().decode()
    except OSError:
        return got
    names = {v: k for k, v in _COUNTERS.items()}
    for fam in text_string_to_metric_families(text):
        for s in fam.samples:
            key = names.get(s.name)
            if key is not None:
                got[key] += s.value
    return got


def _out(telemetry: int) -> float:
    return _telemetry_value(telemetry, "otelcol_exporter_sent_spans_total") or 0.0


def _scrape_cost(ps: psutil.Process, telemetry: int, scrapes: int = 20) -> float:
    """The server's CPU milliseconds a /metrics scrape costs (the primary merges every
    worker's state): ``scrapes`` scrapes one after the other, less what the idle server
    spends in as long (measured just before)."""
    procs = [ps, *ps.children(recursive=True)]

    def cpu() -> float:
        return sum(_proc_cpu(p) for p in procs)

    c0, t0 = cpu(), time.monotonic()
    time.sleep(1.0)
    c1, t1 = cpu(), time.monotonic()
    for _ in range(scrapes):
        _out(telemetry)
    c2, t2 = cpu(), time.monotonic()
    idle = (c1 - c0) / max(t1 - t0, 1e-9) * (t2 - t1)
    return max(0.0, (c2 - c1 - idle) / scrapes * 1000)


def measure(kind: str, workers: int, mode: str, load: Load, clients: int, workdir: Path) -> Run:
    with _server(kind, workers, workdir) as (ps, endpoint, telemetry):
        warm = replace(
            load, seconds=1.0, rate=min(load.rate, 4000), id_seed=0, requests_file=""
        )  # its own (random) trace ids, built in the load generator
        _loads(endpoint, warm, 1)  # warm up
        time.sleep(1.5)
        # the counters at the start, read before the window (its CPU) begins
        base = _counters(telemetry) if kind != "rotel" else dict.fromkeys(_COUNTERS, 0.0)
        load_avg = os.getloadavg()[0]
        machine0 = _machine_busy()
        cpu0 = _tree_cpu(ps)
        wake0 = _tree_wakeups(ps)
        lg0 = resource.getrusage(resource.RUSAGE_CHILDREN)
        me0 = resource.getrusage(resource.RUSAGE_SELF)
        samples: list[tuple[float, float]] = []
        procs = _workers(ps) if kind != "rotel" else [ps]
        supervisor = ps if procs != [ps] else None
        # the server's processes, found once (psutil's children() reads every process's
        # /proc entry: not every sample)
        tree = [ps, *ps.children(recursive=True)]
        per_worker: list[list[tuple[float, float]]] = [[] for _ in procs]
        sup: list[tuple[float, float]] = []
        conns: list[list[int]] = []
        outs: list[tuple[float, float]] = []
        port = int(endpoint.rsplit(":", 1)[1])
        sampling = threading.Event()

        def sample() -> None:
            while True:
                now = time.time()
                samples.append((now, sum(_proc_cpu(p) for p in tree)))
                for i, p in enumerate(procs):
                    per_worker[i].append((now, _proc_cpu(p)))
                if supervisor is not None:
                    sup.append((now, _proc_cpu(supervisor)))
                if sampling.wait(0.5):
                    break

        def during(begin: float) -> None:
            """Once every load generator sends: halfway through the seconds, the client
            connections each worker holds and the exporter's count; at the end of the
            seconds, the count again (processed spans/s over the second half: two scrapes a
            run, each costing the server a merge of every worker's state)."""
            time.sleep(max(0.0, begin + load.seconds / 2 - time.time()))
            conns.append([_connections(p, port) for p in procs])
            if kind != "rotel" and mode == "saturation":
                outs.append((time.time(), _out(telemetry)))
                time.sleep(max(0.0, begin + load.seconds - time.time()))
                outs.append((time.time(), _out(telemetry)))

        sampler = threading.Thread(target=sample, daemon=True)
        sampler.start()
        t0 = time.monotonic()
        try:
            stats = _loads(endpoint, load, clients, during)
        finally:
            sampling.set()
            sampler.join()
        me1 = resource.getrusage(resource.RUSAGE_SELF)
        elapsed = wall = time.monotonic() - t0
        cores_sending = processed = supervisor_cpu = 0.0
        worker_cores = ""
        if all("started_at" in s for s in stats):
            begin = min(s["started_at"] for s in stats)
            end = max(s["ended_at"] for s in stats)
            cores_sending = (_cpu_at(samples, end) - _cpu_at(samples, begin)) / max(
                end - begin, 1e-9
            )
            worker_cores = " / ".join(
                f"{(_cpu_at(w, end) - _cpu_at(w, begin)) / max(end - begin, 1e-9):.2f}"
                for w in per_worker
            )
            supervisor_cpu = _cpu_at(sup, end) - _cpu_at(sup, begin)
            if len(outs) == 2:
                processed = (outs[1][1] - outs[0][1]) / max(outs[1][0] - outs[0][0], 1e-9)
        # the rate over the load generators' sending (their start-up, while the server waits,
        # left out)
        if all("started_at" in s for s in stats):
            elapsed = max(s["ended_at"] for s in stats) - min(s["started_at"] for s in stats)
        lg1 = resource.getrusage(resource.RUSAGE_CHILDREN)
        machine = _machine_busy() - machine0
        loadgen = lg1.ru_utime + lg1.ru_stime - lg0.ru_utime - lg0.ru_stime
        during_cpu = _tree_cpu(ps) - cpu0
        sent = sum(s["sent_spans"] for s in stats)
        out = None
        scrape_ms = 0.0
        # The window's end: the server's CPU and wake-ups read DRAIN_S after the load
        # generators stopped, then the counters scraped once, outside the window (a merged
        # scrape of N workers costs more than one process's: it must not be in what is
        # compared). A scrape that finds spans not out yet is in the window (the next
        # reading ends it): counted, its cost measured after the run and taken out.
        scrapes_inside = len(outs)  # the saturation runs' two (processed spans/s)
        time.sleep(DRAIN_S if kind != "rotel" else 0.5)
        cpu = _tree_cpu(ps) - cpu0
        wakeups = _tree_wakeups(ps) - wake0
        end = _counters(telemetry) if kind != "rotel" else base
        if kind != "rotel":
            deadline = time.monotonic() + 60
            while end["out"] - base["out"] < sent and time.monotonic() < deadline:
                scrapes_inside += 1
                time.sleep(0.5)
                cpu = _tree_cpu(ps) - cpu0
                wakeups = _tree_wakeups(ps) - wake0
                end = _counters(telemetry)
            out = end["out"] - base["out"]
        accepted = (end["accepted"] - base["accepted"]) if kind != "rotel" else float(sent)
        crossing_failed = end["crossing_failed"] - base["crossing_failed"]
        if kind != "rotel":  # after the CPU was read: not counted in the run's
            scrape_ms = _scrape_cost(ps, telemetry)
        scrapes_cpu = scrapes_inside * scrape_ms / 1000
        cpu = max(0.0, cpu - scrapes_cpu)
    return Run(
        server=kind if kind == "rotel" else f"agent x{workers}",
        mode=mode,
        sent_spans=sent,
        seconds=round(elapsed, 2),
        cpu_s=round(cpu, 2),
        cpu_s_per_million=round(cpu / max(sent, 1) * 1e6, 2),
        accepted_per_s=round(accepted / elapsed),
        out_spans=out,
        loadgen_cpu_s=round(loadgen, 2),
        loadgen_send_cpu_s=round(sum(s.get("cpu_s", 0.0) for s in stats), 2),
        failed_requests=sum(s.get("failed_requests", 0) for s in stats),
        failures=_failures(stats),
        load_avg=round(load_avg, 1),
        others_cores=round(max(0.0, machine - during_cpu - loadgen) / wall, 2),
        cores_sending=round(cores_sending, 2),
        processed_per_s=round(processed if kind != "rotel" else accepted / elapsed),
        wakeups_per_request=round(wakeups / max(sent / load.spans_per_request, 1), 2),
        worker_cores=worker_cores,
        worker_connections=" / ".join(map(str, conns[0])) if conns else "",
        crossing_failed_items=crossing_failed,
        loadgen_user_s=round(sum(s.get("cpu_user_s", 0.0) for s in stats), 3),
        loadgen_sys_s=round(sum(s.get("cpu_sys_s", 0.0) for s in stats), 3),
        loadgen_startup_s=round(sum(s.get("startup_cpu_s", 0.0) for s in stats), 3),
        bench_cpu_s=round(me1.ru_utime + me1.ru_stime - me0.ru_utime - me0.ru_stime, 3),
        supervisor_cpu_s=round(supervisor_cpu, 3),
        scrapes=scrapes_inside,
        scrape_cpu_ms=round(scrape_ms, 1),
        scrapes_cpu_s=round(scrapes_cpu, 4),
        rate=load.rate if mode != "saturation" else 0.0,
        pools_exhausted=sum(1 for s in stats if s.get("pool_exhausted")),
    )


def _failures(stats: list[dict[str, Any]]) -> str:
    """The failed requests of the load generators by kind, with the server's first message
    of each kind: ``grpc 8 x64 ("memory limit ...")``."""
    codes: dict[str, int] = {}
    messages: dict[str, str] = {}
    for s in stats:
        for code, n in s.get("codes", {}).items():
            codes[code] = codes.get(code, 0) + n
        for code, text in s.get("messages", {}).items():
            messages.setdefault(code, text)
    out = []
    for code, n in sorted(codes.items()):
        text = messages.get(code, "")
        out.append(f"{code} x{n}" + (f' ("{text[:120]}")' if text else ""))
    return "; ".join(out)


def _where_cores_went(runs: list[Run], servers: list[str], cpus: int | None = None) -> list[str]:
    """Per server, where the machine's cores went while the saturation load was sent (medians):
    the server, the load generators, this benchmark's process, the other processes (the
    machine's busy time less all these) and what stayed unused."""
    cpus = cpus or os.cpu_count() or 1
    out = []
    for server in servers:
        sat = [r for r in runs if r.server == server and r.mode == "saturation"]
        if not sat:
            continue

        def med(value: Callable[[Run], float], sat: list[Run] = sat) -> float:
            return statistics.median(value(r) for r in sat)

        srv = med(lambda r: r.cores_sending)
        lg = med(lambda r: (r.loadgen_user_s + r.loadgen_sys_s) / max(r.seconds, 1e-9))
        me = med(lambda r: r.bench_cpu_s / max(r.seconds, 1e-9))
        # others_cores counts this process too (the machine less the server and its children)
        others = med(lambda r: max(0.0, r.others_cores - r.bench_cpu_s / max(r.seconds, 1e-9)))
        unused = max(0.0, cpus - srv - lg - me - others)
        out.append(
            f"* {server}, saturation: of {cpus} cores, the server {srv:.2f}, the load generators "
            f"{lg:.2f}, this benchmark {me:.2f}, other processes {others:.2f}, unused {unused:.2f}"
        )
    if out:
        out.insert(0, "Where the cores went while the saturation load was sent (medians):")
        out.insert(1, "")
    return out


def report(runs: list[Run], path: Path, note: str, workers: int) -> None:
    servers = [
        s for s in ("rotel", "agent x1", f"agent x{workers}") if any(r.server == s for r in runs)
    ]
    lines = ["# Workers benchmark (`pipeline run --workers`)", "", note, ""]
    lines += [
        "| server | CPU-s per 1M spans, fixed rate | vs agent x1 | wake-ups per request, "
        "fixed rate | CPU-s per 1M spans, mid load | **vs agent x1** (the goal's figure) | "
        "mid load: accepted / asked (kept up) | CPU-s per 1M spans, "
        "saturation | vs agent x1 | saturation: accepted spans/s | vs agent x1 | "
        "load generators' CPU-s per 1M spans, saturation (cores) | server's cores while "
        "the load was sent, saturation | saturation: processed spans/s | vs agent x1 | "
        "harness CPU-s per 1M spans, saturation: load generators (of which kernel) / this "
        "benchmark's process / the gateway's supervisor | server's CPU-ms a /metrics scrape | "
        "runs |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]

    def median(server: str, mode: str, value: Callable[[Run], float]) -> float:
        got = [value(r) for r in runs if r.server == server and r.mode == mode]
        return statistics.median(got) if got else float("nan")

    med: dict[tuple[str, str], float] = {}
    for server in servers:
        med[(server, "cost")] = median(server, "cost", lambda r: r.cpu_s_per_million)
        med[(server, "wake")] = median(server, "cost", lambda r: r.wakeups_per_request)
        med[(server, "mid")] = median(server, "mid", lambda r: r.cpu_s_per_million)
        med[(server, "midkept")] = median(
            server, "mid", lambda r: r.accepted_per_s / max(r.rate, 1e-9)
        )
        med[(server, "satcpu")] = median(server, "saturation", lambda r: r.cpu_s_per_million)
        med[(server, "sat")] = median(server, "saturation", lambda r: r.accepted_per_s)
        med[(server, "lg")] = median(
            server, "saturation", lambda r: r.loadgen_send_cpu_s / max(r.sent_spans, 1) * 1e6
        )
        med[(server, "lgcores")] = median(
            server, "saturation", lambda r: r.loadgen_send_cpu_s / max(r.seconds, 1e-9)
        )
        med[(server, "cores")] = median(server, "saturation", lambda r: r.cores_sending)
        med[(server, "proc")] = median(server, "saturation", lambda r: r.processed_per_s)
        for key, value in (
            ("h_lg", lambda r: r.loadgen_user_s + r.loadgen_sys_s),
            ("h_sys", lambda r: r.loadgen_sys_s),
            ("h_me", lambda r: r.bench_cpu_s),
            ("h_sup", lambda r: r.supervisor_cpu_s),
        ):
            med[(server, key)] = median(
                server, "saturation", lambda r, v=value: v(r) / max(r.sent_spans, 1) * 1e6
            )
        med[(server, "scrape")] = statistics.median(
            [r.scrape_cpu_ms for r in runs if r.server == server and r.scrape_cpu_ms > 0]
            or [float("nan")]
        )

    def x1(what: str) -> float:
        """agent x1's median (nan when it did not run: ``--servers 2``)"""
        return med.get(("agent x1", what), float("nan"))

    for server in servers:
        c, sc, s = med[(server, "cost")], med[(server, "satcpu")], med[(server, "sat")]
        lines.append(
            f"| {server} | {c:.2f} | {c / x1('cost'):.2f}x | "
            f"{med[(server, 'wake')]:.2f} | {med[(server, 'mid')]:.2f} | "
            f"{med[(server, 'mid')] / x1('mid'):.2f}x | {med[(server, 'midkept')]:.2f} | "
            f"{sc:.2f} | "
            f"{sc / x1('satcpu'):.2f}x | {s:,.0f} | "
            f"{s / x1('sat'):.2f}x | {med[(server, 'lg')]:.2f} "
            f"({med[(server, 'lgcores')]:.2f}) | {med[(server, 'cores')]:.2f} | "
            f"{med[(server, 'proc')]:,.0f} | "
            f"{med[(server, 'proc')] / max(x1('proc'), 1e-9):.2f}x | "
            f"{med[(server, 'h_lg')]:.2f} ({med[(server, 'h_sys')]:.2f}) / "
            f"{med[(server, 'h_me')]:.2f} / "
            f"{med[(server, 'h_sup')]:.2f} | {med[(server, 'scrape')]:.1f} | "
            f"{len([r for r in runs if r.server == server])} |"
        )
    lines += [
        "",
        "The routing's cost (goal: <= 1.10x one process's CPU a span) is read on the mid-load "
        "figure: there both workers are busy, as a gateway that needs two is; at the fixed "
        "low rate each worker is mostly idle and the ratio measures the fixed cost of two "
        "half-idle processes (timers, wake-ups) more than the routing. A mid-load run whose "
        "accepted spans/s fell under 95 % of the rate asked did not keep up: its figure is "
        "a saturation's. No /metrics scrape is inside a cost window (the counters are read "
        "before it and after it); one that is (a saturation run's two, a drain not over "
        "after DRAIN_S) has its cost taken out of the CPU-s and shown apart.",
        *_where_cores_went(runs, servers),
    ]
    lines += [
        "",
        "Every run:",
        "",
        "| server | mode | sent | failed requests | s | CPU-s | CPU-s/1M | accepted/s | out | "
        "load generators' CPU-s (sending) | server's cores while sent | processed/s | "
        "load average | other processes' cores | wake-ups per request | "
        "cores per worker while sent | client connections per worker | "
        "items whose crossing failed | load generators' user / kernel CPU-s while sent "
        "(start-up) | this benchmark's CPU-s | supervisor's CPU-s while sent | scrapes while "
        "sent | server's CPU-ms a scrape | their CPU-s, taken out of CPU-s | "
        "load generators out of requests | rate asked |",
    ]
    lines.append("|" + "---|" * 26)
    failed = [r for r in runs if r.failures]
    for r in runs:
        lines.append(
            f"| {r.server} | {r.mode} | {r.sent_spans} | {r.failed_requests} | {r.seconds} | "
            f"{r.cpu_s} | {r.cpu_s_per_million} | {r.accepted_per_s:,.0f} | "
            f"{'' if r.out_spans is None else int(r.out_spans)} | {r.loadgen_cpu_s} "
            f"({r.loadgen_send_cpu_s}) | {r.cores_sending} | {r.processed_per_s:,.0f} | "
            f"{r.load_avg} | {r.others_cores} | {r.wakeups_per_request} | "
            f"{r.worker_cores} | {r.worker_connections} | {r.crossing_failed_items:.0f} | "
            f"{r.loadgen_user_s:.3f} / {r.loadgen_sys_s:.3f} ({r.loadgen_startup_s:.2f}) | "
            f"{r.bench_cpu_s:.3f} | {r.supervisor_cpu_s:.3f} | {r.scrapes} | {r.scrape_cpu_ms} | "
            f"{r.scrapes_cpu_s} | {r.pools_exhausted} | {r.rate:,.0f} |"
        )
    if failed:
        lines += ["", "Failed requests, by cause:", ""]
        lines += [f"* {r.server}, {r.mode}: {r.failures}" for r in failed]
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(lines) + "\n")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--rate", type=float, default=20_000.0, help="spans/s of the cost runs")
    p.add_argument("--saturation-rate", type=float, default=2_000_000.0)
    p.add_argument("--clients", type=int, default=2, help="load generator processes (cost)")
    p.add_argument(
        "--mid-rate",
        type=float,
        default=200_000.0,
        help="spans/s of the mid-load cost runs (mode 'mid'): about half of what one process "
        "processes at saturation on a quiet 2-core machine (450-500k), so that both workers "
        "of x2 are busy; whether x1 kept up is checked (accepted >= 95 %% of the rate)",
    )
    p.add_argument(
        "--mid-clients",
        type=int,
        default=4,
        help="load generator processes of the mid-load runs (each paced, one request in "
        "flight: 4 x 50k spans/s, one 200-span request every 4 ms each)",
    )
    p.add_argument(
        "--saturation-clients",
        type=int,
        default=2,
        help="load generator processes of the saturation runs (one per core)",
    )
    p.add_argument(
        "--in-flight",
        type=int,
        default=32,
        help="requests each load generator keeps in flight in the saturation runs",
    )
    p.add_argument(
        "--client",
        choices=["nghttp2", "grpcio"],
        default="nghttp2",
        help="the load generators' gRPC client (nghttp2: benchmarks.loadgen.LeanGrpcClient, "
        "one thread; grpcio: its sync API with futures)",
    )
    p.add_argument(
        "--connections",
        type=int,
        default=4,
        help="connections per load generator (nghttp2 client), requests in turn: with "
        "SO_REUSEPORT the kernel places each connection on a worker; with one per generator "
        "both could land on one worker",
    )
    p.add_argument(
        "--servers",
        default="rotel,1,N",
        help="what to run, in this order each repeat: rotel, 1 (agent x1), N (agent x--workers)",
    )
    p.add_argument(
        "--routing",
        choices=["trace_id", "first_arrival", "balanced"],
        default="trace_id",
        help="service.worker_routing of the agent servers (which worker processes a trace)",
    )
    p.add_argument(
        "--acknowledge",
        choices=["owner", "handover"],
        default="owner",
        help="service.worker_acknowledge of the agent servers (when a client request whose "
        "spans cross between workers is answered)",
    )
    p.add_argument(
        "--probe",
        default="",
        help="a folder: each worker of the agent xN servers records where its event loop waits, "
        "its callbacks over 2 ms and the pipelines' consumes a client request "
        "(benchmarks/workers_probe.py; sum them up with "
        "python -m benchmarks.workers_probe FOLDER/xN-HHMMSS)",
    )
    p.add_argument(
        "--pool-spans-per-s",
        type=float,
        default=1_200_000.0,
        help="the saturation runs' requests are encoded once, before the runs, for this many "
        "spans/s over --seconds (3 GiB at 8 s, in /dev/shm; on a fast machine two workers "
        "accept 900k spans/s, and 400k ran out); a load generator that sent its share before "
        "the seconds were over stops there (counted: 'pools exhausted')",
    )
    p.add_argument(
        "--modes",
        default="cost,mid,saturation",
        help="cost (--rate), mid (--mid-rate), saturation: any of them, comma-separated",
    )
    p.add_argument("--seconds", type=float, default=8.0)
    p.add_argument("--repeat", type=int, default=3)
    p.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "workers.md"))
    a = p.parse_args(argv)
    ROUTING["value"] = a.routing
    PROBE["folder"] = a.probe
    ROUTING["acknowledge"] = a.acknowledge
    cost = Load(rate=a.rate, seconds=a.seconds, client=a.client, connections=a.connections)
    sat = Load(
        rate=a.saturation_rate,
        seconds=a.seconds,
        in_flight=a.in_flight,
        client=a.client,
        connections=a.connections,
    )
    servers = [
        ("rotel", 1) if s == "rotel" else ("agent", a.workers if s == "N" else int(s))
        for s in a.servers.split(",")
    ]
    mid = replace(cost, rate=a.mid_rate)
    modes = [
        m
        for m in (
            ("cost", cost, a.clients),
            ("mid", mid, a.mid_clients),
            ("saturation", sat, a.saturation_clients),
        )
        if m[0] in a.modes.split(",")
    ]
    runs: list[Run] = []
    shm = "/dev/shm" if os.path.isdir("/dev/shm") else None
    with (
        tempfile.TemporaryDirectory(prefix="workers-bench-") as tmp,
        tempfile.TemporaryDirectory(prefix="workers-requests-", dir=shm) as pool,
    ):
        # every request encoded once, before the runs: the same bytes for every server
        modes = [
            (m, requests_for(replace(ld, id_seed=i + 1), n, Path(pool), a.pool_spans_per_s), n)
            for i, (m, ld, n) in enumerate(modes)
        ]
        for _ in range(a.repeat):
            for kind, workers in servers:
                for mode, load, clients in modes:
                    r = measure(kind, workers, mode, load, clients, Path(tmp))
                    print(json.dumps(asdict(r)), flush=True)
                    runs.append(r)
    note = (
        f"Generated by `python -m benchmarks.workers` on {time.strftime('%Y-%m-%d %H:%M')} UTC; "
        f"{os.cpu_count()} CPUs shared with the load generator processes ({a.clients} for the "
        f"cost runs, {a.saturation_clients} with {a.in_flight} requests in flight each for the "
        f"saturation runs; none pinned; client {a.client}"
        f"{f', {a.connections} connections each' if a.client == 'nghttp2' else ''}); "
        f"worker routing {a.routing}, acknowledge {a.acknowledge}; "
        f"agent pipeline of benchmarks/agent_pipeline.py (200 spans per request, 10 spans per "
        f"trace, 20 traces per request; every request encoded once, the same bytes for every "
        f"server), blackhole exporters; cost runs at {a.rate:,.0f} "
        f"spans/s and mid-load cost runs at {a.mid_rate:,.0f} spans/s ({a.mid_clients} load "
        f"generators) for {a.seconds:g} s, saturation runs as fast as the gateway answers for "
        f"{a.seconds:g} s; {a.repeat} repeats, medians; load average at the start "
        f"{os.getloadavg()[0]:.1f} (the machine is shared)."
    )
    report(runs, Path(a.out), note, a.workers)
    return 0


if __name__ == "__main__":
    sys.exit(main())
