"""The remote-write 1.0 protobuf messages (``prometheus/prompb``), built at run time from a
descriptor so no generated code is needed. Field numbers are those of the specification::

    WriteRequest  { repeated TimeSeries timeseries = 1; repeated MetricMetadata metadata = 3; }
    TimeSeries    { repeated Label labels = 1; repeated Sample samples = 2;
                    repeated Exemplar exemplars = 3; }
    Label         { string name = 1; string value = 2; }
    Sample        { double value = 1; int64 timestamp = 2; }
    Exemplar      { repeated Label labels = 1; double value = 2; int64 timestamp = 3; }
    MetricMetadata{ MetricType type = 1; string metric_family_name = 2; string help = 4;
                    string unit = 5; }
"""

from __future__ import annotations

from typing import Any

from google.protobuf import descriptor_pb2, descriptor_pool, message_factory

_F = descriptor_pb2.FieldDescriptorProto
_PACKAGE = "pipeline_prompb"


def _build() -> dict[str, Any]:
    fdp = descriptor_pb2.FileDescriptorProto(
        name="pipeline_prompb.proto", package=_PACKAGE, syntax="proto3"
    )

    def message(name: str, fields: list[tuple[str, int, int, int, str | None]]) -> None:
        m = fdp.message_type.add(name=name)
        for fname, number, ftype, label, type_name in fields:
            f = m.field.add(name=fname, number=number, type=ftype, label=label)
            if type_name:
                f.type_name = f".{_PACKAGE}.{type_name}"

    rep, opt, msg = _F.LABEL_REPEATED, _F.LABEL_OPTIONAL, _F.TYPE_MESSAGE
    message(
        "WriteRequest",
        [
            ("timeseries", 1, msg, rep, "TimeSeries"),
            ("metadata", 3, msg, rep, "MetricMetadata"),
        ],
    )
    message(
        "TimeSeries",
        [
            ("labels", 1, msg, rep, "Label"),
            ("samples", 2, msg, rep, "Sample"),
            ("exemplars", 3, msg, rep, "Exemplar"),
        ],
    )
    message(
        "Label", [("name", 1, _F.TYPE_STRING, opt, None), ("value", 2, _F.TYPE_STRING, opt, None)]
    )
    message(
        "Sample",
        [("value", 1, _F.TYPE_DOUBLE, opt, None), ("timestamp", 2, _F.TYPE_INT64, opt, None)],
    )
    message(
        "Exemplar",
        [
            ("labels", 1, msg, rep, "Label"),
            ("value", 2, _F.TYPE_DOUBLE, opt, None),
            ("timestamp", 3, _F.TYPE_INT64, opt, None),
        ],
    )
    # ``type`` is the MetricType enum on the wire (a varint): an int32 reads and writes the same.
    message(
        "MetricMetadata",
        [
            ("type", 1, _F.TYPE_INT32, opt, None),
            ("metric_family_name", 2, _F.TYPE_STRING, opt, None),
            ("help", 4, _F.TYPE_STRING, opt, None),
            ("unit", 5, _F.TYPE_STRING, opt, None),
        ],
    )
    pool = descriptor_pool.DescriptorPool()
    pool.Add(fdp)
    return {
        m.name: message_factory.GetMessageClass(pool.FindMessageTypeByName(f"{_PACKAGE}.{m.name}"))
        for m in fdp.message_type
    }


_CLASSES = _build()
WriteRequest: Any = _CLASSES["WriteRequest"]
TimeSeries: Any = _CLASSES["TimeSeries"]
Label: Any = _CLASSES["Label"]
Sample: Any = _CLASSES["Sample"]

# MetricMetadata.MetricType
METRIC_TYPE = {"counter": 1, "gauge": 2, "histogram": 3, "summary": 5, "info": 6}
