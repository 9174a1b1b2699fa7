"""Factory of the ``workflow`` processor."""

from __future__ import annotations

from typing import TYPE_CHECKING

from pipeline import Consumer, CreateSettings, ProcessorFactory, Signal, Stability
from plugins.workflowprocessor.config import WorkflowConfig

if TYPE_CHECKING:
    from plugins.workflowprocessor.processor import WorkflowProcessor


class WorkflowProcessorFactory(ProcessorFactory):
    """``workflow``: traces only."""

    type = "workflow"
    config_class = WorkflowConfig
    description = "Groups spans by trace and stamps agent workflows with id, type, outcome, tier."
    stability = {Signal.TRACES: Stability.ALPHA}

    def create_traces(
        self, settings: CreateSettings, config: WorkflowConfig, next_consumer: Consumer
    ) -> WorkflowProcessor:
        from plugins.workflowprocessor.processor import WorkflowProcessor

        return WorkflowProcessor(settings, config, next_consumer)
