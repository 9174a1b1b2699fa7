"""``redaction`` on what real GenAI instrumentations send (the OpenTelemetry SDK's OpenAI
instrumentation with content capture on spans and events, OpenLLMetry, OpenInference,
pydantic-ai with content): one gateway pipeline passes the data as it came, one redacts it;
on the exported bytes no configured content or personal data survives, every redaction is
counted by rule (exactly the occurrences the raw export holds), and the rest is untouched."""

from __future__ import annotations

import asyncio
import re
import sys
from pathlib import Path
from typing import Any

import pytest

from plugins.redactionprocessor.config import DEFAULT_CONTENT_KEY_PATTERNS, DEFAULT_CONTENT_KEYS
from tests.otlp_support import RecordingBackend, recording_backend
from tests.plugins.redaction import genai_sources as src
from tests.support import ROOT, free_port, running_service

SOURCES = ["otel", "openllmetry", "openinference", "pydantic_ai"]
PATTERN_OF = {
    "email": ("email", "reply_email", "tool_email"),
    "card_number": ("card", "tool_card"),
    "api_key": ("api_key",),
    "bearer_token": ("bearer",),
    "phone": ("phone",),
}
# what the redacted export must keep: names, models, token counts, span structure
KEPT = [b"gpt-4o-mini", b"gen_ai.usage", b"gen_ai.operation.name", b"genai-redaction"]


def gateway_config(port: int, raw: RecordingBackend, redacted: RecordingBackend,
                   redaction: str) -> str:  # fmt: skip
    """A gateway that exports what it receives as it came to ``raw`` and through a
    ``redaction`` processor (``allow_all_keys`` and the options in ``redaction``, YAML
    indented by four) to ``redacted``."""
    return f"""
receivers:
  otlp: {{protocols: {{grpc: {{endpoint: "127.0.0.1:{port}"}}}}}}
processors:
  redaction:
    allow_all_keys: true
    {redaction}
exporters:
  otlp/raw: {{endpoint: "127.0.0.1:{raw.grpc_port}", tls: {{insecure: true}}}}
  otlp/redacted: {{endpoint: "127.0.0.1:{redacted.grpc_port}", tls: {{insecure: true}}}}
service:
  telemetry: {{metrics: {{address: "127.0.0.1:{free_port()}"}}}}
  pipelines:
    traces/raw: {{receivers: [otlp], exporters: [otlp/raw]}}
    logs/raw: {{receivers: [otlp], exporters: [otlp/raw]}}
    traces: {{receivers: [otlp], processors: [redaction], exporters: [otlp/redacted]}}
    logs: {{receivers: [otlp], processors: [redaction], exporters: [otlp/redacted]}}
"""


async def settle(raw: RecordingBackend, redacted: RecordingBackend) -> None:
    """Waits until both backends hold the same number of spans and records (some)."""
    for _ in range(100):
        if (raw.span_count(), raw.log_record_count()) == (
            redacted.span_count(),
            redacted.log_record_count(),
        ) and (raw.span_count() or raw.log_record_count()):
            break
        await asyncio.sleep(0.05)
    await asyncio.sleep(0.2)


def _is_content(key: str) -> bool:
    return key in DEFAULT_CONTENT_KEYS or any(
        re.match(p, key) for p in DEFAULT_CONTENT_KEY_PATTERNS
    )


def rest(backend: RecordingBackend) -> list[Any]:
    """Everything but the content attributes and the redaction summary, span by span and
    record by record (names, ids, times, other attributes)."""
    out: list[Any] = []
    for s in sorted(backend.spans, key=lambda s: bytes(s.span_id)):
        attrs = sorted(
            (kv.key, kv.value.SerializeToString())
            for kv in s.attributes
            if not _is_content(kv.key) and not kv.key.startswith("redaction.")
        )
        out.append((s.name, bytes(s.trace_id), s.start_time_unix_nano, attrs))
    for r in backend.log_records:
        attrs = sorted(
            (kv.key, kv.value.SerializeToString())
            for kv in r.attributes
            if not _is_content(kv.key) and not kv.key.startswith("redaction.")
        )
        out.append((r.event_name, bytes(r.span_id), attrs))
    return out


def exported(backend: RecordingBackend) -> bytes:
    return b"".join(r.SerializeToString() for r in [*backend.traces, *backend.logs])


async def run_gateway(
    redaction: str, source: list[str], rules: list[str], tmp_path: Path,
    args: list[str] | None = None,
) -> tuple[RecordingBackend, RecordingBackend, dict[str, float]]:  # fmt: skip
    """Runs ``python -m <source...> PORT <args...>`` against a :func:`gateway_config`
    gateway: what the raw and the redacted backends received, and the processor's counts of
    ``rules``."""
    port = free_port()
    async with recording_backend() as raw, recording_backend() as redacted:
        config_text = gateway_config(port, raw, redacted, redaction)
        async with running_service(config_text, tmp_path) as service:
            proc = await asyncio.create_subprocess_exec(
                sys.executable, "-m", *source, str(port), *(args or []), cwd=ROOT
            )
            assert await asyncio.wait_for(proc.wait(), 60) == 0
            await settle(raw, redacted)
            tel = service.telemetry
            counts = {
                rule: tel.value(
                    "otelcol_processor_redaction_redactions_total", processor="redaction", rule=rule
                )
                for rule in rules
            }
    return raw, redacted, counts


async def run_source(kind: str, genai: str, tmp_path: Path) -> tuple[bytes, bytes, Any, Any]:
    rules = [f"genai_content.pattern.{p}" for p in PATTERN_OF]
    rules += ["genai_content.drop", "genai_content.hash", "genai_content.truncate"]
    raw, redacted, counts = await run_gateway(
        f"summary: info\n    genai_content: {genai}",
        ["tests.plugins.redaction.genai_sources", kind],
        rules,
        tmp_path,
    )
    assert raw.span_count() == redacted.span_count() > 0
    assert raw.log_record_count() == redacted.log_record_count()
    assert rest(raw) == rest(redacted)  # everything but the content is untouched
    return exported(raw), exported(redacted), counts, redacted


@pytest.mark.parametrize("kind", SOURCES)
async def test_personal_data_masked_in_content(kind: str, tmp_path: Path) -> None:
    raw, out, counts, _ = await run_source(kind, "{action: mask}", tmp_path)
    for rule, names in PATTERN_OF.items():
        expected = sum(raw.count(src.PII[n].encode()) for n in names)
        for n in names:
            assert src.PII[n].encode() not in out, (kind, n)
        assert counts[f"genai_content.pattern.{rule}"] == expected, (kind, rule)
    assert sum(raw.count(src.PII[n].encode()) for n in ("email", "card")) > 0
    # the content itself is kept (masked), and everything else untouched
    assert b"ZX-SECRET-PROMPT" in out and b"PROMPT-REPLY-MARKER" in out
    for keep in KEPT:
        assert raw.count(keep) == out.count(keep), (kind, keep)


@pytest.mark.parametrize("kind", SOURCES)
async def test_content_dropped(kind: str, tmp_path: Path) -> None:
    raw, out, counts, redacted = await run_source(kind, "{action: drop}", tmp_path)
    assert b"ZX-SECRET-PROMPT" in raw
    for marker in (b"ZX-SECRET-PROMPT", b"PROMPT-REPLY-MARKER", b"Book me a trip"):
        assert marker not in out, (kind, marker)
    for value in src.PII.values():
        assert value.encode() not in out, (kind, value)
    assert counts["genai_content.drop"] > 0
    summary = [
        kv.value.int_value
        for s in redacted.spans
        for kv in s.attributes
        if kv.key == "redaction.redacted.count"
    ]
    assert summary and all(n > 0 for n in summary)  # summary: info, the Collector's attribute


async def test_content_hashed_and_truncated(tmp_path: Path) -> None:
    import hashlib

    _, out, counts, _ = await run_source("pydantic_ai", "{action: hash}", tmp_path)
    assert b"ZX-SECRET-PROMPT" not in out and counts["genai_content.hash"] > 0
    # the tool call result is one string: its SHA-256 stands in its place
    result = f"sent to {src.PII['tool_email']} with card {src.PII['tool_card']}"
    assert hashlib.sha256(result.encode()).hexdigest().encode() in out
    truncate = "{action: truncate, truncate_length: 12}"
    _, out, counts, _ = await run_source("openinference", truncate, tmp_path)
    assert b"ZX-SECRET-PROMPT" not in out and counts["genai_content.truncate"] > 0
    assert b"You are a tr" in out  # llm.input_messages.0.message.content, 12 characters
