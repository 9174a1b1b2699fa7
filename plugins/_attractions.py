"""The attribute actions of the Collector's ``attributes`` and ``resource`` processors
(``attraction``): ``insert``, ``update``, ``upsert``, ``delete``, ``hash``, ``extract``,
``convert``, each applied to a map (span, log record or data point attributes, or a resource's).

The module name starts with ``_``: it is not a plugin.
"""

from __future__ import annotations

import hashlib
import re
import struct
from typing import Any, Literal

from pydantic import model_validator

from pipeline import ConfigModel
from pipeline.client import current_client

ActionName = Literal["insert", "update", "upsert", "delete", "hash", "extract", "convert"]


class Action(ConfigModel):
    """One entry of ``actions`` (``attributes`` for the resource processor)."""

    key: str | None = None
    action: ActionName
    value: Any = None
    from_attribute: str | None = None
    from_context: str | None = None
    pattern: str | None = None
    converted_type: Literal["int", "double", "string"] | None = None

    @model_validator(mode="after")
    def _check(self) -> Action:
        a = self.action
        if a in ("insert", "update", "upsert"):
            if not self.key:
                raise ValueError(f"missing required field 'key' for action {a!r}")
            sources = [
                self.value is not None,
                self.from_attribute is not None,
                self.from_context is not None,
            ]
            if sum(sources) != 1:
                raise ValueError(
                    f"action {a!r} needs exactly one of 'value', 'from_attribute' or 'from_context'"
                )
            if self.pattern is not None:
                raise ValueError(f"action {a!r} does not take 'pattern'")
        elif a in ("delete", "hash"):
            if not self.key and not self.pattern:
                raise ValueError(f"action {a!r} needs 'key' or 'pattern'")
            self._regex()
        elif a == "extract":
            if not self.key or not self.pattern:
                raise ValueError("action 'extract' needs 'key' and 'pattern'")
            if not self._regex().groupindex:  # type: ignore[union-attr]
                raise ValueError(
                    f"the pattern {self.pattern!r} of action 'extract' has no named group "
                    "(?P<name>...)"
                )
        elif a == "convert" and (not self.key or self.converted_type is None):
            raise ValueError("action 'convert' needs 'key' and 'converted_type'")
        return self

    def _regex(self) -> re.Pattern[str] | None:
        if self.pattern is None:
            return None
        try:
            return re.compile(self.pattern)
        except re.error as exc:
            raise ValueError(f"invalid regular expression {self.pattern!r}: {exc}") from None


def hash_hex(value: Any) -> str:
    """The Collector's attribute hash: SHA-256 (its default since 2023; SHA-1 before) over the
    value's bytes (a string's UTF-8, a bool as one byte, an int64 or float64 big-endian), in
    hex."""
    if isinstance(value, str):
        data = value.encode()
    elif isinstance(value, bool):
        data = b"\x01" if value else b"\x00"
    elif isinstance(value, int):
        data = struct.pack(">q", value)
    elif isinstance(value, float):
        data = struct.pack(">d", value)
    elif isinstance(value, bytes):
        data = value
    else:
        from pipeline.ottl.values import as_string

        data = as_string(value).encode()
    return hashlib.sha256(data).hexdigest()


def _context_value(name: str) -> Any:
    client = current_client()
    if client is None:
        return None
    if name == "client.address":
        return client.addr.rsplit(":", 1)[0] if client.addr else None
    if name.startswith("auth."):
        value = client.auth.get(name[len("auth.") :])
        return None if value is None else str(value)
    if name.startswith("metadata."):
        metadata = getattr(client, "metadata", None) or {}
        values = metadata.get(name[len("metadata.") :])
        if isinstance(values, list | tuple):
            return ";".join(str(v) for v in values) if values else None
        return values
    return None


def _convert(value: Any, to: str) -> Any:
    if to == "string":
        from pipeline.ottl.values import as_string

        return value if isinstance(value, str) else as_string(value)
    if to == "int":
        if isinstance(value, bool):
            return int(value)
        if isinstance(value, int):
            return value
        if isinstance(value, float):
            return int(value)
        if isinstance(value, str):
            try:
                return int(value)
            except ValueError:
                return None
        return None
    if isinstance(value, bool):
        return 1.0 if value else 0.0
    if isinstance(value, int | float):
        return float(value)
    if isinstance(value, str):
        try:
            return float(value)
        except ValueError:
            return None
    return None


class Actions:
    """Compiled actions, applied in order to a map-like."""

    def __init__(self, actions: list[Action]) -> None:
        self.actions = [(a, a._regex()) for a in actions]

    def apply(self, attrs: Any) -> None:
        for action, regex in self.actions:
            kind, key = action.action, action.key
            if kind in ("insert", "update", "upsert"):
                assert key is not None
                if action.value is not None:
                    value = action.value
                elif action.from_attribute is not None:
                    value = attrs.get(action.from_attribute)
                    if value is None:
                        continue
                else:
                    value = _context_value(action.from_context or "")
                    if value is None:
                        continue
                present = key in attrs
                if kind == "upsert" or (kind == "insert") != present:
                    attrs.set(key, value)
            elif kind == "delete":
                if key:
                    attrs.remove(key)
                if regex is not None:
                    attrs.remove_if(lambda k, v, r=regex: r.match(k) is not None)
            elif kind == "hash":
                targets = [key] if key and key in attrs else []
                if regex is not None:
                    targets += [k for k in attrs if regex.match(k) and k != key]
                for k in targets:
                    value = attrs.get(k)
                    if value is not None:
                        attrs.set(k, hash_hex(value))
            elif kind == "extract":
                assert key is not None and regex is not None
                value = attrs.get(key)
                if not isinstance(value, str):
                    continue
                match = regex.search(value)
                if match is None:
                    continue
                for name, group in match.groupdict().items():
                    if group is not None:
                        attrs.set(name, group)
            elif kind == "convert":
                assert key is not None and action.converted_type is not None
                value = attrs.get(key)
                if value is None:
                    continue
                converted = _convert(value, action.converted_type)
                if converted is not None and (
                    type(converted) is not type(value) or converted != value
                ):
                    attrs.set(key, converted)
