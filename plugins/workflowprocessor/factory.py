"""Factory of the ``workflow`` processor."""

from __future__ import annotations

from typing import TYPE_CHECKING

from pipeline import (
    Consumer,
    CreateSettings,
    ProcessorFactory,
    SharedComponents,
    Signal,
    Stability,
)
from plugins.workflowprocessor.config import WorkflowConfig

if TYPE_CHECKING:
    from plugins.workflowprocessor.logs import TraceLink, WorkflowLogsProcessor
    from plugins.workflowprocessor.processor import WorkflowProcessor


class WorkflowProcessorFactory(ProcessorFactory):
    """``workflow``: traces; in a logs pipeline, log records of workflow traces are stamped
    from the trace hold of the same ID's traces processor (``logs.py``)."""

    type = "workflow"
    config_class = WorkflowConfig
    description = "Groups spans by trace and stamps agent workflows with id, type, outcome, tier."
    stability = {Signal.TRACES: Stability.ALPHA, Signal.LOGS: Stability.ALPHA}

    def __init__(self) -> None:
        self._links = SharedComponents()

    def _link(self, config: WorkflowConfig) -> TraceLink:
        from plugins.workflowprocessor.logs import TraceLink

        link: TraceLink = self._links.get_or_create(config, TraceLink)
        return link

    def create_traces(
        self, settings: CreateSettings, config: WorkflowConfig, next_consumer: Consumer
    ) -> WorkflowProcessor:
        from plugins.workflowprocessor.processor import WorkflowProcessor

        processor = WorkflowProcessor(settings, config, next_consumer)
        self._link(config).store = processor.store
        return processor

    def create_logs(
        self, settings: CreateSettings, config: WorkflowConfig, next_consumer: Consumer
    ) -> WorkflowLogsProcessor:
        from plugins.workflowprocessor.logs import WorkflowLogsProcessor

        return WorkflowLogsProcessor(
            settings,
            config,
            next_consumer,
            self._link(config),
            on_stop=lambda: self._links.release(config),
        )
