"""Config and factory of the ``transform`` processor (light: the OTTL compiler is imported when
a config uses statements)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from pydantic import PrivateAttr, model_validator

from pipeline import ComponentConfig, Consumer, CreateSettings, ProcessorFactory, Signal, Stability
from plugins._ottlconfig import ErrorMode, StatementGroup, config_error, ottl_message

if TYPE_CHECKING:
    from pipeline.ottl.runner import Group
    from plugins.transformprocessor.processor import TransformProcessor

_FIELDS = {
    Signal.TRACES: "trace_statements",
    Signal.METRICS: "metric_statements",
    Signal.LOGS: "log_statements",
}


class TransformConfig(ComponentConfig):
    """``processors.transform``."""

    error_mode: ErrorMode = "ignore"
    trace_statements: list[str | StatementGroup] = []
    metric_statements: list[str | StatementGroup] = []
    log_statements: list[str | StatementGroup] = []
    _groups: dict[Signal, list[Any]] = PrivateAttr(default_factory=dict)

    @model_validator(mode="after")
    def _compile(self) -> TransformConfig:
        if not any((self.trace_statements, self.metric_statements, self.log_statements)):
            return self
        from pipeline.ottl import StatementError, compile_conditions, compile_statements
        from pipeline.ottl.runner import Group

        errors: list[tuple[tuple[Any, ...], str, Any]] = []
        for signal, name in _FIELDS.items():
            entries = getattr(self, name)
            groups: list[Group] = []
            # consecutive flat statements are one group whose context is inferred
            pending: list[tuple[int, str]] = []

            def flush(pending: list[tuple[int, str]] = pending, name: str = name,
                      signal: Signal = signal, groups: list[Group] = groups) -> None:  # fmt: skip
                if not pending:
                    return
                texts = [t for _, t in pending]
                try:
                    context, statements = compile_statements(texts, str(signal))
                    groups.append(Group(context, statements, [], self.error_mode))
                except StatementError as exc:
                    index, text = pending[max(exc.index, 0)]
                    errors.append(((name, index), ottl_message(exc.detail, text), text))
                pending.clear()

            for i, entry in enumerate(entries):
                if isinstance(entry, str):
                    pending.append((i, entry))
                    continue
                flush()
                mode = entry.error_mode or self.error_mode
                group_context = entry.context
                if group_context is None and entry.conditions:
                    # the context is inferred from the conditions' paths too: the deepest
                    group_context = _joint_context(entry.statements, entry.conditions, signal)
                try:
                    context, statements = compile_statements(
                        entry.statements, str(signal), group_context
                    )
                except StatementError as exc:
                    if exc.index < 0:
                        errors.append(((name, i, "context"), exc.detail, entry.context))
                    else:
                        text = entry.statements[exc.index]
                        loc = (name, i, "statements", exc.index)
                        errors.append((loc, ottl_message(exc.detail, text), text))
                    continue
                conditions: list[Any] = []
                if entry.conditions:
                    try:
                        _, conditions = compile_conditions(entry.conditions, str(signal), context)
                    except StatementError as exc:
                        text = entry.conditions[max(exc.index, 0)]
                        loc = (name, i, "conditions", max(exc.index, 0))
                        errors.append((loc, ottl_message(exc.detail, text), text))
                        continue
                groups.append(Group(context, statements, conditions, mode))
            flush()
            self._groups[signal] = groups
        if errors:
            raise config_error("TransformConfig", errors)
        return self

    def groups(self, signal: Signal) -> list[Group]:
        return list(self._groups.get(signal, []))


def _joint_context(statements: list[str], conditions: list[str], signal: Signal) -> str | None:
    """The deepest of the contexts inferred from the statements and from the conditions, or
    ``None`` (then the statements' own errors are reported)."""
    from pipeline.ottl import StatementError, compile_conditions, compile_statements
    from pipeline.ottl.contexts import DEPTH

    found = []
    for compile_ in (compile_statements, compile_conditions):
        try:
            found.append(compile_(statements if compile_ is compile_statements else conditions,
                                  str(signal))[0])  # fmt: skip
        except StatementError:
            return None
    return max(found, key=lambda c: DEPTH[c])


class TransformProcessorFactory(ProcessorFactory):
    type = "transform"
    config_class = TransformConfig
    description = "Changes telemetry with OTTL statements (the Collector's transform processor)."
    stability = {
        Signal.TRACES: Stability.BETA,
        Signal.METRICS: Stability.BETA,
        Signal.LOGS: Stability.BETA,
    }

    def _create(
        self, settings: CreateSettings, config: TransformConfig, signal: Signal, nxt: Consumer
    ) -> TransformProcessor:
        from plugins.transformprocessor.processor import TransformProcessor

        return TransformProcessor(settings, config, signal, nxt)

    def create_traces(
        self, settings: CreateSettings, config: TransformConfig, next_consumer: Consumer
    ) -> TransformProcessor:
        return self._create(settings, config, Signal.TRACES, next_consumer)

    def create_metrics(
        self, settings: CreateSettings, config: TransformConfig, next_consumer: Consumer
    ) -> TransformProcessor:
        return self._create(settings, config, Signal.METRICS, next_consumer)

    def create_logs(
        self, settings: CreateSettings, config: TransformConfig, next_consumer: Consumer
    ) -> TransformProcessor:
        return self._create(settings, config, Signal.LOGS, next_consumer)
