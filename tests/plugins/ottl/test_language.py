"""The OTTL parser and compiler: what parses, what is refused (with the column), the
comparison and arithmetic rules, paths of every context, and that statements are compiled once
(never parsed per item)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from pipeline.ottl import StatementError, compile_conditions, compile_statements
from pipeline.ottl.compiler import arithmetic, compare
from pipeline.ottl.grammar import OTTLSyntaxError, parse_statement
from pipeline.ottl.values import Duration, OTTLRuntimeError
from tests.support import ROOT


@pytest.mark.parametrize(
    ("text", "column", "fragment"),
    [
        ('set(name, "x"', 14, "ends too early"),
        ("set(name, )", 11, "unexpected ')'"),
        ('set(name "x")', 10, "unexpected"),
        ('set(attributes["a"], "b") where', 32, "ends too early"),
        ("set(x, 1) where a = 1", 19, "unexpected '='"),
        ('set(x, "\\d")', 9, "invalid escape sequence"),
        ("set(x, @)", 8, "unexpected character '@'"),
        ("set(x, 0x123)", 8, "odd number of digits"),
    ],
)
def test_syntax_errors_name_the_column(text: str, column: int, fragment: str) -> None:
    with pytest.raises(OTTLSyntaxError) as err:
        parse_statement(text)
    assert err.value.column == column, err.value
    assert fragment in str(err.value)


@pytest.mark.parametrize(
    ("text", "fragment"),
    [
        ('set(attributes["x"], 1)', "missing context name"),
        ("set(span.foo, 1)", "span has no field 'foo'"),
        ("sett(span.name, 1)", "undefined function 'sett' (did you mean 'set'?)"),
        ("Set(span.name, 1)", "unexpected 'Set'"),
        ("set(span.name, set(span.name, 1))", "converter names must start with an uppercase"),
        ("delete_key(span.attributes)", "missing its argument 'key'"),
        ('keep_keys(span.attributes, "a")', "a list of string literals"),
        ('set(span.name, "a") where span.name == 1 == 2', "unexpected"),
        ("set(span.name, metric.name)", "missing context name"),
        ('set(span.name, "a") where IsMatch(span.name, "(")', "invalid regular expression"),
        ('limit(span.attributes, 1, ["a", "b"])', "cannot be less than number of priority"),
        ("set(span.trace_id.foo, 1)", "unknown path"),
        ("set(span.kind.string, 1)", "cannot be changed"),
        ('set(span.name, "a") where span.name == UNKNOWN_ENUM', "unknown enum"),
    ],
)
def test_compile_errors(text: str, fragment: str) -> None:
    with pytest.raises(StatementError) as err:
        compile_statements([text], "traces")
    assert fragment in str(err.value), err.value
    assert "column" in str(err.value)


def test_context_inference_picks_the_deepest_context() -> None:
    assert compile_statements(['set(resource.attributes["a"], "b")'], "traces")[0] == "resource"
    context, _ = compile_statements(
        ['set(span.attributes["a"], resource.attributes["b"])', 'set(scope.name, "x")'], "traces"
    )
    assert context == "span"
    assert compile_conditions(['datapoint.attributes["a"] == "b"'], "metrics")[0] == "datapoint"
    with pytest.raises(StatementError, match="missing context name"):
        compile_statements(['set(span.name, "a")', 'set(log.body, "c")'], "traces")


def test_legacy_context_names() -> None:
    """The grouped form's ``context`` accepts paths without a prefix and
    ``instrumentation_scope``, as older Collector configs write them."""
    context, statements = compile_statements(
        ['set(attributes["lib"], instrumentation_scope.name)'], "traces", "span"
    )
    assert context == "span" and statements


@pytest.mark.parametrize(
    ("op", "a", "b", "expected"),
    [
        ("==", 1, 1.0, True),
        ("==", 1, "1", False),
        ("==", True, 1, False),
        ("==", None, None, True),
        ("!=", None, "x", True),
        ("<", 1, 2.5, True),
        ("<", "a", "b", True),
        ("<", "a", 1, False),
        (">", None, 1, False),
        ("==", b"\x01", b"\x01", True),
        ("==", {"a": 1}, {"a": 1}, True),
        ("==", [1, 2], [1, 2], True),
    ],
)
def test_comparison_rules(op: str, a: Any, b: Any, expected: bool) -> None:
    assert compare(op, a, b) is expected


def test_arithmetic() -> None:
    assert arithmetic("/", 7, 2) == 3 and arithmetic("/", -7, 2) == -3  # Go truncates
    assert arithmetic("*", 1.5, 2.0) == 3.0
    assert arithmetic("-", Duration(5), Duration(2)) == Duration(3)
    with pytest.raises(OTTLRuntimeError):
        arithmetic("+", 1, 1.5)
    with pytest.raises(OTTLRuntimeError):
        arithmetic("/", 1, 0)


def test_statements_are_compiled_once(monkeypatch: pytest.MonkeyPatch) -> None:
    """Running compiled statements never touches the parser."""
    import pipeline.ottl.grammar as grammar
    from pipeline.ottl.runner import Group, transform
    from tests.plugins.ottl.support import traces

    _, statements = compile_statements(
        ['set(span.attributes["n"], Concat([span.name, "x"], "-")) where span.kind == 2'],
        "traces",
    )

    def no_parsing(*args: Any, **kwargs: Any) -> Any:
        raise AssertionError("parsed at run time")

    monkeypatch.setattr(grammar, "_parse", no_parsing)
    out = transform(traces([{"name": "a"}] * 5), [Group("span", statements, [], "propagate")],
                    lambda *a: None)  # fmt: skip
    assert out.item_count() == 5


def test_validate_reports_path_line_and_column(tmp_path: Path) -> None:
    """``pipeline validate`` names the statement's config path, its file line and the column
    in the statement, for every bad statement at once."""
    config = tmp_path / "c.yaml"
    config.write_text(
        """\
receivers:
  otlp:
    protocols:
      grpc:
        endpoint: 127.0.0.1:0
processors:
  transform:
    trace_statements:
      - context: span
        statements:
          - set(attributes["ok"], "yes")
          - set(attributes["x"], Concat([name, "a"] "-"))
  filter:
    traces:
      span:
        - 'IsMatch(name, ".*") and'
exporters:
  debug:
service:
  pipelines:
    traces:
      receivers: [otlp]
      processors: [transform, filter]
      exporters: [debug]
"""
    )
    result = subprocess.run(
        [sys.executable, "-m", "pipeline", "validate", "--config", str(config)],
        capture_output=True,
        text=True,
        cwd=ROOT,
    )
    assert result.returncode == 1
    out = result.stdout + result.stderr
    assert "processors.transform.trace_statements[0].statements[1]" in out, out
    assert "column 41" in out and "c.yaml line 12" in out, out
    assert "processors.filter.traces.span[0]" in out and "c.yaml line 16" in out, out


def test_group_context_is_inferred_from_conditions_too() -> None:
    """A group without ``context`` whose conditions name a deeper context than its statements
    runs in that deeper one, as the Collector infers it."""
    from pipeline import Signal
    from plugins.transformprocessor.factory import TransformConfig

    config = TransformConfig.model_validate(
        {
            "metric_statements": [
                {
                    "conditions": ['datapoint.attributes["env"] == "dev"'],
                    "statements": ['set(metric.description, "has dev points")'],
                }
            ]
        }
    )
    (group,) = config.groups(Signal.METRICS)
    assert group.context == "datapoint"
