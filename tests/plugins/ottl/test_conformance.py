# ruff: noqa: E501  (the documentation's statements are quoted whole)
"""Conformance: the examples of the Collector-contrib documentation (processor/transformprocessor,
filterprocessor, attributesprocessor, resourceprocessor READMEs and pkg/ottl/ottlfuncs), each run
through a gateway (OTLP in, the processor, OTLP out) and compared with what the documentation
says the result is. ``UNSUPPORTED`` lists the documented examples this gateway refuses, each
with the reason; the test checks that ``pipeline validate`` refuses them with a clear error.
"""

from __future__ import annotations

from typing import Any

import pytest

from pipeline import ConfigErrors, Signal
from tests.plugins.ottl.support import logs, metrics, through_gateway, traces
from tests.support import config_from_text

T, M, L = Signal.TRACES, Signal.METRICS, Signal.LOGS

FLATTEN_IN = {
    "name": "test",
    "address": {"street": "first", "house": 1234},
    "occupants": ["user 1", "user 2"],
}

# (id, processors, signal, input, check(items))
CASES: list[tuple[str, dict[str, Any], Signal, Any, Any]] = [
    # -- ottlfuncs editors ---------------------------------------------------------------------
    (
        "delete_key",
        {
            "transform": {
                "log_statements": [
                    'delete_key(log.attributes, "http.request.header.authorization")'
                ]
            }
        },
        L,
        logs([{"attributes": {"http.request.header.authorization": "secret", "k": "v"}}]),
        lambda out: out[0]["attributes"] == {"k": "v"},
    ),
    (
        "delete_matching_keys",
        {
            "transform": {
                "log_statements": ['delete_matching_keys(log.attributes, "(?i).*password.*")']
            }
        },
        L,
        logs([{"attributes": {"db.PASSWORD": "x", "user_password": "y", "user": "z"}}]),
        lambda out: out[0]["attributes"] == {"user": "z"},
    ),
    (
        "keep_matching_keys",
        {
            "transform": {
                "log_statements": ['keep_matching_keys(log.attributes, "(?i).*version.*")']
            }
        },
        L,
        logs([{"attributes": {"app.Version": "1", "other": "2"}}]),
        lambda out: out[0]["attributes"] == {"app.Version": "1"},
    ),
    (
        "flatten",
        {"transform": {"log_statements": ["flatten(log.body)"]}},
        L,
        logs([{"body": FLATTEN_IN}]),
        lambda out: (
            out[0]["body"]
            == {
                "name": "test",
                "address.street": "first",
                "address.house": 1234,
                "occupants.0": "user 1",
                "occupants.1": "user 2",
            }
        ),
    ),
    (
        "flatten with prefix",
        {"transform": {"log_statements": ['flatten(log.body, "app")']}},
        L,
        logs([{"body": FLATTEN_IN}]),
        lambda out: (
            out[0]["body"]
            == {
                "app.name": "test",
                "app.address.street": "first",
                "app.address.house": 1234,
                "app.occupants.0": "user 1",
                "app.occupants.1": "user 2",
            }
        ),
    ),
    (
        "flatten depth 2",
        {"transform": {"log_statements": ["flatten(log.body, depth=2)"]}},
        L,
        logs([{"body": {"0": {"1": {"2": {"3": {"4": "value"}}}}}}]),
        lambda out: out[0]["body"] == {"0.1.2": {"3": {"4": "value"}}},
    ),
    (
        "keep_keys",
        {"transform": {"trace_statements": ['keep_keys(span.attributes, ["http.method"])']}},
        T,
        traces([{"attributes": {"http.method": "GET", "http.url": "/x"}}]),
        lambda out: out[0]["attributes"] == {"http.method": "GET"},
    ),
    (
        "limit",
        {
            "transform": {
                "trace_statements": ['limit(span.attributes, 2, ["http.host", "http.method"])']
            }
        },
        T,
        traces([{"attributes": {"a": 1, "http.host": "h", "b": 2, "http.method": "GET"}}]),
        lambda out: out[0]["attributes"] == {"http.host": "h", "http.method": "GET"},
    ),
    (
        "merge_maps insert",
        {
            "transform": {
                "log_statements": ['merge_maps(log.attributes, resource.attributes, "insert")']
            }
        },
        L,
        logs([{"attributes": {"service.name": "mine"}}], {"service.name": "svc", "host": "h"}),
        lambda out: out[0]["attributes"] == {"service.name": "mine", "host": "h"},
    ),
    (
        "merge_maps ParseJSON upsert",
        {
            "transform": {
                "log_statements": ['merge_maps(log.attributes, ParseJSON(log.body), "upsert")']
            }
        },
        L,
        logs([{"body": '{"user": "ann", "n": 2}', "attributes": {"user": "bob"}}]),
        lambda out: out[0]["attributes"] == {"user": "ann", "n": 2.0},
    ),
    (
        "replace_all_matches",
        {
            "transform": {
                "log_statements": [
                    'replace_all_matches(resource.attributes, "/user/*/list/*", "/user/{userId}/list/{listId}")'
                ]
            }
        },
        L,
        logs([{}], {"path": "/user/4/list/7", "other": "/user/4/x"}),
        lambda out: (
            out[0]["resource"] == {"path": "/user/{userId}/list/{listId}", "other": "/user/4/x"}
        ),
    ),
    (
        "replace_all_patterns value",
        {
            "transform": {
                "log_statements": [
                    'replace_all_patterns(resource.attributes, "value", "/account/\\\\d{4}", "/account/{accountId}")'
                ]
            }
        },
        L,
        logs([{}], {"url": "/account/1234/x"}),
        lambda out: out[0]["resource"] == {"url": "/account/{accountId}/x"},
    ),
    (
        "replace_all_patterns key with $$1",
        {
            "transform": {
                "log_statements": [
                    'replace_all_patterns(resource.attributes, "key", "^kube_([0-9A-Za-z]+_)", "k8s.$$1.")'
                ]
            }
        },
        L,
        logs([{}], {"kube_pod_name": "p"}),
        lambda out: out[0]["resource"] == {"k8s.pod_.name": "p"},
    ),
    (
        "replace_match",
        {
            "transform": {
                "trace_statements": [
                    'replace_match(span.attributes["http.target"], "/user/*/list/*", "/user/{userId}/list/{listId}")'
                ]
            }
        },
        T,
        traces([{"attributes": {"http.target": "/user/12/list/3"}}]),
        lambda out: out[0]["attributes"]["http.target"] == "/user/{userId}/list/{listId}",
    ),
    (
        "replace_match with SHA256",
        {
            "transform": {
                "trace_statements": [
                    'replace_match(span.attributes["http.target"], "/user/*/list/*", "/user/{userId}/list/{listId}", SHA256, "/user/%s")'
                ]
            }
        },
        T,
        traces([{"attributes": {"http.target": "/user/12/list/3"}}]),
        lambda out: (
            out[0]["attributes"]["http.target"]
            == "/user/" + __import__("hashlib").sha256(b"/user/{userId}/list/{listId}").hexdigest()
        ),
    ),
    (
        "replace_pattern",
        {
            "transform": {
                "trace_statements": [
                    'replace_pattern(resource.attributes["process.command_line"], "password\\\\=[^\\\\s]*(\\\\s?)", "password=***")'
                ]
            }
        },
        T,
        traces([{}], {"process.command_line": "app --password=hunter2 --v"}),
        # the pattern takes the space after the password too (its group is not in the replacement)
        lambda out: out[0]["resource"]["process.command_line"] == "app --password=***--v",
    ),
    (
        "replace_pattern metric name $$1",
        {
            "transform": {
                "metric_statements": [
                    'replace_pattern(metric.name, "^kube_([0-9A-Za-z]+_)", "k8s.$$1.")'
                ]
            }
        },
        M,
        metrics([{"name": "kube_pod_status"}]),
        lambda out: out[0]["name"] == "k8s.pod_.status",
    ),
    (
        "set",
        {"transform": {"trace_statements": ['set(resource.attributes["http.path"], "/foo")']}},
        T,
        traces([{}]),
        lambda out: out[0]["resource"]["http.path"] == "/foo",
    ),
    (
        "set metric.name from resource",
        {
            "transform": {
                "metric_statements": ['set(metric.name, resource.attributes["http.route"])']
            }
        },
        M,
        metrics([{"name": "x"}], {"http.route": "/r"}),
        lambda out: out[0]["name"] == "/r",
    ),
    (
        "truncate_all",
        {"transform": {"log_statements": ["truncate_all(log.attributes, 5)"]}},
        L,
        logs([{"attributes": {"s": "abcdefgh", "n": 123456789}}]),
        lambda out: out[0]["attributes"] == {"s": "abcde", "n": 123456789},
    ),
    (
        "truncate_all with marker",
        {
            "transform": {
                "log_statements": ['truncate_all(log.attributes, 8, truncation_marker = "...")']
            }
        },
        L,
        logs([{"attributes": {"s": "abcdefghijk"}}]),
        lambda out: out[0]["attributes"] == {"s": "abcde..."},
    ),
    # -- ottlfuncs converters --------------------------------------------------------------------
    (
        "Concat",
        {
            "transform": {
                "trace_statements": [
                    'set(span.attributes["c"], Concat([span.attributes["http.method"], span.attributes["http.path"]], ": "))'
                ]
            }
        },
        T,
        traces([{"attributes": {"http.method": "GET", "http.path": "/a"}}]),
        lambda out: out[0]["attributes"]["c"] == "GET: /a",
    ),
    (
        "Split",
        {"transform": {"log_statements": ['set(log.attributes["parts"], Split(log.body, "|"))']}},
        L,
        logs([{"body": "A|B|C"}]),
        lambda out: out[0]["attributes"]["parts"] == ["A", "B", "C"],
    ),
    (
        "ToLowerCase / ToUpperCase",
        {
            "transform": {
                "metric_statements": [
                    "set(metric.name, ToLowerCase(metric.name))",
                    "set(metric.description, ToUpperCase(metric.name))",
                ]
            }
        },
        M,
        metrics([{"name": "MY_Metric"}]),
        lambda out: (out[0]["name"], out[0]["description"]) == ("my_metric", "MY_METRIC"),
    ),
    (
        "Substring",
        {"transform": {"log_statements": ['set(log.attributes["s"], Substring(log.body, 3, 4))']}},
        L,
        logs([{"body": "123456789"}]),
        lambda out: out[0]["attributes"]["s"] == "4567",
    ),
    (
        "SHA256 (demo redaction)",
        {
            "transform": {
                "trace_statements": [
                    {
                        "context": "span",
                        "statements": [
                            'set(attributes["user.hash"], SHA256(attributes["user.email"])) where attributes["user.email"] != nil',
                            'delete_key(attributes, "user.email") where attributes["user.email"] != nil',
                        ],
                    }
                ]
            }
        },
        T,
        traces([{"attributes": {"user.email": "a@b.c"}}, {"attributes": {}}]),
        lambda out: (
            out[0]["attributes"]
            == {"user.hash": __import__("hashlib").sha256(b"a@b.c").hexdigest()}
            and out[1]["attributes"] == {}
        ),
    ),
    (
        "Int / Double / String",
        {
            "transform": {
                "log_statements": [
                    'set(log.attributes["i"], Int("2"))',
                    'set(log.attributes["d"], Double("2.5"))',
                    'set(log.attributes["s"], String(log.attributes["n"]))',
                    'set(log.attributes["j"], Int(log.attributes["f"]))',
                ]
            }
        },
        L,
        logs([{"attributes": {"n": 7, "f": 1.9}}]),
        lambda out: (
            {k: out[0]["attributes"][k] for k in "idsj"} == {"i": 2, "d": 2.5, "s": "7", "j": 1}
        ),
    ),
    (
        "Len / IsString / IsInt",
        {
            "transform": {
                "log_statements": [
                    'set(log.attributes["len"], Len(log.body))',
                    'set(log.attributes["str"], IsString(log.body))',
                    'set(log.attributes["int"], IsInt(log.attributes["len"]))',
                ]
            }
        },
        L,
        logs([{"body": "hello"}]),
        lambda out: (
            {k: out[0]["attributes"][k] for k in ("len", "str", "int")}
            == {"len": 5, "str": True, "int": True}
        ),
    ),
    (
        "Duration / UnixNano / Now",
        {
            "transform": {
                "trace_statements": [
                    'set(span.attributes["slow"], true) where span.end_time - span.start_time > Duration("300ms")',
                    'set(span.attributes["future"], true) where UnixNano(span.start_time) > UnixNano(Now())',
                ]
            }
        },
        T,
        traces([{"start": 0, "end": 500_000_000}, {"start": 0, "end": 100_000_000}]),
        lambda out: out[0]["attributes"] == {"slow": True} and out[1]["attributes"] == {},
    ),
    (
        "TraceID / SpanID",
        {
            "filter": {
                "traces": {
                    "span": [
                        "span.trace_id == TraceID(0x000102030405060708090a0b0c0d0e0f) and span.span_id == SpanID(0x0101010101010101)"
                    ]
                }
            }
        },
        T,
        traces([{"name": "a"}, {"name": "b"}]),
        lambda out: [s["name"] for s in out] == ["b"],
    ),
    (
        "IsMatch",
        {"filter": {"logs": {"log_record": ['IsMatch(body, ".*password.*")']}}},
        L,
        logs([{"body": "my password is x"}, {"body": "ok"}]),
        lambda out: [r["body"] for r in out] == ["ok"],
    ),
    # -- transform README ------------------------------------------------------------------------
    (
        "transform basic config (traces)",
        {
            "transform": {
                "error_mode": "ignore",
                "trace_statements": [
                    'keep_keys(span.attributes, ["service.name", "service.namespace", "cloud.region", "process.command_line"])',
                    'replace_pattern(span.attributes["process.command_line"], "password\\\\=[^\\\\s]*(\\\\s?)", "password=***")',
                    "limit(span.attributes, 100, [])",
                    "truncate_all(span.attributes, 4096)",
                ],
            }
        },
        T,
        traces([{"attributes": {"process.command_line": "x --password=p", "drop": 1}}]),
        lambda out: out[0]["attributes"] == {"process.command_line": "x --password=***"},
    ),
    (
        "transform basic config (logs)",
        {
            "transform": {
                "log_statements": [
                    'set(log.severity_text, "FAIL") where log.body == "request failed"',
                    'set(log.body, log.attributes["http.route"])',
                ]
            }
        },
        L,
        logs([{"body": "request failed", "attributes": {"http.route": "/r"}}]),
        lambda out: (out[0]["severity_text"], out[0]["body"]) == ("FAIL", "/r"),
    ),
    (
        "transform advanced config with conditions",
        {
            "transform": {
                "metric_statements": [
                    {
                        "error_mode": "propagate",
                        "conditions": ["metric.type == METRIC_DATA_TYPE_SUM"],
                        "statements": ['set(metric.description, "Sum")'],
                    }
                ]
            }
        },
        M,
        metrics([{"name": "a", "type": "sum"}, {"name": "b", "type": "gauge"}]),
        lambda out: [m["description"] for m in out] == ["Sum", ""],
    ),
    (
        "transform context inference datapoint",
        {
            "transform": {
                "metric_statements": [
                    'set(metric.description, "test passed") where datapoint.attributes["test"] == "pass"'
                ]
            }
        },
        M,
        metrics([{"name": "a", "points": [{"attributes": {"test": "pass"}}]}]),
        lambda out: out[0]["description"] == "test passed",
    ),
    # -- filter README ---------------------------------------------------------------------------
    (
        "filter spans",
        {
            "filter": {
                "error_mode": "ignore",
                "traces": {
                    "span": [
                        'attributes["container.name"] == "app_container_1"',
                        'resource.attributes["host.name"] == "localhost"',
                        'name == "app_3"',
                    ],
                    "spanevent": ['attributes["grpc"] == true', 'IsMatch(name, ".*grpc.*")'],
                },
            }
        },
        T,
        traces(
            [
                {"name": "app_3"},
                {"name": "a", "attributes": {"container.name": "app_container_1"}},
                {
                    "name": "keep",
                    "events": [
                        {"name": "grpc.call"},
                        {"name": "x", "attributes": {"grpc": True}},
                        {"name": "stay"},
                    ],
                },
            ]
        ),
        lambda out: [(s["name"], s["events"]) for s in out] == [("keep", ["stay"])],
    ),
    (
        "filter metrics",
        {
            "filter": {
                "metrics": {
                    "metric": [
                        'name == "my.metric" and resource.attributes["my_label"] == "abc123"',
                        "type == METRIC_DATA_TYPE_HISTOGRAM",
                    ],
                    "datapoint": [
                        "metric.type == METRIC_DATA_TYPE_SUMMARY",
                        'resource.attributes["service.name"] == "my_service_name"',
                    ],
                }
            }
        },
        M,
        metrics(
            [
                {"name": "my.metric"},
                {"name": "h", "type": "histogram"},
                {"name": "s", "type": "summary"},
                {"name": "keep"},
            ],
            {"my_label": "abc123"},
        ),
        lambda out: [m["name"] for m in out] == ["keep"],
    ),
    (
        "filter logs severity",
        {
            "filter": {
                "logs": {
                    "log_record": [
                        'IsMatch(body, ".*password.*")',
                        "severity_number < SEVERITY_NUMBER_WARN",
                    ]
                }
            }
        },
        L,
        logs([{"body": "a", "severity_number": 9}, {"body": "b", "severity_number": 17}]),
        lambda out: [r["body"] for r in out] == ["b"],
    ),
    (
        "filter legacy spans include/exclude",
        {
            "filter": {
                "spans": {
                    "include": {"match_type": "strict", "services": ["svc"]},
                    "exclude": {"match_type": "regexp", "span_names": ["^health.*"]},
                }
            }
        },
        T,
        traces([{"name": "healthz"}, {"name": "work"}]),
        lambda out: [s["name"] for s in out] == ["work"],
    ),
    (
        "filter legacy metrics include",
        {
            "filter": {
                "metrics": {
                    "include": {"match_type": "regexp", "metric_names": ["prefix/.*", "prefix_.*"]}
                }
            }
        },
        M,
        metrics([{"name": "prefix_a"}, {"name": "other"}]),
        lambda out: [m["name"] for m in out] == ["prefix_a"],
    ),
    (
        "filter legacy logs severity_number",
        {
            "filter": {
                "logs": {"include": {"severity_number": {"min": "INFO", "match_undefined": True}}}
            }
        },
        L,
        logs(
            [
                {"body": "d", "severity_number": 5},
                {"body": "i", "severity_number": 9},
                {"body": "u", "severity_number": 0},
            ]
        ),
        lambda out: [r["body"] for r in out] == ["i", "u"],
    ),
    # -- attributes README -----------------------------------------------------------------------
    (
        "attributes actions",
        {
            "attributes": {
                "actions": [
                    {"key": "db.table", "action": "delete"},
                    {"key": "redacted_span", "value": True, "action": "upsert"},
                    {"key": "copy_key", "from_attribute": "key_original", "action": "update"},
                    {"key": "account_id", "value": 2245, "action": "insert"},
                    {"key": "account_password", "action": "delete"},
                    {"key": "account_email", "action": "hash"},
                    {"key": "http.status_code", "action": "convert", "converted_type": "int"},
                ]
            }
        },
        T,
        traces(
            [
                {
                    "attributes": {
                        "db.table": "t",
                        "copy_key": "old",
                        "key_original": "new",
                        "account_password": "p",
                        "account_email": "a@b",
                        "http.status_code": "200",
                    }
                }
            ]
        ),
        lambda out: (
            out[0]["attributes"]
            == {
                "copy_key": "new",
                "key_original": "new",
                "account_email": __import__("hashlib").sha256(b"a@b").hexdigest(),
                "http.status_code": 200,
                "redacted_span": True,
                "account_id": 2245,
            }
        ),
    ),
    (
        "attributes extract",
        {
            "attributes": {
                "actions": [
                    {
                        "key": "http.url",
                        "action": "extract",
                        "pattern": "^(?P<http_protocol>.*):\\/\\/(?P<http_domain>.*)\\/(?P<http_path>.*)(\\?|\\&)(?P<http_query_params>.*)",
                    }
                ]
            }
        },
        T,
        traces(
            [
                {
                    "attributes": {
                        "http.url": "http://example.com/path?queryParam1=value1,queryParam2=value2"
                    }
                }
            ]
        ),
        lambda out: (
            {k: v for k, v in out[0]["attributes"].items() if k != "http.url"}
            == {
                "http_protocol": "http",
                "http_domain": "example.com",
                "http_path": "path",
                "http_query_params": "queryParam1=value1,queryParam2=value2",
            }
        ),
    ),
    (
        "attributes delete by pattern, include services",
        {
            "attributes": {
                "include": {"match_type": "strict", "services": ["svc"]},
                "actions": [{"pattern": "^secret\\..*", "action": "delete"}],
            }
        },
        T,
        traces([{"attributes": {"secret.a": 1, "secret.b": 2, "ok": 3}}]),
        lambda out: out[0]["attributes"] == {"ok": 3},
    ),
    (
        "attributes on data points",
        {"attributes": {"actions": [{"key": "env", "value": "prod", "action": "insert"}]}},
        M,
        metrics([{"name": "m", "points": [{"attributes": {"a": "b"}}]}]),
        lambda out: out[0]["points"] == [{"a": "b", "env": "prod"}],
    ),
    # -- resource README -------------------------------------------------------------------------
    (
        "resource",
        {
            "resource": {
                "attributes": [
                    {"key": "cloud.availability_zone", "value": "zone-1", "action": "upsert"},
                    {
                        "key": "k8s.cluster.name",
                        "from_attribute": "k8s-cluster",
                        "action": "insert",
                    },
                    {"key": "redundant-attribute", "action": "delete"},
                ]
            }
        },
        L,
        logs([{}], {"k8s-cluster": "c1", "redundant-attribute": "x"}),
        lambda out: (
            out[0]["resource"]
            == {"k8s-cluster": "c1", "cloud.availability_zone": "zone-1", "k8s.cluster.name": "c1"}
        ),
    ),
]

CASES += [
    # -- transform README: set_semconv_span_name and the Examples section ------------------------
    (
        "set_semconv_span_name with http.route",
        {
            "transform": {
                "trace_statements": ['set_semconv_span_name("1.43.0", "original_span_name")']
            }
        },
        T,
        traces(
            [
                {
                    "name": "GET /api/v1/users/123",
                    "kind": 2,
                    "attributes": {
                        "http.request.method": "GET",
                        "http.route": "/api/v1/users/{id}",
                        "url.path": "/api/v1/users/123",
                    },
                },
                {
                    "name": "GET /api/v1/users/123",
                    "kind": 2,
                    "attributes": {"http.request.method": "GET", "url.path": "/api/v1/users/123"},
                },
                {
                    "name": "GET /api/v1/users/{id}",
                    "kind": 2,
                    "attributes": {
                        "http.request.method": "GET",
                        "http.route": "/api/v1/users/{id}",
                    },
                },
                {"name": "internal work", "kind": 1, "attributes": {}},
            ]
        ),
        lambda out: (
            [s["name"] for s in out]
            == ["GET /api/v1/users/{id}", "GET", "GET /api/v1/users/{id}", "internal work"]
            and out[0]["attributes"]["original_span_name"] == "GET /api/v1/users/123"
            and "original_span_name" not in out[2]["attributes"]
        ),
    ),
    (
        "set_semconv_span_name deprecated attributes (db, rpc, messaging)",
        {"transform": {"trace_statements": ['set_semconv_span_name("1.37.0")']}},
        T,
        traces(
            [
                {
                    "name": "SELECT * FROM product WHERE id=12345",
                    "kind": 3,
                    "attributes": {
                        "db.system": "postgresql",
                        "db.operation": "SELECT",
                        "db.sql.table": "product",
                    },
                },
                {
                    "name": "x",
                    "kind": 3,
                    "attributes": {
                        "rpc.system": "grpc",
                        "rpc.grpc.service": "shop.Cart",
                        "rpc.grpc.method": "Add",
                    },
                },
                {
                    "name": "y",
                    "kind": 4,
                    "attributes": {
                        "messaging.system": "kafka",
                        "messaging.operation": "publish",
                        "messaging.destination": "orders",
                    },
                },
            ]
        ),
        lambda out: (
            [s["name"] for s in out] == ["SELECT product", "shop.Cart/Add", "publish orders"]
        ),
    ),
    (
        "perform transformation if field does not exist",
        {
            "transform": {
                "error_mode": "ignore",
                "trace_statements": [
                    'set(span.attributes["test"], "pass") where span.attributes["test"] == nil'
                ],
            }
        },
        T,
        traces([{"attributes": {}}, {"attributes": {"test": "kept"}}]),
        lambda out: [s["attributes"]["test"] for s in out] == ["pass", "kept"],
    ),
    (
        "rename attribute (set and delete)",
        {
            "transform": {
                "error_mode": "ignore",
                "trace_statements": [
                    'set(resource.attributes["namespace"], resource.attributes["k8s.namespace.name"])',
                    'delete_key(resource.attributes, "k8s.namespace.name")',
                ],
            }
        },
        T,
        traces([{}], {"k8s.namespace.name": "shop"}),
        lambda out: out[0]["resource"] == {"namespace": "shop"},
    ),
    (
        "rename attribute (regex on keys)",
        {
            "transform": {
                "error_mode": "ignore",
                "trace_statements": [
                    'replace_all_patterns(resource.attributes, "key", "k8s\\\\.namespace\\\\.name", "namespace")'
                ],
            }
        },
        T,
        traces([{}], {"k8s.namespace.name": "shop", "other": "x"}),
        lambda out: out[0]["resource"] == {"namespace": "shop", "other": "x"},
    ),
    (
        "move field to attribute",
        {
            "transform": {
                "error_mode": "ignore",
                "log_statements": ['set(log.attributes["body"], log.body)'],
            }
        },
        L,
        logs([{"body": "hello"}]),
        lambda out: out[0]["attributes"] == {"body": "hello"},
    ),
    (
        "combine two attributes",
        {
            "transform": {
                "error_mode": "ignore",
                "trace_statements": [
                    'set(resource.attributes["test"], Concat([resource.attributes["foo"], resource.attributes["bar"]], " "))'
                ],
            }
        },
        T,
        traces([{}], {"foo": "a", "bar": "b"}),
        lambda out: out[0]["resource"]["test"] == "a b",
    ),
    (
        "parsing JSON logs through the cache",
        {
            "transform": {
                "log_statements": [
                    {
                        "statements": [
                            'merge_maps(log.cache, ParseJSON(log.body), "upsert") where IsMatch(log.body, "^\\\\{")',
                            'set(log.attributes["attr1"], log.cache["attr1"])',
                            'set(log.attributes["attr2"], log.cache["attr2"])',
                            'set(log.attributes["nested.attr3"], log.cache["nested"]["attr3"])',
                        ]
                    }
                ]
            }
        },
        L,
        logs(
            [
                {
                    "body": '{"name": "log", "attr1": "foo", "attr2": "bar", "nested": {"attr3": "example"}}'
                },
                {"body": "not json"},
            ]
        ),
        lambda out: (
            out[0]["attributes"] == {"attr1": "foo", "attr2": "bar", "nested.attr3": "example"}
            and out[1]["attributes"] == {}
        ),
    ),
    (
        "override context statements error mode",
        {
            "transform": {
                "error_mode": "propagate",
                "log_statements": [
                    {
                        "error_mode": "ignore",
                        "statements": [
                            'merge_maps(log.cache, ParseJSON(log.body), "upsert") where IsMatch(log.body, "^\\\\{")',
                            'set(log.attributes["attr1"], log.cache["attr1"])',
                        ],
                    },
                    {
                        "statements": [
                            'set(log.attributes["namespace"], log.attributes["k8s.namespace.name"])'
                        ]
                    },
                ],
            }
        },
        L,
        logs([{"body": "{broken json", "attributes": {"k8s.namespace.name": "ns"}}]),
        lambda out: out[0]["attributes"] == {"k8s.namespace.name": "ns", "namespace": "ns"},
    ),
    (
        "severity of an unstructured log body",
        {
            "transform": {
                "error_mode": "ignore",
                "log_statements": [
                    'set(log.severity_number, SEVERITY_NUMBER_INFO) where IsString(log.body) and IsMatch(log.body, "\\\\sINFO\\\\s")',
                    'set(log.severity_number, SEVERITY_NUMBER_WARN) where IsString(log.body) and IsMatch(log.body, "\\\\sWARN\\\\s")',
                    'set(log.severity_number, SEVERITY_NUMBER_ERROR) where IsString(log.body) and IsMatch(log.body, "\\\\sERROR\\\\s")',
                ],
            }
        },
        L,
        logs(
            [
                {"body": "[2023-09-22 07:38:22,570] INFO [Something]: some interesting log"},
                {"body": "[x] ERROR [y]: z"},
            ]
        ),
        lambda out: [r["severity_number"] for r in out] == [9, 17],
    ),
    (
        "copy attributes matching a regular expression",
        {
            "transform": {
                "error_mode": "ignore",
                "trace_statements": [
                    {
                        "statements": [
                            'set(resource.cache["attrs"], resource.attributes)',
                            'keep_matching_keys(resource.cache["attrs"], "pod_labels_.*")',
                            'set(resource.attributes["kubernetes.labels"], resource.cache["attrs"])',
                        ]
                    }
                ],
            }
        },
        T,
        traces([{}], {"pod_labels_app": "shop", "pod_labels_tier": "web", "host": "h"}),
        lambda out: (
            out[0]["resource"]["kubernetes.labels"]
            == {"pod_labels_app": "shop", "pod_labels_tier": "web"}
            and out[0]["resource"]["host"] == "h"
        ),
    ),
]

# Documented examples this gateway does not run, and why.
UNSUPPORTED: list[tuple[str, str, str]] = [
    (
        "convert_sum_to_gauge",
        'convert_sum_to_gauge() where metric.name == "system.processes.count"',
        "the transform processor's metric-only functions (convert_*, extract_*, copy_metric, "
        "scale_metric, aggregate_*) are not implemented",
    ),
    (
        "lambdas",
        'set(log.attributes["all_prod"], true) where All(log.attributes["tags"], (_, v) => v == "prod")',
        "lambdas (All, Any, Filter, Find) are behind a Collector feature gate",
    ),
    (
        "XML",
        "set(log.body, ConvertTextToElementsXML(log.body))",
        "the XML, grok, CSV, key-value, user-agent and URL parsers are not implemented",
    ),
    (
        "expr match_type",
        "",
        "the older metrics filter's match_type: expr (the expr language) is not implemented; "
        "write the condition in OTTL",
    ),
]


@pytest.mark.parametrize(
    ("processors", "signal", "payload", "check"), [pytest.param(*c[1:], id=c[0]) for c in CASES]
)
async def test_documented_example(
    processors: dict[str, Any], signal: Signal, payload: Any, check: Any
) -> None:
    out = await through_gateway(processors, signal, payload)
    assert check(out), out


@pytest.mark.parametrize(
    ("statement", "reason"), [pytest.param(*u[1:], id=u[0]) for u in UNSUPPORTED]
)
def test_unsupported_examples_are_refused_clearly(statement: str, reason: str) -> None:
    if statement:
        text = (
            "receivers: {otlp: {protocols: {grpc: {endpoint: '127.0.0.1:0'}}}}\n"
            f"processors: {{transform: {{log_statements: [{_yaml_str(statement)}]}}}}\n"
            "exporters: {debug: {}}\n"
            "service: {pipelines: {logs: {receivers: [otlp], processors: [transform], "
            "exporters: [debug]}}}\n"
        )
    else:
        text = (
            "receivers: {otlp: {protocols: {grpc: {endpoint: '127.0.0.1:0'}}}}\n"
            "processors: {filter: {metrics: {include: {match_type: expr, expressions: ['x']}}}}\n"
            "exporters: {debug: {}}\n"
            "service: {pipelines: {metrics: {receivers: [otlp], processors: [filter], "
            "exporters: [debug]}}}\n"
        )
    with pytest.raises(ConfigErrors) as err:
        config_from_text(text)
    message = str(err.value)
    assert "processors." in message and "line" in message, message


def _yaml_str(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"


async def test_filter_dropping_everything_sends_nothing() -> None:
    await through_gateway(
        {"filter": {"traces": {"span": ["true"]}}}, T, traces([{}, {}]), expect_nothing=True
    )
