"""Reading YAML config files: line numbers for every value, ``${env:NAME}`` substitution and
merging of several files (maps merge, lists and scalars replace)."""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import yaml

from pipeline.errors import ConfigError, Location

Path = tuple[str | int, ...]

_ENV_RE = re.compile(r"\$\$|\$\{(?:env:)?([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}|\$\{([^}]*)\}")


def format_path(path: Path) -> str:
    """``("processors", "batch/fast", "timeout")`` -> ``processors.batch/fast.timeout``;
    list indexes as ``[1]``."""
    out = ""
    for part in path:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += ("." if out else "") + str(part)
    return out


@dataclass
class RawConfig:
    """Config data as plain dicts/lists/scalars, with where each value was written."""

    data: dict[str, Any] = field(default_factory=dict)
    locations: dict[Path, Location] = field(default_factory=dict)
    warnings: list[ConfigError] = field(default_factory=list)
    files: list[str] = field(default_factory=list)

    def location(self, path: Path) -> Location | None:
        """Where ``path`` (or the closest enclosing value) was written."""
        for end in range(len(path), -1, -1):
            loc = self.locations.get(tuple(path[:end]))
            if loc is not None:
                return loc
        return None

    def error(self, path: Path, message: str) -> ConfigError:
        """A :class:`ConfigError` at ``path`` with its file line."""
        return ConfigError(format_path(path), message, self.location(path))


class _Loader(yaml.SafeLoader):
    pass


def _expand(
    text: str,
    plain: bool,
    path: Path,
    loc: Location,
    errors: list[ConfigError],
    warnings: list[ConfigError],
) -> Any:
    """Substitute ``${env:NAME}`` / ``${env:NAME:-default}`` and the bare ``${NAME}`` (read as
    ``${env:NAME}``, as the Collector does); ``$$`` stands for ``$``.

    When the whole value is one reference and the YAML scalar was plain (unquoted), the result
    is read as YAML, so ``port: ${env:PORT}`` gives a number, as in the Collector.
    """
    if "$" not in text:
        return text
    whole = False

    def replace(m: re.Match[str]) -> str:
        nonlocal whole
        if m.group(0) == "$$":
            return "$"
        if m.group(3) is not None:
            errors.append(
                ConfigError(
                    format_path(path),
                    f"unsupported substitution {m.group(0)!r}: use ${{NAME}}, ${{env:NAME}} or "
                    "${env:NAME:-default} (write $$ for a literal $)",
                    loc,
                )
            )
            return m.group(0)
        name, default = m.group(1), m.group(2)
        value = os.environ.get(name)
        if value is None or (value == "" and default is not None):
            if default is None:
                warnings.append(
                    ConfigError(
                        format_path(path),
                        f"environment variable {name} is not set; using an empty value",
                        loc,
                    )
                )
                value = ""
            else:
                value = default
        whole = m.span() == (0, len(text))
        return value

    result = _ENV_RE.sub(replace, text)
    if whole and plain:
        try:
            parsed = yaml.safe_load(result) if result != "" else None
        except yaml.YAMLError:
            return result
        if parsed is None or isinstance(parsed, str | int | float | bool):
            return parsed
    return result


def load_file(filename: str) -> RawConfig:
    """Parse one YAML file. Raises :class:`ConfigErrors`-worthy problems as a list."""
    from pipeline.errors import ConfigErrors

    display = filename
    try:
        with open(filename, encoding="utf-8") as fh:
            text = fh.read()
    except OSError as exc:
        raise ConfigErrors(
            [ConfigError("", f"cannot read config file {display}: {exc.strerror}")]
        ) from None
    try:
        root = yaml.compose(text, Loader=_Loader)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        loc = Location(display, mark.line + 1) if mark else None
        problem = getattr(exc, "problem", None) or str(exc)
        raise ConfigErrors([ConfigError("", f"invalid YAML: {problem}", loc)]) from None
    raw = RawConfig(files=[display])
    errors: list[ConfigError] = []
    constructor = yaml.SafeLoader("")

    def build(node: yaml.Node, path: Path) -> Any:
        loc = Location(display, node.start_mark.line + 1)
        raw.locations.setdefault(path, loc)
        if isinstance(node, yaml.MappingNode):
            constructor.flatten_mapping(node)
            out: dict[str, Any] = {}
            for key_node, value_node in node.value:
                key = constructor.construct_object(key_node, deep=True)
                if not isinstance(key, str):
                    key = str(key)
                kloc = Location(display, key_node.start_mark.line + 1)
                if key in out:
                    errors.append(
                        ConfigError(
                            format_path((*path, key)), "key written twice in the same map", kloc
                        )
                    )
                raw.locations[(*path, key)] = kloc
                out[key] = build(value_node, (*path, key))
            return out
        if isinstance(node, yaml.SequenceNode):
            return [build(item, (*path, i)) for i, item in enumerate(node.value)]
        value = constructor.construct_object(node, deep=True)
        if isinstance(value, str):
            plain = getattr(node, "style", None) is None
            return _expand(value, plain, path, loc, errors, raw.warnings)
        return value

    if root is None:
        data: Any = {}
    else:
        data = build(root, ())
    if not isinstance(data, dict):
        errors.append(
            ConfigError(
                "",
                "the config must be a YAML map with sections such as 'receivers' and 'service'",
                Location(display, 1),
            )
        )
        data = {}
    if errors:
        raise ConfigErrors(errors)
    raw.data = data
    return raw


def merge(base: RawConfig, override: RawConfig) -> RawConfig:
    """``override`` on top of ``base``: maps merge key by key, anything else replaces."""

    def merge_value(a: Any, b: Any, path: Path) -> Any:
        if isinstance(a, Mapping) and isinstance(b, Mapping):
            out = dict(a)
            for k, v in b.items():
                out[k] = merge_value(a[k], v, (*path, k)) if k in a else v
            return out
        # replaced: forget the locations under this path from the base
        for p in [p for p in locations if len(p) > len(path) and p[: len(path)] == path]:
            del locations[p]
        return b

    locations = dict(base.locations)
    data = merge_value(base.data, override.data, ())
    locations.update(override.locations)
    return RawConfig(
        data=data,
        locations=locations,
        warnings=base.warnings + override.warnings,
        files=base.files + override.files,
    )


def load(filenames: list[str]) -> RawConfig:
    """Load and merge config files in order; every file's errors are collected."""
    from pipeline.errors import ConfigErrors

    result = RawConfig()
    errors: list[ConfigError] = []
    for name in filenames:
        try:
            result = merge(result, load_file(name))
        except ConfigErrors as exc:
            errors.extend(exc.errors)
    if errors:
        raise ConfigErrors(errors)
    return result
