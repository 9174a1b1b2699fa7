"""The OTTL grammar, parsed with lark (LALR(1)): statements and conditions into a small AST.

Why lark: it is maintained, pure Python with no dependencies, its LALR(1) parser reads a
statement in one linear pass, and every token keeps its line and column, which the errors of
``pipeline validate`` quote. Statements are parsed once, when the config is validated; what runs
per item is the compiled closures of :mod:`pipeline.ottl.compiler`, never this parser.

The grammar follows the Collector's (``pkg/ottl/grammar.go``): editors are lower-case calls,
converters upper-case ones, enums upper-case symbols, paths lower-case fields joined by dots
with ``[key]`` indexes; ``where`` takes a boolean expression of comparisons (``== != < <= > >=``),
``and``, ``or``, ``not`` and parentheses; values are strings, integers, floats, ``0x`` bytes,
``true``/``false``, ``nil``, lists ``[...]``, maps ``{"k": v}`` and arithmetic (``+ - * /``).
Boolean and arithmetic expressions share one precedence ladder here (so one-token lookahead
suffices); what the Collector's grammar cannot write (a comparison of comparisons) is refused
when compiling, with its column.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass, field
from typing import Any

GRAMMAR = r"""
start_statement: invocation ("where" expr)?
start_condition: expr

invocation: LOWER "(" [args] ")" key*
converter: UPPER "(" [args] ")" key*
args: arg ("," arg)*
arg: LOWER "=" expr   -> named_arg
   | expr             -> positional_arg

?expr: or_expr
?or_expr: and_expr ("or" and_expr)*
?and_expr: not_expr ("and" not_expr)*
?not_expr: "not" not_expr               -> not_
         | comparison
?comparison: sum (COMP_OP sum)?
?sum: product (ADD_OP product)*
?product: atom (MUL_OP atom)*
?atom: STRING                           -> string
     | INT                              -> int_
     | FLOAT                            -> float_
     | BYTES                            -> bytes_
     | "true"                           -> true
     | "false"                          -> false
     | "nil"                            -> nil
     | UPPER                            -> enum
     | converter
     | invocation
     | path
     | "[" [expr ("," expr)*] "]"       -> list_
     | "{" [map_item ("," map_item)*] ","? "}" -> map_
     | "(" expr ")"                     -> paren
     | ADD_OP atom                      -> signed
path: LOWER ("." LOWER)* key*  -> path
    | LOWER ("." LOWER)* key+ ("." LOWER key*)+ -> path
key: "[" expr "]"
map_item: STRING ":" expr

COMP_OP: "==" | "!=" | ">=" | "<=" | ">" | "<"
ADD_OP: "+" | "-"
MUL_OP: "*" | "/"
BYTES.3: /0x[a-fA-F0-9]+/
FLOAT.2: /\d*\.\d+([eE][-+]?\d+)?/
INT.1: /\d+/
STRING: /"(\\.|[^\\"])*"/
UPPER: /[A-Z][A-Za-z0-9_]*/
LOWER: /[a-z][A-Za-z0-9_]*/

%import common.WS
%ignore WS
"""


@dataclass
class Node:
    """An AST node: ``kind`` and its ``column`` (1-based) in the statement."""

    kind: str
    column: int
    value: Any = None
    children: list[Any] = field(default_factory=list)
    name: str = ""  # functions: the name; named arguments: the argument's name
    keys: list[Node] = field(default_factory=list)

    def __repr__(self) -> str:  # compact, for test failures
        return f"{self.kind}({self.value!r}, {self.children!r})"


class OTTLSyntaxError(ValueError):
    """A statement or condition that cannot be parsed; ``column`` is 1-based."""

    def __init__(self, message: str, column: int) -> None:
        super().__init__(f"column {column}: {message}")
        self.column = column
        self.detail = message


@functools.cache
def _parser() -> Any:
    import lark

    return lark.Lark(
        GRAMMAR,
        parser="lalr",
        start=["start_statement", "start_condition"],
        propagate_positions=True,
        maybe_placeholders=False,
    )


_ESCAPES = {"n": "\n", "t": "\t", "r": "\r", "\\": "\\", '"': '"', "'": "'", "a": "\a", "b": "\b",
            "f": "\f", "v": "\v"}  # fmt: skip


def unquote(text: str, column: int) -> str:
    """A string token's value, with Go's escapes (``\\n``, ``\\"``, ``\\\\``, ``\\xNN``,
    ``\\uNNNN``, ``\\UNNNNNNNN``); other escapes are refused, as Go's ``strconv.Unquote`` does."""
    body = text[1:-1]
    if "\\" not in body:
        return body
    out: list[str] = []
    i = 0
    while i < len(body):
        c = body[i]
        if c != "\\":
            out.append(c)
            i += 1
            continue
        nxt = body[i + 1] if i + 1 < len(body) else ""
        if nxt in _ESCAPES:
            out.append(_ESCAPES[nxt])
            i += 2
            continue
        width = {"x": 2, "u": 4, "U": 8}.get(nxt)
        if width is not None:
            digits = body[i + 2 : i + 2 + width]
            if len(digits) == width and all(d in "0123456789abcdefABCDEF" for d in digits):
                out.append(chr(int(digits, 16)))
                i += 2 + width
                continue
        raise OTTLSyntaxError(
            f"invalid escape sequence '\\{nxt}' in string {text} (write '\\\\{nxt}' for a "
            "backslash followed by that character)",
            column + 1 + i,
        )
    return "".join(out)


def _convert(tree: Any) -> Any:
    import lark

    if isinstance(tree, lark.Token):
        return tree
    kind = tree.data
    column = tree.meta.column if not tree.meta.empty else 1
    kids = tree.children
    if kind in ("start_statement", "start_condition"):
        return [_convert(k) for k in kids]
    if kind == "string":
        return Node("literal", column, unquote(str(kids[0]), column))
    if kind == "int_":
        return Node("literal", column, int(str(kids[0])))
    if kind == "float_":
        return Node("literal", column, float(str(kids[0])))
    if kind == "bytes_":
        digits = str(kids[0])[2:]
        if len(digits) % 2:
            raise OTTLSyntaxError(f"bytes literal {kids[0]} has an odd number of digits", column)
        return Node("literal", column, bytes.fromhex(digits))
    if kind == "true":
        return Node("literal", column, True)
    if kind == "false":
        return Node("literal", column, False)
    if kind == "nil":
        return Node("literal", column, None)
    if kind == "enum":
        return Node("enum", column, str(kids[0]))
    if kind in ("converter", "invocation"):
        name = str(kids[0])
        args: list[Node] = []
        keys: list[Node] = []
        for k in kids[1:]:
            if k.data == "args":
                args = [_convert(a) for a in k.children]
            else:
                keys.append(_convert(k.children[0]))
        return Node(
            "converter" if kind == "converter" else "editor", column, None, args, name, keys
        )
    if kind == "named_arg":
        node = _convert(kids[1])
        return Node("arg", column, None, [node], str(kids[0]))
    if kind == "positional_arg":
        return Node("arg", column, None, [_convert(kids[0])], "")
    if kind == "path":
        fields: list[tuple[str, list[Node]]] = []
        for k in kids:
            if isinstance(k, lark.Token):
                fields.append((str(k), []))
            else:
                fields[-1][1].append(_convert(k.children[0]))
        return Node("path", column, fields)
    if kind == "list_":
        return Node("list", column, None, [_convert(k) for k in kids])
    if kind == "map_":
        items = [(unquote(str(k.children[0]), column), _convert(k.children[1])) for k in kids]
        return Node("map", column, items)
    if kind == "paren":
        inner = _convert(kids[0])
        return Node("paren", column, None, [inner])
    if kind == "signed":
        sign, operand = str(kids[0]), _convert(kids[1])
        if (
            operand.kind == "literal"
            and isinstance(operand.value, int | float)
            and not isinstance(operand.value, bool)
        ):
            return Node("literal", column, -operand.value if sign == "-" else operand.value)
        return Node("signed", column, sign, [operand])
    if kind == "not_":
        return Node("not", column, None, [_convert(kids[0])])
    if kind in ("or_expr", "and_expr"):
        return Node(kind[:-5], column, None, [_convert(k) for k in kids])
    if kind == "comparison":
        return Node("compare", column, str(kids[1]), [_convert(kids[0]), _convert(kids[2])])
    if kind in ("sum", "product"):
        node = _convert(kids[0])
        for i in range(1, len(kids), 2):
            node = Node("math", column, str(kids[i]), [node, _convert(kids[i + 1])])
        return node
    raise AssertionError(f"unexpected parse tree node {kind}")  # pragma: no cover


def _parse(text: str, start: str) -> list[Any]:
    import lark

    if "\n" in text.strip():
        # YAML folds a multi-line plain scalar into one line; a literal block keeps newlines:
        # columns are then counted in the statement as if it were one line.
        text = " ".join(text.split("\n"))
    try:
        tree = _parser().parse(text, start=start)
    except lark.UnexpectedCharacters as exc:
        raise OTTLSyntaxError(
            f"unexpected character {text[exc.pos_in_stream or 0]!r}", exc.column
        ) from None
    except lark.UnexpectedEOF as exc:
        expected = ", ".join(sorted(_describe(t) for t in exc.expected))
        raise OTTLSyntaxError(
            f"the statement ends too early (expected {expected})", len(text) + 1
        ) from None
    except lark.UnexpectedToken as exc:
        token = exc.token
        if token.type == "$END":
            expected = ", ".join(sorted(_describe(t) for t in exc.expected))
            raise OTTLSyntaxError(
                f"the statement ends too early (expected {expected})", len(text) + 1
            ) from None
        expected = ", ".join(sorted(_describe(t) for t in exc.expected))
        raise OTTLSyntaxError(
            f"unexpected {str(token)!r} (expected {expected})", token.column
        ) from None
    result: list[Any] = _convert(tree)
    return result


_TERMINALS = {
    "LPAR": "'('", "RPAR": "')'", "LSQB": "'['", "RSQB": "']'", "LBRACE": "'{'",
    "RBRACE": "'}'", "COMMA": "','", "DOT": "'.'", "COLON": "':'", "EQUAL": "'='",
    "COMP_OP": "a comparison", "ADD_OP": "'+' or '-'", "MUL_OP": "'*' or '/'",
    "STRING": "a string", "INT": "an integer", "FLOAT": "a number", "BYTES": "bytes",
    "UPPER": "a converter or enum", "LOWER": "a path or function", "WHERE": "'where'",
    "AND": "'and'", "OR": "'or'", "NOT": "'not'", "TRUE": "true", "FALSE": "false",
    "NIL": "nil",
}  # fmt: skip


def _describe(terminal: str) -> str:
    return _TERMINALS.get(terminal, terminal.lower())


def parse_statement(text: str) -> tuple[Node, Node | None]:
    """``(editor call, where-condition or None)``; raises :class:`OTTLSyntaxError`."""
    parts = _parse(text, "start_statement")
    return parts[0], (parts[1] if len(parts) > 1 else None)


def parse_condition(text: str) -> Node:
    """A boolean expression; raises :class:`OTTLSyntaxError`."""
    node: Node = _parse(text, "start_condition")[0]
    return node
