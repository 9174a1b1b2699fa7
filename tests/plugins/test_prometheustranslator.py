"""OTel → Prometheus name and label translation rules."""

from __future__ import annotations

import pytest
from opentelemetry.proto.common.v1 import common_pb2
from opentelemetry.proto.resource.v1 import resource_pb2

from plugins.prometheustranslator import (
    MetricKind,
    attributes_to_labels,
    job_and_instance,
    label_name,
    metric_name,
    resource_target_info_labels,
    unit_name,
)

G, C, U, H = MetricKind.GAUGE, MetricKind.COUNTER, MetricKind.UPDOWN, MetricKind.HISTOGRAM


@pytest.mark.parametrize(
    ("name", "unit", "kind", "expected"),
    [
        ("http.server.duration", "s", H, "http_server_duration_seconds"),
        ("process.memory.rss", "By", G, "process_memory_rss_bytes"),
        ("network.io", "By/s", G, "network_io_bytes_per_second"),
        ("requests", "1/s", G, "requests_per_second"),
        ("cpu.utilization", "1", G, "cpu_utilization_ratio"),
        ("cpu_usage_ratio", "1", G, "cpu_usage_ratio"),
        ("items", "1", C, "items_total"),
        ("requests", "", C, "requests_total"),
        ("requests_total", "", C, "requests_total"),
        ("agent.workflow.executions", "{execution}", C, "agent_workflow_executions_total"),
        ("response_time_seconds", "s", G, "response_time_seconds"),
        ("cpu_seconds_total", "s", C, "cpu_seconds_total"),
        ("latency", "ms", H, "latency_milliseconds"),
        ("active.connections", "", U, "active_connections"),
        ("metric@@##$$name", "", G, "metric_name"),
        ("123_requests", "", C, "_123_requests_total"),
        ("custom", "By/{custom}", G, "custom_bytes"),
        ("temp", "Cel", G, "temp_celsius"),
        ("weird", "unit@with#special/chars", G, "weird_unit_with_special_per_chars"),
    ],
)
def test_metric_names_with_suffixes(name: str, unit: str, kind: MetricKind, expected: str) -> None:
    assert metric_name(name, unit, kind) == expected


def test_namespace_is_prefixed() -> None:
    assert metric_name("requests", "1/s", C, namespace="app") == "app_requests_per_second_total"
    assert metric_name("123_requests", "", C, namespace="app") == "app_123_requests_total"


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("simple_metric", "simple_metric"),
        ("metric@with#special$chars", "metric_with_special_chars"),
        ("123metric", "_123metric"),
        ("requests", "requests"),  # no _total without suffixes
        ("@#$%", ""),
        ("a.b:c", "a_b:c"),
    ],
)
def test_metric_names_without_suffixes(name: str, expected: str) -> None:
    assert metric_name(name, "s", C, add_suffixes=False) == expected


def test_unit_names() -> None:
    assert unit_name("s") == "seconds"
    assert unit_name("By/s") == "bytes_per_second"
    assert unit_name("1") == ""
    assert unit_name("{request}") == ""
    assert unit_name("1/s") == "per_second"


@pytest.mark.parametrize(
    ("key", "expected"),
    [
        ("http.method", "http_method"),
        ("0digit", "key_0digit"),
        ("_private", "key_private"),
        ("__reserved", "__reserved"),
        ("ok_name", "ok_name"),
        ("dash-and space", "dash_and_space"),
    ],
)
def test_label_names(key: str, expected: str) -> None:
    assert label_name(key) == expected


def _kv(key: str, value: object) -> common_pb2.KeyValue:
    kv = common_pb2.KeyValue(key=key)
    if isinstance(value, bool):
        kv.value.bool_value = value
    elif isinstance(value, int):
        kv.value.int_value = value
    elif isinstance(value, float):
        kv.value.double_value = value
    elif isinstance(value, list):
        kv.value.array_value.values.add().string_value = str(value[0])
    else:
        kv.value.string_value = str(value)
    return kv


def test_colliding_labels_are_merged_in_key_order() -> None:
    attrs = [_kv("foo_bar", "b"), _kv("foo.bar", "a"), _kv("n", 3), _kv("ok", True)]
    labels = attributes_to_labels(attrs)
    assert labels == {"foo_bar": "a;b", "n": "3", "ok": "true"}


def test_arrays_become_json_and_empty_values_are_left_out() -> None:
    labels = attributes_to_labels([_kv("tags", ["x"]), _kv("empty", "")])
    assert labels == {"tags": '["x"]'}


def test_job_instance_and_target_info() -> None:
    resource = resource_pb2.Resource(
        attributes=[
            _kv("service.name", "planner"),
            _kv("service.namespace", "agents"),
            _kv("service.instance.id", "p-1"),
            _kv("host.name", "node-a"),
        ]
    )
    attrs = {kv.key: kv.value.string_value for kv in resource.attributes}
    assert job_and_instance(attrs) == ("agents/planner", "p-1")
    assert job_and_instance({"service.name": "x"}) == ("x", "")
    assert resource_target_info_labels(resource) == {"host_name": "node-a"}
