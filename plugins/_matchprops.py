"""The Collector's older ``include``/``exclude`` matching (``filterset``/``filterconfig``),
shared by the ``attributes`` and ``filter`` processors: ``match_type`` ``strict`` or ``regexp``
(unanchored search), and properties that must all match (a list of names matches when any
name does; ``attributes`` and ``resources`` when every entry does).

The module name starts with ``_``: it is not a plugin.
"""

from __future__ import annotations

import re
from typing import Any, Literal

from pydantic import Field, model_validator

from pipeline import ConfigModel
from pipeline.ottl.values import as_string


class KeyValueMatch(ConfigModel):
    key: str
    value: Any = None


class LibraryMatch(ConfigModel):
    name: str
    version: str | None = None


class SeverityNumberMatch(ConfigModel):
    min: int | str = 0
    match_undefined: bool = False


SEVERITY_NAMES = {"TRACE": 1, "DEBUG": 5, "INFO": 9, "WARN": 13, "ERROR": 17, "FATAL": 21}


class MatchProperties(ConfigModel):
    """``include`` / ``exclude``."""

    match_type: Literal["strict", "regexp", "expr"] = "strict"
    services: list[str] = Field(default_factory=list)
    span_names: list[str] = Field(default_factory=list)
    span_kinds: list[str] = Field(default_factory=list)
    attributes: list[KeyValueMatch] = Field(default_factory=list)
    resources: list[KeyValueMatch] = Field(default_factory=list)
    libraries: list[LibraryMatch] = Field(default_factory=list)
    log_bodies: list[str] = Field(default_factory=list)
    log_severity_texts: list[str] = Field(default_factory=list)
    log_severity_number: SeverityNumberMatch | None = None
    metric_names: list[str] = Field(default_factory=list)
    # the filter processor's names for the same properties
    resource_attributes: list[KeyValueMatch] = Field(default_factory=list)
    record_attributes: list[KeyValueMatch] = Field(default_factory=list)
    severity_texts: list[str] = Field(default_factory=list)
    severity_number: SeverityNumberMatch | None = None
    bodies: list[str] = Field(default_factory=list)
    expressions: list[str] = Field(default_factory=list)

    @model_validator(mode="after")
    def _check(self) -> MatchProperties:
        if self.match_type == "expr":
            raise ValueError(
                "match_type 'expr' (the expr language) is not supported: write the condition "
                "in OTTL (metrics.metric / metrics.datapoint)"
            )
        if self.match_type == "regexp":
            for text in self._strings():
                try:
                    re.compile(text)
                except re.error as exc:
                    raise ValueError(f"invalid regular expression {text!r}: {exc}") from None
        return self

    def _strings(self) -> list[str]:
        out = [*self.services, *self.span_names, *self.log_bodies, *self.log_severity_texts]
        out += [*self.metric_names, *self.severity_texts, *self.bodies]
        for kv in [*self.attributes, *self.resources, *self.resource_attributes,
                   *self.record_attributes]:  # fmt: skip
            if isinstance(kv.value, str):
                out.append(kv.value)
        return out

    def _names(self, patterns: list[str], value: str | None) -> bool:
        if value is None:
            return False
        if self.match_type == "strict":
            return value in patterns
        return any(re.search(p, value) for p in patterns)

    def _value(self, expected: Any, actual: Any) -> bool:
        if expected is None:
            return True
        if actual is None:
            return False
        if self.match_type == "strict":
            if isinstance(expected, bool) or isinstance(actual, bool):
                return (
                    isinstance(expected, bool) and isinstance(actual, bool) and actual == expected
                )
            return as_string(actual) == as_string(expected)
        if not isinstance(actual, str):
            return False
        return re.search(str(expected), actual) is not None

    def _kvs(self, wanted: list[KeyValueMatch], attrs: Any) -> bool:
        for kv in wanted:
            if attrs is None or kv.key not in attrs:
                return False
            if not self._value(kv.value, attrs.get(kv.key)):
                return False
        return True

    def matches(
        self,
        *,
        resource: Any = None,
        scope: Any = None,
        attributes: Any = None,
        span_name: str | None = None,
        span_kind: int | None = None,
        body: Any = None,
        severity_text: str | None = None,
        severity_number: int | None = None,
        metric_name: str | None = None,
    ) -> bool:
        """Whether an item matches every property given in the config. ``resource`` and
        ``attributes`` are map-likes; ``scope`` an ``InstrumentationScope``."""
        if self.services:
            service = resource.get("service.name") if resource is not None else None
            if not self._names(self.services, service if isinstance(service, str) else None):
                return False
        if self.span_names and not self._names(self.span_names, span_name):
            return False
        if self.span_kinds:
            from pipeline.ottl.contexts import SPAN_KINDS

            names = {f"SPAN_KIND_{k.upper()}" for k in SPAN_KINDS}
            kind = span_kind if span_kind is not None else -1
            label = f"SPAN_KIND_{SPAN_KINDS[kind].upper()}" if 0 <= kind < len(SPAN_KINDS) else ""
            if label not in self.span_kinds or label not in names:
                return False
        if self.metric_names and not self._names(self.metric_names, metric_name):
            return False
        if not self._kvs([*self.resources, *self.resource_attributes], resource):
            return False
        if not self._kvs([*self.attributes, *self.record_attributes], attributes):
            return False
        if self.libraries:
            if scope is None:
                return False
            if not any(
                self._names([lib.name], scope.name)
                and (lib.version is None or self._names([lib.version], scope.version))
                for lib in self.libraries
            ):
                return False
        bodies = [*self.log_bodies, *self.bodies]
        if bodies and not self._names(bodies, body if isinstance(body, str) else None):
            return False
        texts = [*self.log_severity_texts, *self.severity_texts]
        if texts and not self._names(texts, severity_text):
            return False
        severity = self.log_severity_number or self.severity_number
        if severity is not None:
            minimum = severity.min
            if isinstance(minimum, str):
                minimum = SEVERITY_NAMES.get(minimum.upper(), 0)
            number = severity_number or 0
            if number == 0:
                if not severity.match_undefined:
                    return False
            elif number < minimum:
                return False
        return True
