"""The dialect tables and the compiled classifier (plugins/_agentdialects), on hand-written
spans of each dialect; the recorded spans of the real libraries are covered by
test_corpus.py."""

from __future__ import annotations

from typing import Any

import pytest
from pydantic import ValidationError

from plugins._agentdialects import (
    LABELS,
    Dialects,
    DialectsConfig,
    DialectTable,
    Role,
    builtin_tables,
    default_dialects,
    load_dialects,
    looks_like_run_id,
    resolve_tables,
)

INTERNAL, SERVER, CLIENT, PRODUCER, CONSUMER = 1, 2, 3, 4, 5


def test_builtin_dialects_in_order() -> None:
    assert default_dialects().names[-1] == "genai"
    assert {
        "gateway",
        "openllmetry",
        "openinference",
        "mcp_sdk",
        "a2a_sdk",
        "asgi",
        "genai",
    } <= set(default_dialects().names)


@pytest.mark.parametrize(
    ("attrs", "status", "exception", "report"),
    [
        ({"asgi.event.type": "http.response.start", "http.status_code": 500}, 2, "", True),
        ({"asgi.event.type": "http.response.start"}, 0, "", False),  # did not fail
        ({"asgi.event.type": "http.response.body"}, 2, "OSError", False),  # its own exception
        ({"http.status_code": 500}, 2, "", False),  # not an ASGI message span
    ],
)
def test_asgi_send_span_reports_a_status(
    attrs: dict[str, Any], status: int, exception: str, report: bool
) -> None:
    facts = default_dialects().classify(
        "POST /compute http send", INTERNAL, attrs, status_code=status, exception_type=exception
    )
    assert facts.role is Role.NONE
    assert facts.status_report is report


def test_genai_agent_run_keeps_per_run_ids_out_of_labels() -> None:
    facts = default_dialects().classify(
        "invoke_agent calc",
        INTERNAL,
        {
            "gen_ai.operation.name": "invoke_agent",
            "gen_ai.agent.name": "calc",
            "gen_ai.agent.call.id": "01a2499b-9d15-741f-ae38-21c8e6b11b56",
            "gen_ai.conversation.id": "01a2499b-9d15-741f-ae38-21c95e1aeffc",
        },
    )
    assert facts.role is Role.AGENT_RUN
    assert facts.dialect == "genai"
    assert facts.label("agent_name") == "calc"
    assert facts.label("workflow_type") == "calc"
    assert facts.run_id == "01a2499b-9d15-741f-ae38-21c95e1aeffc"
    assert not any(looks_like_run_id(v) for v in facts.labels.values())


def test_uuid_agent_id_is_a_run_id_not_a_name() -> None:
    facts = default_dialects().classify(
        "workflow.support",
        INTERNAL,
        {"gen_ai.agent.id": "5b8efff7-9803-8103-d269-b633813fc60c"},
        root=True,
    )
    assert facts.role is Role.WORKFLOW
    assert facts.dialect == "gateway"
    assert "agent_name" not in facts.labels
    assert facts.run_id == "5b8efff7-9803-8103-d269-b633813fc60c"


def test_genai_tool_call_and_tokens() -> None:
    d = default_dialects()
    tool = d.classify(
        "execute_tool add",
        INTERNAL,
        {"gen_ai.operation.name": "execute_tool", "gen_ai.tool.name": "add",
         "gen_ai.tool.call.id": "call_1", "error.type": "ValueError"},
    )  # fmt: skip
    assert tool.role is Role.TOOL_CALL and tool.is_tool_layer
    assert tool.label("tool_name") == "add" and tool.label("tool_call_id") == "call_1"
    assert tool.failed and tool.error_type == "ValueError"
    chat = d.classify(
        "chat gpt",
        CLIENT,
        {"gen_ai.operation.name": "chat", "gen_ai.request.model": "gpt-x",
         "gen_ai.usage.input_tokens": 51, "gen_ai.usage.output_tokens": "6"},
    )  # fmt: skip
    assert chat.role is Role.INFERENCE
    assert (chat.input_tokens, chat.output_tokens, chat.label("model")) == (51, 6, "gpt-x")


def test_mcp_client_and_server_sides() -> None:
    d = default_dialects()
    client = d.classify(
        "tools/call search",
        CLIENT,
        {"mcp.method.name": "tools/call", "jsonrpc.request.id": 7, "server.address": "docs",
         "server.port": 8080},
    )  # fmt: skip
    assert client.role is Role.MCP_CLIENT and client.is_tool_layer
    assert client.label("tool_name") == "search"
    assert client.label("jsonrpc_request_id") == "7"
    assert client.server == "docs:8080"
    listing = d.classify("tools/list", CLIENT, {"mcp.method.name": "tools/list"})
    assert listing.role is Role.MCP_CLIENT and not listing.is_tool_layer
    server = d.classify(
        "tools/call search",
        SERVER,
        {"mcp.method.name": "tools/call", "gen_ai.operation.name": "execute_tool",
         "gen_ai.tool.name": "search", "error.type": "tool_error"},
    )  # fmt: skip
    assert server.role is Role.MCP_SERVER and server.failed


def test_gateway_dialect_a2a_and_mcp_server_name() -> None:
    d = default_dialects()
    sent = d.classify("a2a send", PRODUCER, {"a2a.message.type": "task_delegation"})
    received = d.classify("a2a receive", CONSUMER, {"a2a.message.type": "task_delegation"})
    assert (sent.role, received.role) == (Role.A2A_CLIENT, Role.A2A_SERVER)
    assert sent.label("a2a_message_type") == "task_delegation"
    tool = d.classify(
        "execute_tool search_docs",
        CLIENT,
        {"gen_ai.operation.name": "execute_tool", "gen_ai.tool.name": "search_docs",
         "mcp.method.name": "tools/call", "mcp.server.name": "docs-server"},
    )  # fmt: skip
    assert tool.is_tool_layer and tool.label("server_address") == "docs-server"


def test_workflow_id_marks_a_workflow_only_on_a_root() -> None:
    d = default_dialects()
    # the workflow processor writes workflow.id on every span of a workflow
    assert d.classify("child", INTERNAL, {"workflow.id": "wf-1"}).role is Role.NONE
    assert d.classify("root", INTERNAL, {"workflow.id": "wf-1"}, root=True).role is Role.WORKFLOW


def test_unrecognised_span_and_status() -> None:
    d = default_dialects()
    assert d.classify("GET /", SERVER, {"http.request.method": "GET"}).role is Role.NONE
    failed = d.classify("x", INTERNAL, {}, status_code=2, exception_type="KeyError")
    assert failed.failed and failed.error_type == "KeyError" and failed.role is Role.NONE


def test_model_retry_is_not_a_failure_type() -> None:
    facts = default_dialects().classify(
        "execute_tool add",
        INTERNAL,
        {"gen_ai.operation.name": "execute_tool", "gen_ai.tool.name": "add"},
        exception_type="pydantic_ai.exceptions.ModelRetry",
    )
    assert facts.model_retry


A2A_SEND = "a2a.client.transports.jsonrpc.JsonRpcTransport.send_message"


@pytest.mark.parametrize(
    ("name", "kind", "exception", "peer"),
    [
        # the JSON-RPC error answered by the remote agent, raised on the client side
        (A2A_SEND, CLIENT, "a2a.utils.errors.InternalError", True),
        (A2A_SEND, CLIENT, "a2a.utils.errors.TaskNotFoundError", True),
        (
            "a2a.client.transports.jsonrpc.JsonRpcTransport._send_request",
            CLIENT,
            "a2a.utils.errors.InvalidParamsError",
            True,
        ),
        # the client's own failures: network, timeout, an answer that is no JSON-RPC response
        (A2A_SEND, CLIENT, "a2a.client.errors.A2AClientError", False),
        (A2A_SEND, CLIENT, "a2a.client.errors.A2AClientTimeoutError", False),
        (A2A_SEND, CLIENT, "httpx.ConnectError", False),
        # on the server side an a2a.utils.errors type arose there
        (
            "a2a.server.request_handlers.default_request_handler_v2.DefaultRequestHandlerV2"
            ".on_message_send",
            SERVER,
            "a2a.utils.errors.TaskNotFoundError",
            False,
        ),
        # another dialect's client span with a type of that name: not a2a-sdk's rule
        ("chat gpt", CLIENT, "a2a.utils.errors.InternalError", False),
    ],
)
def test_a2a_peer_errors(name: str, kind: int, exception: str, peer: bool) -> None:
    d = default_dialects()
    attrs = {"gen_ai.operation.name": "chat"} if name == "chat gpt" else {}
    facts = d.classify(
        name, kind, attrs, scope="a2a-python-sdk" if not attrs else "", status_code=2,
        exception_type=exception,
    )  # fmt: skip
    assert facts.failed
    assert facts.peer_error is peer
    # the memo (decided by name, kind and attributes) gives the same on a second look
    again = d.classify(
        name, kind, attrs, scope="a2a-python-sdk" if not attrs else "", status_code=2,
        exception_type=exception,
    )  # fmt: skip
    assert again.peer_error is peer


def test_peer_error_types_match_a_module_prefix_or_a_type() -> None:
    from plugins._agentdialects.classify import type_matches

    assert type_matches("a.b.Err", ("a.b.",))
    assert not type_matches("a.bc.Err", ("a.b.",))
    assert type_matches("a.b.Err", ("Err",))
    assert type_matches("a.b.Err", ("a.b.Err",))
    assert not type_matches("a.b.Error", ("Err",))


def test_dialect_from_config_comes_first_and_replaces_by_name() -> None:
    table = {
        "name": "acme",
        "detect": [{"present": ["acme.kind"]}],
        "rules": [
            {"role": "agent_run", "match": [{"attributes": {"acme.kind": ["agent"]}}]},
            {
                "role": "tool_call",
                "match": [{"attributes": {"acme.kind": ["tool"]}}],
                "labels": {"tool_name": ["acme.tool"]},
            },
        ],
        "labels": {"agent_name": ["acme.agent"]},
        "run_ids": ["acme.run"],
    }
    d = load_dialects(DialectsConfig.model_validate({"tables": [table], "disable": ["gateway"]}))
    assert d.names[0] == "acme" and "gateway" not in d.names
    facts = d.classify("x", INTERNAL, {"acme.kind": "agent", "acme.agent": "bob", "acme.run": "r1"})
    assert (facts.role, facts.dialect, facts.label("agent_name"), facts.run_id) == (
        Role.AGENT_RUN, "acme", "bob", "r1"
    )  # fmt: skip
    assert (
        d.classify("x", INTERNAL, {"acme.kind": "tool", "acme.tool": "t"}).label("tool_name") == "t"
    )


def test_dialect_files(tmp_path) -> None:  # type: ignore[no-untyped-def]
    path = tmp_path / "d.yaml"
    path.write_text(
        "- name: mine\n  rules:\n    - role: tool_call\n      match: [{present: [my.tool]}]\n"
        "      labels: {tool_name: [my.tool]}\n"
    )
    d = load_dialects(DialectsConfig(files=[str(path)]))
    assert d.classify("x", INTERNAL, {"my.tool": "t"}).label("tool_name") == "t"
    with pytest.raises(ValueError, match="dialect file"):
        load_dialects(DialectsConfig(files=[str(tmp_path / "missing.yaml")]))


@pytest.mark.parametrize(
    "bad",
    [
        {"name": "x", "rules": [{"role": "nonsense", "match": [{}]}]},
        {"name": "x", "labels": {"agent": ["a"]}},
        {"name": "x", "rules": [{"role": "tool_call", "match": [{"name_regex": "("}]}]},
        {"name": "bad name!"},
        {"name": "x", "rules": [{"role": "tool_call", "match": []}]},
    ],
)
def test_bad_tables_are_refused(bad: dict) -> None:  # type: ignore[type-arg]
    with pytest.raises(ValidationError):
        DialectTable.model_validate(bad)


def test_unknown_disable_and_duplicates_are_refused() -> None:
    with pytest.raises(ValueError, match="unknown dialects"):
        resolve_tables(DialectsConfig(disable=["nope"]))
    with pytest.raises(ValueError, match="named twice"):
        Dialects([*builtin_tables(), builtin_tables()[0]])


def test_compiled_form_is_flat() -> None:
    c = default_dialects().compiled
    assert c.labels == LABELS
    assert all(isinstance(k, str) for k in c.attribute_keys)
    for rule in c.rules:
        assert 0 <= rule.dialect < len(c.dialects)
        for alt in rule.alternatives:
            for key, values in alt.equals:
                assert 0 <= key < len(c.attribute_keys) and all(isinstance(v, str) for v in values)
        for label, sources in rule.labels:
            assert 0 <= label < len(LABELS)
            assert all(s.key < len(c.attribute_keys) for s in sources)


def test_run_id_shapes() -> None:
    run_ids = (
        "01a2499b-9d15-741f-ae38-21c8e6b11b56",
        "pyd_ai_685185f0c4154bb8a1c44ff8101faf25",
        "5b8efff798038103d269b633813fc60c",
        "01ARZ3NDEKTSV4RRFFQ69G5FAV",
    )
    for run_id in run_ids:
        assert looks_like_run_id(run_id), run_id
    for name in ("calc", "agent-7", "research_agent", "gpt-4o-2024-08-06", "add"):
        assert not looks_like_run_id(name), name


def test_traceloop_decorator_spans() -> None:
    d = default_dialects()
    workflow = d.classify(
        "support.workflow",
        INTERNAL,
        {"traceloop.span.kind": "workflow", "traceloop.workflow.name": "support",
         "traceloop.entity.name": "support"},
    )  # fmt: skip
    assert (workflow.role, workflow.dialect, workflow.label("workflow_type")) == (
        Role.WORKFLOW, "openllmetry", "support"
    )  # fmt: skip
    agent = d.classify(
        "planner.agent",
        INTERNAL,
        {"traceloop.span.kind": "agent", "traceloop.entity.name": "planner"},
    )
    assert (agent.role, agent.label("agent_name")) == (Role.AGENT_RUN, "planner")
    tool = d.classify(
        "search.tool",
        INTERNAL,
        {"traceloop.span.kind": "tool", "traceloop.entity.name": "search"},
    )
    assert (tool.role, tool.label("tool_name")) == (Role.TOOL_CALL, "search")
    llm = d.classify(
        "openai.chat",
        CLIENT,
        {"llm.request.type": "chat", "gen_ai.request.model": "gpt-x",
         "gen_ai.usage.prompt_tokens": 7, "gen_ai.usage.completion_tokens": 3},
    )  # fmt: skip
    assert (llm.role, llm.input_tokens, llm.output_tokens) == (Role.INFERENCE, 7, 3)
    # the newer spans that also say gen_ai.operation.name are read by the conventions
    both = d.classify(
        "calc.workflow",
        INTERNAL,
        {"traceloop.span.kind": "workflow", "gen_ai.operation.name": "invoke_agent",
         "gen_ai.agent.name": "calc"},
    )  # fmt: skip
    assert (both.role, both.dialect) == (Role.AGENT_RUN, "genai")


def test_hostile_values_and_shapes() -> None:
    """AnyValues of every kind where a label or a condition is read, huge and odd names: no
    exception, no label from a value that is not a scalar."""
    from opentelemetry.proto.common.v1.common_pb2 import AnyValue, ArrayValue, KeyValueList

    d = default_dialects()
    odd = [
        AnyValue(array_value=ArrayValue(values=[AnyValue(string_value="execute_tool")])),
        AnyValue(kvlist_value=KeyValueList()),
        AnyValue(bytes_value=b"\xff\x00"),
        AnyValue(),
        AnyValue(double_value=float("nan")),
        AnyValue(int_value=-(2**63)),
        AnyValue(string_value="x" * 1_000_000),
    ]
    for value in odd:
        attrs = {
            "gen_ai.operation.name": value,
            "gen_ai.tool.name": value,
            "gen_ai.usage.input_tokens": value,
            "mcp.method.name": value,
            "openinference.span.kind": value,
        }
        for kind in (0, 1, 2, 3, 4, 5, 99, -1):
            facts = d.classify("\x00" * 10_000, kind, attrs, scope="\udcff", root=True)
            assert facts.input_tokens is None or facts.input_tokens >= 0
            assert all(isinstance(v, str) for v in facts.labels.values())
    nan_tokens = d.classify(
        "chat", CLIENT, {"gen_ai.operation.name": "chat", "gen_ai.usage.input_tokens": 1e300}
    )
    assert nan_tokens.input_tokens is None


def test_span_view_attribute_maps_classify_alike() -> None:
    """A ``plugins._spanview`` span (attributes as a map of encoded AnyValues) classifies as
    the decoded span does."""
    from plugins._spanview import TracesView
    from tests.agent_sources._otel import CORPUS, read_corpus

    d = default_dialects()
    for path in sorted(CORPUS.glob("*/success.json")):
        request = read_corpus(path)
        view = TracesView.FromString(request.SerializeToString())
        decoded = [
            (ss.scope.name, s) for rs in request.resource_spans for ss in rs.scope_spans
            for s in ss.spans
        ]  # fmt: skip
        viewed = [s for rs in view.resource_spans for ss in rs.scope_spans for s in ss.spans]
        assert len(decoded) == len(viewed)
        for (scope, span), sv in zip(decoded, viewed, strict=True):
            want = d.classify_span(span, scope)
            got = d.classify(
                sv.name.decode(), sv.kind, sv.attributes, scope=scope,
                root=not sv.parent_span_id,
                status_code=span.status.code, exception_type=want.exception_type,
            )  # fmt: skip
            assert got == want, (path, span.name)


def test_gateway_dialect_follows_the_attributes_option() -> None:
    from plugins._agentconv import AttributeNames
    from plugins._agentdialects import gateway_table

    default = gateway_table(AttributeNames())
    assert default == next(t for t in builtin_tables() if t.name == "gateway")
    names = AttributeNames(
        workflow_span_prefix="flow:", workflow_id="app.run.id", agent_id="myco.agent.id",
        mcp_server_name="myco.mcp.server",
    )  # fmt: skip
    d = load_dialects(attribute_names=names)
    root = d.classify("flow:billing", INTERNAL, {"myco.agent.id": "biller"}, root=True)
    assert (root.role, root.label("workflow_type"), root.label("agent_name")) == (
        Role.WORKFLOW, "billing", "biller"
    )  # fmt: skip
    assert d.classify("x", INTERNAL, {"app.run.id": "r1"}, root=True).run_id == "r1"
    tool = d.classify(
        "execute_tool s",
        CLIENT,
        {"gen_ai.operation.name": "execute_tool", "mcp.method.name": "tools/call",
         "myco.mcp.server": "docs"},
    )  # fmt: skip
    assert tool.server == "docs" and tool.is_tool_layer


def test_conventions_a2a_needs_an_a2a_attribute() -> None:
    d = default_dialects()
    other = d.classify("create_thread", CLIENT, {"gen_ai.operation.name": "create_thread"})
    assert other.role is Role.NONE
    sent = d.classify("a2a send", CLIENT, {"a2a.method": "message/send", "a2a.task.id": "t-1"})
    received = d.classify("a2a", SERVER, {"a2a.context.id": "c-1"})
    assert (sent.role, sent.label("a2a_message_type"), sent.run_id) == (
        Role.A2A_CLIENT, "message/send", "t-1"
    )  # fmt: skip
    assert (received.role, received.run_id) == (Role.A2A_SERVER, "c-1")


def test_memo_gives_what_the_reference_gives() -> None:
    """The memoized path (hashable values) equals the uncached one on every recorded span,
    the first time, the second time, and with its ids and counts changed."""
    from tests.agent_sources._otel import CORPUS, read_corpus

    d = Dialects(builtin_tables())  # a fresh memo

    def plain(v: Any) -> Any:
        kind = v.WhichOneof("value")
        return getattr(v, kind) if kind in ("string_value", "int_value", "bool_value",
                                             "double_value") else None  # fmt: skip

    checked = 0
    for path in sorted(CORPUS.glob("*/*.json")):
        request = read_corpus(path)
        for rs in request.resource_spans:
            for ss in rs.scope_spans:
                for span in ss.spans:
                    anyvalues = {kv.key: kv.value for kv in span.attributes}
                    scalars = {k: plain(v) for k, v in anyvalues.items()}
                    scalars = {k: v for k, v in scalars.items() if v is not None}
                    args = dict(scope=ss.scope.name, root=not span.parent_span_id,
                                status_code=span.status.code, exception_type="X")  # fmt: skip
                    ref = d._classify(
                        span.name, span.kind, scalars, args["scope"], args["root"],
                        span.status.code, "X", "", None,
                    )  # fmt: skip
                    assert d.classify(span.name, span.kind, scalars, **args) == ref
                    assert d.classify(span.name, span.kind, scalars, **args) == ref
                    varied = dict(scalars)
                    for key in ("gen_ai.tool.call.id", "jsonrpc.request.id",
                                "gen_ai.usage.input_tokens", "gen_ai.conversation.id"):  # fmt: skip
                        if key in varied:
                            varied[key] = 12345 if "tokens" in key else "other-id"
                    ref2 = d._classify(
                        span.name, span.kind, varied, args["scope"], args["root"],
                        span.status.code, "X", "", None,
                    )  # fmt: skip
                    assert d.classify(span.name, span.kind, varied, **args) == ref2
                    checked += 1
    assert checked > 400


def test_random_spans_memo_and_reference_agree() -> None:
    """Random spans over the attributes, names and scopes the tables know, with values of
    every scalar type: no exception, and the memoized path equals the uncached one."""
    import random

    rnd = random.Random(12)
    d = Dialects(builtin_tables())
    keys = [*d.compiled.attribute_keys, "http.route", "x"]
    values: list[Any] = [
        "", "tools/call", "execute_tool", "invoke_agent", "chat", "TOOL", "AGENT", "tool",
        "workflow", "LLM", "01a2499b-9d15-741f-ae38-21c8e6b11b56", "ä" * 40, 0, 7, -3, 2**70,
        1.5, float("nan"), True, b"\x0a\x03abc", b"\xff",
    ]  # fmt: skip
    names = ["", "workflow.x", "MCP send tools/call add", "tools/call add", "execute_tool t",
             "invoke_agent a", "a2a.client.transports.jsonrpc.JsonRpcTransport.send_message",
             "add.tool", "initialize.mcp", "agent"]  # fmt: skip
    scopes = ["", "mcp-python-sdk", "a2a-python-sdk", "opentelemetry.instrumentation.mcp.x"]
    for _ in range(3000):
        attrs = {rnd.choice(keys): rnd.choice(values) for _ in range(rnd.randint(0, 6))}
        name, kind = rnd.choice(names), rnd.randint(0, 6)
        scope, root = rnd.choice(scopes), rnd.random() < 0.5
        status = rnd.choice([0, 1, 2])
        got = d.classify(name, kind, attrs, scope=scope, root=root, status_code=status)
        ref = d._classify(name, kind, attrs, scope, root, status, "", "", None)
        assert got == ref, (name, kind, attrs, scope, root)
