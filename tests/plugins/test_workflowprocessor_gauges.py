"""The workflow processor's held gauges (traces, spans, bytes) read the store when collected,
not set on every request; a reload's replacement keeps them when the processor it replaces
shuts down; a processor shut down is not kept alive by them."""

from __future__ import annotations

import gc
import weakref

from pipeline.telemetry import SelfTelemetry
from tests.plugins._agent_support import request
from tests.plugins.test_workflowprocessor import (  # noqa: F401  (the fixture)
    accelerator,
    make,
    workflow_spans,
)

GAUGES = ("traces", "spans", "bytes")


def held(tel: SelfTelemetry) -> dict[str, float | None]:
    return {
        g: tel.value(f"otelcol_processor_workflow_{g}_held", processor="workflow") for g in GAUGES
    }


async def test_the_gauges_say_what_is_held_when_read_and_after_shutdown() -> None:
    proc, capture, tel = make(wait_duration="1h")
    await proc.start(None)  # type: ignore[arg-type]
    assert held(tel) == {"traces": 0, "spans": 0, "bytes": 0}
    for t in range(2):
        root, agent, tools = workflow_spans(300 + t)
        await proc.consume(request([root, agent, *tools]))
    now = held(tel)
    assert now["traces"] == 2 and now["spans"] == 8
    assert now["bytes"] == proc.store.held_bytes > 0
    await proc.shutdown()
    assert len(capture.spans()) == 8
    assert held(tel) == {"traces": 0, "spans": 0, "bytes": 0}


async def test_a_replacement_keeps_its_gauges_when_the_one_it_replaces_shuts_down() -> None:
    old, _, tel = make(wait_duration="1h")
    await old.start(None)  # type: ignore[arg-type]
    root, agent, tools = workflow_spans(400)
    await old.consume(request([root, agent, *tools]))
    new, _, _ = make(tel, wait_duration="1h")  # (a reload: the same series)
    await new.start(None)  # type: ignore[arg-type]
    for t in range(3):
        root, agent, tools = workflow_spans(410 + t)
        await new.consume(request([root, agent, *tools]))
    await old.shutdown()
    # before: the old processor's shutdown set the series to its own (empty) state
    assert held(tel)["traces"] == 3 and held(tel)["spans"] == 12
    gone = weakref.ref(old)
    del old
    gc.collect()
    assert gone() is None  # the series do not hold the processor shut down
    await new.shutdown()
    assert held(tel)["traces"] == 0
