"""How much of the tool-call join the C scanner packs (the join's common case, calls.py
``Packed``) on the recorded real-library scenarios (tests/data/agent_sources), and which join
ids the real libraries' tool-call layers carry.

``python -m tests.plugins._join_probe`` prints, per source, the spans the scanner left to
Python and the spans it packed (layers and links), after replaying every recorded scenario as
five runs with their own trace and run ids (as the replay test in
test_agentmetrics_join_native.py does), and the join ids per layer kind. The test imports
:func:`replay` and :func:`packed_share`.
"""

from __future__ import annotations

import asyncio
import collections
import json
from dataclasses import dataclass, field
from typing import Any

from pipeline import Kind, Traces
from plugins.agentmetricsconnector.calls import FAILED, RECORD
from plugins.agentmetricsconnector.config import AgentMetricsConfig
from plugins.agentmetricsconnector.connector import AgentMetricsConnector
from tests.plugins._agent_support import Capture, settings

ID_KEYS = ("gen_ai.tool.call.id", "jsonrpc.request.id", "mcp.session.id")
RUNS = 5


@dataclass
class Share:
    """Spans of tool-call layers and links the scanner packed, spans it left to Python."""

    packed: int = 0
    python: int = 0
    packed_layers: int = 0
    packed_with_ids: int = 0  # packed layers with a call id or a JSON-RPC id
    packed_roots: int = 0  # packed layers without a parent (root tool-call layers)
    packed_failed: int = 0  # packed failed layers (their message with their ids)
    packed_failed_traces: int = 0  # packed items of a trace with a failure read in Python
    python_layers: int = 0  # tool-call layers read in Python (Layer objects to the joiner)
    c_calls: int = 0  # tool calls settled in C (settle_simple, settle_layers)
    python_calls: int = 0  # tool calls settled by the Python join
    by_source: dict[str, list[int]] = field(default_factory=dict)

    @property
    def share(self) -> float:
        total = self.packed + self.python
        return self.packed / total if total else 0.0


def recorded_request(source: str, scenario: str, wire_ids: bool = True) -> Any:
    """A recorded scenario's request. The files are OTLP/JSON, whose ids are hex: with
    ``wire_ids`` read as the gateway reads OTLP/JSON (16-byte trace ids, 8-byte span ids, as
    the libraries sent them); else as test_agentmetrics_corpus's ``load`` reads them
    (protobuf's json_format takes them for base64: 24-byte trace ids, 12-byte span ids, which
    no library sends and the C scanner never packs)."""
    from tests.agent_sources._otel import CORPUS, read_corpus
    from tests.plugins.test_agentmetrics_corpus import load

    if wire_ids:
        return read_corpus(CORPUS / source / f"{scenario}.json")
    return load(source, scenario)


def replayed(req: Any, run: int, stamp: bool = True) -> Any:
    """A recorded request as another run of it: fresh trace ids, and run ids of its own (with
    ``stamp`` a ``workflow.id`` on every span, as the workflow processor writes on a workflow's
    spans: a parentless span is then a workflow root, never a tool-call layer; without, as the
    libraries sent them (none of the recorded roots is a workflow root: the processor stamps
    none of them), the MCP SDK's client spans without a parent are root tool-call layers;
    conversation and session ids changed)."""
    req = type(req).FromString(req.SerializeToString())
    for rs in req.resource_spans:
        for ss in rs.scope_spans:
            for sp in ss.spans:
                sp.trace_id = bytes([run]) + sp.trace_id[1:]
                if stamp:
                    sp.attributes.add(key="workflow.id").value.string_value = sp.trace_id.hex()
                for a in sp.attributes:
                    if a.key in ("gen_ai.conversation.id", "session.id"):
                        a.value.string_value += f"-{run}"
    return req


def connector(join: dict[str, Any]) -> AgentMetricsConnector:
    return AgentMetricsConnector(
        settings(Kind.CONNECTOR, "agentmetrics"),
        AgentMetricsConfig(tool_call_join=join),
        Capture(),
    )


def count_scans(conn: AgentMetricsConnector, share: Share, source: str) -> None:
    """Counts what each scan of ``conn``'s C scanner packs and leaves to Python."""
    scanner = conn._scanner
    if scanner is None:
        return

    class Counted:
        def __getattr__(self, name: str) -> Any:
            return getattr(scanner, name)

        def scan(self, raw: bytes) -> Any:
            result = scanner.scan(raw)
            row = share.by_source.setdefault(source, [0, 0])
            failed_here: set[bytes] = set()
            for item in result[1]:
                if len(item) in (3, 4):  # Packed: (trace, records, layers[, ids])
                    n = len(item[1]) // RECORD.size
                    share.packed += n
                    share.packed_layers += item[2]
                    share.packed_with_ids += sum(
                        1 for r in RECORD.iter_unpack(item[1]) if r[0] and r[5] & 3
                    )
                    share.packed_failed += sum(
                        1 for r in RECORD.iter_unpack(item[1]) if r[0] and r[5] & FAILED
                    )
                    failed_here.add(item[0])
                    share.packed_roots += sum(
                        1 for r in RECORD.iter_unpack(item[1]) if r[0] and not r[3]
                    )
                    row[0] += n
                else:
                    share.python += 1
                    row[1] += 1
            # (the packed traces of this request with a failed span read in Python: kept packed
            # beside it, since the scanner leaves a failed span learned as one that gives the
            # join no layer without touching its trace)
            failures = scanner.take_failures() or {}
            self.failures = failures
            # (a failed workflow root the scanner counted: its failure handed over, a 9-tuple)
            share.packed_failed_traces += sum(
                1
                for item in result[1]
                if (len(item) > 9 and item[0] in failures and item[7] in failed_here)
                or (len(item) == 9 and item[0] in failed_here)
            )
            return result

        def take_failures(self) -> Any:
            return self.failures

    conn._scanner = Counted()
    add = conn.joiner.add

    def counted_add(layers: Any, *args: Any) -> None:
        layers = list(layers)
        share.python_layers += sum(1 for x in layers if x.__class__ is not tuple)
        add(layers, *args)

    conn.joiner.add = counted_add  # type: ignore[method-assign,assignment]
    settle = conn.joiner.settle

    def counted_settle(now: float, everything: bool = False) -> Any:
        before = conn.joiner.native_calls
        calls, errors = settle(now, everything)
        share.python_calls += len(calls)
        share.c_calls += conn.joiner.native_calls - before
        return calls, errors

    conn.joiner.settle = counted_settle  # type: ignore[method-assign]


async def replay(
    scenarios: list[tuple[str, str]],
    share: Share | None = None,
    join: dict[str, Any] | None = None,
    wire_ids: bool = True,
    stamp: bool = True,
) -> list[dict[str, Any]]:
    """Every scenario as ``RUNS`` runs (see :func:`replayed`) through one connector each;
    what each connector counted (see ``outcome`` in the replay test), counting into ``share``
    when given."""
    from tests.plugins.test_agentmetrics_join_native import outcome

    out = []
    for source, scenario in scenarios:
        base = recorded_request(source, scenario, wire_ids)
        conn = connector(join or {"window": "0s"})
        if share is not None:
            count_scans(conn, share, source)
        for run in range(1, RUNS + 1):
            await conn.consume(Traces(replayed(base, run, stamp).SerializeToString()))
        await conn.shutdown()
        out.append(outcome(conn))
    return out


def packed_share(
    scenarios: list[tuple[str, str]], wire_ids: bool = True, stamp: bool = True
) -> Share:
    share = Share()
    asyncio.run(replay(scenarios, share, wire_ids=wire_ids, stamp=stamp))
    return share


def layer_ids(scenarios: list[tuple[str, str]]) -> dict[tuple[str, str, str], collections.Counter]:
    """(source, scope, span kind) of the tool-call layers -> the join ids they carry."""
    from tests.plugins.test_agentmetrics_corpus import load

    out: dict[tuple[str, str, str], collections.Counter] = {}
    for source, scenario in scenarios:
        req = load(source, scenario)
        for rs in req.resource_spans:
            for ss in rs.scope_spans:
                for sp in ss.spans:
                    attrs = {a.key: a.value for a in sp.attributes}

                    def text(key: str, attrs: dict[str, Any] = attrs) -> str:
                        return attrs[key].string_value if key in attrs else ""

                    if not (
                        text("gen_ai.operation.name") == "execute_tool"
                        or text("mcp.method.name") == "tools/call"
                        or text("traceloop.span.kind") == "tool"
                        or text("openinference.span.kind") == "TOOL"
                    ):
                        continue
                    where = (source, ss.scope.name, str(sp.kind))
                    ids = tuple(
                        f"{k}:{attrs[k].WhichOneof('value')}" for k in ID_KEYS if k in attrs
                    )
                    out.setdefault(where, collections.Counter())[ids] += 1
    return out


def main() -> None:
    import sys

    from tests.plugins.test_agentmetrics_corpus import recorded

    scenarios = sorted(recorded())
    wire_ids = "--loader-ids" not in sys.argv
    for stamp in (True, False):
        share = packed_share(scenarios, wire_ids, stamp)
        print(
            f"{len(scenarios)} scenarios x {RUNS} runs, ids "
            + ("as on the wire (16/8 bytes)" if wire_ids else "as the corpus loader reads them")
            + (", workflow.id on every span" if stamp else ", as sent (no workflow.id)")
        )
        for source, (packed, python) in sorted(share.by_source.items()):
            print(f"  {source:28s} packed {packed:5d}  python {python:5d}")
        total = share.packed + share.python
        print(
            f"packed {share.packed} of {total} spans ({share.share:.1%}), python {share.python}; "
            f"tool-call layers: packed {share.packed_layers} ({share.packed_with_ids} with ids, "
            f"{share.packed_roots} roots, {share.packed_failed} failed), read in Python "
            f"{share.python_layers}; failed spans read in Python beside a packed trace "
            f"{share.packed_failed_traces}; tool calls settled in C {share.c_calls}, in Python "
            f"{share.python_calls}"
        )
    for where, ids in sorted(layer_ids(scenarios).items()):
        print("  ", where, json.dumps({" ".join(k) or "-": v for k, v in ids.items()}))


if __name__ == "__main__":
    main()
