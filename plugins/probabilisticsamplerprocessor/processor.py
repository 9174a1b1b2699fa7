"""The ``probabilistic_sampler`` processor instance: per span (log record) decisions, consistent
with the Collector's (see :mod:`.sampling`)."""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

from pipeline import Component, Consumer, CreateSettings, Payload, Signal
from plugins.probabilisticsamplerprocessor import sampling as s

_RANDOMNESS_ATTR = "sampling.randomness"
_THRESHOLD_ATTR = "sampling.threshold"


class _Inconsistent(ValueError):
    """An arriving threshold the randomness contradicts (the item should not have been kept)."""


class _Randomness(ValueError):
    """An error found after the randomness was known (it still decides the item)."""

    def __init__(self, message: str, randomness: int, policy: str) -> None:
        super().__init__(message)
        self.randomness = randomness
        self.policy = policy


class Sampler:
    """One configuration's decision rule (shared by the traces and the logs instance)."""

    def __init__(self, config: Any, logs: bool) -> None:
        pct = float(config.sampling_percentage)
        mode = config.mode
        if not mode:
            if config.hash_seed != 0 or (logs and config.attribute_source != "traceID"):
                mode = "hash_seed"
            else:
                mode = "proportional"
        self.mode = mode
        self.seed = int(config.hash_seed)
        self.precision = int(config.sampling_precision)
        self.fail_closed = bool(config.fail_closed)
        self.from_attribute = config.from_attribute
        self.trace_id_source = config.attribute_source == "traceID"
        self.priority_attribute = config.sampling_priority
        pct = min(pct, 100.0)
        self.never = pct == 0
        ratio = max(pct / 100.0, s.MIN_SAMPLING_PROBABILITY)
        self.ratio = ratio
        self.threshold = s.NEVER
        if self.never:
            return
        if mode == "hash_seed":
            self.threshold = s.hash_seed_threshold(pct)
            self.never = self.threshold == s.NEVER
        elif mode == "equalizing":
            th = s.probability_to_threshold(ratio, self.precision)
            self.threshold = s.ALWAYS if th is None else th

    def decide(self, arriving: int | None) -> int:
        """The threshold for an item whose carrier holds ``arriving`` (``None``: none)."""
        if self.never:
            return s.NEVER
        if self.mode == "proportional":
            incoming = 1.0 if arriving is None else s.threshold_probability(arriving)
            th = s.probability_to_threshold(incoming * self.ratio, self.precision)
            return s.NEVER if th is None else th
        if self.mode == "equalizing" and arriving is not None and arriving > self.threshold:
            return arriving  # arrived sampled at a lower probability: keep as it is
        return self.threshold


class ProbabilisticSamplerProcessor(Component):
    """Keeps the spans (log records) whose randomness passes the threshold; writes the
    threshold (``th``) into the tracestate (``sampling.threshold`` attribute of log records)
    of what it keeps, as the Collector does. Never changes the payload it is given."""

    mutates_data = False

    def __init__(
        self, settings: CreateSettings, config: Any, signal: Signal, nxt: Consumer
    ) -> None:
        self.settings = settings
        self.signal = signal
        self.next = nxt
        self.sampler = Sampler(config, logs=signal is Signal.LOGS)
        what = "traces" if signal is Signal.TRACES else "logs"
        self._counter = settings.telemetry.service.counter(
            f"otelcol_processor_probabilistic_sampler_count_{what}_sampled",
            f"Count of {what} (spans or log records) that were sampled or not, by policy.",
            ("processor", "policy", "sampled"),
        )
        self._children: dict[tuple[str, bool], Any] = {}

    def _count(self, policy: str, sampled: bool) -> None:
        key = (policy, sampled)
        child = self._children.get(key)
        if child is None:
            child = self._counter.labels(self.settings.name, policy, "true" if sampled else "false")
            self._children[key] = child
        child.inc()

    async def consume(self, data: Payload) -> None:
        if not data.item_count():
            return
        kept = self.process(data)
        if kept is not None:
            await self.next.consume(kept)

    def _error(self, exc: Exception) -> None:
        self.settings.log_limited(
            logging.WARNING if not isinstance(exc, _Inconsistent) else logging.INFO,
            "%s sampler: %s",
            "traces" if self.signal is Signal.TRACES else "logs",
            exc,
            key=f"sampler/{type(exc).__name__}",
        )

    def process(self, data: Payload) -> Payload | None:
        """The sampled part of ``data`` as a new payload (``None`` when nothing is kept)."""
        msg = data.message()
        decide: Callable[[Any], bool]
        if self.signal is Signal.TRACES:
            groups, scopes, items = "resource_spans", "scope_spans", "spans"
            decide = self._span
        else:
            groups, scopes, items = "resource_logs", "scope_logs", "log_records"
            decide = self._record
        out = type(msg)()
        kept = 0
        for group in getattr(msg, groups):
            group_out = None
            for scope in getattr(group, scopes):
                scope_out = None
                for item in getattr(scope, items):
                    candidate = type(item)()
                    candidate.CopyFrom(item)
                    if not decide(candidate):
                        continue
                    if scope_out is None:
                        if group_out is None:
                            group_out = getattr(out, groups).add(schema_url=group.schema_url)
                            group_out.resource.CopyFrom(group.resource)
                        scope_out = getattr(group_out, scopes).add(schema_url=scope.schema_url)
                        scope_out.scope.CopyFrom(scope.scope)
                    getattr(scope_out, items).append(candidate)
                    kept += 1
        if not kept:
            return None
        result = type(data).from_message(out)
        result.whole_traces = data.whole_traces  # whole traces are kept or dropped whole
        return result.carry_acks(data.ack_tokens)

    # -- traces --------------------------------------------------------------------------------
    def _span(self, span: Any) -> bool:
        sampler = self.sampler
        priority = _priority(span.attributes)
        if priority == 0:
            self._count("sampling_priority", False)
            return False
        policy = "missing_randomness"
        randomness = 0
        carrier: s.TraceState | None
        threshold: int
        try:
            carrier = s.TraceState(span.trace_state)
        except ValueError as exc:  # unparseable tracestate: decided without a carrier
            self._error(exc)
            carrier = None
            if sampler.mode == "hash_seed":
                randomness = s.randomness_from_bytes(bytes(span.trace_id), sampler.seed)
                policy = "trace_id_hash"
            threshold = s.NEVER if sampler.fail_closed else s.ALWAYS
        else:
            try:
                randomness, policy = self._span_randomness(span, carrier)
                arriving = carrier.threshold if carrier.th else None
                if arriving is not None and randomness < arriving:
                    carrier.th, carrier.threshold = "", s.ALWAYS
                    raise _Inconsistent(
                        "inconsistent arriving threshold: item should not have been sampled"
                    )
                threshold = sampler.decide(arriving)
            except _Randomness as exc:
                randomness, policy = exc.randomness, exc.policy
                self._error(exc)
                threshold = s.NEVER if sampler.fail_closed else s.ALWAYS
            except ValueError as exc:
                self._error(exc)
                threshold = s.NEVER if sampler.fail_closed else s.ALWAYS
        if priority == 1:
            threshold = s.ALWAYS
        sampled = threshold != s.NEVER and randomness >= threshold
        if sampled and carrier is not None:
            if not (carrier.th and carrier.threshold > threshold):
                carrier.th, carrier.threshold = s.tvalue(threshold), threshold
            span.trace_state = carrier.serialize()
        self._count("sampling_priority" if priority == 1 else policy, sampled)
        return sampled

    def _span_randomness(self, span: Any, carrier: s.TraceState) -> tuple[int, str]:
        sampler = self.sampler
        if sampler.mode == "hash_seed":
            randomness = s.randomness_from_bytes(bytes(span.trace_id), sampler.seed)
            if carrier.rv or carrier.th:
                what = "randomness" if carrier.rv else "threshold"
                raise _Randomness(
                    f"span has sampling {what}, equalizing or proportional mode recommended",
                    randomness,
                    "trace_id_hash",
                )
            carrier.rv, carrier.rnd = s.rvalue(randomness), randomness
            return randomness, "trace_id_hash"
        if carrier.rv:
            return carrier.rnd, "sampling_randomness"
        if any(span.trace_id):
            return s.trace_id_randomness(bytes(span.trace_id)), "trace_id_w3c"
        raise ValueError("missing randomness")

    # -- logs ----------------------------------------------------------------------------------
    def _record(self, record: Any) -> bool:
        sampler = self.sampler
        policy = "missing_randomness"
        randomness = 0
        attrs = record.attributes
        error: Exception | None = None
        th_text = _str_attr(attrs, _THRESHOLD_ATTR)
        rv_text = _str_attr(attrs, _RANDOMNESS_ATTR)
        arriving: int | None = None
        explicit: int | None = None
        carrier_ok = True
        try:
            if th_text:
                arriving = s.parse_tvalue(th_text)
            if rv_text:
                explicit = s.parse_rvalue(rv_text)
        except ValueError as exc:
            error, carrier_ok, arriving, explicit = exc, False, None, None
        set_rv: int | None = None
        if sampler.mode == "hash_seed":
            if sampler.trace_id_source:
                randomness = s.randomness_from_bytes(bytes(record.trace_id), sampler.seed)
                policy = "trace_id_hash"
            elif sampler.from_attribute:
                value = _attr_bytes(attrs, sampler.from_attribute)
                if value is not None:
                    randomness = s.randomness_from_bytes(value, sampler.seed)
                    policy = sampler.from_attribute
            if error is None and carrier_ok:
                if explicit is not None:
                    error = ValueError("log record has sampling randomness, equalizing or "
                                       "proportional mode recommended")  # fmt: skip
                elif arriving is not None:
                    error = ValueError("log record has sampling threshold, equalizing or "
                                       "proportional mode recommended")  # fmt: skip
                elif policy != "missing_randomness":
                    set_rv = randomness
        elif carrier_ok and explicit is not None:
            randomness, policy = explicit, "sampling_randomness"
        elif any(record.trace_id):
            randomness, policy = s.trace_id_randomness(bytes(record.trace_id)), "trace_id_w3c"
        elif sampler.from_attribute:
            value = _attr_bytes(attrs, sampler.from_attribute)
            if value is not None:
                randomness = s.randomness_from_bytes(value, sampler.seed)
                policy = sampler.from_attribute
        if error is None and policy == "missing_randomness":
            error = ValueError("missing randomness")
        if error is None and arriving is not None and randomness < arriving:
            _remove_attr(attrs, _THRESHOLD_ATTR)
            arriving = None
            error = _Inconsistent("inconsistent arriving threshold")
        if error is not None:
            self._error(error)
            threshold = s.NEVER if sampler.fail_closed else s.ALWAYS
        else:
            threshold = sampler.decide(arriving)
        if sampler.priority_attribute:
            pth = _priority_threshold(attrs, sampler.priority_attribute, sampler.precision)
            if pth < threshold:
                threshold = pth
        sampled = threshold != s.NEVER and randomness >= threshold
        if sampled and carrier_ok:
            if set_rv is not None:
                _put_str(attrs, _RANDOMNESS_ATTR, s.rvalue(set_rv))
            if not (arriving is not None and threshold < arriving):
                _put_str(attrs, _THRESHOLD_ATTR, s.tvalue(threshold))
        self._count(policy, sampled)
        return sampled


def _priority(attrs: Any) -> int:
    """``sampling.priority``: 0 never, 1 always, -1 no opinion (the OpenTracing convention)."""
    for kv in attrs:
        if kv.key != "sampling.priority":
            continue
        v = kv.value
        kind = v.WhichOneof("value")
        number: float | None = None
        if kind == "int_value":
            number = float(v.int_value)
        elif kind == "double_value":
            number = v.double_value
        elif kind == "string_value":
            try:
                number = float(v.string_value)
            except ValueError:
                number = None
        if number is None:
            return -1
        if number == 0:
            return 0
        return 1 if number > 0 else -1
    return -1


def _priority_threshold(attrs: Any, key: str, precision: int) -> int:
    for kv in attrs:
        if kv.key != key:
            continue
        kind = kv.value.WhichOneof("value")
        if kind == "double_value":
            p = kv.value.double_value / 100.0
        elif kind == "int_value":
            p = kv.value.int_value / 100.0
        else:
            return s.NEVER
        if p == 0:
            return s.NEVER
        th = s.probability_to_threshold(min(p, 1.0), precision)
        return s.NEVER if th is None else th
    return s.NEVER


def _str_attr(attrs: Any, key: str) -> str:
    for kv in attrs:
        if kv.key == key:
            return (
                str(kv.value.string_value) if kv.value.WhichOneof("value") == "string_value" else ""
            )
    return ""


def _attr_bytes(attrs: Any, key: str) -> bytes | None:
    for kv in attrs:
        if kv.key == key:
            v = kv.value
            kind = v.WhichOneof("value")
            if kind == "bytes_value":
                return bytes(v.bytes_value)
            return _as_string(v).encode()
    return None


def _as_string(v: Any) -> str:
    kind = v.WhichOneof("value")
    if kind == "string_value":
        return str(v.string_value)
    if kind == "bool_value":
        return "true" if v.bool_value else "false"
    if kind == "int_value":
        return str(v.int_value)
    if kind == "double_value":
        return repr(v.double_value)
    return ""


def _put_str(attrs: Any, key: str, value: str) -> None:
    for kv in attrs:
        if kv.key == key:
            kv.value.Clear()
            kv.value.string_value = value
            return
    attrs.add(key=key).value.string_value = value


def _remove_attr(attrs: Any, key: str) -> None:
    for i, kv in enumerate(attrs):
        if kv.key == key:
            del attrs[i]
            return
