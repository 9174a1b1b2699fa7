"""OpenTelemetry → Prometheus translation, shared by the ``prometheus`` and
``prometheusremotewrite`` exporters.

It follows the OpenTelemetry specification's "Prometheus and OpenMetrics compatibility" rules
as the Collector's ``pkg/translator/prometheus`` applies them:

* metric names: characters outside ``[a-zA-Z0-9_:]`` become ``_`` (runs collapse into one);
  a leading digit gets a ``_`` prefix; the namespace is prepended;
* with ``add_metric_suffixes`` (the default), the unit becomes a suffix (``s`` → ``_seconds``,
  ``By`` → ``_bytes``, ``By/s`` → ``_bytes_per_second``, ``{requests}`` annotations dropped),
  gauges with unit ``1`` get ``_ratio`` and monotonic sums get ``_total``, each only once;
* label names: invalid characters become ``_``, a leading digit gets ``key_``, a single leading
  ``_`` gets ``key``; attributes whose names collide after this are merged, values joined with
  ``;`` in the order of the original keys;
* the resource becomes ``job`` (``service.namespace/service.name``) and ``instance``
  (``service.instance.id``) on every series, and its other attributes the labels of
  ``target_info``.

This is a helper package: it registers no component.
"""

from __future__ import annotations

import enum
import functools
import re
from collections.abc import Iterable, Mapping
from typing import Any

from plugins._anyvalue import any_value_to_string

__all__ = [
    "MetricKind",
    "any_value_to_string",
    "attributes_to_labels",
    "job_and_instance",
    "label_name",
    "metric_kind",
    "metric_name",
    "resource_target_info_labels",
    "unit_name",
]

_UNITS = {
    # time
    "d": "days",
    "h": "hours",
    "min": "minutes",
    "s": "seconds",
    "ms": "milliseconds",
    "us": "microseconds",
    "ns": "nanoseconds",
    # bytes
    "By": "bytes",
    "KiBy": "kibibytes",
    "MiBy": "mebibytes",
    "GiBy": "gibibytes",
    "TiBy": "tibibytes",
    "KBy": "kilobytes",
    "MBy": "megabytes",
    "GBy": "gigabytes",
    "TBy": "terabytes",
    # SI
    "m": "meters",
    "V": "volts",
    "A": "amperes",
    "J": "joules",
    "W": "watts",
    "g": "grams",
    # misc
    "Cel": "celsius",
    "Hz": "hertz",
    "1": "",
    "%": "percent",
}
_PER_UNITS = {
    "s": "second",
    "m": "minute",
    "h": "hour",
    "d": "day",
    "w": "week",
    "mo": "month",
    "y": "year",
}
_NON_ALNUM = re.compile(r"[^a-zA-Z0-9]+")
_INVALID_LABEL = re.compile(r"[^a-zA-Z0-9_]")
_ANNOTATION = re.compile(r"\{[^}]*\}")


class MetricKind(enum.Enum):
    """What an OTLP metric becomes in Prometheus."""

    GAUGE = "gauge"
    COUNTER = "counter"  # a monotonic sum
    UPDOWN = "updown"  # a non-monotonic sum: exposed as a gauge
    HISTOGRAM = "histogram"
    EXPONENTIAL_HISTOGRAM = "exponential_histogram"
    SUMMARY = "summary"


def metric_kind(metric: Any) -> MetricKind | None:
    """The kind of a decoded OTLP ``Metric`` (``None`` when it carries no data)."""
    data = metric.WhichOneof("data")
    if data == "sum":
        return MetricKind.COUNTER if metric.sum.is_monotonic else MetricKind.UPDOWN
    if data is None:
        return None
    return MetricKind(data)


def _tokens(text: str) -> list[str]:
    return [t for t in _NON_ALNUM.split(text) if t]


def _unit_parts(unit: str) -> tuple[str, str]:
    """``(main, per)`` Prometheus unit words for an OTel unit, annotations dropped."""
    unit = _ANNOTATION.sub("", unit).strip()
    if not unit:
        return "", ""
    main, _, per = unit.partition("/")
    main, per = main.strip(), per.strip()
    main_word = _UNITS.get(main, main)
    per_word = _PER_UNITS.get(per, per) if per else ""
    return "_".join(_tokens(main_word)), "_".join(_tokens(per_word))


def unit_name(unit: str) -> str:
    """The Prometheus unit (``seconds``, ``bytes_per_second``; ``""`` for ``1``)."""
    main, per = _unit_parts(unit)
    if per:
        return f"{main}_per_{per}" if main else f"per_{per}"
    return main


def metric_name(
    name: str, unit: str, kind: MetricKind, namespace: str = "", add_suffixes: bool = True
) -> str:
    """The Prometheus metric name of an OTLP metric (for counters, with ``_total``)."""
    if add_suffixes:
        tokens = _tokens(name)
        main, per = _unit_parts(unit)
        if main and main not in tokens:
            tokens += main.split("_")
        if per and not ("per" in tokens and per.split("_")[-1] in tokens):
            tokens += ["per", *per.split("_")]
        if kind is MetricKind.COUNTER:
            tokens = [t for t in tokens if t != "total"] + ["total"]
        if _ANNOTATION.sub("", unit).strip() == "1" and kind is MetricKind.GAUGE:
            tokens = [t for t in tokens if t != "ratio"] + ["ratio"]
        if namespace:
            tokens = _tokens(namespace) + tokens
        out = "_".join(tokens)
    else:
        out = re.sub(r"[^a-zA-Z0-9_:]+", "_", name)
        out = re.sub(r"__+", "_", out)
        if namespace:
            ns = re.sub(r"__+", "_", re.sub(r"[^a-zA-Z0-9_:]+", "_", namespace)).strip("_")
            out = f"{ns}_{out}" if out else ns
        if out.strip("_") == "":
            out = ""
    if out and out[0].isdigit():
        out = "_" + out
    return out


@functools.lru_cache(maxsize=8192)
def label_name(key: str) -> str:
    """A valid Prometheus label name for an attribute key."""
    if not key:
        return key
    out = _INVALID_LABEL.sub("_", key)
    if out[0].isdigit():
        out = "key_" + out
    elif out.startswith("_") and not out.startswith("__"):
        out = "key" + out
    return out


def attributes_to_labels(
    attributes: Iterable[Any], skip: frozenset[str] = frozenset()
) -> dict[str, str]:
    """OTLP ``KeyValue``s as labels: names sanitized, collisions merged with ``;`` (in the
    order of the original keys), empty values left out."""
    pairs = sorted(((kv.key, kv.value) for kv in attributes if kv.key not in skip), key=_first)
    out: dict[str, str] = {}
    for key, value in pairs:
        text = any_value_to_string(value)
        name = label_name(key)
        if not name or text == "":
            continue
        out[name] = f"{out[name]};{text}" if name in out else text
    return out


def _first(pair: tuple[str, Any]) -> str:
    return pair[0]


SERVICE_NAME = "service.name"
SERVICE_NAMESPACE = "service.namespace"
SERVICE_INSTANCE_ID = "service.instance.id"
_IDENTIFYING = frozenset({SERVICE_NAME, SERVICE_NAMESPACE, SERVICE_INSTANCE_ID})


def job_and_instance(resource_attributes: Mapping[str, str]) -> tuple[str, str]:
    """``job`` (``namespace/name`` or ``name``) and ``instance`` of a resource."""
    name = resource_attributes.get(SERVICE_NAME, "")
    namespace = resource_attributes.get(SERVICE_NAMESPACE, "")
    job = f"{namespace}/{name}" if namespace and name else name
    return job, resource_attributes.get(SERVICE_INSTANCE_ID, "")


def resource_strings(resource: Any) -> dict[str, str]:
    """A resource's attributes as strings, keyed by their original names."""
    return {kv.key: any_value_to_string(kv.value) for kv in resource.attributes}


def resource_target_info_labels(resource: Any) -> dict[str, str]:
    """The labels of ``target_info`` for a resource, besides ``job`` and ``instance``."""
    return attributes_to_labels(resource.attributes, skip=_IDENTIFYING)
