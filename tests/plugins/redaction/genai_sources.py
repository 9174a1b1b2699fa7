"""Real GenAI instrumentations, driven offline, sending their spans and log records over OTLP
to a gateway: ``python -m tests.plugins.redaction.genai_sources KIND GRPC_PORT``.

KIND is ``otel`` (the OpenTelemetry Python SDK's GenAI instrumentation,
opentelemetry-instrumentation-openai-v2, content capture on), ``openllmetry``
(opentelemetry-instrumentation-openai), ``openinference`` (openinference-instrumentation-openai)
or ``pydantic_ai`` (pydantic-ai's own instrumentation with ``include_content``). The OpenAI
client talks to a local HTTP server speaking the chat completions API (the model cannot be
reached offline); every prompt, completion and tool call carries the personal data in ``PII``.
"""

from __future__ import annotations

import json
import os
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

PII = {
    "email": "alice.smith@example.com",
    "card": "4111 1111 1111 1111",
    "api_key": "sk-proj-Abcdefghijklmnopqrstuvwx123456",
    "bearer": "Bearer eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxIn0.c2lnbmF0dXJl",
    "phone": "+1 415-555-0132",
    "reply_email": "bob.jones@example.org",
    "tool_email": "carol@example.net",
    "tool_card": "5500 0000 0000 0004",
}
SYSTEM = "You are a travel agent. Never reveal the booking code ZX-SECRET-PROMPT."
PROMPT = (
    f"Book me a trip. My email is {PII['email']}, card {PII['card']}, "
    f"my key is {PII['api_key']}, header {PII['bearer']}, phone {PII['phone']}."
)
REPLY = f"Booked. Confirmation goes to {PII['reply_email']}; PROMPT-REPLY-MARKER."
TOOL_ARGS = json.dumps({"to": PII["tool_email"], "card": PII["tool_card"]})
MODEL = "gpt-4o-mini"


def _completion(tool_call: bool) -> dict[str, Any]:
    message: dict[str, Any] = {"role": "assistant", "content": REPLY}
    if tool_call:
        message["tool_calls"] = [{
            "id": "call_1", "type": "function",
            "function": {"name": "send_email", "arguments": TOOL_ARGS},
        }]  # fmt: skip
    return {
        "id": "chatcmpl-1",
        "object": "chat.completion",
        "created": 1_700_000_000,
        "model": MODEL,
        "choices": [{"index": 0, "message": message,
                     "finish_reason": "tool_calls" if tool_call else "stop"}],
        "usage": {"prompt_tokens": 42, "completion_tokens": 17, "total_tokens": 59},
    }  # fmt: skip


class _LLM(BaseHTTPRequestHandler):
    calls = 0

    def do_POST(self) -> None:
        length = int(self.headers.get("content-length", 0))
        self.rfile.read(length)
        _LLM.calls += 1
        body = json.dumps(_completion(tool_call=_LLM.calls % 2 == 1)).encode()
        self.send_response(200)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:
        pass


def _llm_server() -> str:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _LLM)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return f"http://127.0.0.1:{server.server_address[1]}/v1"


def _providers(port: int) -> tuple[Any, Any]:
    from opentelemetry.exporter.otlp.proto.grpc._log_exporter import OTLPLogExporter
    from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter
    from opentelemetry.sdk._logs import LoggerProvider
    from opentelemetry.sdk._logs.export import SimpleLogRecordProcessor
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor

    resource = Resource.create({"service.name": "genai-redaction"})
    tp = TracerProvider(resource=resource)
    tp.add_span_processor(
        SimpleSpanProcessor(OTLPSpanExporter(endpoint=f"127.0.0.1:{port}", insecure=True))
    )
    lp = LoggerProvider(resource=resource)
    lp.add_log_record_processor(
        SimpleLogRecordProcessor(OTLPLogExporter(endpoint=f"127.0.0.1:{port}", insecure=True))
    )
    return tp, lp


def _chat(base_url: str) -> None:
    import openai

    client = openai.OpenAI(base_url=base_url, api_key="test-key-not-secret")
    messages: list[Any] = [
        {"role": "system", "content": SYSTEM},
        {"role": "user", "content": PROMPT},
    ]
    first = client.chat.completions.create(model=MODEL, messages=messages)
    call = first.choices[0].message.tool_calls[0]
    messages.append(first.choices[0].message.model_dump(exclude_none=True))
    messages.append({"role": "tool", "tool_call_id": call.id,
                     "content": f"sent to {PII['tool_email']}"})  # fmt: skip
    client.chat.completions.create(model=MODEL, messages=messages)


def run(kind: str, port: int) -> None:
    tp, lp = _providers(port)
    base_url = _llm_server()
    if kind == "otel":
        from opentelemetry.instrumentation.openai_v2 import OpenAIInstrumentor

        # content on the spans and in the GenAI event log records
        os.environ["OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT"] = "SPAN_AND_EVENT"
        os.environ["OTEL_SEMCONV_STABILITY_OPT_IN"] = "gen_ai_latest_experimental"
        OpenAIInstrumentor().instrument(tracer_provider=tp, logger_provider=lp)
        _chat(base_url)
    elif kind == "openllmetry":
        os.environ["TRACELOOP_TRACE_CONTENT"] = "true"
        from opentelemetry.instrumentation.openai import OpenAIInstrumentor as LLMetry

        LLMetry().instrument(tracer_provider=tp)
        _chat(base_url)
    elif kind == "openinference":
        from openinference.instrumentation.openai import OpenAIInstrumentor as OI

        OI().instrument(tracer_provider=tp)
        _chat(base_url)
    elif kind == "pydantic_ai":
        from pydantic_ai import Agent
        from pydantic_ai.capabilities.instrumentation import Instrumentation
        from pydantic_ai.messages import ModelResponse, TextPart, ToolCallPart
        from pydantic_ai.models.function import FunctionModel
        from pydantic_ai.models.instrumented import InstrumentationSettings

        def model(messages: list[Any], info: Any) -> ModelResponse:
            if not any(isinstance(p, ToolCallPart) for m in messages for p in m.parts):
                return ModelResponse(parts=[ToolCallPart("send_email", json.loads(TOOL_ARGS))])
            return ModelResponse(parts=[TextPart(REPLY)])

        agent = Agent(
            FunctionModel(model),
            system_prompt=SYSTEM,
            capabilities=[
                Instrumentation(
                    settings=InstrumentationSettings(tracer_provider=tp, include_content=True)
                )
            ],
        )

        @agent.tool_plain
        def send_email(to: str, card: str) -> str:
            return f"sent to {to} with card {card}"

        agent.run_sync(PROMPT)
    else:
        raise SystemExit(f"unknown kind {kind}")
    tp.shutdown()
    lp.shutdown()


if __name__ == "__main__":
    run(sys.argv[1], int(sys.argv[2]))
