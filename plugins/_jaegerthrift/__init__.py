"""The Jaeger Thrift model and the OpenTelemetry <-> Jaeger mapping, shared by the ``jaeger``
exporter and the ``jaeger`` receiver (a ``_`` module: not a plugin itself)."""

DEFAULT_MAX_BATCH_ITEMS = 100_000
"""Structs (spans, tags, logs, references, ...) one batch or datagram may hold: the default of
the receiver's ``max_batch_items``. At most ~400 bytes and ~8 µs each once decoded and
translated (a span of only its required fields; a tag costs about half), so a batch at the
limit costs at most ~40 MB and ~1 s of CPU, whatever its wire size."""
