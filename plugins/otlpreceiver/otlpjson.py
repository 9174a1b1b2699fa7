"""OTLP/JSON: moved to the shared module :mod:`plugins._otlpjson` (also used by the
``otlphttp`` exporter and the ``kafka`` components); re-exported here."""

from __future__ import annotations

from plugins._otlpjson import (  # noqa: F401
    DEFAULT_MAX_VALUES,
    OTLPJSONBudgetError,
    OTLPJSONError,
    count_values,
    dumps,
    parse,
    to_dict,
)
