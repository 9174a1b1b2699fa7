"""The ``kafka`` exporter and receiver against a real broker (Tansu), with kcat as an
independent client: what the exporter writes kcat reads, what kcat writes the receiver reads;
poison messages are counted and skipped; a consumer group of two gateway processes, one
killed with SIGKILL mid-stream, delivers every span (at least once, duplicates bounded)."""

from __future__ import annotations

import asyncio
import json
import random
import signal
import subprocess
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

from pipeline import ConfigErrors, Signal
from plugins._kafka import DEFAULT_TOPICS
from plugins.kafkaexporter import KafkaExporterConfig
from plugins.kafkareceiver import KafkaReceiverConfig
from tests.kafka_support import Broker, broker, committed_offset, kcat_binary, kcat_env
from tests.otlp_support import RecordingBackend, recording_backend
from tests.support import (
    GatewayProcess,
    config_from_text,
    free_port,
    running_service,
    wait_until,
    write_config,
)


def traces(n_traces: int, spans: int, seed: int, prefix: str = "t") -> ExportTraceServiceRequest:
    rng = random.Random(seed)
    req = ExportTraceServiceRequest()
    rs = req.resource_spans.add()
    rs.resource.attributes.add(key="service.name").value.string_value = "kafka-test"
    ss = rs.scope_spans.add()
    ss.scope.name = "kafka-test"
    for t in range(n_traces):
        tid = rng.randbytes(16)
        for s in range(spans):
            ss.spans.add(trace_id=tid, span_id=rng.randbytes(8), name=f"{prefix}{t}-s{s}")
    return req


def span_names(sink: RecordingBackend) -> Counter[str]:
    return Counter(s.name for s in list(sink.spans))


# -- config -------------------------------------------------------------------------------
def test_defaults_are_the_collectors() -> None:
    exp = KafkaExporterConfig()
    assert exp.brokers == ["localhost:9092"]
    assert [exp.topic_for(s) for s in Signal] == [DEFAULT_TOPICS[s] for s in Signal]
    assert DEFAULT_TOPICS[Signal.TRACES] == "otlp_spans"
    assert DEFAULT_TOPICS[Signal.METRICS] == "otlp_metrics"
    assert exp.encoding == "otlp_proto" and not exp.partition_traces_by_id
    assert exp.producer.max_message_bytes == 1_000_000 and exp.producer.required_acks == 1
    props = exp.producer_properties()
    assert props["acks"] == "1" and props["compression.type"] == "none"
    rec = KafkaReceiverConfig()
    assert rec.group_id == "otel-collector" and rec.client_id == "otel-collector"
    assert rec.initial_offset == "latest" and not rec.message_marking.after
    assert rec.autocommit.enable and rec.autocommit.interval == 1.0
    # the newer per-signal spelling
    rec2 = KafkaReceiverConfig.model_validate(
        {"topic": "all", "traces": {"topic": "spans", "encoding": "otlp_json"}}
    )
    assert (
        rec2.topic_for(Signal.TRACES) == "spans" and rec2.encoding_for(Signal.TRACES) == "otlp_json"
    )
    assert rec2.topic_for(Signal.LOGS) == "all" and rec2.encoding_for(Signal.LOGS) == "otlp_proto"


def test_auth_options_become_librdkafka_properties() -> None:
    scram = KafkaExporterConfig.model_validate(
        {
            "auth": {
                "sasl": {"username": "u", "password": "p", "mechanism": "SCRAM-SHA-512"},
                "tls": {"ca_file": "/ca.pem"},
            },
            "producer": {"compression": "zstd", "required_acks": -1, "flush_max_messages": 100},
        }
    ).producer_properties()
    assert scram["security.protocol"] == "SASL_SSL"
    assert scram["sasl.mechanism"] == "SCRAM-SHA-512" and scram["sasl.username"] == "u"
    assert scram["ssl.ca.location"] == "/ca.pem"
    assert scram["acks"] == "all" and scram["compression.type"] == "zstd"
    assert scram["batch.num.messages"] == 100
    plain = KafkaReceiverConfig.model_validate(
        {"auth": {"plain_text": {"username": "u", "password": "p"}}}
    )
    props = plain.consumer_properties()
    assert props["security.protocol"] == "SASL_PLAINTEXT" and props["sasl.mechanism"] == "PLAIN"
    assert plain.plaintext_credentials
    assert props["enable.auto.offset.store"] is False


@pytest.mark.parametrize(
    ("section", "message"),
    [
        ("exporters:\n  kafka: {encoding: avro}", "encoding"),
        ("exporters:\n  kafka: {producer: {required_acks: 2}}", "required_acks"),
        (
            "exporters:\n  kafka: {auth: {sasl: {username: u, mechanism: GSSAPI}}}",
            "mechanism",
        ),
        ("exporters:\n  kafka: {topic_from_attribute: tenant}", "topic_from_attribute"),
    ],
)
def test_config_errors(section: str, message: str) -> None:
    text = f"""
receivers:
  otlp: {{protocols: {{grpc: {{endpoint: "127.0.0.1:{free_port()}"}}}}}}
{section}
service:
  pipelines:
    traces: {{receivers: [otlp], exporters: [kafka]}}
"""
    with pytest.raises(ConfigErrors) as info:
        config_from_text(text)
    assert message in str(info.value)


# -- exporter -> broker -> kcat --------------------------------------------------------------
def exporter_gateway(port: int, b: Broker, extra: str = "") -> str:
    return f"""
receivers:
  otlp: {{protocols: {{grpc: {{endpoint: "127.0.0.1:{port}"}}}}}}
exporters:
  kafka:
    brokers: ["{b.bootstrap}"]
    {extra}
service:
  telemetry: {{metrics: {{level: none}}}}
  pipelines:
    traces: {{receivers: [otlp], exporters: [kafka]}}
"""


def exporter_of(service: Any) -> Any:
    return next(
        n.component for n in service.graph.nodes if type(n.component).__name__ == "KafkaExporter"
    )


def receiver_of(service: Any) -> Any:
    return next(
        n.component for n in service.graph.nodes if type(n.component).__name__ == "KafkaReceiver"
    )


def kcat_read(b: Broker, topic: str, fmt: str) -> list[str]:
    out = subprocess.run(
        [kcat_binary(), "-b", b.bootstrap, "-C", "-t", topic, "-e", "-q", "-f", fmt],
        capture_output=True,
        timeout=30,
        check=True,
        env=kcat_env(),
    )
    return out.stdout.decode().splitlines()


async def test_partition_traces_by_id_read_back_with_kcat(tmp_path: Path) -> None:
    with broker() as b:
        b.create_topic("otlp_spans", 3)
        port = free_port()
        config = exporter_gateway(port, b, "partition_traces_by_id: true")
        async with running_service(config, tmp_path) as service:
            exporter = exporter_of(service)
            req = traces(30, 4, seed=3)
            from pipeline.pdata import Traces

            await exporter.consume(Traces(req.SerializeToString()))
            await wait_until(lambda: exporter.messages_sent == 30)
        # kcat: partition, key and size of each message
        lines = kcat_read(b, "otlp_spans", "%p %k %S\\n")
        assert len(lines) == 30
        by_key: dict[str, set[str]] = {}
        for line in lines:
            part, key, _ = line.split()
            by_key.setdefault(key, set()).add(part)
        assert set(by_key) == {s.trace_id.hex() for s in req.resource_spans[0].scope_spans[0].spans}
        assert len({p for parts in by_key.values() for p in parts}) > 1  # spread over partitions
        # each message holds exactly the spans of its trace, resource and scope kept
        for _, key, value in b.messages("otlp_spans"):
            msg = ExportTraceServiceRequest.FromString(value)
            spans = [s for rs in msg.resource_spans for ss in rs.scope_spans for s in ss.spans]
            assert len(spans) == 4 and {s.trace_id.hex() for s in spans} == {key.decode()}
            assert msg.resource_spans[0].resource.attributes[0].value.string_value == "kafka-test"


async def test_otlp_json_encoding_read_back_with_kcat(tmp_path: Path) -> None:
    with broker() as b:
        b.create_topic("spans-json", 1)
        port = free_port()
        config = exporter_gateway(port, b, "traces: {topic: spans-json, encoding: otlp_json}")
        async with running_service(config, tmp_path) as service:
            exporter = exporter_of(service)
            from pipeline.pdata import Traces

            req = traces(2, 2, seed=5)
            await exporter.consume(Traces(req.SerializeToString()))
            await wait_until(lambda: exporter.messages_sent == 1)
        (line,) = kcat_read(b, "spans-json", "%s\\n")
        doc = json.loads(line)
        spans = doc["resourceSpans"][0]["scopeSpans"][0]["spans"]
        assert [s["name"] for s in spans] == ["t0-s0", "t0-s1", "t1-s0", "t1-s1"]
        assert spans[0]["traceId"] == req.resource_spans[0].scope_spans[0].spans[0].trace_id.hex()


# -- kcat -> broker -> receiver ---------------------------------------------------------------
def receiver_gateway(
    b: Broker, sink: RecordingBackend, extra: str = "", group: str = "g1", name: str = "b"
) -> str:
    return f"""
receivers:
  kafka:
    brokers: ["{b.bootstrap}"]
    group_id: {group}
    initial_offset: earliest
    session_timeout: 6s
    heartbeat_interval: 1s
    message_marking: {{after: true}}
    {extra}
processors:
  resource: {{attributes: [{{key: gateway, value: "{name}", action: upsert}}]}}
exporters:
  otlp:
    endpoint: "127.0.0.1:{sink.grpc_port}"
    tls: {{insecure: true}}
    sending_queue: {{enabled: false}}
    retry_on_failure: {{initial_interval: 0.1s, max_elapsed_time: 0}}
service:
  telemetry: {{metrics: {{level: none}}}}
  pipelines:
    traces: {{receivers: [kafka], processors: [resource], exporters: [otlp]}}
"""


def by_gateway(sink: RecordingBackend) -> Counter[str]:
    out: Counter[str] = Counter()
    for req in list(sink.traces):
        for rs in req.resource_spans:
            gw = next(
                (a.value.string_value for a in rs.resource.attributes if a.key == "gateway"), ""
            )
            out[gw] += sum(len(ss.spans) for ss in rs.scope_spans)
    return out


def assigned(gw: GatewayProcess) -> list[list[int]]:
    return [
        json.loads(r["partitions"]) if isinstance(r["partitions"], str) else r["partitions"]
        for r in gw.records()
        if r.get("msg") == "partitions assigned"
    ]


def kcat_produce(
    b: Broker, topic: str, values: list[bytes], tmp_path: Path, headers: tuple[str, ...] = ()
) -> None:
    """Each value as one message, written by kcat (one file per message)."""
    files = []
    for i, v in enumerate(values):
        f = tmp_path / f"msg-{i}.bin"
        f.write_bytes(v)
        files.append(str(f))
    subprocess.run(
        [
            kcat_binary(),
            "-b",
            b.bootstrap,
            "-P",
            "-t",
            topic,
            "-p",
            "0",
            *(a for h in headers for a in ("-H", h)),
            *files,
        ],
        check=True,
        timeout=30,
        capture_output=True,
        env=kcat_env(),
    )


async def test_receiver_reads_what_kcat_wrote_and_skips_poison(tmp_path: Path) -> None:
    from tests.poison import poison_traces

    with broker() as b:
        b.create_topic("otlp_spans", 1)
        poison = [data for _, data in poison_traces()][:5]
        poison += [b"\xff\x00garbage", b"\x0a"]
        good = [traces(3, 2, seed=i, prefix=f"m{i}-").SerializeToString() for i in range(6)]
        values = good[:3] + poison + good[3:]
        kcat_produce(b, "otlp_spans", values, tmp_path)
        async with recording_backend() as sink:
            async with running_service(receiver_gateway(b, sink), tmp_path) as service:
                receiver = receiver_of(service)
                await wait_until(lambda: sink.span_count() >= 36, within=30)
                await asyncio.sleep(0.2)
                assert receiver.undecodable == len(poison)
                assert receiver.messages == len(values)
            names = span_names(sink)
            assert len(names) == 36 and set(names.values()) == {1}
        # the offsets were committed: the group starts after the last message
        assert committed_offset(b) == len(values)


async def test_receiver_reads_otlp_json(tmp_path: Path) -> None:
    from plugins import _otlpjson

    with broker() as b:
        b.create_topic("otlp_spans", 1)
        values = [_otlpjson.dumps(traces(2, 2, seed=i, prefix=f"j{i}-")) for i in range(3)]
        values.insert(1, b'{"resourceSpans": [{"scopeSpans": [{"spans": [{"traceId": "01"}]}]}]}')
        kcat_produce(b, "otlp_spans", values, tmp_path)
        async with recording_backend() as sink:
            extra = "encoding: otlp_json"
            async with running_service(receiver_gateway(b, sink, extra), tmp_path) as service:
                receiver = receiver_of(service)
                await wait_until(lambda: sink.span_count() >= 12, within=30)
                await wait_until(lambda: receiver.messages == 4)
                assert receiver.undecodable == 1
            assert len(span_names(sink)) == 12


class FailsOnce:
    """The receiver's next consumer, whose first call raises what no component should (a bug,
    not a refusal: neither RetryableError nor ConsumeError); the calls after go on to
    ``inner``, the real pipeline."""

    def __init__(self, inner: Any) -> None:
        self.inner = inner
        self.calls = 0

    async def consume(self, data: Any) -> None:
        self.calls += 1
        if self.calls == 1:
            raise RuntimeError("injected: a bug in the pipeline")
        await self.inner.consume(data)


async def test_consuming_task_failing_is_logged_counted_reported_and_restarted(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """An unexpected exception in the consuming task: logged with its traceback, counted in
    otelcol_component_task_restarts, the receiver's status recoverable_error; consumption
    starts again from the first message not marked: every message of the batch in hand, the
    one that failed first, is delivered (at least once)."""
    import logging

    caplog.set_level(logging.INFO)
    with broker() as b:
        b.create_topic("otlp_spans", 1)
        async with recording_backend() as sink:
            async with running_service(receiver_gateway(b, sink), tmp_path) as service:
                receiver = receiver_of(service)
                receiver.next = FailsOnce(receiver.next)
                reported: list[str] = []
                report = service.report_status

                def spy(component: str, status: str, error: Any = None) -> None:
                    if component == receiver.settings.instance:
                        reported.append(str(status))
                    report(component, status, error)

                service.report_status = spy  # type: ignore[method-assign]
                await wait_until(lambda: bool(receiver.assigned), within=30)
                values = [
                    traces(2, 2, seed=i, prefix=f"r{i}-").SerializeToString() for i in range(6)
                ]
                kcat_produce(b, "otlp_spans", values, tmp_path)  # one batch, most likely
                await wait_until(lambda: sink.span_count() >= 24, within=30)
                await asyncio.sleep(0.2)
                families = {f.name: f for f in service.telemetry.registry.collect()}
                restarts = [
                    s
                    for s in families["otelcol_component_task_restarts"].samples
                    if s.name.endswith("_total") and s.labels["task"] == "consume"
                ]
                assert [s.value for s in restarts] == [1.0]
                assert "recoverable_error" in reported
            names = span_names(sink)
            assert set(names) == {
                f"r{i}-{t}-s{s}" for i in range(6) for t in range(2) for s in range(2)
            }
            assert set(names.values()) == {1}  # the failed one was not delivered before
        failed = [r for r in caplog.records if "background task 'consume' failed" in r.getMessage()]
        assert failed and failed[0].exc_info is not None  # with its traceback
        assert committed_offset(b) == len(values)


# -- end to end: SDK -> gateway A -> kafka -> group of two gateways -> backend ---------------
async def sdk_send(port: int, first: int, n_traces: int, spans: int) -> None:
    """Spans from the OpenTelemetry SDK, exported over OTLP/HTTP (no grpcio client beside the
    sink's grpc.aio server in this loop)."""
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor, SpanExportResult
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

    memory = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(memory))
    tracer = provider.get_tracer("kafka-e2e")
    for t in range(first, first + n_traces):
        with tracer.start_as_current_span(f"t{t}-root"):
            for s in range(spans - 1):
                with tracer.start_as_current_span(f"t{t}-s{s}"):
                    pass
    finished = list(memory.get_finished_spans())
    exporter = OTLPSpanExporter(endpoint=f"http://127.0.0.1:{port}/v1/traces", timeout=30)
    try:
        for i in range(0, len(finished), 50):
            result = await asyncio.to_thread(exporter.export, finished[i : i + 50])
            assert result == SpanExportResult.SUCCESS
    finally:
        exporter.shutdown()


@pytest.mark.slow
async def test_two_tier_through_kafka_survives_sigkill_of_a_consumer(tmp_path: Path) -> None:
    """SDK -> gateway A (kafka exporter, partition_traces_by_id) -> 4 partitions -> a group of
    two gateway processes (message_marking.after) -> backend. One consumer is killed with
    SIGKILL while spans flow: its partitions move to the other, and every span arrives; the
    re-read ones are the only duplicates."""
    with broker() as b:
        b.create_topic("otlp_spans", 4)
        async with recording_backend() as sink:
            consumers = []
            for i in range(2):
                path = write_config(
                    tmp_path,
                    # commits every 3 s: what the killed member handled since is read again
                    receiver_gateway(
                        b, sink, "autocommit: {interval: 3s}", group="tier2", name=f"b{i}"
                    ),
                    f"tier2-{i}.yaml",
                )
                consumers.append(GatewayProcess(path))
            try:
                for gw in consumers:
                    await asyncio.to_thread(gw.wait_ready)
                http_port = free_port()
                tier1 = f"""
receivers:
  otlp: {{protocols: {{http: {{endpoint: "127.0.0.1:{http_port}"}}}}}}
exporters:
  kafka:
    brokers: ["{b.bootstrap}"]
    partition_traces_by_id: true
    producer: {{required_acks: -1}}
service:
  telemetry: {{metrics: {{level: none}}}}
  pipelines:
    traces: {{receivers: [otlp], exporters: [kafka]}}
"""
                async with running_service(tier1, tmp_path):
                    await sdk_send(http_port, 0, 100, 4)
                    # both members consume (the group settled) before one is killed
                    await wait_until(lambda: sink.span_count() >= 400, within=60)
                    await wait_until(lambda: all(assigned(gw) for gw in consumers), within=30)
                    assert set(by_gateway(sink)) == {"b0", "b1"}, by_gateway(sink)
                    sender = asyncio.create_task(sdk_send(http_port, 100, 200, 4))
                    # killed while the second send's spans flow (some arrived already)
                    await wait_until(lambda: sink.span_count() > 400 or sender.done(), within=60)
                    consumers[0].proc.send_signal(signal.SIGKILL)
                    await sender
                    total = 1200
                    # the partitions of the killed member move to the survivor
                    await wait_until(
                        lambda: any(len(p) == 4 for p in assigned(consumers[1])), within=60
                    )
                    await wait_until(lambda: len(span_names(sink)) >= total, within=90)
                    await asyncio.sleep(0.5)  # (time for the re-read duplicates to arrive)
                names = span_names(sink)
                assert len(names) == total, f"{total - len(names)} spans lost"
                duplicates = sum(names.values()) - total
                # at least once: only what the killed member had delivered since its last
                # commit is read again (by the survivor)
                assert duplicates <= by_gateway(sink)["b0"], duplicates
                print(
                    f"kill -9 under load: {total} spans, {duplicates} duplicates, "
                    f"by gateway {dict(by_gateway(sink))}"
                )
            finally:
                for gw in consumers:
                    gw.__exit__()


async def test_metrics_and_logs_round_trip_through_the_broker(tmp_path: Path) -> None:
    """Metrics (one message per resource) and logs out through the exporter and back in
    through the receiver of another pipeline, every point and record once."""
    from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceRequest
    from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import (
        ExportMetricsServiceRequest,
    )

    from pipeline.pdata import Logs, Metrics

    metrics = ExportMetricsServiceRequest()
    for r in range(3):
        rm = metrics.resource_metrics.add()
        rm.resource.attributes.add(key="service.name").value.string_value = f"svc-{r}"
        m = rm.scope_metrics.add().metrics.add(name="requests")
        for i in range(4):
            m.sum.data_points.add(as_int=i + 10 * r)
    logs = ExportLogsServiceRequest()
    sl = logs.resource_logs.add().scope_logs.add()
    for i in range(5):
        sl.log_records.add().body.string_value = f"log {i}"
    with broker() as b:
        b.create_topic("otlp_metrics", 2)
        b.create_topic("otlp_logs", 1)
        async with recording_backend() as sink:
            config = f"""
receivers:
  otlp: {{protocols: {{grpc: {{endpoint: "127.0.0.1:{free_port()}"}}}}}}
  kafka:
    brokers: ["{b.bootstrap}"]
    initial_offset: earliest
    session_timeout: 6s
    heartbeat_interval: 1s
exporters:
  kafka:
    brokers: ["{b.bootstrap}"]
    partition_metrics_by_resource_attributes: true
  otlp:
    endpoint: "127.0.0.1:{sink.grpc_port}"
    tls: {{insecure: true}}
service:
  telemetry: {{metrics: {{level: none}}}}
  pipelines:
    metrics: {{receivers: [otlp], exporters: [kafka]}}
    logs: {{receivers: [otlp], exporters: [kafka]}}
    metrics/in: {{receivers: [kafka], exporters: [otlp]}}
    logs/in: {{receivers: [kafka], exporters: [otlp]}}
"""
            async with running_service(config, tmp_path) as service:
                exporters = [
                    n.component
                    for n in service.graph.nodes
                    if type(n.component).__name__ == "KafkaExporter"
                ]
                for e in exporters:
                    if e.signal == Signal.METRICS:
                        await e.consume(Metrics(metrics.SerializeToString()))
                    else:
                        await e.consume(Logs(logs.SerializeToString()))
                await wait_until(
                    lambda: sink.point_count() == 12 and sink.log_record_count() == 5, within=30
                )
            metric_messages = b.messages("otlp_metrics")
            assert len(metric_messages) == 3  # one per resource, keyed by it
            assert len({key for _, key, _ in metric_messages}) == 3
            values = sorted(
                p.as_int
                for req in sink.metrics
                for rm in req.resource_metrics
                for sm in rm.scope_metrics
                for m in sm.metrics
                for p in m.sum.data_points
            )
            assert values == sorted(i + 10 * r for r in range(3) for i in range(4))
            assert sorted(r.body.string_value for r in sink.log_records) == [
                f"log {i}" for i in range(5)
            ]


async def test_header_extraction(tmp_path: Path) -> None:
    with broker() as b:
        b.create_topic("otlp_spans", 1)
        values = [traces(1, 2, seed=9, prefix="h").SerializeToString()]
        kcat_produce(b, "otlp_spans", values, tmp_path, ("tenant=acme", "other=x"))
        async with recording_backend() as sink:
            extra = "header_extraction: {extract_headers: true, headers: [tenant, missing]}"
            async with running_service(receiver_gateway(b, sink, extra), tmp_path):
                await wait_until(lambda: sink.span_count() == 2, within=30)
            attrs = {
                a.key: a.value.string_value
                for a in sink.traces[0].resource_spans[0].resource.attributes
            }
            assert attrs["kafka.header.tenant"] == "acme"
            assert "kafka.header.other" not in attrs and "kafka.header.missing" not in attrs
