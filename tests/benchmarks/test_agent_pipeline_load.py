"""The agent pipeline benchmark's load: its tool-call layers carry the ids the real libraries
put on them (pydantic-ai's execute_tool: gen_ai.tool.call.id, one per call), or none with
``tool_ids="none"`` (the load of the earlier figures)."""

from __future__ import annotations

import os
import re

from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

from benchmarks.agent_pipeline import Load, build_template, fill, marker_offsets, text_id


def call_ids(load: Load) -> list[tuple[bytes, str | None]]:
    """(trace id, call id or None) of every execute_tool span of two filled requests."""
    out = []
    for variant in (0, 1):
        template = build_template(load, variant)
        offsets = marker_offsets(template, load.traces_per_request)
        ids = [os.urandom(16) for _ in range(load.traces_per_request)]
        req = ExportTraceServiceRequest.FromString(bytes(fill(template, offsets, ids)))
        for sp in req.resource_spans[0].scope_spans[0].spans:
            if sp.name.startswith("execute_tool"):
                attrs = {a.key: a.value.string_value for a in sp.attributes}
                assert len(sp.attributes) == load.attrs_per_span
                out.append((sp.trace_id, attrs.get("gen_ai.tool.call.id")))
    return out


def test_each_tool_call_has_its_own_call_id() -> None:
    found = call_ids(Load())
    assert len(found) == 2 * 20 * 2  # two tool calls a trace
    ids = [call for _trace, call in found]
    assert all(call is not None and call.startswith("pyd_ai_") for call in ids)
    assert len(set(ids)) == len(ids)  # unique per call, across traces and requests
    for trace, call in found:
        assert call is not None and text_id(trace).decode() in call  # (the trace's fresh id)


def test_the_id_less_load_is_kept_for_comparison() -> None:
    assert all(call is None for _trace, call in call_ids(Load(tool_ids="none")))


def test_run_ids_never_hold_a_card_like_run_of_digits() -> None:
    """Trace ids whose hex is all decimal digits (the worst case for the sampling benchmark's
    card pattern ``4[0-9]{12}``) give run ids that do not match it: the ids are UUID strings,
    whose groups hold at most 12 digits."""
    load = Load()
    template = build_template(load, 0)
    offsets = marker_offsets(template, load.traces_per_request)
    ids = [bytes.fromhex("41111111111111111111111111111111")] * load.traces_per_request
    data = bytes(fill(template, offsets, ids))
    assert text_id(ids[0]) in data
    assert re.search(rb"4[0-9]{12}", data) is None
    assert re.search(rb"4[0-9]{12}", ids[0].hex().encode())  # (bare hex would have matched)


def test_the_filler_writes_every_marker_as_one_by_one_writes_would() -> None:
    """:class:`Filler` (the template cut at its markers, joined with the ids) gives the bytes
    of writing each marker in place, and :func:`text_id` the UUID text of the id."""
    import os
    import uuid

    from benchmarks.agent_pipeline import TEXT_ID_LEN, Filler

    load = Load(rate=1.0, seconds=1.0)
    for variant in range(3):
        template = build_template(load, variant)
        offsets = marker_offsets(template, load.traces_per_request)
        filler = Filler(template, offsets, load.traces_per_request)
        for _ in range(3):
            ids = [os.urandom(16) for _ in range(load.traces_per_request)]
            want = bytearray(template)
            for i, k, hexed in offsets:
                if hexed:
                    want[i : i + TEXT_ID_LEN] = str(uuid.UUID(bytes=ids[k])).encode()
                else:
                    want[i : i + 16] = ids[k]
            assert filler.fill(ids) == bytes(want) == fill(template, offsets, ids)
            assert text_id(ids[0]) == str(uuid.UUID(bytes=ids[0])).encode()
