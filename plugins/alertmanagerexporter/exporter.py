"""The running ``alertmanager`` exporter: log records to Alertmanager alerts (API v2).

Records of the ``anomaly`` connector (``anomaly.opened`` / ``escalated`` / ``closed``) and
records matching a configured condition update a table of active alerts when they arrive; what
changed is posted at once (through the exporter helper: queue, retry, one sender so that a
resolve never overtakes its alert), and every ``resend_interval`` all active alerts are posted
again with an ``endsAt`` four intervals ahead, as Prometheus does: Alertmanager keeps an alert
firing while it is re-sent, and resolves it by itself if the gateway goes away. A resolved
alert is posted once more with ``endsAt`` = the time it resolved.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import math
import re
import struct
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import aiohttp

from pipeline import (
    ClientAuthenticator,
    Component,
    ConsumeError,
    CreateSettings,
    ExporterHelper,
    Host,
    Logs,
    Payload,
    PermanentError,
    PreparedPayload,
    PreparedQueueCodec,
    RetryableError,
    Signal,
    client_authenticator,
    supervise,
)
from plugins.alertmanagerexporter.config import (
    LABEL_NAME,
    AlertmanagerExporterConfig,
    ConditionConfig,
    MatchConfig,
)

MAX_VALUE = 4096  # a label or annotation value is cut to this many characters
MAX_LABELS = 64  # labels taken from a record's anomaly.labels
VALID_FOR = 4  # endsAt of an active alert: this many resend intervals ahead
PLACEHOLDER = re.compile(r"\{([^{}]+)\}")
BAD_LABEL_CHARS = re.compile(r"[^a-zA-Z0-9_]")


class AlertBatch(PreparedPayload, Logs):
    """Records already translated: JSON arrays of alerts (one per change or resend; several
    once ``sending_queue.batch`` merged them), and the records (alerts, for a resend) each
    stands for.

    A batch of several is posted as one JSON array holding every array's alerts in order
    (:meth:`joined`): Alertmanager takes the alerts of a post in order, so a resolve still
    follows the alert it resolves."""

    __slots__ = ()
    description = "log records translated into alerts"

    @classmethod
    def join_chunks(cls, chunks: Sequence[bytes]) -> bytes:
        alerts = []
        for chunk in chunks:
            array = chunk.strip()
            if array[:1] != b"[" or array[-1:] != b"]":
                raise ValueError(f"not a JSON array of alerts: {chunk[:40]!r}")
            inner = array[1:-1].strip()
            if inner:
                alerts.append(inner)
        return b"[" + b", ".join(alerts) + b"]"

    @property
    def body(self) -> bytes:
        """The JSON array to post."""
        return self.joined()


class AlertBatchCodec(PreparedQueueCodec):
    """Batches in a persistent sending queue (see :class:`pipeline.PreparedQueueCodec`); also
    reads the records of earlier versions (item count, one JSON array)."""

    payload_class = AlertBatch
    _LEGACY = struct.Struct("<I")

    def decode_legacy(self, body: bytes) -> Payload:
        (count,) = self._LEGACY.unpack_from(body)
        return AlertBatch([body[self._LEGACY.size :]], count, [count])


@dataclass
class Alert:
    labels: dict[str, str]
    annotations: dict[str, str]
    starts_at: float
    last_seen: float
    resolve_after: float = 0.0  # conditions: resolved when not seen for this long
    ends_at: float | None = None  # set when resolved

    @property
    def fingerprint(self) -> str:
        return json.dumps(sorted(self.labels.items()))


def rfc3339(t: float) -> str:
    return datetime.fromtimestamp(t, UTC).isoformat().replace("+00:00", "Z")


def label_name(key: str) -> str:
    name = BAD_LABEL_CHARS.sub("_", key)
    if not name or name[0].isdigit():
        name = "_" + name
    return name


def _text(value: Any) -> str | None:
    kind = value.WhichOneof("value")
    if kind == "string_value":
        return str(value.string_value)
    if kind == "bool_value":
        return "true" if value.bool_value else "false"
    if kind == "int_value":
        return str(value.int_value)
    if kind == "double_value":
        return repr(value.double_value) if math.isfinite(value.double_value) else None
    if kind == "array_value":
        parts = [_text(v) for v in value.array_value.values]
        return "; ".join(p for p in parts if p)
    return None


def _camel(text: str) -> str:
    return "".join(p[:1].upper() + p[1:] for p in re.split(r"[^a-zA-Z0-9]+", text) if p)


class _Matcher:
    def __init__(self, config: MatchConfig) -> None:
        self.min_severity = config.min_number()
        self.event_name = config.event_name
        self.body = re.compile(config.body) if config.body else None
        self.exact = {k: v for k, v in config.attributes.items() if v[:1] != "~"}
        self.regex = {k: re.compile(v[1:]) for k, v in config.attributes.items() if v[:1] == "~"}

    def __call__(self, severity: int, event_name: str, body: str, attrs: dict[str, str]) -> bool:
        if severity < self.min_severity:
            return False
        if self.event_name is not None and event_name != self.event_name:
            return False
        if self.body is not None and self.body.search(body) is None:
            return False
        for k, v in self.exact.items():
            if attrs.get(k) != v:
                return False
        for k, rx in self.regex.items():
            got = attrs.get(k)
            if got is None or rx.fullmatch(got) is None:
                return False
        return True


class AlertmanagerExporter(Component):
    """See the module docstring."""

    mutates_data = False

    def __init__(self, settings: CreateSettings, config: AlertmanagerExporterConfig) -> None:
        self.settings = settings
        self.config = config
        self.clock: Callable[[], float] = time.time
        self.active: dict[str, Alert] = {}
        self.by_anomaly: dict[str, str] = {}  # anomaly.id -> fingerprint
        self.conditions = [
            (c, _Matcher(c.match), _Matcher(c.resolve) if c.resolve else None)
            for c in config.conditions
        ]
        self.helper = ExporterHelper(
            settings, Signal.LOGS, config, self._send, codec=AlertBatchCodec(Signal.LOGS)
        )
        self._session: aiohttp.ClientSession | None = None
        self._auth: ClientAuthenticator | None = None
        self._task: asyncio.Task[None] | None = None
        self._stop = asyncio.Event()
        svc = settings.telemetry.service
        self._active_gauge = svc.gauge(
            "otelcol_exporter_alertmanager_active_alerts",
            "Alerts the exporter keeps firing in Alertmanager.",
            ("exporter",),
        ).labels(settings.name)
        self._changes = svc.counter(
            "otelcol_exporter_alertmanager_alerts",
            "Alerts fired and resolved.",
            ("exporter", "state"),
        )
        self._unchanged = svc.counter(
            "otelcol_exporter_alertmanager_unchanged_log_records",
            "Log records consumed that changed no alert (matched no condition, or an alert "
            "already firing or already resolved): nothing posted for them.",
            ("exporter",),
        ).labels(settings.name)

    # -- records to alerts ----------------------------------------------------------------------
    def translate(self, data: Payload, now: float | None = None) -> list[Alert]:
        """Update the table with the records of ``data``; returns the alerts that changed
        (fired or resolved)."""
        if now is None:
            now = self.clock()
        changed: list[Alert] = []
        for rl in data.message().resource_logs:
            resource = {kv.key: t for kv in rl.resource.attributes if (t := _text(kv.value))}
            for sl in rl.scope_logs:
                for lr in sl.log_records:
                    attrs = dict(resource)
                    for kv in lr.attributes:
                        t = _text(kv.value)
                        if t is not None:
                            attrs[kv.key] = t
                    if self.config.anomalies.enabled and "anomaly.state" in attrs:
                        changed += self._anomaly(lr, attrs, now)
                    elif self.conditions:
                        changed += self._conditions(lr, attrs, now)
        self._active_gauge.set(len(self.active))
        return changed

    def _fire(self, alert: Alert) -> Alert | None:
        fp = alert.fingerprint
        old = self.active.get(fp)
        if old is not None:
            old.last_seen = alert.last_seen
            old.annotations = alert.annotations
            return None  # already firing: the next resend carries it
        if len(self.active) >= self.config.max_active:
            self.settings.telemetry.dropped(Signal.LOGS, 1, "max_active")
            self.settings.log_limited(
                30,
                "not firing alert %s: %d alerts active (max_active)",
                alert.labels.get("alertname"),
                len(self.active),
                key="max_active",
            )
            return None
        self.active[fp] = alert
        self._changes.labels(self.settings.name, "fired").inc()
        return alert

    def _resolve(self, fp: str, now: float) -> Alert | None:
        alert = self.active.pop(fp, None)
        if alert is None:
            return None
        alert.ends_at = now
        self._changes.labels(self.settings.name, "resolved").inc()
        return alert

    def _anomaly(self, lr: Any, attrs: dict[str, str], now: float) -> list[Alert]:
        state = attrs.get("anomaly.state")
        anomaly_id = attrs.get("anomaly.id", "")[:256]
        changed = []
        if state in ("escalated", "closed"):
            fp = self.by_anomaly.pop(anomaly_id, None)
            if fp is not None and (alert := self._resolve(fp, now)) is not None:
                changed.append(alert)
        if state not in ("opened", "escalated"):
            return changed
        atype = attrs.get("anomaly.type", "anomaly")
        metric = attrs.get("anomaly.metric_name", "")
        labels = dict(self.config.labels)
        for kv in lr.attributes:
            if kv.key == "anomaly.labels" and kv.value.WhichOneof("value") == "kvlist_value":
                for item in kv.value.kvlist_value.values[:MAX_LABELS]:
                    t = _text(item.value)
                    if t:
                        labels[label_name(item.key)] = t[:MAX_VALUE]
        if "service.name" in attrs:
            labels.setdefault("service", attrs["service.name"][:MAX_VALUE])
        labels["alertname"] = self.config.anomalies.alertname_prefix + _camel(atype)
        labels["severity"] = attrs.get("anomaly.severity", "warning")
        runbook = attrs.get("anomaly.runbook_url") or self.config.anomalies.runbook_url.replace(
            "{type}", atype
        ).replace("{metric}", metric)
        annotations = {
            "summary": f"{atype.replace('_', ' ').capitalize()} on {metric}",
            "description": attrs.get("anomaly.description", lr.body.string_value),
            "suggested_actions": attrs.get("anomaly.suggested_actions", ""),
            "runbook_url": runbook,
            "anomaly_id": anomaly_id,
            "detection_time": attrs.get("anomaly.detection_time", ""),
        }
        for key in ("anomaly.value", "anomaly.baseline.mean", "anomaly.baseline.stddev"):
            if key in attrs:
                annotations[key.removeprefix("anomaly.").replace(".", "_")] = attrs[key]
        alert = Alert(
            labels=labels,
            annotations={k: v[:MAX_VALUE] for k, v in annotations.items() if v},
            starts_at=now,
            last_seen=now,
        )
        fired = self._fire(alert)
        self.by_anomaly[anomaly_id] = alert.fingerprint
        if fired is not None:
            changed.append(fired)
        return changed

    def _conditions(self, lr: Any, attrs: dict[str, str], now: float) -> list[Alert]:
        changed = []
        severity = int(lr.severity_number)
        event = str(lr.event_name)
        body = _text(lr.body) or ""
        for cond, match, resolve in self.conditions:
            fires = match(severity, event, body, attrs)
            resolves = not fires and resolve is not None and resolve(severity, event, body, attrs)
            if not (fires or resolves):
                continue
            labels = self._labels(cond, attrs)
            alert = Alert(
                labels=labels,
                annotations=self._annotations(cond, lr, body, attrs),
                starts_at=now,
                last_seen=now,
                resolve_after=cond.resolve_after,
            )
            if fires:
                if (a := self._fire(alert)) is not None:
                    changed.append(a)
            elif (a := self._resolve(alert.fingerprint, now)) is not None:
                changed.append(a)
        return changed

    def _labels(self, cond: ConditionConfig, attrs: dict[str, str]) -> dict[str, str]:
        labels = {**self.config.labels, **cond.labels}
        for name, key in cond.label_attributes.items():
            if attrs.get(key):
                labels[name] = attrs[key][:MAX_VALUE]
        labels["alertname"] = cond.name
        return labels

    @staticmethod
    def _annotations(
        cond: ConditionConfig, lr: Any, body: str, attrs: dict[str, str]
    ) -> dict[str, str]:
        values = {**attrs, "body": body, "severity": lr.severity_text or str(lr.severity_number)}
        out = {}
        for name, template in cond.annotations.items():
            text = PLACEHOLDER.sub(lambda m: values.get(m.group(1), ""), template)
            if text:
                out[name] = text[:MAX_VALUE]
        return out

    # -- sending ---------------------------------------------------------------------------------
    def _batch(self, alerts: list[Alert], now: float, items: int) -> AlertBatch:
        valid_until = now + VALID_FOR * self.config.resend_interval
        doc = []
        for a in alerts:
            entry: dict[str, Any] = {
                "labels": a.labels,
                "annotations": a.annotations,
                "startsAt": rfc3339(a.starts_at),
                "endsAt": rfc3339(a.ends_at if a.ends_at is not None else valid_until),
            }
            if self.config.generator_url:
                entry["generatorURL"] = self.config.generator_url
            doc.append(entry)
        return AlertBatch([json.dumps(doc).encode()], items, [items])

    async def consume(self, data: Payload) -> None:
        # Admitted before the table changes (the helper's rule, in its sizer's units, what the
        # batcher holds included): refused, the records come again and must find the table as
        # it was (a fire found already active, or a resolve found gone, would post nothing).
        await self.helper.admit(data.item_count())
        now = self.clock()
        changed = self.translate(data, now)  # no await between: the admission holds
        if not changed:
            # consumed, not dropped: counted apart from the sent ones (a payload that changed
            # an alert counts its records in the helper's otelcol_exporter_sent_log_records)
            self._unchanged.inc(data.item_count())
            return
        try:
            await self.helper.consume(self._batch(changed, now, data.item_count()))
        except RetryableError as exc:
            # The table changed (a persistent queue that cannot write, or a failed send
            # without a queue, both counted by the helper): not to be sent again upstream;
            # the active alerts go out again with the next resend.
            raise PermanentError(f"{exc} (the alert table already changed: not retried)") from exc

    async def resend(self, now: float | None = None) -> int:
        """Resolve condition alerts not seen for their ``resolve_after``, then post every
        active alert (and those just resolved); returns the number of alerts posted."""
        if now is None:
            now = self.clock()
        refusal = self.helper.refusal()
        if refusal is not None:
            # skipped before anything resolves: the next resend resolves and posts them
            self.settings.log_limited(
                30, "the resend of active alerts is skipped: %s", refusal, key="resend"
            )
            return 0
        stale = [
            fp
            for fp, a in self.active.items()
            if a.resolve_after > 0 and now - a.last_seen >= a.resolve_after
        ]
        resolved = [a for fp in stale if (a := self._resolve(fp, now)) is not None]
        alerts = [*self.active.values(), *resolved]
        self._active_gauge.set(len(self.active))
        if not alerts:
            return 0
        try:
            await self.helper.consume(self._batch(alerts, now, len(alerts)))
        except ConsumeError as exc:
            self.settings.log_limited(30, "resend of active alerts refused: %s", exc, key="resend")
            return 0
        return len(alerts)

    async def _send(self, data: Payload) -> None:
        assert isinstance(data, AlertBatch)
        if self._session is None:
            self._session = aiohttp.ClientSession(
                timeout=aiohttp.ClientTimeout(total=self.config.timeout or None)
            )
        headers = {**self.config.headers, "Content-Type": "application/json"}
        if self._auth is not None:
            headers.update(await self._auth.request_headers())
        url = self.config.url()
        try:
            body = data.joined()
        except ValueError as exc:  # a damaged queue entry
            raise PermanentError(f"cannot join the alerts of a batch: {exc}") from None
        try:
            async with self._session.post(url, data=body, headers=headers) as resp:
                if resp.status < 300:
                    return
                text = (await resp.text(errors="replace"))[:500].strip()
        except (aiohttp.ClientError, OSError, TimeoutError) as exc:
            raise RetryableError(f"{url}: {type(exc).__name__}: {exc}") from None
        message = f"{url} answered {resp.status}: {text}"
        if resp.status == 429 or resp.status >= 500:
            raise RetryableError(message)
        raise PermanentError(message)

    async def _run(self) -> None:
        while not self._stop.is_set():
            try:
                async with asyncio.timeout(self.config.resend_interval):
                    await self._stop.wait()
            except TimeoutError:
                await self.resend()

    async def start(self, host: Host) -> None:
        self._auth = client_authenticator(host, self.config.auth, self.settings.name)
        await self.helper.start(host)
        self._stop.clear()
        self._task = supervise(self.settings, host, "resend", self._run)

    async def shutdown(self) -> None:
        self._stop.set()
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        try:
            await self.helper.shutdown()
        finally:
            session, self._session = self._session, None
            if session is not None:
                await session.close()


__all__ = ["LABEL_NAME", "AlertBatch", "AlertmanagerExporter"]
