"""The benchmark harness's arithmetic and payload (the benchmark itself is run by hand)."""

from __future__ import annotations

import argparse

from benchmarks.forward_path import Run, delivery_rate, report
from benchmarks.payload import SPANS_PER_REQUEST, build_request
from pipeline import Traces


def test_payload_shape() -> None:
    data = build_request(3)
    payload = Traces(data)
    payload.validate()
    assert payload.item_count() == SPANS_PER_REQUEST
    assert 250 <= len(data) / SPANS_PER_REQUEST <= 270
    span = payload.message().resource_spans[0].scope_spans[0].spans[0]
    assert len(span.attributes) == 8
    assert all(kv.value.HasField("string_value") for kv in span.attributes)


def test_delivery_rate_uses_the_load_window() -> None:
    samples = [(0.0, 0), (1.0, 50), (2.0, 150), (3.0, 250), (4.0, 300)]
    assert delivery_rate(samples, 1.0, 3.0) == 100.0
    assert delivery_rate(samples, 10.0, 11.0) != delivery_rate(samples, 10.0, 11.0)  # NaN


def test_report_ratios() -> None:
    def run(system: str, cpu: float) -> Run:
        return Run(system, "grpc", 100_000, 100_000, cpu, 70.0, 10, 10, 0, 0, 0)

    args = argparse.Namespace(rate=100_000, duration=20, compression="none", repeat=1)
    text = report([run("gateway", 1.0), run("rotel", 4.0)], args, "cmd")
    assert "gateway CPU per span = 0.25 x rotel's" in text
    assert "| grpc | gateway |" in text


def test_report_compares_with_a_baseline() -> None:
    def run(system: str, cpu: float) -> Run:
        return Run(system, "grpc", 100_000, 100_000, cpu, 70.0, 10, 10, 0, 0, 0)

    args = argparse.Namespace(
        rate=100_000, duration=20, compression="none", repeat=1, baseline="/tmp/base"
    )
    runs = [run("gateway", 1.1), run("baseline", 1.0), run("rotel", 4.0)]
    text = report(runs, args, "cmd")
    assert "gateway CPU per span = 1.10 x the baseline's (`/tmp/base`) (median" in text
    rows = [line.split("|")[2].strip() for line in text.splitlines() if line.startswith("| grpc")]
    assert rows == ["gateway", "baseline", "rotel"]
