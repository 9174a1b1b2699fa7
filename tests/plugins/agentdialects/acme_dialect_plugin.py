"""A third-party plugin that teaches the gateway one more agent dialect (loaded by the hook
test through ``PIPELINE_PLUGINS``)."""

from __future__ import annotations

import pipeline


@pipeline.hookimpl
def register_agent_dialects(dialects):  # type: ignore[no-untyped-def]
    dialects.add(
        {
            "name": "acme_agents",
            "detect": [{"present": ["acme.kind"]}],
            "rules": [
                {"role": "agent_run", "match": [{"attributes": {"acme.kind": ["agent"]}}]},
                {
                    "role": "tool_call",
                    "match": [{"attributes": {"acme.kind": ["tool"]}}],
                    "labels": {"tool_name": ["acme.tool"]},
                },
            ],
            "labels": {"agent_name": ["acme.agent"], "error_type": ["acme.error"]},
            "run_ids": ["acme.run_id"],
        }
    )
