"""The Jaeger Thrift model and the OpenTelemetry <-> Jaeger mapping, shared by the ``jaeger``
exporter and the ``jaeger`` receiver (a ``_`` module: not a plugin itself)."""
