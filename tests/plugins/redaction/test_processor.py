"""``redaction``: the Collector's rules (allow list failing closed, ignored keys, blocked key
patterns, blocked and allowed values, hash functions, summary attributes, map log bodies) and
the GenAI content rules on event log records, checked on the payload the processor emits."""

from __future__ import annotations

import hashlib
from typing import Any

import pytest
from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceRequest
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from pydantic import ValidationError

from pipeline import Kind, Logs, Signal, Traces
from pipeline.testing import create_settings
from plugins.redactionprocessor.config import RedactionConfig
from plugins.redactionprocessor.processor import RedactionProcessor


class Sink:
    mutates_data = False

    def __init__(self) -> None:
        self.got: list[Any] = []

    async def consume(self, data: Any) -> None:
        self.got.append(data)


def processor(config: dict[str, Any], signal: Signal = Signal.TRACES) -> tuple[Any, Sink]:
    sink = Sink()
    proc = RedactionProcessor(
        create_settings(Kind.PROCESSOR, "redaction"),
        RedactionConfig.model_validate(config),
        signal,
        sink,
    )
    return proc, sink


async def run(config: dict[str, Any], payload: Any, signal: Signal = Signal.TRACES) -> Any:
    proc, sink = processor(config, signal)
    before = payload.to_bytes()
    await proc.consume(payload)
    assert payload.to_bytes() == before  # the input is never changed
    (out,) = sink.got
    return out.message(), proc


def span_payload(**attrs: str | int) -> Traces:
    req = ExportTraceServiceRequest()
    span = req.resource_spans.add().scope_spans.add().spans.add(name="s", trace_id=b"t" * 16)
    for k, v in attrs.items():
        kv = span.attributes.add(key=k)
        if isinstance(v, int):
            kv.value.int_value = v
        else:
            kv.value.string_value = v
    return Traces(req.SerializeToString())


def attrs_of(msg: Any) -> dict[str, Any]:
    span = msg.resource_spans[0].scope_spans[0].spans[0]
    return {
        kv.key: getattr(kv.value, kv.value.WhichOneof("value") or "string_value")
        for kv in span.attributes
    }


async def test_allow_list_fails_closed_with_debug_summary() -> None:
    msg, _ = await run(
        {"allowed_keys": ["id", "note"], "summary": "debug"},
        span_payload(id="1", note="ok", birth_date="1970", maiden_name="x"),
    )
    assert attrs_of(msg) == {
        "id": "1",
        "note": "ok",
        "redaction.redacted.keys": "birth_date,maiden_name",
        "redaction.redacted.count": 2,
    }


async def test_values_keys_hashes_and_allowed_values() -> None:
    card = "4111111111111111"
    msg, proc = await run(
        {
            "allow_all_keys": True,
            "ignored_keys": ["raw"],
            "blocked_key_patterns": [".*token.*"],
            "blocked_values": [r"4[0-9]{12}(?:[0-9]{3})?"],
            "allowed_values": [r".+@mycompany\.com"],
            "summary": "info",
        },
        span_payload(
            raw=card,
            note=f"paid with {card}",
            auth_token="abc",
            contact="joe@mycompany.com",
            count=3,
        ),
    )
    assert attrs_of(msg) == {
        "raw": card,
        "note": "paid with ****",
        "auth_token": "****",
        "contact": "joe@mycompany.com",
        "count": 3,
        "redaction.masked.count": 2,
        "redaction.allowed.count": 1,
        "redaction.ignored.count": 1,
    }
    tel = proc.settings.telemetry.service
    assert tel.value("otelcol_processor_redaction_redactions_total", processor="redaction",
                     rule="blocked_values") == 1  # fmt: skip
    sha3 = hashlib.sha3_256(card.encode()).hexdigest()
    msg, _ = await run(
        {"allow_all_keys": True, "blocked_values": ["4[0-9]{15}"], "hash_function": "sha3"},
        span_payload(note=f"card {card}"),
    )
    assert attrs_of(msg) == {"note": f"card {sha3}"}


@pytest.mark.parametrize("summary", ["debug", "info", "silent"])
async def test_allowed_value_alone_is_summarised_as_on_the_whole_path(summary: str) -> None:
    """A request whose only notable value is an allowed one: with a debug or info summary it
    gets the allowed keys' summary, as on the whole-request path; it is not passed on
    untouched by the fast path because no blocked pattern matched."""
    config = {
        "allow_all_keys": True,
        "blocked_values": [r"4[0-9]{12}(?:[0-9]{3})?"],
        "allowed_values": [r".+@mycompany\.com"],
        "summary": summary,
    }
    payload = span_payload(contact="joe@mycompany.com", count=3)
    msg, proc = await run(config, payload)
    whole = proc.process(Traces(payload.to_bytes())).mutable_message()
    assert attrs_of(msg) == attrs_of(whole)
    if summary == "silent":
        assert attrs_of(msg) == {"contact": "joe@mycompany.com", "count": 3}
    else:
        assert attrs_of(msg)["redaction.allowed.count"] == 1


async def test_log_bodies_and_genai_events() -> None:
    req = ExportLogsServiceRequest()
    records = req.resource_logs.add().scope_logs.add().log_records
    plain = records.add()
    plain.body.string_value = "user 4111111111111111 logged in"
    body_map = records.add()
    for k, v in (("user", "joe"), ("ssn", "123-45-6789")):
        body_map.body.kvlist_value.values.add(key=k).value.string_value = v
    event = records.add(event_name="gen_ai.user.message")
    values = event.body.kvlist_value.values
    values.add(key="role").value.string_value = "user"
    values.add(key="content").value.string_value = "mail me at ann@example.com"
    msg, _ = await run(
        {
            "allowed_keys": ["user", "role", "content"],
            "blocked_values": ["4[0-9]{15}"],
            "summary": "debug",
            "genai_content": {"action": "mask"},
        },
        Logs(req.SerializeToString()),
        Signal.LOGS,
    )
    out = msg.resource_logs[0].scope_logs[0].log_records
    assert out[0].body.string_value == "user **** logged in"
    assert [(kv.key, kv.value.string_value) for kv in out[1].body.kvlist_value.values] == [
        ("user", "joe")
    ]
    assert {kv.key: kv.value for kv in out[1].attributes}["redaction.body.redacted.keys"] \
        .string_value == "ssn"  # fmt: skip
    content = {kv.key: kv.value.string_value for kv in out[2].body.kvlist_value.values}
    assert content == {"role": "user", "content": "mail me at ****"}


async def test_genai_content_actions_on_attributes() -> None:
    text = "call +1 415-555-0132 or write to a@b.io with sk-abcdefghijklmnopqrstuv"
    for action, want in (
        ("mask", "call **** or write to **** with ****"),
        ("hash", hashlib.sha256(text.encode()).hexdigest()),
        ("truncate", text[:10]),
        ("keep", text),
    ):
        msg, _ = await run(
            {
                "allow_all_keys": True,
                "genai_content": {"action": action, "truncate_length": 10},
            },
            span_payload(**{"gen_ai.input.messages": text, "gen_ai.request.model": "m"}),
        )
        assert attrs_of(msg) == {"gen_ai.input.messages": want, "gen_ai.request.model": "m"}
    msg, _ = await run(
        {"allow_all_keys": True, "genai_content": {"action": "drop"}},
        span_payload(**{"gen_ai.prompt.0.content": text, "llm.input_messages.0.message.content":
                        text, "input.value": text, "gen_ai.request.model": "m"}),
    )  # fmt: skip
    assert attrs_of(msg) == {"gen_ai.request.model": "m"}


async def test_custom_patterns_and_card_luhn() -> None:
    msg, proc = await run(
        {"allow_all_keys": True,
         "genai_content": {"patterns": ["card_number"],
                           "custom_patterns": [{"name": "employee", "regex": r"EMP-\d{6}"}]}},
        span_payload(**{"gen_ai.output.messages": "EMP-123456 paid 4111 1111 1111 1111, "
                        "order 1234 5678 9012 3456"}),
    )  # fmt: skip
    # the order number is not a card (Luhn), the real card and the employee id are masked
    assert attrs_of(msg) == {"gen_ai.output.messages": "**** paid ****, order 1234 5678 9012 3456"}
    tel = proc.settings.telemetry.service
    for rule in ("genai_content.pattern.card_number", "genai_content.pattern.employee"):
        assert tel.value("otelcol_processor_redaction_redactions_total",
                         processor="redaction", rule=rule) == 1  # fmt: skip


def test_config_errors() -> None:
    with pytest.raises(ValidationError, match="invalid regular expression"):
        RedactionConfig.model_validate({"blocked_values": ["("]})
    with pytest.raises(ValidationError, match="unknown pattern"):
        RedactionConfig.model_validate({"genai_content": {"patterns": ["ssn"]}})
    with pytest.raises(ValidationError, match="hmac_key"):
        RedactionConfig.model_validate({"hash_function": "hmac-sha256"})


async def test_requests_with_nothing_to_redact_pass_untouched() -> None:
    """With allow_all_keys a request whose bytes hold no content key, no GenAI event and no
    blocked value is passed on as it came (never decoded); a GenAI span event is found."""
    config = {"allow_all_keys": True, "blocked_values": ["4[0-9]{15}"], "genai_content": {}}
    plain = span_payload(**{"gen_ai.request.model": "m", "note": "a message"})
    proc, sink = processor(config)
    await proc.consume(plain)
    assert sink.got == [plain]
    req = ExportTraceServiceRequest()
    span = req.resource_spans.add().scope_spans.add().spans.add(name="chat", trace_id=b"t" * 16)
    ev = span.events.add(name="gen_ai.user.message")
    ev.attributes.add(key="content").value.string_value = "I am ann@example.com"
    msg, _ = await run(config, Traces(req.SerializeToString()))
    got = msg.resource_spans[0].scope_spans[0].spans[0].events[0].attributes[0].value
    assert got.string_value == "I am ****"
