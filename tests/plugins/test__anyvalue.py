"""``plugins._anyvalue``: an OTLP ``AnyValue`` as text, as the redaction processor (scalars
only) and the Prometheus translation (arrays and maps as compact JSON) use it."""

from __future__ import annotations

from opentelemetry.proto.common.v1.common_pb2 import AnyValue

from plugins._anyvalue import any_value_to_string, scalar_to_string, to_python
from plugins.prometheustranslator import any_value_to_string as translator_any_value
from plugins.redactionprocessor.processor import _as_string


def test_scalars_and_composites() -> None:
    m = AnyValue()
    kv = m.kvlist_value.values.add(key="a")
    kv.value.array_value.values.add().int_value = 1
    kv.value.array_value.values.add().bytes_value = b"\x00\xff"
    m.kvlist_value.values.add(key="b").value.bool_value = True
    m.kvlist_value.values.add(key="c").value.double_value = 0.1
    m.kvlist_value.values.add(key="d")  # an empty value
    cases = [
        (AnyValue(string_value="é"), "é"),
        (AnyValue(bool_value=False), "false"),
        (AnyValue(int_value=-7), "-7"),
        (AnyValue(double_value=1e300), "1e+300"),
        (AnyValue(bytes_value=b"\x00\xff"), "AP8="),
        (AnyValue(), ""),
    ]
    for value, text in cases:
        assert scalar_to_string(value) == any_value_to_string(value) == text
    assert scalar_to_string(m) == ""  # the redaction rules see no text in a map
    assert any_value_to_string(m) == '{"a":[1,"AP8="],"b":true,"c":0.1,"d":null}'
    assert to_python(m) == {"a": [1, "AP8="], "b": True, "c": 0.1, "d": None}
    # the two components use this very code
    assert translator_any_value is any_value_to_string and _as_string is scalar_to_string
