"""Records the spans of this package's real-library scenarios into ``tests/data/agentmetrics/``
(one OTLP/JSON ``ExportTraceServiceRequest`` per scenario, every process's spans in it; the
shared corpus of every source is ``tests/data/agent_sources/``, by ``tests/agent_sources/``):

    python -m tests.agent_real.record
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

from tests.support import ROOT

CORPUS = ROOT / "tests" / "data" / "agentmetrics"


def record_pydantic_mcp() -> Path:
    """pydantic-ai -> MCP over stdio (tests/agent_real/pydantic_mcp_app.py)."""
    with tempfile.TemporaryDirectory() as tmp:
        agent, server = Path(tmp, "agent.json"), Path(tmp, "server.json")
        env = {**os.environ, "SPANS_OUT": str(agent), "SERVER_SPANS_OUT": str(server)}
        env.pop("OTLP_ENDPOINT", None)
        subprocess.run(
            [sys.executable, "-m", "tests.agent_real.pydantic_mcp_app"],
            cwd=ROOT,
            env=env,
            check=True,
            capture_output=True,
            timeout=120,
        )
        merged = json.loads(agent.read_text())
        merged["resourceSpans"] += json.loads(server.read_text())["resourceSpans"]
    out = CORPUS / "pydantic_ai_mcp_tool_layers.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(merged, indent=1) + "\n")
    return out


if __name__ == "__main__":
    print(record_pydantic_mcp())
