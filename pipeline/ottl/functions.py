"""The standard OTTL functions (editors and converters), with the Collector's names,
arguments and semantics (``pkg/ottl/ottlfuncs``).

Regular expressions are Python's ``re`` (RE2's syntax for what these functions are used for:
classes, groups, named groups ``(?P<n>...)``, anchors, repetition; RE2 has no backreferences or
lookarounds, so every RE2 pattern compiles here); replacements use Go's ``$1`` / ``${name}``
template syntax, as ``regexp.Expand``. Glob patterns follow Go's ``filepath.Match`` (``*`` and
``?`` stop at ``/``).
"""

from __future__ import annotations

import base64
import hashlib
import json
import re
import time
from collections.abc import Callable
from typing import Any

from pipeline.ottl.compiler import Functions, Param
from pipeline.ottl.values import (
    Duration,
    OTTLRuntimeError,
    Time,
    as_string,
    format_float,
    is_map,
    is_slice,
    to_plain,
    type_name,
)

Getter = Callable[[Any], Any]
Run = Callable[[Any], Any]


def _regex(pattern: str) -> re.Pattern[str]:
    try:
        return re.compile(pattern)
    except re.error as exc:
        raise ValueError(f"invalid regular expression {pattern!r}: {exc}") from None


_TEMPLATE = re.compile(r"\$(\$|\{([A-Za-z0-9_]*)\}|([A-Za-z0-9_]+))")


def go_expand(template: str, match: re.Match[str]) -> str:
    """Go's ``regexp.Expand``: ``$1``, ``${1}``, ``$name``, ``${name}``; ``$$`` is ``$``; a
    group that does not exist expands to nothing."""

    def one(m: re.Match[str]) -> str:
        if m.group(1) == "$":
            return "$"
        name = m.group(2) if m.group(2) is not None else m.group(3)
        try:
            value = match.group(int(name)) if name.isdigit() else match.group(name)
        except IndexError:
            return ""
        return value or ""

    return _TEMPLATE.sub(one, template)


def _check_format(fmt: str | None) -> None:
    if fmt is not None and (fmt.count("%s") != 1 or fmt.replace("%s", "").count("%") != 0):
        raise ValueError(f"replacementFormat must contain exactly one %s, got {fmt!r}")


def _finish(value: str, function: Callable[[Any], Any] | None, fmt: str | None) -> str:
    if function is None:
        return value
    result = function(value)
    if not isinstance(result, str):
        raise OTTLRuntimeError("the replacement function must return a string")
    return fmt.replace("%s", result) if fmt else result


def glob_regex(pattern: str) -> re.Pattern[str]:
    """Go's ``filepath.Match`` pattern as an anchored regular expression."""
    out = []
    i = 0
    while i < len(pattern):
        c = pattern[i]
        if c == "*":
            out.append("[^/]*")
        elif c == "?":
            out.append("[^/]")
        elif c == "\\" and i + 1 < len(pattern):
            i += 1
            out.append(re.escape(pattern[i]))
        elif c == "[":
            end = pattern.find("]", i + 2 if pattern[i + 1 : i + 2] in ("^", "]") else i + 1)
            if end < 0:
                raise ValueError(f"syntax error in pattern {pattern!r}")
            body = pattern[i + 1 : end]
            if body.startswith("^"):
                body = "^" + body[1:].replace("\\", "\\\\")
            else:
                body = body.replace("\\", "\\\\")
            out.append(f"[{body}]")
            i = end
        else:
            out.append(re.escape(c))
        i += 1
    return re.compile("".join(out) + r"\Z", re.DOTALL)


# -- editors ------------------------------------------------------------------------------
def _set(target: Any, value: Getter) -> Run:
    setter = target.set

    def run(ctx: Any) -> None:
        v = value(ctx)
        if v is not None:
            setter(ctx, v)

    return run


def _map_target(target: Any, fname: str) -> Getter:
    get = target.get

    def get_map(ctx: Any) -> Any:
        value = get(ctx)
        if not is_map(value):
            raise OTTLRuntimeError(f"{fname}: expected a map, got {type_name(value)}")
        return value

    return get_map


def _delete_key(target: Any, key: str) -> Run:
    get_map = _map_target(target, "delete_key")
    return lambda ctx: get_map(ctx).remove(key)


def _delete_matching_keys(target: Any, pattern: str) -> Run:
    get_map = _map_target(target, "delete_matching_keys")
    regex = _regex(pattern)
    return lambda ctx: get_map(ctx).remove_if(lambda k, v: regex.search(k) is not None)


def _keep_keys(target: Any, keys: list[str]) -> Run:
    get_map = _map_target(target, "keep_keys")
    wanted = set(keys)
    return lambda ctx: get_map(ctx).remove_if(lambda k, v: k not in wanted)


def _keep_matching_keys(target: Any, pattern: str) -> Run:
    get_map = _map_target(target, "keep_matching_keys")
    regex = _regex(pattern)
    return lambda ctx: get_map(ctx).remove_if(lambda k, v: regex.search(k) is None)


def _limit(target: Any, limit: int, priority_keys: list[str]) -> Run:
    if limit < 0:
        raise ValueError(f"invalid limit for limit function, {limit} cannot be negative")
    if len(priority_keys) > limit:
        raise ValueError(
            f"invalid limit for limit function, {limit} cannot be less than number of "
            f"priority attributes {len(priority_keys)}"
        )
    get_map = _map_target(target, "limit")
    priority = set(priority_keys)

    def run(ctx: Any) -> None:
        m = get_map(ctx)
        if len(m) <= limit:
            return
        keep = {k for k in m if k in priority}
        for k in m:
            if len(keep) >= limit:
                break
            keep.add(k)
        m.remove_if(lambda k, v: k not in keep)

    return run


def _truncate(value: str, limit: int, utf8_safe: bool, marker: str) -> str:
    data = value.encode()
    if len(data) <= limit:
        return value
    cut = limit - len(marker.encode())
    head = data[:cut]
    if utf8_safe:
        return head.decode("utf-8", "ignore") + marker
    return head.decode("utf-8", "surrogateescape") + marker


def _truncate_all(target: Any, limit: int, utf8_safe: bool | None, marker: str | None) -> Run:
    if limit < 0:
        raise ValueError(f"invalid limit for truncate_all function, {limit} cannot be negative")
    marker = marker or ""
    if len(marker.encode()) > limit:
        raise ValueError("the truncation marker is longer than the limit")
    safe = True if utf8_safe is None else utf8_safe
    get_map = _map_target(target, "truncate_all")

    def run(ctx: Any) -> None:
        m = get_map(ctx)
        for k, v in m.items():
            if isinstance(v, str) and len(v) > limit // 4 and len(v.encode()) > limit:
                m.set(k, _truncate(v, limit, safe, marker))

    return run


def _replace_pattern(target: Any, regex: str, replacement: Getter, function: Any,
                     fmt: str | None) -> Run:  # fmt: skip
    compiled = _regex(regex)
    _check_format(fmt)

    def run(ctx: Any) -> None:
        value = target.get(ctx)
        if not isinstance(value, str):
            return
        repl = replacement(ctx)
        if not isinstance(repl, str):
            raise OTTLRuntimeError(f"replacement must be a string, got {type_name(repl)}")
        if compiled.search(value) is None:
            return
        new = compiled.sub(lambda m: _finish(go_expand(repl, m), function, fmt), value)
        target.set(ctx, new)

    return run


def _replace_all_patterns(target: Any, mode: str, regex: str, replacement: Getter,
                          function: Any, fmt: str | None) -> Run:  # fmt: skip
    if mode not in ("key", "value"):
        raise ValueError(f"invalid mode {mode!r}, must be 'key' or 'value'")
    compiled = _regex(regex)
    _check_format(fmt)
    get_map = _map_target(target, "replace_all_patterns")

    def run(ctx: Any) -> None:
        m = get_map(ctx)
        repl = replacement(ctx)
        if not isinstance(repl, str):
            raise OTTLRuntimeError(f"replacement must be a string, got {type_name(repl)}")

        def sub(text: str) -> str:
            return compiled.sub(lambda mt: _finish(go_expand(repl, mt), function, fmt), text)

        if mode == "value":
            for k, v in m.items():
                if isinstance(v, str) and compiled.search(v) is not None:
                    m.set(k, sub(v))
            return
        items = m.items()
        if not any(compiled.search(k) is not None for k, _ in items):
            return
        out: dict[str, Any] = {}
        for k, v in items:
            new_key = sub(k) if compiled.search(k) is not None else k
            out[new_key] = to_plain(v)
        m.replace_all(list(out.items()))

    return run


def _replace_match(target: Any, pattern: str, replacement: Getter, function: Any,
                   fmt: str | None) -> Run:  # fmt: skip
    glob = glob_regex(pattern)
    _check_format(fmt)

    def run(ctx: Any) -> None:
        value = target.get(ctx)
        if not isinstance(value, str) or glob.match(value) is None:
            return
        repl = replacement(ctx)
        if not isinstance(repl, str):
            raise OTTLRuntimeError(f"replacement must be a string, got {type_name(repl)}")
        target.set(ctx, _finish(repl, function, fmt))

    return run


def _replace_all_matches(target: Any, pattern: str, replacement: Getter, function: Any,
                         fmt: str | None) -> Run:  # fmt: skip
    glob = glob_regex(pattern)
    _check_format(fmt)
    get_map = _map_target(target, "replace_all_matches")

    def run(ctx: Any) -> None:
        m = get_map(ctx)
        repl = replacement(ctx)
        if not isinstance(repl, str):
            raise OTTLRuntimeError(f"replacement must be a string, got {type_name(repl)}")
        for k, v in m.items():
            if isinstance(v, str) and glob.match(v) is not None:
                m.set(k, _finish(repl, function, fmt))

    return run


def _merge_maps(target: Any, source: Getter, strategy: str) -> Run:
    if strategy not in ("insert", "update", "upsert"):
        raise ValueError(
            f"invalid value for strategy, {strategy!r}, must be insert, update or upsert"
        )
    get_map = _map_target(target, "merge_maps")

    def run(ctx: Any) -> None:
        src = source(ctx)
        if not is_map(src):
            raise OTTLRuntimeError(f"merge_maps: the source must be a map, got {type_name(src)}")
        dst = get_map(ctx)
        for k, v in list(src.items()):
            present = k in dst
            if strategy == "upsert" or (strategy == "insert") != present:
                dst.set(k, v)

    return run


def _flatten(target: Any, prefix: str | None, depth: int | None, resolve: bool | None) -> Run:
    max_depth = 1 << 62 if depth is None else depth
    if max_depth < 0:
        raise ValueError(f"invalid depth {depth} for flatten, it must be non-negative")
    get_map = _map_target(target, "flatten")

    def run(ctx: Any) -> None:
        m = get_map(ctx)
        out: dict[str, Any] = {}
        counts: dict[str, int] = {}

        def put(key: str, value: Any) -> None:
            if resolve and key in out:
                n = counts.get(key, 0)
                while f"{key}.{n}" in out:
                    n += 1
                counts[key] = n + 1
                key = f"{key}.{n}"
            out[key] = value

        def walk(items: list[tuple[str, Any]], pre: str, level: int) -> None:
            for k, v in items:
                key = f"{pre}.{k}" if pre else k
                if is_map(v) and level < max_depth:
                    walk(list(v.items()), key, level + 1)
                elif is_slice(v) and level < max_depth:
                    if resolve:
                        for item in v:
                            if is_map(item) and level + 1 < max_depth:
                                walk(list(item.items()), key, level + 1)
                            else:
                                put(key, to_plain(item))
                    else:
                        for i, item in enumerate(v):
                            walk([(str(i), item)], key, level + 1) if is_map(item) else put(
                                f"{key}.{i}", to_plain(item)
                            )
                else:
                    put(key, to_plain(v))

        if max_depth == 0 and not prefix:
            return
        walk(list(m.items()), prefix or "", 0)
        m.replace_all(list(out.items()))

    return run


def _append(target: Any, value: Getter | None, values: Getter | None) -> Run:
    def run(ctx: Any) -> None:
        current = target.get(ctx)
        items = (
            [] if current is None else (list(to_plain(current)) if is_slice(current) else [current])
        )
        if value is not None:
            v = value(ctx)
            if v is not None:
                items.append(to_plain(v))
        if values is not None:
            vs = values(ctx)
            if is_slice(vs):
                items.extend(to_plain(vs))
        target.set(ctx, items)

    return run


# -- converters ---------------------------------------------------------------------------
def _is_match(target: Getter, pattern: str) -> Run:
    regex = _regex(pattern)

    def run(ctx: Any) -> bool:
        value = target(ctx)
        return value is not None and regex.search(value) is not None

    return run


def _sprint(value: Any) -> str | None:
    if isinstance(value, str):
        return value
    if value is None:
        return "<nil>"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        return _go_g(value)
    if isinstance(value, bytes):
        return value.hex()
    return None


def _go_g(value: float) -> str:
    """Go's ``%v`` of a float64 (``strconv.FormatFloat(f, 'g', -1, 64)`` with its exponent
    form for large and small magnitudes)."""
    text = repr(value)
    if text in ("inf", "-inf"):
        return "+Inf" if value > 0 else "-Inf"
    if text == "nan":
        return "NaN"
    exponent = int(f"{value:e}".split("e")[1])
    if exponent < -4 or exponent >= 21:
        mantissa, _, exp = f"{value!r}".partition("e")
        if not exp:
            mantissa, exp = f"{value:.17e}".split("e")
            mantissa = repr(float(mantissa)).rstrip("0").rstrip(".")
        sign = "-" if int(exp) < 0 else "+"
        return f"{mantissa}e{sign}{abs(int(exp)):02d}"
    return format_float(value)


def _concat(values: list[Getter], delimiter: str) -> Run:
    def run(ctx: Any) -> str:
        parts = []
        for g in values:
            text = _sprint(g(ctx))
            if text is not None:
                parts.append(text)
        return delimiter.join(parts)

    return run


def _split(target: Getter, delimiter: str) -> Run:
    def run(ctx: Any) -> Any:
        value = target(ctx)
        if value is None:
            return None
        if delimiter == "":
            return list(value)
        return value.split(delimiter)

    return run


def _case(target: Getter, upper: bool) -> Run:
    def run(ctx: Any) -> Any:
        value = target(ctx)
        return value.upper() if upper else value.lower()

    return run


def _substring(target: Getter, start: Getter, length: Getter) -> Run:
    def run(ctx: Any) -> Any:
        value, s, n = target(ctx), start(ctx), length(ctx)
        if s < 0:
            raise OTTLRuntimeError(f"invalid start for substring function, {s} cannot be negative")
        if n <= 0:
            raise OTTLRuntimeError(
                f"invalid length for substring function, {n} cannot be negative or zero"
            )
        if s + n > len(value):
            raise OTTLRuntimeError(
                f"invalid range for substring function, {s + n} cannot be greater than the "
                f"length of target string({len(value)})"
            )
        return value[s : s + n]

    return run


def _hash(algorithm: str) -> Callable[[Getter], Run]:
    def factory(value: Getter) -> Run:
        def run(ctx: Any) -> Any:
            v = value(ctx)
            if not isinstance(v, str):
                raise OTTLRuntimeError(f"expected a string, got {type_name(v)}")
            return hashlib.new(algorithm, v.encode()).hexdigest()

        return run

    return factory


_GO_INT = re.compile(r"[-+]?\d+\Z")


def _int(value: Getter) -> Run:
    def run(ctx: Any) -> Any:
        v = value(ctx)
        if isinstance(v, bool):
            return int(v)
        if isinstance(v, int):
            return v
        if isinstance(v, float):
            if v != v or v in (float("inf"), float("-inf")):
                return None
            return int(v)
        if isinstance(v, str) and _GO_INT.match(v):
            n = int(v)
            return n if -(2**63) <= n < 2**63 else None
        return None

    return run


def _double(value: Getter) -> Run:
    def run(ctx: Any) -> Any:
        v = value(ctx)
        if isinstance(v, bool):
            return 1.0 if v else 0.0
        if isinstance(v, int | float):
            return float(v)
        if isinstance(v, str):
            try:
                return float(v)
            except ValueError:
                return None
        return None

    return run


def _string(value: Getter) -> Run:
    def run(ctx: Any) -> Any:
        v = value(ctx)
        if v is None:
            return None
        if isinstance(v, bytes):
            return v.hex()
        if isinstance(v, Time | Duration):
            return str(v.ns)
        return as_string(v)

    return run


def _len(value: Getter) -> Run:
    def run(ctx: Any) -> int:
        v = value(ctx)
        if isinstance(v, str):
            return len(v.encode())
        if isinstance(v, bytes) or is_map(v) or is_slice(v):
            return len(v)
        raise OTTLRuntimeError(f"Len: cannot take the length of a {type_name(v)}")

    return run


def _is_type(check: Callable[[Any], bool]) -> Callable[[Getter], Run]:
    def factory(value: Getter) -> Run:
        return lambda ctx: check(value(ctx))

    return factory


def _parse_json(target: Getter) -> Run:
    def floats(value: Any) -> Any:
        if isinstance(value, bool) or value is None:
            return value
        if isinstance(value, int):
            return float(value)
        if isinstance(value, dict):
            return {k: floats(v) for k, v in value.items()}
        if isinstance(value, list):
            return [floats(v) for v in value]
        return value

    def run(ctx: Any) -> Any:
        v = target(ctx)
        if isinstance(v, bytes):
            v = v.decode("utf-8", "replace")
        if not isinstance(v, str):
            raise OTTLRuntimeError(f"ParseJSON: expected a string, got {type_name(v)}")
        try:
            parsed = json.loads(v)
        except (ValueError, RecursionError) as exc:
            raise OTTLRuntimeError(f"ParseJSON: {exc}") from None
        if not isinstance(parsed, dict | list):
            raise OTTLRuntimeError("ParseJSON: the JSON is neither an object nor an array")
        return floats(parsed)

    return run


_GO_DURATION = re.compile(r"(\d+(?:\.\d*)?|\.\d+)(ns|us|µs|μs|ms|s|m|h)")
_NS = {"ns": 1, "us": 1_000, "µs": 1_000, "μs": 1_000, "ms": 1_000_000, "s": 10**9,
       "m": 60 * 10**9, "h": 3600 * 10**9}  # fmt: skip


def parse_go_duration(text: str) -> int:
    """Go's ``time.ParseDuration``, in nanoseconds."""
    body = text.strip()
    sign = -1 if body.startswith("-") else 1
    body = body.lstrip("+-")
    if body == "0":
        return 0
    total, pos = 0, 0
    for m in _GO_DURATION.finditer(body):
        if m.start() != pos:
            break
        from decimal import Decimal

        total += int(Decimal(m.group(1)) * _NS[m.group(2)])
        pos = m.end()
    if pos != len(body) or pos == 0:
        raise OTTLRuntimeError(f"invalid duration {text!r}")
    return sign * total


def _duration(value: Getter) -> Run:
    def run(ctx: Any) -> Any:
        return Duration(parse_go_duration(value(ctx)))

    return run


def _unix_nano(value: Getter) -> Run:
    def run(ctx: Any) -> Any:
        v = value(ctx)
        if not isinstance(v, Time):
            raise OTTLRuntimeError(f"UnixNano: expected a time, got {type_name(v)}")
        return v.ns

    return run


def _unix(seconds: Getter, nanoseconds: Getter | None) -> Run:
    def run(ctx: Any) -> Any:
        s = seconds(ctx)
        ns = nanoseconds(ctx) if nanoseconds is not None else 0
        return Time(s * 10**9 + ns)

    return run


def _id(size: int, name: str) -> Callable[[Getter], Run]:
    def factory(value: Getter) -> Run:
        def run(ctx: Any) -> Any:
            v = value(ctx)
            if isinstance(v, str):
                try:
                    v = bytes.fromhex(v)
                except ValueError:
                    raise OTTLRuntimeError(f"{name}: {v!r} is not hexadecimal") from None
            if not isinstance(v, bytes) or len(v) != size:
                raise OTTLRuntimeError(f"{name}: expected {size} bytes, got {type_name(v)}")
            return v

        return run

    return factory


def _has_affix(prefix: bool) -> Callable[[Getter, Getter], Run]:
    def factory(target: Getter, affix: Getter) -> Run:
        def run(ctx: Any) -> bool:
            v, a = target(ctx), affix(ctx)
            return v.startswith(a) if prefix else v.endswith(a)

        return run

    return factory


def _coalesce(values: list[Getter]) -> Run:
    def run(ctx: Any) -> Any:
        for g in values:
            v = g(ctx)
            if v is not None:
                return v
        return None

    return run


def _base64_encode(value: Getter, variant: str | None) -> Run:
    encoders = {
        None: base64.b64encode, "base64": base64.b64encode,
        "base64-raw": lambda b: base64.b64encode(b).rstrip(b"="),
        "base64-url": base64.urlsafe_b64encode,
        "base64-raw-url": lambda b: base64.urlsafe_b64encode(b).rstrip(b"="),
    }  # fmt: skip
    if variant not in encoders:
        raise ValueError(f"unsupported base64 variant {variant!r}")
    encode = encoders[variant]
    return lambda ctx: encode(value(ctx).encode()).decode()


def _keys(target: Getter) -> Run:
    return lambda ctx: list(target(ctx).keys())


def _trim(target: Getter, replacement: str | None) -> Run:
    chars = " " if replacement is None else replacement
    return lambda ctx: target(ctx).strip(chars)


def _convert_case(target: Getter, to_case: str) -> Run:
    if to_case not in ("lower", "upper", "snake", "camel"):
        raise ValueError(f"invalid case: {to_case}, allowed cases are: lower, upper, snake, camel")

    def run(ctx: Any) -> Any:
        v = target(ctx)
        if to_case == "lower":
            return v.lower()
        if to_case == "upper":
            return v.upper()
        if to_case == "snake":
            words = re.findall(r"[A-Z]+(?=[A-Z][a-z]|\d|\b|_)|[A-Z]?[a-z]+|[A-Z]+|\d+", v)
            return "_".join(w.lower() for w in words)
        return "".join(w[:1].upper() + w[1:] for w in re.split(r"[_\-\s]+", v) if w)

    return run


_HTTP_METHODS = frozenset(
    {"CONNECT", "DELETE", "GET", "HEAD", "OPTIONS", "PATCH", "POST", "PUT", "TRACE", "QUERY"}
)
_SEMCONV_VERSIONS = {f"1.{minor}.0" for minor in range(37, 44)}


def _first(get: Callable[[str], Any], *keys: str) -> str | None:
    for key in keys:
        value = get(key)
        if isinstance(value, str) and value:
            return value
    return None


def semconv_span_name(kind: int, get: Callable[[str], Any]) -> str | None:
    """The span name the semantic conventions give an HTTP, database, RPC or messaging span
    (``None`` for other spans): ``{method} {http.route}`` for an HTTP server, ``{method}`` (or
    ``{method} {url.template}``) for a client, ``{db.query.summary}`` or ``{operation}
    {target}`` for a database, ``{service}/{method}`` for RPC, ``{operation} {destination}`` for
    messaging; deprecated attribute names are read too."""
    method = _first(get, "http.request.method", "http.method")
    if method is not None:
        method = method if method.upper() in _HTTP_METHODS else "HTTP"
        template = _first(get, "http.route") if kind == 2 else _first(get, "url.template")
        return f"{method} {template}" if template else method
    system = _first(get, "db.system.name", "db.system")
    if system is not None:
        summary = _first(get, "db.query.summary")
        if summary:
            return summary
        operation = _first(get, "db.operation.name", "db.operation")
        target = _first(get, "db.collection.name", "db.sql.table", "db.stored_procedure.name",
                        "db.namespace", "db.name", "server.address")  # fmt: skip
        if operation and target:
            return f"{operation} {target}"
        return operation or target or system
    rpc = _first(get, "rpc.system.name", "rpc.system")
    if rpc is not None:
        service = _first(get, "rpc.service", "rpc.grpc.service")
        rmethod = _first(get, "rpc.method", "rpc.grpc.method")
        if service and rmethod:
            return f"{service}/{rmethod}"
        return rmethod or service or rpc
    msystem = _first(get, "messaging.system")
    if msystem is not None:
        operation = _first(get, "messaging.operation.name", "messaging.operation")
        destination = None
        if (
            get("messaging.destination.temporary") is not True
            and get("messaging.destination.anonymous") is not True
        ):
            destination = _first(
                get, "messaging.destination.template", "messaging.destination.name",
                "messaging.destination",
            )  # fmt: skip
        if operation and destination:
            return f"{operation} {destination}"
        return operation or destination or msystem
    return None


def _set_semconv_span_name(version: str, original_attribute: str | None) -> Run:
    if version not in _SEMCONV_VERSIONS:
        raise ValueError(
            f"unsupported semantic conventions version {version!r}: use 1.37.0 to 1.43.0"
        )

    def run(ctx: Any) -> None:
        span = ctx.span
        src = span.src
        name = semconv_span_name(src.kind, span.get_attr)
        if name is None or name == src.name:
            return
        original = src.name
        span.materialize().name = name
        if original_attribute:
            span.set_attr(original_attribute, original)

    return run


def register_standard(functions: Functions) -> None:
    """Add the standard editors and converters to ``functions``."""
    p = Param
    target, map_target = p("target", "target"), p("target", "target")
    fn = p("function", "function", True)
    fmt = p("replacementFormat", "string", True)
    add = functions.add
    # editors
    add("set", [target, p("value", "getter")], _set)
    add("delete_key", [map_target, p("key", "string")], _delete_key)
    add("delete_matching_keys", [map_target, p("pattern", "string")], _delete_matching_keys)
    add("keep_keys", [map_target, p("keys", "string_list")], _keep_keys)
    add("keep_matching_keys", [map_target, p("pattern", "string")], _keep_matching_keys)
    add("limit", [map_target, p("limit", "int"), p("priority_keys", "string_list")], _limit)
    add(
        "truncate_all",
        [map_target, p("limit", "int"), p("utf8_safe", "bool", True),
         p("truncation_marker", "string", True)],
        _truncate_all,
    )  # fmt: skip
    add(
        "replace_pattern",
        [target, p("regex", "string"), p("replacement", "getter"), fn, fmt],
        _replace_pattern,
    )
    add(
        "replace_all_patterns",
        [map_target, p("mode", "string"), p("regex", "string"), p("replacement", "getter"), fn,
         fmt],
        _replace_all_patterns,
    )  # fmt: skip
    add(
        "replace_match",
        [target, p("pattern", "string"), p("replacement", "getter"), fn, fmt],
        _replace_match,
    )
    add(
        "replace_all_matches",
        [map_target, p("pattern", "string"), p("replacement", "getter"), fn, fmt],
        _replace_all_matches,
    )
    add("merge_maps", [map_target, p("source", "getter"), p("strategy", "string")], _merge_maps)
    add(
        "flatten",
        [map_target, p("prefix", "string", True), p("depth", "int", True),
         p("resolveConflicts", "bool", True)],
        _flatten,
    )  # fmt: skip
    add("append", [target, p("value", "getter", True), p("values", "getter", True)], _append)
    add(
        "set_semconv_span_name",
        [p("semconvVersion", "string"), p("originalSpanNameAttribute", "string", True)],
        _set_semconv_span_name,
        contexts=["span"],
    )
    # converters
    add("IsMatch", [p("target", "stringlike_getter"), p("pattern", "string")], _is_match)
    add("Concat", [p("values", "getter_list"), p("delimiter", "string")], _concat)
    add("Split", [p("target", "string_getter"), p("delimiter", "string")], _split)
    add("ToLowerCase", [p("target", "string_getter")], lambda t: _case(t, False))
    add("ToUpperCase", [p("target", "string_getter")], lambda t: _case(t, True))
    add(
        "Substring",
        [p("target", "string_getter"), p("start", "int_getter"), p("length", "int_getter")],
        _substring,
    )
    for name, algorithm in (("SHA256", "sha256"), ("SHA1", "sha1"), ("SHA512", "sha512"),
                            ("MD5", "md5")):  # fmt: skip
        add(name, [p("value", "getter")], _hash(algorithm))
    add("Int", [p("value", "getter")], _int)
    add("Double", [p("value", "getter")], _double)
    add("String", [p("value", "getter")], _string)
    add("Len", [p("value", "getter")], _len)
    add("IsString", [p("value", "getter")], _is_type(lambda v: isinstance(v, str)))
    add(
        "IsInt",
        [p("value", "getter")],
        _is_type(lambda v: isinstance(v, int) and not isinstance(v, bool)),
    )
    add("IsDouble", [p("value", "getter")], _is_type(lambda v: isinstance(v, float)))
    add("IsBool", [p("value", "getter")], _is_type(lambda v: isinstance(v, bool)))
    add("IsMap", [p("value", "getter")], _is_type(is_map))
    add("IsList", [p("value", "getter")], _is_type(is_slice))
    add("ParseJSON", [p("target", "getter")], _parse_json)
    add("Duration", [p("duration", "string_getter")], _duration)
    add("Now", [], lambda: lambda ctx: Time(time.time_ns()))
    add("UnixNano", [p("time", "getter")], _unix_nano)
    add("Unix", [p("seconds", "int_getter"), p("nanoseconds", "int_getter", True)], _unix)
    add("TraceID", [p("bytes", "getter")], _id(16, "TraceID"))
    add("SpanID", [p("bytes", "getter")], _id(8, "SpanID"))
    add("HasPrefix", [p("target", "string_getter"), p("prefix", "string_getter")],
        _has_affix(True))  # fmt: skip
    add("HasSuffix", [p("target", "string_getter"), p("suffix", "string_getter")],
        _has_affix(False))  # fmt: skip
    add("Coalesce", [p("values", "getter_list")], _coalesce)
    add("Base64Encode", [p("value", "string_getter"), p("variant", "string", True)], _base64_encode)
    add("Keys", [p("target", "map_getter")], _keys)
    add("Trim", [p("target", "string_getter"), p("replacement", "string", True)], _trim)
    add("ConvertCase", [p("target", "string_getter"), p("toCase", "string")], _convert_case)
