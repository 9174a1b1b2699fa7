from __future__ import annotations

from pathlib import Path

import pytest

from pipeline.confmap import format_path, load, load_file
from pipeline.errors import ConfigErrors
from tests.support import write_config


def test_values_carry_their_file_line(tmp_path: Path) -> None:
    path = write_config(
        tmp_path,
        """\
        receivers:
          otlp:
            protocols:
              grpc:
                endpoint: 0.0.0.0:4317
        """,
    )
    raw = load_file(str(path))
    loc = raw.location(("receivers", "otlp", "protocols", "grpc", "endpoint"))
    assert loc is not None and loc.line == 5 and loc.file == str(path)
    # a path below a written value points at the closest one written
    deeper = raw.location(("receivers", "otlp", "protocols", "grpc", "endpoint", "x"))
    assert deeper is not None and deeper.line == 5


def test_env_substitution(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GW_PORT", "4317")
    monkeypatch.setenv("GW_HOST", "10.0.0.1")
    monkeypatch.delenv("GW_MISSING", raising=False)
    path = write_config(
        tmp_path,
        """\
        a: ${env:GW_PORT}
        b: "${env:GW_PORT}"
        c: ${env:GW_HOST}:${env:GW_PORT}
        d: ${env:GW_MISSING:-fallback}
        e: ${env:GW_MISSING}
        f: $${env:GW_PORT}
        g: ${env:GW_MISSING:-5}
        """,
    )
    raw = load_file(str(path))
    assert raw.data == {
        "a": 4317,  # a plain scalar that is one reference is read as YAML
        "b": "4317",  # a quoted one stays a string
        "c": "10.0.0.1:4317",
        "d": "fallback",
        "e": None,
        "f": "${env:GW_PORT}",
        "g": 5,
    }
    assert len(raw.warnings) == 1
    assert "GW_MISSING is not set" in str(raw.warnings[0])
    assert "line 5" in str(raw.warnings[0])


def test_unsupported_substitution_is_an_error(tmp_path: Path) -> None:
    path = write_config(tmp_path, "a: ${file:/etc/passwd}\n")
    with pytest.raises(ConfigErrors) as err:
        load_file(str(path))
    assert "unsupported substitution '${file:/etc/passwd}'" in str(err.value)
    assert "line 1" in str(err.value)


def test_bare_name_is_an_environment_variable(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``${NAME}`` is read as ``${env:NAME}``, as the Collector reads it (the OpenTelemetry
    demo's config writes ``${POSTGRES_HOST}:${POSTGRES_PORT}``)."""
    monkeypatch.setenv("GW_HOST", "db")
    monkeypatch.setenv("GW_PORT", "5432")
    path = write_config(tmp_path, "a: ${GW_HOST}:${GW_PORT}\nb: ${GW_PORT}\nc: ${GW_NONE:-x}\n")
    raw = load_file(str(path))
    assert raw.data == {"a": "db:5432", "b": 5432, "c": "x"}


def test_merge_maps_merge_lists_replace(tmp_path: Path) -> None:
    first = write_config(
        tmp_path,
        """\
        processors:
          batch:
            timeout: 1s
            send_batch_size: 10
        service:
          pipelines:
            traces:
              receivers: [otlp, other]
        """,
        "first.yaml",
    )
    second = write_config(
        tmp_path,
        """\
        processors:
          batch:
            timeout: 2s
        service:
          pipelines:
            traces:
              receivers: [otlp]
        """,
        "second.yaml",
    )
    raw = load([str(first), str(second)])
    assert raw.data["processors"]["batch"] == {"timeout": "2s", "send_batch_size": 10}
    assert raw.data["service"]["pipelines"]["traces"]["receivers"] == ["otlp"]
    timeout_loc = raw.location(("processors", "batch", "timeout"))
    size_loc = raw.location(("processors", "batch", "send_batch_size"))
    assert timeout_loc is not None and timeout_loc.file.endswith("second.yaml")
    assert size_loc is not None and size_loc.file.endswith("first.yaml")
    assert ("service", "pipelines", "traces", "receivers", 1) not in raw.locations


def test_duplicate_keys_and_bad_yaml_are_reported_with_lines(tmp_path: Path) -> None:
    dup = write_config(tmp_path, "a: 1\nb: 2\na: 3\n", "dup.yaml")
    bad = write_config(tmp_path, "a: [1, 2\nb: 3\n", "bad.yaml")
    with pytest.raises(ConfigErrors) as err:
        load([str(dup), str(bad)])
    messages = [str(e) for e in err.value.errors]
    assert any("a: key written twice" in m and "dup.yaml line 3" in m for m in messages)
    assert any("invalid YAML" in m and "bad.yaml line" in m for m in messages)


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigErrors) as err:
        load([str(tmp_path / "nope.yaml")])
    assert "cannot read config file" in str(err.value)


def test_format_path() -> None:
    assert format_path(("service", "pipelines", "traces", "receivers", 1)) == (
        "service.pipelines.traces.receivers[1]"
    )
