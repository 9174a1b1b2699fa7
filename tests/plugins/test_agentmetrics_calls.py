"""The tool-call and failure join of the ``agentmetrics`` connector
(``plugins/agentmetricsconnector/calls.py``) on its records: what joins, what counts once, what
the window and its bounds do."""

from __future__ import annotations

from typing import Any

from plugins._agentconv import DEFAULT_ERROR_RULES, ErrorClassifier
from plugins.agentmetricsconnector.calls import (
    FRAMEWORK,
    MCP_CLIENT,
    MCP_SERVER,
    CallJoiner,
    Failure,
    Layer,
)

T = b"t" * 16
U = b"u" * 16


def sid(n: int) -> bytes:
    return n.to_bytes(8, "big")


def joiner(window: float = 10.0, max_traces: int = 100) -> CallJoiner:
    return CallJoiner(window, max_traces, ErrorClassifier(DEFAULT_ERROR_RULES).match)


def layer(trace: bytes, span: int, parent: int, side: int, **kw: object) -> Layer:
    base: dict[str, object] = {"tool": "search", "start": 0, "end": 1_000_000_000}
    base.update(kw)
    return Layer(trace, sid(span), sid(parent) if parent else b"", side, **base)  # type: ignore[arg-type]


def failure(trace: bytes, span: int, parent: int, error: str, **kw: object) -> Failure:
    labels = (("error_type", error), ("component", "agent"), ("severity", "error"))
    return Failure(trace, sid(span), sid(parent) if parent else b"", labels, **kw)  # type: ignore[arg-type]


def test_layers_in_another_trace_join_by_session_and_request_id() -> None:
    j = joiner()
    client = layer(T, 2, 1, MCP_CLIENT, rpc_id="7", session="s1", server="mcp.local:8000")
    server = layer(U, 9, 0, MCP_SERVER, rpc_id="7", session="s1", server="docs", failed=True,
                   error_type="tool_error", start=100, end=500_000_000)  # fmt: skip
    j.add([server], [], now=0.0)  # the server's spans first, in their own trace
    j.add([client], [], now=1.0)
    assert j.settle(5.0) == ([], [])  # the window is not over
    calls, errors = j.settle(11.0)
    (call,) = calls
    assert (call.tool, call.status, call.error_type, call.server) == (
        "search", "error", "tool_error", "mcp.local:8000"  # the client side names the server
    )  # fmt: skip
    assert call.duration == 1.0 and call.layers == 2  # the caller's duration
    assert [dict(e)["error_type"] for e in errors] == ["tool_error"]


def test_without_a_session_two_traces_are_two_calls() -> None:
    """JSON-RPC ids repeat across connections: without mcp.session.id (stdio) they join only
    within one trace."""
    j = joiner()
    j.add([layer(T, 2, 1, MCP_CLIENT, rpc_id="3")], [], 0.0)
    j.add([layer(U, 9, 0, MCP_SERVER, rpc_id="3")], [], 0.0)
    j.add([layer(T, 3, 2, MCP_SERVER, rpc_id="4", tool="other")], [], 0.0)
    calls, _ = j.settle(0.0, everything=True)
    assert sorted(c.layers for c in calls) == [1, 2]  # the child server span joined by parent


def test_model_retry_is_not_a_failure_unless_a_layer_below_failed_or_it_timed_out() -> None:
    j = joiner()
    retry = layer(T, 2, 1, FRAMEWORK, failed=True, retry=True, exception="ToolRetryError",
                  error_type="ToolRetryError", message="try n=2", tool="picky")  # fmt: skip
    timed_out = layer(T, 3, 1, FRAMEWORK, failed=True, retry=True, exception="ToolRetryError",
                      message="Timed out after 0.2 seconds.", tool="wait")  # fmt: skip
    mcp_retry = layer(T, 4, 1, FRAMEWORK, failed=True, retry=True, exception="ToolRetryError",
                      tool="broken")  # fmt: skip
    inner = layer(T, 5, 4, MCP_CLIENT, failed=True, error_type="tool_error", tool="broken")
    j.add([retry, timed_out, mcp_retry, inner], [], 0.0)
    calls, errors = j.settle(0.0, everything=True)
    got = {(c.tool, c.status, c.error_type, c.mcp, c.tool_type) for c in calls}
    assert got == {
        ("picky", "retry", "none", False, "function"),
        ("wait", "error", "timeout", False, "function"),
        ("broken", "error", "tool_error", True, "mcp"),
    }
    assert sorted(dict(e)["component"] for e in errors) == ["mcp", "tool"]


def test_a_failure_counts_once_where_it_arose() -> None:
    j = joiner()
    # root(1, own TimeoutError) -> agent(2, ok) -> http client(3, failed) -> server(4, failed)
    # root(10, failed, no exception) -> agent(11, ok) -> tool(12, failed layer)
    j.add(
        [layer(T, 12, 11, FRAMEWORK, failed=True, exception="ConnectionError")],
        [
            failure(T, 1, 0, "TimeoutError", exception="TimeoutError"),
            failure(T, 3, 2, "_OTHER"),
            failure(T, 4, 3, "_OTHER"),
            failure(T, 10, 0, "_OTHER"),
        ],
        0.0,
        links=[(T, sid(2), sid(1)), (T, sid(11), sid(10))],
    )
    _, errors = j.settle(0.0, everything=True)
    assert sorted(dict(e)["error_type"] for e in errors) == [
        "ConnectionError",  # the tool call (root 10 propagated it)
        "TimeoutError",  # the root's own, above a handled failure
        "_OTHER",  # the HTTP server span (its client propagated it)
    ]


def test_a_client_failing_because_its_server_did_fails_once() -> None:
    """Across the wire the exception type changes; with no span between them, one failure."""
    j = joiner()
    j.add(
        [],
        [
            failure(T, 1, 0, "InternalError", exception="InternalError"),
            failure(T, 2, 1, "RuntimeError", exception="RuntimeError"),
        ],
        0.0,
    )
    _, errors = j.settle(0.0, everything=True)
    assert [dict(e)["error_type"] for e in errors] == ["RuntimeError"]


def test_the_same_error_on_a_span_holding_another_in_time_counts_once() -> None:
    j = joiner()
    j.add(
        [],
        [
            failure(T, 5, 1, "RuntimeError", start=10, end=100),  # holds the next in time
            failure(T, 6, 2, "RuntimeError", start=20, end=40),
            failure(T, 7, 2, "RuntimeError", start=200, end=300),  # a later one: its own
        ],
        0.0,
    )
    _, errors = j.settle(0.0, everything=True)
    assert len(errors) == 2


def test_a_failed_parent_arriving_after_its_child_was_settled_is_not_counted() -> None:
    j = joiner(window=0.0)
    j.add([], [failure(T, 2, 1, "KeyError", exception="KeyError")], 0.0)
    assert len(j.settle(0.0)[1]) == 1
    j.add([], [failure(T, 1, 0, "KeyError", exception="KeyError")], 1.0)
    assert j.settle(1.0)[1] == []


def test_bounded_window_settles_the_oldest_early_and_shutdown_settles_all() -> None:
    j = joiner(window=60.0, max_traces=2)
    for n in range(5):
        j.add([layer(bytes([n]) * 16, 1, 0, FRAMEWORK)], [], float(n))
    calls, _ = j.settle(5.0)
    assert len(calls) == 3 and j.early_settled == 3 and len(j) == 2
    calls, _ = j.settle(5.0, everything=True)
    assert len(calls) == 2 and len(j) == 0


def test_a_huge_trace_is_settled_at_once() -> None:
    from plugins.agentmetricsconnector.calls import MAX_ENTRY_ITEMS

    j = joiner(window=60.0)
    j.add([layer(U, 1, 0, FRAMEWORK)], [], 0.0)  # an older trace stays held
    j.add([layer(T, n + 2, 1, FRAMEWORK) for n in range(MAX_ENTRY_ITEMS + 1)], [], 1.0)
    calls, _ = j.settle(1.0)
    assert len(calls) == MAX_ENTRY_ITEMS + 1 and len(j) == 1


def test_a_huge_packed_trace_is_due_at_once() -> None:
    """A trace packed by the C scanner (one Packed item of ``count`` layers) past
    MAX_ENTRY_ITEMS is due with its request, whether one item makes it so or it grows past
    the bound over a request's items or over requests; one within the bound waits."""
    from plugins.agentmetricsconnector.calls import MAX_ENTRY_ITEMS

    V = b"v" * 16
    W = b"w" * 16

    def packed(trace: bytes, count: int) -> Any:  # (a Packed item, as the connector passes)
        return (trace, b"", count, b"")  # (add() reads the trace and the count only)

    j = joiner(window=60.0)
    j.add([packed(U, 3)], [], 0.0)
    j.add([packed(T, MAX_ENTRY_ITEMS + 1), packed(V, MAX_ENTRY_ITEMS)], [], 1.0)
    assert j.pending[T].deadline == 1.0 and next(iter(j.pending)) == T
    assert j.pending[V].deadline == 61.0 and j.pending[U].deadline == 60.0
    j.add([packed(V, 1)], [], 2.0)  # grown past the bound in a later request
    assert j.pending[V].deadline == 2.0 and next(iter(j.pending)) == V
    j.add([packed(W, MAX_ENTRY_ITEMS), packed(W, 1)], [], 3.0)  # within one request
    assert j.pending[W].deadline == 3.0 and next(iter(j.pending)) == W
    assert j.pending[U].deadline == 60.0 and j.pending[U].extra == 2


def test_a_long_chain_of_failures_is_walked_once() -> None:
    """Every failure of a 5,000-deep chain walks up only to where an earlier walk marked."""
    j = joiner()
    depth = 5000
    failures = [failure(T, n + 1, n, "E") for n in range(1, depth)]
    j.add([], failures, 0.0)
    _, errors = j.settle(0.0, everything=True)
    assert len(errors) == 1  # the deepest
