"""The ``workflow`` processor: groups spans by trace and stamps agent workflows (see
``docs/agent-workflow.md``)."""

import pipeline
from plugins.workflowprocessor.factory import WorkflowProcessorFactory

__all__ = ["WorkflowProcessorFactory"]


@pipeline.hookimpl
def register_components(registry: pipeline.Registry) -> None:
    registry.register(WorkflowProcessorFactory())
