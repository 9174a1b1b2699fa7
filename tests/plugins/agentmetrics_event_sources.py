"""GenAI instrumentations that emit events (log records), driven offline against the local fake
of the chat completions API of ``tests/plugins/redaction/genai_sources.py``, sending spans and
log records over OTLP: ``python -m tests.plugins.agentmetrics_event_sources KIND GRPC_PORT
[RUNS]``.

KIND is ``otel`` (opentelemetry-instrumentation-openai-v2, latest experimental conventions:
``gen_ai.client.inference.operation.details`` events with the token usage), ``otel_workflow``
(the same two calls inside a workflow root span ``workflow.research``, ``workflow.id`` set),
``otel_event_only`` (``otel`` with the content in the events only) or
``openllmetry_events`` (OpenLLMetry's opentelemetry-instrumentation-openai with
``use_attributes=False``: the content events ``gen_ai.user.message`` ... ``gen_ai.choice``,
no usage in them; the usage on the spans).

RUNS (``otel_workflow``: 1 by default) runs it that many times in this process, one after
the other, each with providers (OTLP connections) of its own, shut down before the next: what
as many processes would send, without paying the interpreter's start and imports each time."""

from __future__ import annotations

import sys

from tests.plugins.redaction import genai_sources as src


def run(kind: str, port: int, runs: int = 1) -> None:
    if runs != 1 and kind != "otel_workflow":
        raise SystemExit(f"RUNS is for otel_workflow only, not {kind}")
    if kind == "otel":
        src.run("otel", port)
        return
    if kind in ("otel_workflow", "otel_event_only"):
        import os

        from opentelemetry.instrumentation.openai_v2 import OpenAIInstrumentor

        os.environ["OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT"] = (
            "EVENT_ONLY" if kind == "otel_event_only" else "SPAN_AND_EVENT"
        )
        os.environ["OTEL_SEMCONV_STABILITY_OPT_IN"] = "gen_ai_latest_experimental"
        base_url = src._llm_server()
        instrumentor = OpenAIInstrumentor()
        for _ in range(runs):
            tp, lp = src._providers(port)
            instrumentor.instrument(tracer_provider=tp, logger_provider=lp)
            if kind == "otel_event_only":
                src._chat(base_url)
            else:
                tracer = tp.get_tracer("agent")
                with tracer.start_as_current_span(
                    "workflow.research", attributes={"workflow.id": "wf-events-1"}
                ):
                    src._chat(base_url)
            instrumentor.uninstrument()
            tp.shutdown()
            lp.shutdown()
        return
    if kind != "openllmetry_events":
        raise SystemExit(f"unknown kind {kind}")
    import os

    os.environ["TRACELOOP_TRACE_CONTENT"] = "true"
    from opentelemetry.instrumentation.openai import OpenAIInstrumentor

    tp, lp = src._providers(port)
    base_url = src._llm_server()
    OpenAIInstrumentor(use_attributes=False).instrument(tracer_provider=tp, logger_provider=lp)
    src._chat(base_url)
    tp.shutdown()
    lp.shutdown()


if __name__ == "__main__":
    run(sys.argv[1], int(sys.argv[2]), *(int(n) for n in sys.argv[3:4]))
