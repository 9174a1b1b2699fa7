"""Every config mistake is reported before anything starts, with path, line and exit code."""

from __future__ import annotations

import socket
from pathlib import Path

import pytest

from pipeline.cli import main
from tests.support import free_port, write_config

VALID_TAIL = """\
service:
  telemetry:
    metrics:
      level: none
  pipelines:
    traces:
      receivers: [otlp]
      processors: [batch]
      exporters: [debug]
"""

HEAD = """\
receivers:
  otlp:
    protocols:
      grpc:
        endpoint: 127.0.0.1:{port}
processors:
  batch:
exporters:
  debug:
"""


def run_cli(args: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    code = main(args)
    out = capsys.readouterr()
    return code, out.out, out.err


def validate(tmp_path: Path, text: str, capsys: pytest.CaptureFixture[str]) -> tuple[int, str]:
    path = write_config(tmp_path, text, "gateway.yaml")
    code, out, err = run_cli(["validate", "--config", str(path)], capsys)
    return code, out + err


def test_valid_config(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, output = validate(tmp_path, HEAD.format(port=free_port()) + VALID_TAIL, capsys)
    assert code == 0, output
    assert "configuration is valid: 1 pipeline(s)" in output


def test_default_config_is_valid(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = run_cli(["validate"], capsys)
    assert code == 0, err
    assert "configuration is valid: 4 pipeline(s)" in out


def test_unknown_component_type(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    text = HEAD.format(port=free_port()) + "  debugg:\n" + VALID_TAIL
    code, output = validate(tmp_path, text, capsys)
    assert code == 1
    assert (
        "exporters.debugg: unknown exporter type 'debugg' (did you mean 'debug'?) "
        "(" + str(tmp_path / "gateway.yaml") + " line 10)"
    ) in output


def test_misspelt_option(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    text = (
        HEAD.format(port=free_port()).replace("  batch:\n", "  batch:\n    timout: 1s\n")
        + VALID_TAIL
    )
    code, output = validate(tmp_path, text, capsys)
    assert code == 1
    assert "processors.batch.timout: unknown option 'timout' (did you mean 'timeout'?)" in output
    assert "gateway.yaml line 8)" in output


def test_nested_misspelt_option(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    text = (
        HEAD.format(port=free_port()).replace(
            "        endpoint:", "        max_recv_msg_size_mb: 4\n        endpoint:"
        )
        + VALID_TAIL
    )
    code, output = validate(tmp_path, text, capsys)
    assert code == 1
    assert (
        "receivers.otlp.protocols.grpc.max_recv_msg_size_mb: unknown option "
        "'max_recv_msg_size_mb' (did you mean 'max_recv_msg_size_mib'?)"
    ) in output
    assert "gateway.yaml line 5)" in output


@pytest.mark.parametrize(
    ("option", "message"),
    [
        (
            "timeout: soon",
            "processors.batch.timeout: expected a duration such as '200ms', got 'soon'",
        ),
        (
            "timeout: 5",
            "processors.batch.timeout: expected a duration such as '200ms', got 5 "
            "(a number has no unit",
        ),
        ("timeout: 5 parsecs", "expected a duration such as '200ms', got '5 parsecs'"),
        (
            "send_batch_size: lots",
            "processors.batch.send_batch_size: expected an integer, got 'lots'",
        ),
        (
            "send_batch_size: -1",
            "processors.batch.send_batch_size: Input should be greater than or equal to 0, got -1",
        ),
    ],
)
def test_wrong_type_or_unit(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], option: str, message: str
) -> None:
    text = HEAD.format(port=free_port()).replace("  batch:\n", f"  batch:\n    {option}\n")
    code, output = validate(tmp_path, text + VALID_TAIL, capsys)
    assert code == 1
    assert message in output
    assert "gateway.yaml line 8)" in output


def test_cross_field_rule(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    text = HEAD.format(port=free_port()).replace(
        "  batch:\n", "  batch:\n    send_batch_size: 100\n    send_batch_max_size: 10\n"
    )
    code, output = validate(tmp_path, text + VALID_TAIL, capsys)
    assert code == 1
    assert "processors.batch: send_batch_max_size (10) must be greater than or equal to " in output
    assert "gateway.yaml line 7)" in output


def test_pipeline_names_undefined_component(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    text = HEAD.format(port=free_port()) + VALID_TAIL.replace(
        "exporters: [debug]", "exporters: [debug, debug/other]"
    )
    code, output = validate(tmp_path, text, capsys)
    assert code == 1
    assert (
        "service.pipelines.traces.exporters[1]: exporter 'debug/other' is not defined in "
        "'exporters' or 'connectors' (did you mean 'debug'?)"
    ) in output
    assert "gateway.yaml line 18)" in output


def test_component_on_unsupported_signal(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # span_sink comes from the sample third-party plugin (tests/sample_plugin): traces only.
    text = (
        HEAD.format(port=free_port())
        + "  span_sink:\n"
        + VALID_TAIL
        + ("    metrics:\n      receivers: [otlp]\n      exporters: [span_sink]\n")
    )
    code, output = validate(tmp_path, text, capsys)
    assert code == 1
    assert (
        "service.pipelines.metrics.exporters[0]: exporter 'span_sink' does not support metrics "
        "(it supports: traces)"
    ) in output
    assert "gateway.yaml line 22)" in output


LOGS_HEAD = """\
receivers:
  otlp:
    protocols:
      grpc:
        endpoint: 127.0.0.1:{port}
processors:
  batch:
  memory_limiter: {{limit_mib: 400}}
  tail_sampling: {{policies: [{{name: all, type: always_sample}}]}}
exporters:
  debug:
connectors:
  forward:
service:
  telemetry: {{metrics: {{level: none}}}}
  pipelines:
"""


def test_logs_pipelines(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    text = LOGS_HEAD.format(port=free_port()) + (
        "    logs/in: {receivers: [otlp], processors: [memory_limiter, batch], "
        "exporters: [forward]}\n"
        "    logs: {receivers: [forward], exporters: [debug]}\n"
        "    traces: {receivers: [otlp], processors: [tail_sampling], exporters: [debug]}\n"
    )
    code, output = validate(tmp_path, text, capsys)
    assert code == 0, output
    assert "configuration is valid: 3 pipeline(s)" in output


def test_logs_pipeline_refuses_a_component_without_logs(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    text = LOGS_HEAD.format(port=free_port()) + (
        "    logs: {receivers: [otlp], processors: [batch, tail_sampling], exporters: [debug]}\n"
    )
    code, output = validate(tmp_path, text, capsys)
    assert code == 1
    assert (
        "service.pipelines.logs.processors[1]: processor 'tail_sampling' does not support logs "
        "(it supports: traces)"
    ) in output
    assert "gateway.yaml line 17)" in output


def test_unused_component_is_a_warning(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    text = HEAD.format(port=free_port()) + "  debug/spare:\n" + VALID_TAIL
    code, output = validate(tmp_path, text, capsys)
    assert code == 0
    assert (
        "warning: exporters.debug/spare: exporter 'debug/spare' is defined but used by no "
        "pipeline; it will not run"
    ) in output
    assert "gateway.yaml line 10)" in output


def test_connector_cycle(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    text = (
        HEAD.format(port=free_port())
        + """\
connectors:
  forward/a:
  forward/b:
service:
  telemetry:
    metrics:
      level: none
  pipelines:
    traces/in:
      receivers: [otlp, forward/b]
      exporters: [forward/a]
    traces/out:
      receivers: [forward/a]
      exporters: [debug, forward/b]
"""
    )
    code, output = validate(tmp_path, text, capsys)
    assert code == 1
    assert "connectors form a cycle: " in output
    assert "forward/a" in output and "forward/b" in output
    assert "gateway.yaml line" in output


def test_connector_without_receiver_side(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    text = (
        HEAD.format(port=free_port())
        + """\
connectors:
  forward:
service:
  pipelines:
    traces:
      receivers: [otlp]
      exporters: [debug, forward]
"""
    )
    code, output = validate(tmp_path, text, capsys)
    assert code == 1
    assert (
        "service.pipelines.traces.exporters[1]: connector 'forward' is used as an exporter of a "
        "traces pipeline but as the receiver of no pipeline"
    ) in output


def test_every_error_is_listed(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    text = HEAD.format(port=free_port()).replace("  batch:\n", "  batch:\n    timeout: soon\n")
    text += "  debugg:\n" + VALID_TAIL.replace("[batch]", "[batch, batch/missing]")
    code, output = validate(tmp_path, text, capsys)
    assert code == 1
    assert "invalid configuration (3 errors)" in output
    assert output.count("  error: ") == 3


def test_unknown_section_and_pipeline_signal(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    text = (
        HEAD.format(port=free_port())
        + "exporter:\n  debug:\n"
        + VALID_TAIL
        + ("    trace/x:\n      receivers: [otlp]\n      exporters: [debug]\n")
    )
    code, output = validate(tmp_path, text, capsys)
    assert code == 1
    assert "exporter: unknown section 'exporter' (did you mean 'exporters'?)" in output
    assert "service.pipelines.trace/x: invalid pipeline ID 'trace/x'" in output
    assert "(did you mean 'traces'?)" in output


def test_endpoint_that_cannot_be_bound(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        path = write_config(tmp_path, HEAD.format(port=port) + VALID_TAIL, "gateway.yaml")
        code, _, err = run_cli(["run", "--config", str(path)], capsys)
        assert code == 1
        assert (
            f"receivers.otlp.protocols.grpc.endpoint: cannot listen on 127.0.0.1:{port} (tcp): "
            "Address already in use"
        ) in err
        assert "gateway.yaml line 5)" in err
        # nothing started: no component lifecycle line was logged
        assert "component started" not in err
        code, _, err = run_cli(["validate", "--check-endpoints", "--config", str(path)], capsys)
        assert code == 1 and "Address already in use" in err


def test_same_endpoint_twice(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    port = free_port()
    second = f"  otlp/second:\n    protocols:\n      grpc:\n        endpoint: 127.0.0.1:{port}\n"
    text = HEAD.format(port=port).replace("processors:", second + "processors:")
    text += VALID_TAIL.replace("receivers: [otlp]", "receivers: [otlp, otlp/second]")
    path = write_config(tmp_path, text, "gateway.yaml")
    code, _, err = run_cli(["validate", "--check-endpoints", "--config", str(path)], capsys)
    assert code == 1
    assert "receivers.otlp/second.protocols.grpc.endpoint: endpoint 127.0.0.1" in err
    assert "is also used by receivers.otlp.protocols.grpc.endpoint" in err


def test_env_in_config(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("BATCH_TIMEOUT", "soon")
    text = HEAD.format(port=free_port()).replace(
        "  batch:\n", "  batch:\n    timeout: ${env:BATCH_TIMEOUT}\n"
    )
    code, output = validate(tmp_path, text + VALID_TAIL, capsys)
    assert code == 1
    assert "processors.batch.timeout: expected a duration such as '200ms', got 'soon'" in output
