"""The type a workflow is stamped with (``workflow.type``, the ``workflow_type`` label):
its root's ``workflow.type``, else ``workflow.name``, else its span name less the
``workflow.`` prefix, else ``unknown``; a value shaped like a per-run id (UUID, ULID, long
hex, as ``plugins._agentdialects.looks_like_run_id`` tests it) is skipped, as the dialect
tables skip it for ``workflow_type``: a UUID-named workflow must not make one label per run.
Both trace stores (Python rules, C ingest in ``plugins/_native/_tracewire.c``), byte for byte
alike, on hand-built, hostile and random values."""

from __future__ import annotations

import random
import string

import pytest

from plugins._agentconv import workflow_type_of
from tests.plugins._agent_support import span, tid
from tests.plugins.test_workflow_agent import (
    ULID,
    UUID,
    S,
    attribute,
    both,
    encoded,
    int_value,
    raw_request,
)

HEX = "0123456789abcdef0123"
PREFIXED = "pyd_ai_" + UUID.replace("-", "")
VALID_ULID = "01ARZ3NDEKTSV4RRFFQ69G5FAV"

CASES: list[tuple[str, str, list[tuple[str, bytes]], str]] = [
    # (case, root span name, root attributes, workflow type stamped)
    ("name", "workflow.support", [("workflow.name", S(b"triage"))], "triage"),
    ("type wins", "workflow.support",
     [("workflow.type", S(b"research")), ("workflow.name", S(b"triage"))], "research"),
    ("name UUID", "workflow.support", [("workflow.name", S(UUID.encode()))], "support"),
    ("name UUID, bare span name", "run", [("workflow.name", S(UUID.encode()))], "run"),
    ("name prefixed UUID", "workflow.support", [("workflow.name", S(PREFIXED.encode()))],
     "support"),
    ("name ULID", "workflow.support", [("workflow.name", S(VALID_ULID.encode()))], "support"),
    ("name long hex", "workflow.support", [("workflow.name", S(HEX.encode()))], "support"),
    ("name not quite a ULID", "workflow.support", [("workflow.name", S(ULID.encode()))], ULID),
    ("span name a run id too", "workflow." + UUID, [("workflow.name", S(UUID.encode()))],
     "unknown"),
    ("bare span name a run id", HEX, [("workflow.name", S(HEX.encode()))], "unknown"),
    ("nothing but the prefix", "workflow.", [("workflow.name", S(b""))], "unknown"),
    ("huge hex name", "workflow.support", [("workflow.name", S(b"ab" * 50_000))], "support"),
    ("huge logical name", "workflow.support", [("workflow.name", S(b"n" * 100_000))],
     "n" * 100_000),
    ("non-UTF-8 hex-like name", "workflow.support",
     [("workflow.name", S(b"0123456789abcdef\xff"))], "0123456789abcdef\ufffd"),
    ("hex with a newline", "workflow.support", [("workflow.name", S(b"0123456789abcdef\n"))],
     "0123456789abcdef\n"),
    ("int name of 19 digits", "workflow.support",
     [("workflow.name", int_value(1234567890123456789))], "support"),
    ("int name", "workflow.support", [("workflow.name", int_value(7))], "7"),
]  # fmt: skip


@pytest.mark.parametrize(("case", "name", "attrs", "wf_type"), CASES, ids=[c[0] for c in CASES])
def test_a_run_id_is_no_workflow_type(
    case: str, name: str, attrs: list[tuple[str, bytes]], wf_type: str
) -> None:
    extra = [attribute(k, v) for k, v in attrs]
    root = encoded(span(1, 1, None, name, attrs={"workflow.id": "wf-1"}), extra)
    tool = span(1, 2, 1, "execute_tool t", attrs={"gen_ai.operation.name": "execute_tool"})
    for spans in ([root, tool.SerializeToString()], [tool.SerializeToString(), root]):
        got = both([raw_request(spans)])
        assert got == {tid(1): (wf_type, "unknown", "success", "wf-1")}, case


def test_random_names_both_stores_alike() -> None:
    """Random run-id-like and name-like values of workflow.type / workflow.name and span
    names: the C store stamps what the Python store stamps, and never a run id."""
    rng = random.Random(20261207)
    alphabet = string.hexdigits + "-_" + "GHJKMNPQRSTVWXYZ" + "é\n"

    def value() -> str:
        pick = rng.random()
        if pick < 0.3:
            return UUID if rng.random() < 0.5 else "".join(rng.choices("0123456789abcdef", k=32))
        if pick < 0.5:
            return ""
        return "".join(rng.choices(alphabet, k=rng.choice((3, 15, 16, 26, 36, 40))))

    requests = []
    expected = {}
    for n in range(1, 200):
        # (a root's own workflow.type is kept as it is: only a logical one here)
        wf_type = rng.choice(("", "", "research"))
        wf_name, rest = value(), value()
        attrs = [("workflow.type", wf_type), ("workflow.name", wf_name)]
        extra = [
            attribute(k, S(v.encode()))
            for k, v in attrs
            if v or (k == "workflow.name" and rng.random() < 0.5)
        ]
        root = encoded(span(n, 1, None, "workflow." + rest, attrs={"workflow.id": "w"}), extra)
        requests.append(raw_request([root]))
        expected[tid(n)] = workflow_type_of(wf_type, wf_name, "workflow." + rest, "workflow.")
    got = both(requests)
    assert {t: stamp[0] for t, stamp in got.items()} == expected
