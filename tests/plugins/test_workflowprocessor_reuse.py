"""The C trace store keeps a request's working arrays for the next request (no allocation a
1-span request): requests of every shape in turn - one span, more traces than it keeps, a
trace with more spans than it keeps, late spans, an empty request, a corrupt one - give what
the Python store gives, byte for byte."""

from __future__ import annotations

from typing import Any

import pytest

from plugins._agentconv import ErrorClassifier
from plugins.workflowprocessor import processor as processor_module
from plugins.workflowprocessor.config import WorkflowConfig
from plugins.workflowprocessor.processor import make_store
from plugins.workflowprocessor.store import StoreConfig
from tests.plugins._agent_support import request, span
from tests.plugins.test_workflowprocessor import workflow_spans


def store(native: bool) -> Any:
    config = WorkflowConfig.model_validate({"wait_duration": "1h"})
    return make_store(
        StoreConfig.from_config(config),
        ErrorClassifier(config.error_classification),
        lambda: None,
        lambda result: None,
        native,
    )


def shapes() -> list[bytes]:
    out: list[bytes] = []
    root, agent, tools = workflow_spans(1)
    out += [request([s]).to_bytes() for s in (root, agent, *tools)]  # one span each
    many = [s for t in range(100, 200) for s in workflow_spans(t)[:2]]  # 100 traces
    out.append(request(many).to_bytes())
    out.append(request([agent]).to_bytes())
    long = [span(300, 2 + i, 1, f"step {i}") for i in range(150)]  # 150 spans, one trace
    out.append(request([span(300, 1, None, "workflow.long"), *long]).to_bytes())
    out.append(b"")
    for t in range(400, 403):
        out.append(request([s for s in (workflow_spans(t)[0], workflow_spans(t)[1])]).to_bytes())
    return out


def run(native: bool) -> list[tuple[bytes, int]]:
    s = store(native)
    out: list[tuple[bytes, int]] = []
    now = 1000.0
    for k, raw in enumerate(shapes()):
        late = s.ingest(raw, now + k)
        if late is not None:
            out.append((late.encoded, late.spans))
        if k == 5:  # released: what follows of trace 1 is late
            out += [(r.encoded, r.spans) for r in s.release_all("wait")]
            late = s.ingest(request([workflow_spans(1)[2][0]]).to_bytes(), now + k)
            assert late is not None
            out.append((late.encoded, late.spans))
        with pytest.raises(Exception):  # noqa: B017  (corrupt: refused, nothing kept)
            s.ingest(b"\x0a\xff\xff", now + k)
    out += [(r.encoded, r.spans) for r in s.release_all("shutdown")]
    return out


@pytest.mark.skipif(processor_module._tracewire is None, reason="the C accelerator is not built")
def test_requests_of_every_shape_in_turn_give_what_the_python_store_gives() -> None:
    native, python = run(True), run(False)
    assert sum(n for _, n in python) == 4 + 200 + 1 + 151 + 6 + 1
    assert native == python
