"""Compiling parsed OTTL into Python closures, once, when the config is validated.

Every node of a statement becomes a closure taking the :class:`~pipeline.ottl.contexts.Ctx`
(literals are folded into constants, a path becomes its accessor's getter or setter, a function
call becomes what its factory returned), so running a statement on a span is a few nested calls
with no parsing, dictionary lookups by name or type dispatch left.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, NamedTuple

from pipeline._pbwire import encode_varint
from pipeline.ottl.contexts import (
    ALIASES,
    DEPTH,
    ENUMS,
    SIGNAL_CONTEXTS,
    Accessor,
    PathError,
    resolve,
)
from pipeline.ottl.grammar import Node, OTTLSyntaxError, parse_condition, parse_statement
from pipeline.ottl.values import (
    Duration,
    OTTLRuntimeError,
    Time,
    is_map,
    is_slice,
    to_plain,
    type_name,
)

Getter = Callable[[Any], Any]


class OTTLCompileError(ValueError):
    """A statement that parses but cannot be compiled (unknown function or path, wrong
    arguments); ``column`` is 1-based."""

    def __init__(self, message: str, column: int) -> None:
        super().__init__(f"column {column}: {message}")
        self.column = column


# -- functions ----------------------------------------------------------------------------------
class Param(NamedTuple):
    """A parameter of an OTTL function.

    ``kind`` says how the argument is compiled:

    * ``getter``: any expression, passed as ``getter(ctx) -> value``;
    * ``string_getter`` / ``int_getter`` / ``float_getter`` / ``bool_getter`` /
      ``map_getter`` / ``slice_getter``: the same, checked at run time (an
      :class:`~pipeline.ottl.values.OTTLRuntimeError` when the value has another type);
    * ``stringlike_getter``: the value as a string (numbers and booleans converted);
    * ``target``: a path, passed as an :class:`~pipeline.ottl.contexts.Accessor` (``.get(ctx)``,
      ``.set(ctx, value)``);
    * ``string`` / ``int`` / ``float`` / ``bool`` / ``string_list``: a literal, passed as its
      Python value (checked when compiling);
    * ``getter_list``: a list literal, passed as a list of getters;
    * ``function``: the name of a converter taking one value (``SHA256``), passed as a
      Python callable ``f(value) -> value``;
    * ``enum``: an enum symbol, passed as its integer.

    ``optional`` parameters may be left out (they get ``default``).
    """

    name: str
    kind: str
    optional: bool = False
    default: Any = None


Factory = Callable[..., Callable[[Any], Any]]


@dataclass(frozen=True)
class FunctionDef:
    """A registered function: editors are lower-case, converters upper-case."""

    name: str
    params: tuple[Param, ...]
    factory: Factory
    contexts: frozenset[str] | None = None  # None: every context
    source: str = "builtin"

    @property
    def is_editor(self) -> bool:
        return self.name[:1].islower()


class Functions:
    """The OTTL functions known to the gateway: the standard ones and those plugins add through
    the ``register_ottl_functions`` hook."""

    def __init__(self) -> None:
        self._defs: dict[str, FunctionDef] = {}
        self._source = "builtin"

    def add(
        self,
        name: str,
        params: Sequence[Param],
        factory: Factory,
        *,
        contexts: Sequence[str] | None = None,
    ) -> None:
        """Register ``name``: ``factory(*arguments)`` is called once per use in a statement, with
        the arguments compiled as ``params`` say, and returns the function that runs per item:
        ``run(ctx) -> value``. Editors (lower-case names) change telemetry through their
        ``target`` arguments; converters (upper-case) return a value and change nothing.
        ``contexts`` restricts where the function may be used (such as ``["metric"]``)."""
        if not name or not (name[0].isalpha() and name.replace("_", "a").isalnum()):
            raise ValueError(f"invalid OTTL function name {name!r}")
        existing = self._defs.get(name)
        if existing is not None:
            raise ValueError(
                f"OTTL function {name!r} is registered twice: by {existing.source!r} and by "
                f"{self._source!r}"
            )
        seen_optional = False
        for p in params:
            if p.kind not in PARAM_KINDS:
                raise ValueError(f"{name}: unknown parameter kind {p.kind!r}")
            if seen_optional and not p.optional:
                raise ValueError(f"{name}: a required parameter follows an optional one")
            seen_optional = seen_optional or p.optional
        self._defs[name] = FunctionDef(
            name, tuple(params), factory, frozenset(contexts) if contexts else None, self._source
        )

    def get(self, name: str) -> FunctionDef | None:
        return self._defs.get(name)

    def names(self) -> list[str]:
        return sorted(self._defs)

    def _set_source(self, source: str) -> None:
        self._source = source


PARAM_KINDS = frozenset(
    {
        "getter", "string_getter", "stringlike_getter", "int_getter", "float_getter",
        "bool_getter", "map_getter", "slice_getter", "target", "string", "int", "float", "bool",
        "string_list", "getter_list", "function", "enum",
    }
)  # fmt: skip


@functools.cache
def default_functions() -> Functions:
    """The standard functions plus every plugin's (the ``register_ottl_functions`` hook)."""
    from pipeline.ottl.functions import register_standard
    from pipeline.pluginmanager import create_plugin_manager

    functions = Functions()
    register_standard(functions)
    pm = create_plugin_manager()
    for impl in reversed(pm.hook.register_ottl_functions.get_hookimpls()):
        functions._set_source(pm.get_name(impl.plugin) or repr(impl.plugin))
        impl.function(functions=functions)
    functions._set_source("builtin")
    return functions


# -- compiled results -----------------------------------------------------------------------------
@dataclass
class Statement:
    """A compiled statement: ``run(ctx)`` applies it when its ``where`` holds."""

    text: str
    context: str
    editor: Callable[[Any], Any]
    condition: Callable[[Any], Any] | None
    span_fields: set[str] = field(default_factory=set)
    needles: frozenset[bytes] | None = None
    """Byte strings that must all appear in a span's (log record's) encoding for the ``where``
    to hold (``None``: no such shortcut): items without them are skipped unread."""
    constant_attribute: tuple[str, Any] | None = None
    """``(key, value)`` when the statement is ``set(attributes[key], <literal>)`` with no
    ``where``, on spans or log records: run as an append to every item's bytes."""

    def run(self, ctx: Any) -> None:
        condition = self.condition
        if condition is None or condition(ctx) is True:
            self.editor(ctx)


@dataclass
class Condition:
    """A compiled boolean expression: ``evaluate(ctx) -> bool``."""

    text: str
    context: str
    evaluate: Callable[[Any], bool]
    span_fields: set[str] = field(default_factory=set)
    needles: frozenset[bytes] | None = None
    """Byte strings that must all appear in the item's encoding for the condition to hold."""


class _Scope:
    """What one statement's compilation collects: contexts named, fields read."""

    def __init__(self, signal: str, context: str | None, functions: Functions) -> None:
        self.signal = signal
        self.context = context
        self.functions = functions
        self.contexts: set[str] = set()
        self.span_fields: set[str] = set()
        self.deferred: list[Callable[[str], None]] = []
        self.function_contexts: list[frozenset[str]] = []


# -- comparison and arithmetic ------------------------------------------------------------------
def _num(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def compare(op: str, a: Any, b: Any) -> bool:
    """OTTL's comparison rules: numbers compare across int and float, strings with strings,
    booleans with booleans (only ``==``/``!=`` for booleans, maps, slices, bytes); anything
    else is unequal (and never ordered)."""
    if op == "==":
        return _equal(a, b)
    if op == "!=":
        return not _equal(a, b)
    if a is None or b is None:
        return False
    if (
        (_num(a) and _num(b))
        or (isinstance(a, str) and isinstance(b, str))
        or (
            (isinstance(a, Time) and isinstance(b, Time))
            or (isinstance(a, Duration) and isinstance(b, Duration))
        )
        or (isinstance(a, bytes) and isinstance(b, bytes))
    ):
        pass
    else:
        return False
    if op == "<":
        return bool(a < b)
    if op == "<=":
        return bool(a <= b)
    if op == ">":
        return bool(a > b)
    return bool(a >= b)


def _equal(a: Any, b: Any) -> bool:
    if a is None or b is None:
        return a is None and b is None
    if isinstance(a, bool) or isinstance(b, bool):
        return isinstance(a, bool) and isinstance(b, bool) and a == b
    if _num(a) and _num(b):
        return bool(a == b)
    if isinstance(a, str) or isinstance(b, str):
        return isinstance(a, str) and isinstance(b, str) and a == b
    if isinstance(a, bytes | bytearray) and isinstance(b, bytes | bytearray):
        return bytes(a) == bytes(b)
    if (is_map(a) and is_map(b)) or (is_slice(a) and is_slice(b)):
        return bool(to_plain(a) == to_plain(b))
    return bool(type(a) is type(b) and a == b)


def arithmetic(op: str, a: Any, b: Any) -> Any:
    if isinstance(a, bool) or isinstance(b, bool):
        raise OTTLRuntimeError(f"cannot use {op} on booleans")
    if isinstance(a, int) and isinstance(b, int):
        if op == "+":
            return a + b
        if op == "-":
            return a - b
        if op == "*":
            return a * b
        if b == 0:
            raise OTTLRuntimeError("attempted to divide by 0")
        q = abs(a) // abs(b)
        return q if (a >= 0) == (b >= 0) else -q  # Go truncates toward zero
    if _num(a) and _num(b):
        if isinstance(a, int) != isinstance(b, int):
            raise OTTLRuntimeError(
                f"cannot use {op} on an int64 and a float64: convert one with Int() or Double()"
            )
        if op == "+":
            return a + b
        if op == "-":
            return a - b
        if op == "*":
            return a * b
        if b == 0:
            raise OTTLRuntimeError("attempted to divide by 0")
        return a / b
    if isinstance(a, Time) and isinstance(b, Time) and op == "-":
        return Duration(a.ns - b.ns)
    if isinstance(a, Time) and isinstance(b, Duration) and op in "+-":
        return Time(a.ns + b.ns if op == "+" else a.ns - b.ns)
    if isinstance(a, Duration) and isinstance(b, Duration) and op in "+-":
        return Duration(a.ns + b.ns if op == "+" else a.ns - b.ns)
    raise OTTLRuntimeError(f"cannot use {op} on {type_name(a)} and {type_name(b)}")


# -- compiling -------------------------------------------------------------------------------------
def _const(node: Node) -> tuple[bool, Any]:
    """Whether ``node`` is a constant, and its value."""
    if node.kind == "literal":
        return True, node.value
    if node.kind == "paren":
        return _const(node.children[0])
    if node.kind == "list":
        values = [_const(c) for c in node.children]
        if all(ok for ok, _ in values):
            return True, [v for _, v in values]
    if node.kind == "map":
        items = [(k, _const(v)) for k, v in node.value]
        if all(ok for _, (ok, _) in items):
            return True, {k: v for k, (_, v) in items}
    return False, None


def _compile_value(node: Node, scope: _Scope) -> Getter:
    ok, value = _const(node)
    if ok:
        return lambda ctx: value
    kind = node.kind
    if kind == "path":
        return _compile_path(node, scope).get
    if kind == "enum":
        if node.value not in ENUMS:
            raise OTTLCompileError(f"unknown enum {node.value!r}", node.column)
        number = ENUMS[node.value]
        return lambda ctx: number
    if kind == "converter":
        return _compile_call(node, scope)
    if kind == "editor":
        raise OTTLCompileError(
            f"converter names must start with an uppercase letter but got {node.name!r}",
            node.column,
        )
    if kind == "paren":
        return _compile_value(node.children[0], scope)
    if kind == "list":
        getters = [_compile_value(c, scope) for c in node.children]
        return lambda ctx: [g(ctx) for g in getters]
    if kind == "map":
        pairs = [(k, _compile_value(v, scope)) for k, v in node.value]
        return lambda ctx: {k: g(ctx) for k, g in pairs}
    if kind == "signed":
        operand = _compile_value(node.children[0], scope)
        if node.value == "+":
            return operand
        return lambda ctx: arithmetic("-", 0, operand(ctx))
    if kind == "math":
        left = _compile_value(node.children[0], scope)
        right = _compile_value(node.children[1], scope)
        op = node.value
        return lambda ctx: arithmetic(op, left(ctx), right(ctx))
    if kind in ("compare", "and", "or", "not"):
        return _compile_bool(node, scope)
    raise OTTLCompileError(f"unexpected {kind}", node.column)  # pragma: no cover


def _compile_bool(node: Node, scope: _Scope) -> Callable[[Any], bool]:
    kind = node.kind
    if kind == "paren":
        return _compile_bool(node.children[0], scope)
    if kind == "compare":
        op = node.value
        for side in node.children:
            if side.kind in ("compare", "and", "or", "not"):
                raise OTTLCompileError(
                    "a comparison compares values, not conditions: use 'and', 'or' and parentheses",
                    side.column,
                )
        left = _compile_value(node.children[0], scope)
        ok, constant = _const(node.children[1])
        if ok and isinstance(constant, str):
            if op == "==":
                return lambda ctx: left(ctx) == constant
            if op == "!=":
                return lambda ctx: left(ctx) != constant
        if ok and constant is None and op in ("==", "!="):
            if op == "==":
                return lambda ctx: left(ctx) is None
            return lambda ctx: left(ctx) is not None
        right = _compile_value(node.children[1], scope)
        return lambda ctx: compare(op, left(ctx), right(ctx))
    if kind == "and":
        parts = [_compile_bool(c, scope) for c in node.children]
        if len(parts) == 2:
            a, b = parts
            return lambda ctx: a(ctx) and b(ctx)
        return lambda ctx: all(p(ctx) for p in parts)
    if kind == "or":
        parts = [_compile_bool(c, scope) for c in node.children]
        if len(parts) == 2:
            a, b = parts
            return lambda ctx: a(ctx) or b(ctx)
        return lambda ctx: any(p(ctx) for p in parts)
    if kind == "not":
        inner = _compile_bool(node.children[0], scope)
        return lambda ctx: not inner(ctx)
    if kind == "literal" and isinstance(node.value, bool):
        value = node.value
        return lambda ctx: value
    if kind == "converter":
        getter = _compile_call(node, scope)

        def as_bool(ctx: Any) -> bool:
            value = getter(ctx)
            if not isinstance(value, bool):
                raise OTTLRuntimeError(
                    f"{node.name} returned a {type_name(value)} where a condition needs a bool"
                )
            return value

        return as_bool
    if kind == "path":
        getter = _compile_path(node, scope).get

        def path_bool(ctx: Any) -> bool:
            value = getter(ctx)
            if not isinstance(value, bool):
                raise OTTLRuntimeError(f"a condition needs a bool, got {type_name(value)}")
            return value

        return path_bool
    raise OTTLCompileError(
        "expected a condition (a comparison, true, false, a converter or not/and/or)",
        node.column,
    )


def _item_path(node: Node, context: str) -> tuple[str, Any] | None:
    """``("name", None)`` or ``("attributes", key)`` when ``node`` is that path of the item of
    ``context`` (a span or a log record), else ``None``."""
    if node.kind != "path" or context not in ("span", "log"):
        return None
    fields: list[tuple[str, list[Node]]] = node.value
    if fields and fields[0][0] == context and not fields[0][1]:
        fields = fields[1:]
    if len(fields) != 1:
        return None
    name, keys = fields[0]
    if name == "name" and not keys and context == "span":
        return ("name", None)
    if name == "attributes" and len(keys) == 1:
        ok, key = _const(keys[0])
        if ok and isinstance(key, str):
            return ("attributes", key)
    return None


def _ld(tag: int, payload: bytes) -> bytes:
    return bytes((tag,)) + encode_varint(len(payload)) + payload


def needles(node: Node, context: str) -> frozenset[bytes] | None:
    """Byte strings an item's encoding must all contain for the condition ``node`` to hold, or
    ``None`` when there is no such simple test: an equality of the span name or of an
    attribute with a string, an attribute that must be present (``!= nil``, ``IsMatch``),
    ``and`` of those (all), ``or`` (what both sides need)."""
    kind = node.kind
    if kind == "paren":
        return needles(node.children[0], context)
    if kind == "and":
        found = [needles(c, context) for c in node.children]
        known = [f for f in found if f]
        return frozenset().union(*known) if known else None
    if kind == "or":
        found = [needles(c, context) for c in node.children]
        if any(f is None for f in found):
            return None
        common = frozenset.intersection(*[f for f in found if f is not None])
        return common or None
    if kind == "converter" and node.name in ("IsMatch", "IsString", "IsInt", "IsMap", "IsList"):
        if node.children and not node.children[0].name:
            target = _item_path(node.children[0].children[0], context)
            if target is not None and target[0] == "attributes":
                return frozenset({_ld(0x0A, target[1].encode())})
        return None
    if kind != "compare":
        return None
    left, right = node.children
    path = _item_path(left, context)
    other = right
    if path is None:
        path, other = _item_path(right, context), left
    if path is None:
        return None
    ok, value = _const(other)
    if not ok:
        return None
    what, key = path
    out: set[bytes] = set()
    if what == "attributes":
        if (node.value == "==" and value is not None) or (node.value == "!=" and value is None):
            out.add(_ld(0x0A, key.encode()))
        else:
            return None
        if node.value == "==" and isinstance(value, str):
            out.add(_ld(0x0A, value.encode()))  # the AnyValue's string_value
        return frozenset(out)
    if node.value == "==" and isinstance(value, str):
        return frozenset({_ld(0x2A, value.encode())})  # Span.name, field 5
    return None


def _constant_attribute(editor: Node, where: Node | None, context: str) -> tuple[str, Any] | None:
    if where is not None or editor.name != "set" or len(editor.children) != 2:
        return None
    target, value = (a.children[0] for a in editor.children)
    if any(a.name for a in editor.children):
        return None
    path = _item_path(target, context)
    if path is None or path[0] != "attributes":
        return None
    ok, constant = _const(value)
    if not ok or constant is None or isinstance(constant, list | dict):
        return None
    if (
        isinstance(constant, int)
        and not isinstance(constant, bool)
        and not (-(2**63) <= constant < 2**63)
    ):
        return None
    return (path[1], constant)


def _context_of(first: str, scope: _Scope) -> str | None:
    name = ALIASES.get(first, first)
    if name in SIGNAL_CONTEXTS[scope.signal]:
        return name
    return None


def _compile_path(node: Node, scope: _Scope) -> Accessor:
    fields: list[tuple[str, list[Node]]] = node.value
    names = [f for f, _ in fields]
    keys_nodes = [k for _, ks in fields for k in ks]
    # keys may only follow the last field of a path here (``attributes["a"]["b"]``)
    for _, ks in fields[:-1]:
        if ks:
            raise OTTLCompileError("only the last field of a path may be indexed", node.column)
    text = ".".join(names) + "".join("[...]" for _ in keys_nodes)
    context = _context_of(names[0], scope)
    if context is not None and len(names) > 1:
        rest = names[1:]
    elif context is not None and names[0] in ("resource", "scope", "instrumentation_scope"):
        raise OTTLCompileError(f"path {text!r} needs a field after {names[0]!r}", node.column)
    else:
        if scope.context is None:
            raise OTTLCompileError(
                f"missing context name for path {text!r}: write it with its context, such as "
                f"'{SIGNAL_CONTEXTS[scope.signal][2]}.{text}' or "
                f"'resource.{text}', or give the statements a 'context'",
                node.column,
            )
        context, rest = scope.context, names
    key_getters = [_compile_value(k, scope) for k in keys_nodes]
    consts = [_const(k) for k in keys_nodes]
    const_keys = [v for _, v in consts] if all(ok for ok, _ in consts) else None
    for ok, v in consts:
        if (ok and not isinstance(v, str | int)) or isinstance(v, bool):
            raise OTTLCompileError(f"a key must be a string or an integer, got {v!r}", node.column)
    scope.contexts.add(context)
    try:
        accessor = resolve(context, rest, key_getters, const_keys, text)
    except PathError as exc:
        raise OTTLCompileError(str(exc), node.column) from None
    scope.span_fields |= accessor.span_fields
    return accessor


def _arg_value(node: Node, param: Param, fname: str, scope: _Scope) -> Any:
    kind = param.kind
    what = f"{fname}: argument {param.name!r}"
    if kind in ("string", "int", "float", "bool", "string_list"):
        ok, value = _const(node)
        types: Any = {"string": str, "int": int, "float": (int, float), "bool": bool,
                      "string_list": list}[kind]  # fmt: skip
        if (
            not ok
            or not isinstance(value, types)
            or (kind in ("int", "float") and isinstance(value, bool))
            or (kind == "string_list" and not all(isinstance(v, str) for v in value))
        ):
            expected = {"string": "a string literal", "int": "an integer literal",
                        "float": "a number literal", "bool": "true or false",
                        "string_list": "a list of string literals"}[kind]  # fmt: skip
            raise OTTLCompileError(f"{what} must be {expected}", node.column)
        return float(value) if kind == "float" else value
    if kind == "target":
        if node.kind != "path":
            raise OTTLCompileError(f'{what} must be a path (such as attributes["k"])', node.column)
        accessor = _compile_path(node, scope)
        if accessor.set is None:
            raise OTTLCompileError(f"{what}: {accessor.text} cannot be changed", node.column)
        return accessor
    if kind == "getter_list":
        if node.kind != "list":
            raise OTTLCompileError(f"{what} must be a list [...]", node.column)
        return [_compile_value(c, scope) for c in node.children]
    if kind == "function":
        if node.kind != "enum":
            raise OTTLCompileError(f"{what} must be the name of a converter", node.column)
        fdef = scope.functions.get(node.value)
        if fdef is None or fdef.is_editor:
            raise OTTLCompileError(f"{what}: unknown converter {node.value!r}", node.column)
        required = [p for p in fdef.params if not p.optional]
        if len(required) != 1 or "getter" not in required[0].kind:
            raise OTTLCompileError(
                f"{what}: {node.value} does not take exactly one value", node.column
            )
        run = fdef.factory(lambda v: v, *[p.default for p in fdef.params[1:]])

        def call(value: Any) -> Any:
            return run(value)

        return call
    if kind == "enum":
        if node.kind != "enum" or node.value not in ENUMS:
            raise OTTLCompileError(f"{what} must be a known enum", node.column)
        return ENUMS[node.value]
    getter = _compile_value(node, scope)
    return _typed_getter(getter, kind, what)


def _typed_getter(getter: Getter, kind: str, what: str) -> Getter:
    if kind == "getter":
        return getter
    if kind == "string_getter":

        def string(ctx: Any) -> Any:
            value = getter(ctx)
            if not isinstance(value, str):
                raise OTTLRuntimeError(f"{what}: expected a string, got {type_name(value)}")
            return value

        return string
    if kind == "stringlike_getter":
        from pipeline.ottl.values import as_string

        def stringlike(ctx: Any) -> Any:
            value = getter(ctx)
            if value is None or isinstance(value, str):
                return value
            if is_map(value) or is_slice(value) or isinstance(value, bytes | bool | int | float):
                return as_string(value)
            raise OTTLRuntimeError(f"{what}: cannot use a {type_name(value)} as a string")

        return stringlike
    checks: dict[str, Callable[[Any], bool]] = {
        "int_getter": lambda v: isinstance(v, int) and not isinstance(v, bool),
        "float_getter": _num,
        "bool_getter": lambda v: isinstance(v, bool),
        "map_getter": is_map,
        "slice_getter": is_slice,
    }
    check = checks[kind]
    expected = kind.removesuffix("_getter")

    def checked(ctx: Any) -> Any:
        value = getter(ctx)
        if not check(value):
            raise OTTLRuntimeError(f"{what}: expected a {expected}, got {type_name(value)}")
        return value

    return checked


def _norm(name: str) -> str:
    return name.replace("_", "").lower()


def _compile_call(node: Node, scope: _Scope) -> Callable[[Any], Any]:
    fdef = scope.functions.get(node.name)
    if fdef is None:
        close = _close_names(node.name, scope.functions.names())
        raise OTTLCompileError(f"undefined function {node.name!r}{close}", node.column)
    if fdef.contexts is not None:
        scope.deferred.append(functools.partial(_check_context, fdef, node))
        scope.function_contexts.append(fdef.contexts)
    params = fdef.params
    values: list[Any] = [None] * len(params)
    given = [False] * len(params)
    positional = True
    for i, arg in enumerate(node.children):
        if arg.name:
            positional = False
            idx = next((j for j, p in enumerate(params) if _norm(p.name) == _norm(arg.name)), -1)
            if idx < 0:
                raise OTTLCompileError(
                    f"{fdef.name} has no parameter named {arg.name!r} (it takes "
                    f"{', '.join(p.name for p in params) or 'none'})",
                    arg.column,
                )
        else:
            if not positional:
                raise OTTLCompileError(
                    "positional arguments cannot follow named arguments", arg.column
                )
            idx = i
            if idx >= len(params):
                raise OTTLCompileError(
                    f"{fdef.name} takes at most {len(params)} argument(s), got "
                    f"{len(node.children)}",
                    arg.column,
                )
        if given[idx]:
            raise OTTLCompileError(f"{params[idx].name!r} is given twice", arg.column)
        given[idx] = True
        values[idx] = _arg_value(arg.children[0], params[idx], fdef.name, scope)
    for j, p in enumerate(params):
        if not given[j]:
            if not p.optional:
                raise OTTLCompileError(
                    f"{fdef.name} is missing its argument {p.name!r} "
                    f"({fdef.name}({', '.join(q.name for q in params)}))",
                    node.column,
                )
            values[j] = p.default
    try:
        run = fdef.factory(*values)
    except (ValueError, TypeError) as exc:
        raise OTTLCompileError(f"{fdef.name}: {exc}", node.column) from None
    if node.keys:
        key_getters = [_compile_value(k, scope) for k in node.keys]
        from pipeline.ottl.contexts import index_value

        inner = run
        return lambda ctx: index_value(inner(ctx), key_getters, ctx)
    return run


def _check_context(fdef: FunctionDef, node: Node, context: str) -> None:
    assert fdef.contexts is not None
    if context not in fdef.contexts:
        raise OTTLCompileError(
            f"{fdef.name} cannot be used in the {context} context (only in "
            f"{', '.join(sorted(fdef.contexts))})",
            node.column,
        )


def _close_names(name: str, names: list[str]) -> str:
    import difflib

    close = difflib.get_close_matches(name, names, n=1, cutoff=0.6)
    return f" (did you mean {close[0]!r}?)" if close else ""


def _infer(scopes: list[_Scope], signal: str, given: str | None, column_of: list[int]) -> str:
    if given is not None:
        return given
    used: set[str] = set()
    for s in scopes:
        used |= s.contexts
    if not used:
        # functions usable in some contexts only name the context too (the Collector infers
        # from paths, functions and enums)
        allowed: set[str] | None = None
        for s in scopes:
            for contexts in s.function_contexts:
                allowed = set(contexts) if allowed is None else allowed & contexts
        if allowed:
            return max(allowed, key=lambda c: DEPTH[c])
    if not used:
        raise OTTLCompileError(
            "cannot infer the context: no path names one (write paths such as "
            f"'{SIGNAL_CONTEXTS[signal][2]}.name' or give the statements a 'context')",
            column_of[0] if column_of else 1,
        )
    deepest = max(used, key=lambda c: DEPTH[c])
    chain = {"spanevent": {"resource", "scope", "span", "spanevent"},
             "datapoint": {"resource", "scope", "metric", "datapoint"}}.get(
        deepest, {"resource", "scope", deepest}
    )  # fmt: skip
    if not used <= chain:
        raise OTTLCompileError(
            f"the paths name contexts that cannot be used together: {', '.join(sorted(used))}",
            column_of[0] if column_of else 1,
        )
    return deepest


def compile_statements(
    texts: Sequence[str],
    signal: str,
    context: str | None = None,
    functions: Functions | None = None,
) -> tuple[str, list[Statement]]:
    """Compile a group of statements; ``context`` given (the grouped form) or inferred from the
    paths (the deepest context they name). Returns ``(context, statements)``; raises
    :class:`StatementError` naming the statement (index) and the column."""
    functions = functions or default_functions()
    if context is not None:
        context = ALIASES.get(context, context)
        if context not in SIGNAL_CONTEXTS[signal]:
            raise StatementError(
                -1,
                OTTLCompileError(
                    f"unknown context {context!r} for {signal}; use one of "
                    f"{', '.join(SIGNAL_CONTEXTS[signal])}",
                    1,
                ),
            )
    compiled: list[tuple[_Scope, Any, Any, str, tuple[Node, Node | None]]] = []
    for i, text in enumerate(texts):
        scope = _Scope(signal, context, functions)
        try:
            editor_node, where = parse_statement(text)
            if editor_node.kind != "editor":  # pragma: no cover - the grammar ensures it
                raise OTTLCompileError("a statement starts with an editor", 1)
            if editor_node.keys:
                raise OTTLCompileError(
                    f"only paths and converters may be indexed, not editors, but got "
                    f"{editor_node.name}",
                    editor_node.column,
                )
            fdef = functions.get(editor_node.name)
            if fdef is not None and not fdef.is_editor:  # pragma: no cover
                raise OTTLCompileError("a statement must call an editor", editor_node.column)
            editor = _compile_call(editor_node, scope)
            condition = _compile_bool(where, scope) if where is not None else None
        except (OTTLSyntaxError, OTTLCompileError) as exc:
            raise StatementError(i, exc) from None
        compiled.append((scope, editor, condition, text, (editor_node, where)))
    try:
        chosen = _infer([c[0] for c in compiled], signal, context, [1])
    except OTTLCompileError as exc:
        raise StatementError(0, exc) from None
    out = []
    for i, (scope, editor, condition, text, (editor_node, where)) in enumerate(compiled):
        try:
            for check in scope.deferred:
                check(chosen)
        except OTTLCompileError as exc:
            raise StatementError(i, exc) from None
        out.append(
            Statement(
                text,
                chosen,
                editor,
                condition,
                scope.span_fields,
                needles(where, chosen) if where is not None else None,
                _constant_attribute(editor_node, where, chosen),
            )
        )
    return chosen, out


def compile_conditions(
    texts: Sequence[str],
    signal: str,
    context: str | None = None,
    functions: Functions | None = None,
) -> tuple[str, list[Condition]]:
    """Compile conditions (filter, transform group ``conditions``), as
    :func:`compile_statements`."""
    functions = functions or default_functions()
    if context is not None:
        context = ALIASES.get(context, context)
    compiled: list[tuple[_Scope, Any, str, Node]] = []
    for i, text in enumerate(texts):
        scope = _Scope(signal, context, functions)
        try:
            node = parse_condition(text)
            evaluate = _compile_bool(node, scope)
        except (OTTLSyntaxError, OTTLCompileError) as exc:
            raise StatementError(i, exc) from None
        compiled.append((scope, evaluate, text, node))
    try:
        chosen = _infer([c[0] for c in compiled], signal, context, [1])
    except OTTLCompileError as exc:
        raise StatementError(0, exc) from None
    out = []
    for i, (scope, evaluate, text, node) in enumerate(compiled):
        try:
            for check in scope.deferred:
                check(chosen)
        except OTTLCompileError as exc:
            raise StatementError(i, exc) from None
        out.append(Condition(text, chosen, evaluate, scope.span_fields, needles(node, chosen)))
    return chosen, out


class StatementError(ValueError):
    """A statement of a list that cannot be parsed or compiled: ``index`` in the list (-1:
    the group itself), ``column`` in the statement."""

    def __init__(self, index: int, error: OTTLSyntaxError | OTTLCompileError) -> None:
        self.index = index
        self.column = error.column
        self.detail = str(error)
        super().__init__(self.detail)
