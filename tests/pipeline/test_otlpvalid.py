"""``pipeline._otlpvalid``: which implementation checks a request, and what
``Payload.validate`` answers on each (the rules themselves: tests/plugins/_native/
test_otlpvalid.py)."""

from __future__ import annotations

import pytest

from pipeline import Metrics, PermanentError, Traces
from pipeline import _otlpvalid as v
from plugins._native import load
from tests.plugins._native_support import both_paths, ld

path = both_paths("_otlpvalid")

IDS = ld(1, bytes(16)) + ld(2, bytes(8))


def test_the_implementation_follows_pipeline_native(path: str) -> None:
    mod = v.native()
    if path == "python":
        assert mod is None
        assert v.checker("traces").__name__ == "<lambda>"
    else:
        assert mod is not None and v.checker("traces") is mod.validate_traces


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (
            ld(1, ld(2, ld(2, IDS + ld(5, b"\xc0\x80")))),
            "malformed ExportTraceServiceRequest: resource_spans[0].scope_spans[0].spans[0].name: "
            "invalid UTF-8",
        ),
        (
            ld(1, ld(2, ld(2, ld(2, bytes(8))))),
            "malformed ExportTraceServiceRequest: resource_spans[0].scope_spans[0].spans[0]."
            "trace_id: 0 bytes, expected 16",
        ),
        (
            b"\x0a\x05abc",
            "malformed ExportTraceServiceRequest: resource_spans[0]: length past the end",
        ),
    ],
)
def test_validate_refuses_naming_the_field(data: bytes, message: str, path: str) -> None:
    with pytest.raises(PermanentError) as err:
        Traces(data).validate()
    assert str(err.value) == message


def test_validate_counts_as_a_full_parse(path: str) -> None:
    spans = ld(2, IDS) * 3
    traces = Traces(ld(1, ld(2, spans)) + ld(1, ld(2, ld(2, IDS))))
    traces.validate()
    assert traces.item_count() == 4
    # a metric's gauge (2 points) replaced by its sum (1 point): the sum's point is the item
    metric = ld(1, b"m") + ld(5, ld(1, b"") * 2) + ld(7, ld(1, b""))
    metrics = Metrics(ld(1, ld(2, ld(2, metric))))
    metrics.validate()
    assert metrics.item_count() == 1
    assert len(metrics.message().resource_metrics[0].scope_metrics[0].metrics[0].sum.data_points)


def test_a_payload_built_from_a_message_is_checked_as_encoded(path: str) -> None:
    message = Traces(ld(1, ld(2, ld(2, IDS)))).message()
    message.resource_spans[0].scope_spans[0].spans[0].trace_id = b"short"
    with pytest.raises(PermanentError, match="trace_id: 5 bytes, expected 16"):
        Traces.from_message(message).validate()


def test_native_is_read_again_when_the_variable_changes(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PIPELINE_NATIVE", "0")
    assert v.native() is None
    monkeypatch.delenv("PIPELINE_NATIVE")
    assert v.native() is load("_otlpvalid")
