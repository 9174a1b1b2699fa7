"""pipeline.telemetry: the lock-free values of the series counted on every consume."""

from __future__ import annotations

import threading

from prometheus_client import generate_latest

from pipeline.component import Kind
from pipeline.pdata import Signal
from pipeline.telemetry import LoopValue, SelfTelemetry, loop_value


def test_loop_value_keeps_the_count_and_the_exposition() -> None:
    """A series changed through its LoopValue exposes what the child's own inc/set would."""
    plain, fast = SelfTelemetry(), SelfTelemetry()
    for tel in (plain, fast):
        tel.counter("otelcol_test_items", "Items.", ("c",)).labels("a").inc(2)
        tel.gauge("otelcol_test_held", "Held.", ("c",)).labels("a").set(1)
    counter = loop_value(fast.counter("otelcol_test_items", "Items.", ("c",)).labels("a"))
    gauge = loop_value(fast.gauge("otelcol_test_held", "Held.", ("c",)).labels("a"))
    assert isinstance(counter, LoopValue) and counter.value == 2.0  # what it counted is kept
    counter.value += 3
    gauge.value = float(7)
    plain.counter("otelcol_test_items", "Items.", ("c",)).labels("a").inc(3)
    plain.gauge("otelcol_test_held", "Held.", ("c",)).labels("a").set(7)
    # the child's own API still works on the lock-free value
    for tel in (plain, fast):
        tel.counter("otelcol_test_items", "Items.", ("c",)).labels("a").inc(1)
    assert fast.value("otelcol_test_items_total", c="a") == 6.0
    assert (
        generate_latest(fast.registry).split(b"# HELP otelcol_test")[1:]
        == generate_latest(plain.registry).split(b"# HELP otelcol_test")[1:]
    )
    # taken twice: the same value
    assert loop_value(fast.counter("otelcol_test_items", "Items.", ("c",)).labels("a")) is counter


def test_items_and_receiver_values_are_the_components_series() -> None:
    tel = SelfTelemetry()
    processor = tel.component(Kind.PROCESSOR, "batch")
    incoming = processor.items_value("incoming", Signal.TRACES)
    assert tel.value("otelcol_processor_incoming_items_total", processor="batch",
                     otel_signal="traces") == 0.0  # fmt: skip
    incoming.value += 5
    processor.incoming(Signal.TRACES, 2)  # the counting method adds to the same series
    assert processor.items_value("incoming", Signal.TRACES) is incoming
    assert incoming.value == 7.0
    receiver = tel.component(Kind.RECEIVER, "otlp")
    accepted, refused = receiver.receiver_values(Signal.TRACES)
    assert refused.value == 0.0
    accepted.value += 4
    text = generate_latest(tel.registry).decode()
    # both series exist from the first request, accepted listed first
    assert text.index("otelcol_receiver_accepted_spans_total") < text.index(
        "otelcol_receiver_refused_spans_total"
    )
    assert tel.value("otelcol_receiver_accepted_spans_total", receiver="otlp") == 4.0
    assert tel.value("otelcol_receiver_refused_spans_total", receiver="otlp") == 0.0
    connector = tel.component(Kind.CONNECTOR, "agentmetrics")
    out = connector.connector_value("outgoing", "traces", "metrics")
    out.value += 3
    assert tel.value("otelcol_connector_outgoing_items_total", connector="agentmetrics",
                     from_signal="traces", to_signal="metrics") == 3.0  # fmt: skip


def test_a_scrape_in_another_thread_reads_the_loop_value() -> None:
    tel = SelfTelemetry()
    value = tel.component(Kind.PROCESSOR, "p").items_value("outgoing", Signal.LOGS)
    value.value += 9
    seen: list[float] = []
    reader = threading.Thread(
        target=lambda: seen.append(
            tel.value("otelcol_processor_outgoing_items_total", processor="p", otel_signal="logs")
        )
    )
    reader.start()
    reader.join()
    assert seen == [9.0]
