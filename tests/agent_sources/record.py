"""Records the corpus: every scenario of every source, as OTLP JSON under
``tests/data/agent_sources/<source>/<scenario>.json``, plus ``MANIFEST.json`` (library versions).

    .venv/bin/python -m tests.agent_sources.record            # every source
    .venv/bin/python -m tests.agent_sources.record mcp_http   # some
    .venv/bin/python -m tests.agent_sources.record --summary mcp_http success  # live, as JSON

Each source runs in its own process (instrumentations patch libraries globally).
"""

from __future__ import annotations

import asyncio
import importlib
import importlib.metadata
import json
import subprocess
import sys
from typing import Any

from tests.agent_sources._otel import CORPUS, write_corpus

# source -> (module, libraries whose versions the manifest records)
SOURCES: dict[str, tuple[str, tuple[str, ...]]] = {
    "pydantic_ai": ("pydantic_ai_source", ("pydantic-ai-slim",)),
    "pydantic_ai_mcp": ("pydantic_ai_mcp_source", ("pydantic-ai-slim", "fastmcp-slim", "mcp")),
    "mcp_stdio": ("mcp_source", ("mcp",)),
    "mcp_http": ("mcp_source", ("mcp",)),
    "mcp_openinference": ("mcp_source", ("mcp", "openinference-instrumentation-mcp")),
    # needs mcp 1.x (the test extra has 2.x): record from an environment with mcp<2 and
    # opentelemetry-instrumentation-mcp, PYTHONPATH=. python -m tests.agent_sources.record ...
    "mcp_openllmetry": ("mcp_source", ("mcp", "opentelemetry-instrumentation-mcp")),
    "langgraph_openinference": (
        "langgraph_source",
        ("langgraph", "langchain-core", "openinference-instrumentation-langchain"),
    ),
    "langgraph_openllmetry": (
        "langgraph_source",
        ("langgraph", "langchain-core", "opentelemetry-instrumentation-langchain"),
    ),
    "a2a_sdk": ("a2a_source", ("a2a-sdk",)),
    "pydantic_ai_http": (
        "pydantic_ai_http_source",
        ("pydantic-ai-slim", "starlette", "opentelemetry-instrumentation-starlette"),
    ),
}


def module_of(source: str) -> Any:
    return importlib.import_module(f"tests.agent_sources.{SOURCES[source][0]}")


async def run_scenario(source: str, scenario: str) -> Any:
    module = module_of(source)
    if hasattr(module, "run_source"):
        return await module.run_source(source, scenario)
    return await module.run(scenario)


def record_one(source: str) -> None:
    module = module_of(source)
    for scenario in module.SCENARIOS:
        request = asyncio.run(run_scenario(source, scenario))
        path = write_corpus(source, scenario, request)
        spans = sum(len(ss.spans) for rs in request.resource_spans for ss in rs.scope_spans)
        print(f"{source}/{scenario}: {spans} spans -> {path.relative_to(CORPUS.parent.parent)}")


def versions(source: str) -> dict[str, str]:
    names = ("opentelemetry-sdk", *SOURCES[source][1])
    return {n: importlib.metadata.version(n) for n in names}


def print_summaries(source: str, scenarios: list[str]) -> None:
    """Runs the scenarios live and prints ``{scenario: summary rows}`` as JSON (for the tests
    that compare the installed libraries with the corpus)."""
    from tests.agent_sources.summary import summary

    out = {s: summary(asyncio.run(run_scenario(source, s))) for s in scenarios}
    print(json.dumps(out))


def main(argv: list[str]) -> int:
    if argv[:1] == ["--one"]:
        record_one(argv[1])
        return 0
    if argv[:1] == ["--summary"]:
        print_summaries(argv[1], argv[2:])
        return 0
    sources = argv or list(SOURCES)
    manifest_path = CORPUS / "MANIFEST.json"
    manifest = json.loads(manifest_path.read_text()) if manifest_path.exists() else {}
    for source in sources:
        subprocess.run(
            [sys.executable, "-m", "tests.agent_sources.record", "--one", source], check=True
        )
        manifest[source] = {
            "scenarios": list(module_of(source).SCENARIOS),
            "versions": versions(source),
        }
    manifest_path.write_text(json.dumps(dict(sorted(manifest.items())), indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
