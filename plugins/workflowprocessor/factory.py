"""Factory of the ``workflow`` processor."""

from __future__ import annotations

import weakref
from typing import TYPE_CHECKING, Any

from pipeline import (
    ComponentID,
    Consumer,
    CreateSettings,
    ProcessorFactory,
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
        # service -> component ID -> the trace hold its logs processors read (the store of the
        # latest traces processor of that ID, weakly: a reload that rebuilds it is followed);
        # services running side by side in one process (tests) each have their own, and a
        # service that is gone takes its links with it
        self._links: weakref.WeakKeyDictionary[Any, dict[ComponentID, TraceLink]] = (
            weakref.WeakKeyDictionary()
        )

    def _link(self, settings: CreateSettings) -> TraceLink:
        from plugins.workflowprocessor.logs import TraceLink

        links = self._links.setdefault(settings.telemetry.service, {})
        link = links.get(settings.id)
        if link is None:
            link = links[settings.id] = TraceLink()
        return link

    def create_traces(
        self, settings: CreateSettings, config: WorkflowConfig, next_consumer: Consumer
    ) -> WorkflowProcessor:
        from plugins.workflowprocessor.processor import WorkflowProcessor

        processor = WorkflowProcessor(settings, config, next_consumer)
        self._link(settings).held_by(processor.store)
        return processor

    def create_logs(
        self, settings: CreateSettings, config: WorkflowConfig, next_consumer: Consumer
    ) -> WorkflowLogsProcessor:
        from plugins.workflowprocessor.logs import WorkflowLogsProcessor

        return WorkflowLogsProcessor(settings, config, next_consumer, self._link(settings))
