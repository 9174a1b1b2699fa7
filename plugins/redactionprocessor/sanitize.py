"""The ``redaction`` processor's ``url_sanitization`` and ``db_sanitizer`` (the Collector's
options): URL paths' dynamic segments (ids, UUIDs, hashes, numbers) become ``*``, query
values ``*`` and user info ``*``; database statements keep their shape with every literal
replaced by ``?``:

- SQL: quoted strings (with ``''`` and backslash escapes, ``E''``/``N''``/``U&''``
  prefixes), dollar-quoted strings, numbers, hex and bit/blob literals become ``?``;
  comments (which may carry data, e.g. sqlcommenter's) are removed; a parenthesized list of
  nothing but literals (``IN (1, 2, 3)``, ``VALUES (...)``) becomes ``( ? )``; white space
  is collapsed. Identifiers, double-quoted and backquoted names, keywords and placeholders
  (``$1``, ``%s``, ``?``, ``:name``) are kept.
- Redis and Memcached: each command keeps its name (and a subcommand, ``CONFIG GET``) and
  its arguments become one ``?``.
- MongoDB, Elasticsearch, OpenSearch: JSON (or the Python/shell-style dicts some
  instrumentations write) keeps its keys and punctuation; every value becomes ``"?"``.

Every function is a single left-to-right pass (regular expressions whose repetitions are
possessive, so they never backtrack; no recursion, no parsing that can fail): any string,
however large, broken or deeply nested, gives a result in linear time and never raises.
Text that ends inside a literal (a truncated statement) has the rest replaced."""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from plugins.redactionprocessor.config import DBSanitizerConfig, URLSanitizationConfig

# -- SQL -----------------------------------------------------------------------------------
# one match: a run of text that holds no literal (``pre``: names consumed whole, so a digit
# in one is no number, but not past a ``$``, which may open a dollar-quoted string; white
# space, operators, placeholders ``$1`` ``?1``), then one token or
# the end. Quoted identifiers are kept whole, so a quote or digit inside one is not taken for
# a literal; strings end at the closing quote or at the end of the text (a truncated
# statement), and so does a quoted name never closed (the rest could be a MySQL string).
_SQL = re.compile(
    r"""
    (?P<pre>(?:[^'"`$/\-0-9.?A-Za-z_]++|[A-Za-z_]\w*+|\$[0-9]++
              |\$(?!\$|[A-Za-z_][A-Za-z0-9_]*+\$)|\?[0-9]*+|\.(?![0-9])|-(?!-)|/(?!\*))*+)
    (?:
      (?P<ident>"(?:[^"]++|"")*+"|`[^`]*+`)
    | (?P<unterminated>["`](?s:.*))
    | (?P<comment>--[^\n]*+|/\*(?s:.*?)(?:\*/|\Z))
    | (?P<dollar>\$\$(?s:.*?)(?:\$\$|\Z)
                |\$(?P<tag>[A-Za-z_][A-Za-z0-9_]*+)\$(?s:.*?)(?:\$(?P=tag)\$|\Z))
    | (?P<string>'(?:[^'\\]++|\\(?s:.)|'')*+(?:'|\\?\Z))
    | (?P<number>0[xX][0-9A-Fa-f]++|[0-9]++(?:\.[0-9]*+)?(?:[eE][-+]?[0-9]++)?
                |\.[0-9]++(?:[eE][-+]?[0-9]++)?)
    | \Z
    )
    """,
    re.VERBOSE,
)
# a parenthesized list of nothing but literals, collapsed to one
_SQL_LIST = re.compile(r"\(\s*+\?(?:\s*+,\s*+\?)*+\s*+\)")


def _sql_token(m: re.Match[str]) -> str:
    kind = m.lastgroup
    if kind == "pre" or kind == "ident":
        return m.group(0)
    pre = m.group("pre")
    if kind == "comment":
        return pre + " "
    if kind == "string" and pre:  # a prefix (E'', N'', X'', B'', U&'') is the literal's
        cut = 2 if pre.endswith(("U&", "u&")) else 1 if pre[-1] in "EeNnBbXx" else 0
        if cut and (len(pre) == cut or not _word_char(pre[-cut - 1])):
            pre = pre[:-cut]
    return pre + "?"


def _word_char(ch: str) -> bool:
    return ch.isalnum() or ch in "_$"


def sanitize_sql(text: str) -> str:
    """``text`` with every literal replaced by ``?`` and comments removed (see the module)."""
    out = _SQL.sub(_sql_token, text)
    if "(" in out:
        out = _SQL_LIST.sub("( ? )", out)
    return " ".join(out.split())  # white space collapsed


# -- Redis, Memcached ----------------------------------------------------------------------
# commands whose first argument names what they do (kept with the command)
_REDIS_SUBCOMMANDS = frozenset((
    "ACL", "CLIENT", "CLUSTER", "COMMAND", "CONFIG", "DEBUG", "FUNCTION", "LATENCY", "MEMORY",
    "MODULE", "OBJECT", "PUBSUB", "SCRIPT", "SLOWLOG", "XGROUP", "XINFO",
))  # fmt: skip
_WORD = re.compile(r"[A-Za-z][A-Za-z0-9_.\-]*+")


def _command_line(line: str, subcommands: frozenset[str]) -> str:
    parts = line.split(None, 2)
    if not parts:
        return ""
    if _WORD.fullmatch(parts[0]) is None:
        return "?"  # not a command: nothing of it is kept
    keep = [parts[0]]
    rest = parts[1:]
    if rest and parts[0].upper() in subcommands and _WORD.fullmatch(rest[0]) is not None:
        keep.append(rest[0])
        rest = rest[1:]
    if rest and set(" ".join(rest).split()) == {"?"}:
        return line.strip()  # already sanitized (as the Python redis instrumentation writes)
    if rest:
        keep.append("?")
    return " ".join(keep)


def sanitize_redis(text: str) -> str:
    """Each command (one a line, as instrumentations write pipelines) keeps its name and
    subcommand; its arguments become one ``?``."""
    lines = (_command_line(line, _REDIS_SUBCOMMANDS) for line in text.splitlines())
    return "\n".join(line for line in lines if line)


_MEMCACHED_STORAGE = frozenset(("set", "add", "replace", "append", "prepend", "cas"))


def sanitize_memcached(text: str) -> str:
    """Each command keeps its name; its keys, flags and the data that follows become ``?``
    (the data line of a storage command, ``set``, ``add``..., is dropped)."""
    out: list[str] = []
    data_next = False
    for line in text.splitlines():
        if data_next:
            data_next = False
            continue
        cmd = _command_line(line, frozenset())
        if cmd:
            out.append(cmd)
            # a storage command's data follows it (not when the line was already sanitized)
            data_next = cmd != line.strip() and cmd.split(" ", 1)[0].lower() in _MEMCACHED_STORAGE
    return "\n".join(out)


# -- JSON (MongoDB, Elasticsearch, OpenSearch) -----------------------------------------------
# one match: the punctuation and white space before a token, then the token (names consumed
# whole, so a digit in one is no number), or a lone "." or "-", or the end: every match
# succeeds where it starts, so a long run is never scanned again from its next character
_JSON = re.compile(
    r"""
    [^"'0-9.\-A-Za-z_$]*+
    (?:
      (?P<string>"(?:[^"\\]++|\\(?s:.))*+(?:"|\\?\Z)|'(?:[^'\\]++|\\(?s:.))*+(?:'|\\?\Z))
    | (?P<number>-?(?:[0-9]++(?:\.[0-9]*+)?|\.[0-9]++)(?:[eE][-+]?[0-9]++)?)
    | (?P<word>[A-Za-z_$][\w$]*+)
    | [.\-]|\Z
    )
    """,
    re.VERBOSE,
)
_KEY_FOLLOWS = re.compile(r"\s*+:")
_LITERAL_WORDS = frozenset(("true", "false", "null", "True", "False", "None", "undefined"))


def sanitize_json(text: str) -> str:
    """JSON or JSON-like text with its keys (a string or name followed by ``:``) and its
    punctuation kept and every value (strings, numbers, ``true``/``false``/``null``)
    replaced by ``"?"``; names that are no literal (``ObjectId``, ``ISODate``) are kept."""
    out: list[str] = []
    pos = 0
    for m in _JSON.finditer(text):
        kind = m.lastgroup
        if kind is None:  # a lone "." or "-", or the end
            continue
        if kind == "word":
            if m.group(kind) not in _LITERAL_WORDS or _KEY_FOLLOWS.match(text, m.end()):
                continue
        elif kind == "string" and _KEY_FOLLOWS.match(text, m.end()):
            continue
        out.append(text[pos : m.start(kind)])
        out.append('"?"')
        pos = m.end()
    if not out:
        return text
    out.append(text[pos:])
    return "".join(out)


# -- URLs ------------------------------------------------------------------------------------
_URL = re.compile(
    r"""
    (?P<scheme>[A-Za-z][A-Za-z0-9+.\-]*+://)?
    (?(scheme)(?:(?P<userinfo>[^/?#@]*+)@)?(?P<host>[^/?#]*+))
    (?P<path>[^?#]*+)
    (?:\?(?P<query>[^#]*+))?
    (?:\#(?P<fragment>.*+))?
    """,
    re.VERBOSE | re.DOTALL,
)
_UUID = re.compile(r"[0-9A-Fa-f]{8}-?(?:[0-9A-Fa-f]{4}-?){3}[0-9A-Fa-f]{12}")
_HEX_ID = re.compile(r"[0-9A-Fa-f]{16,}|(?=[a-f]*+[0-9])[0-9a-f]{8,}|(?=[A-F]*+[0-9])[0-9A-F]{8,}")
_VERSION = re.compile(r"[vV][0-9]{1,3}(?:\.[0-9]{1,3})*+(?:(?:alpha|beta|rc)[0-9]*+)?")
_HAS_DIGIT = re.compile(r"[0-9]")
_WORDLIKE = re.compile(r"[A-Za-z]++(?:[-_.][A-Za-z]++)*(?:\.[A-Za-z0-9]{1,5})?")


def _dynamic(segment: str) -> bool:
    """Whether a path segment is an id, a number, a hash, a token or personal data rather
    than a route's fixed part."""
    if not segment or segment == "*":
        return False
    if _WORDLIKE.fullmatch(segment) is not None:
        return len(segment) > 40  # long opaque tokens of letters only
    if _VERSION.fullmatch(segment) is not None:
        return False
    if "@" in segment or "%" in segment or _UUID.search(segment) or _HEX_ID.search(segment):
        return True
    return _HAS_DIGIT.search(segment) is not None or len(segment) > 40


def _path(path: str) -> str:
    parts = path.split("/")
    changed = False
    for i, part in enumerate(parts):
        if _dynamic(part):
            parts[i] = "*"
            changed = True
    return "/".join(parts) if changed else path


def _query(query: str) -> str:
    out = []
    for pair in query.split("&"):
        name, eq, value = pair.partition("=")
        out.append(f"{name}=*" if eq and value else pair if eq else f"{name}")
    return "&".join(out)


def sanitize_url(text: str) -> str:
    """A URL (or a path with its query, ``http.target``) with the path's dynamic segments
    (see :func:`_dynamic`), every query value, the fragment and any user info replaced by
    ``*``; scheme, host, port, fixed path segments and query parameter names kept."""
    m = _URL.match(text)
    if m is None:  # cannot happen (every part is optional); kept for the type checker
        return text
    out = []
    if m.group("scheme"):
        out.append(m.group("scheme"))
        if m.group("userinfo") is not None:
            out.append("*@")
        out.append(m.group("host") or "")
    out.append(_path(m.group("path")))
    if m.group("query") is not None:
        out.append("?" + _query(m.group("query")))
    if m.group("fragment") is not None:
        out.append("#*" if m.group("fragment") else "#")
    return "".join(out)


# -- the processor's side ------------------------------------------------------------------
# db.system / db.system.name values that are no SQL database, by the sanitizer that fits
_NOSQL_SYSTEMS = {
    "redis": "redis",
    "valkey": "redis",
    "memcached": "memcached",
    "mongodb": "mongo",
    "elasticsearch": "es",
    "opensearch": "opensearch",
}
_DB_SANITIZERS: dict[str, Callable[[str], str]] = {
    "sql": sanitize_sql,
    "redis": sanitize_redis,
    "memcached": sanitize_memcached,
    "mongo": sanitize_json,
    "es": sanitize_json,
    "opensearch": sanitize_json,
}
DB_SYSTEM_KEYS = ("db.system.name", "db.system")
CACHE_ENTRIES = 1024  # at most ~4 MiB of texts and results
CACHE_TEXT_MAX = 2048


class Sanitizers:
    """The enabled sanitizers by attribute key. :meth:`apply` sanitizes one string
    attribute value; ``keys`` are the keys any of them handles (the processor's fast check
    looks for them in a request's bytes)."""

    def __init__(self, url: URLSanitizationConfig, db: DBSanitizerConfig) -> None:
        self.url_keys = frozenset(url.attributes) if url.enabled else frozenset()
        # key -> the db sanitizers (by option name) that handle it, in the options' order
        self.db_keys: dict[str, list[str]] = {}
        for name in _DB_SANITIZERS:
            option = getattr(db, name)
            if option.enabled:
                for key in option.attributes:
                    self.db_keys.setdefault(key, []).append(name)
        self.keys = self.url_keys | frozenset(self.db_keys)
        # results of recent texts by sanitizer: the same statement comes again and again
        # (parameterized queries, db.statement and db.query.text both set); bounded, emptied
        # when full, long texts never kept
        self._cache: dict[tuple[str, str], str] = {}

    def __bool__(self) -> bool:
        return bool(self.keys)

    def apply(self, key: str, text: str, attrs: Any) -> tuple[str, str]:
        """``(rule, new text)`` for the value ``text`` of attribute ``key`` (``attrs``: the
        attributes it is one of, where ``db.system`` is looked up); ``("", text)`` when no
        sanitizer handles the key or nothing changed."""
        if key in self.url_keys:
            new = self._run("url", sanitize_url, text)
            return ("url_sanitization", new) if new != text else ("", text)
        names = self.db_keys.get(key)
        if not names:
            return "", text
        name = self._db_for(names, attrs)
        if name is None:
            return "", text
        new = self._run(name, _DB_SANITIZERS[name], text)
        return (f"db_sanitizer.{name}", new) if new != text else ("", text)

    def _run(self, name: str, fn: Callable[[str], str], text: str) -> str:
        if len(text) > CACHE_TEXT_MAX:
            return fn(text)
        cache = self._cache
        new = cache.get((name, text))
        if new is None:
            if len(cache) >= CACHE_ENTRIES:
                cache.clear()
            new = cache[(name, text)] = fn(text)
        return new

    @staticmethod
    def _db_for(names: list[str], attrs: Any) -> str | None:
        """The sanitizer for the span's database: the one its ``db.system.name`` (or older
        ``db.system``) names, none when that one is not enabled for the key; without that
        attribute, ``sql`` if enabled for the key, else the first enabled one."""
        system = ""
        for kv in attrs:
            if kv.key in DB_SYSTEM_KEYS and kv.value.WhichOneof("value") == "string_value":
                system = kv.value.string_value.lower()
                break
        if system:
            wanted = _NOSQL_SYSTEMS.get(system, "sql")
            return wanted if wanted in names else None
        return "sql" if "sql" in names else names[0]
