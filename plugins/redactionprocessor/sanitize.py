"""The ``redaction`` processor's ``url_sanitizer`` and ``db_sanitizer`` (the Collector's
options and results): URL paths' dynamic segments (ids, UUIDs, hashes, numbers) become ``*``,
the query and fragment are dropped and user info becomes ``*``; database statements keep
their shape with every literal replaced by ``?``:

- SQL: quoted strings (with ``''`` and backslash escapes, ``E''``/``N''``/``U&''``
  prefixes), dollar-quoted strings, numbers, hex and bit/blob literals become ``?``;
  comments (which may carry data, e.g. sqlcommenter's) are removed; a parenthesized list of
  nothing but literals (``IN (1, 2, 3)``, ``VALUES (...)``) becomes ``( ? )``; white space
  is collapsed. Identifiers, double-quoted and backquoted names, keywords and placeholders
  (``$1``, ``%s``, ``?``, ``:name``) are kept.
- Redis and Valkey: each command keeps its name and its key (the first argument); the other
  arguments become one ``?``. Memcached: the command line is kept, its data dropped.
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

from pipeline._wire import SkeletonTraces

if TYPE_CHECKING:
    from plugins.redactionprocessor.config import DBSanitizerConfig, URLSanitizerConfig

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
# a name with a digit in it (not a placeholder's: @p1, :name1, %(name1)s), whose digits the
# Collector's SQL obfuscator (ReplaceDigits) replaces: users_2024 -> users_?
_SQL_NAME_DIGITS = re.compile(r"(?<![@:\w$])(?<!%\()[A-Za-z_][A-Za-z_]*+[0-9]\w*+")
_DIGITS = re.compile(r"[0-9]++")
_SQL_DIGIT = re.compile(r"[0-9]")


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


def _name_digits(m: re.Match[str]) -> str:
    return _DIGITS.sub("?", m.group(0))


def _word_char(ch: str) -> bool:
    return ch.isalnum() or ch in "_$"


def sanitize_sql(text: str) -> str:
    """``text`` with every literal replaced by ``?`` and comments removed (see the module)."""
    out = _SQL.sub(_sql_token, text)
    if _SQL_DIGIT.search(out) is not None:  # a digit left: in a name or a placeholder
        out = _SQL_NAME_DIGITS.sub(_name_digits, out)
    if "(" in out:
        out = _SQL_LIST.sub("( ? )", out)
    return " ".join(out.split())  # white space collapsed


# -- Redis, Valkey, Memcached ---------------------------------------------------------------
_WORD = re.compile(r"[A-Za-z][A-Za-z0-9_.\-]*+")
# commands whose first argument is a credential, not a key: nothing of their arguments is kept
_REDIS_SECRET_ARGS = frozenset(("AUTH",))


def _only_placeholders(text: str) -> bool:
    return set(text.split()) == {"?"}


def _redis_line(line: str) -> str:
    parts = line.split(None, 2)
    if not parts:
        return ""
    cmd = parts[0]
    if _WORD.fullmatch(cmd) is None:
        return "?"  # not a command: nothing of it is kept
    if len(parts) == 1:
        return cmd
    if _only_placeholders(" ".join(parts[1:])):
        return line.strip()  # already sanitized (as the Python redis instrumentation writes)
    key = parts[1]
    if cmd.upper() in _REDIS_SECRET_ARGS or key[0] in "\"'":
        return f"{cmd} ?"
    if len(parts) == 2:
        return f"{cmd} {key}"
    return f"{cmd} {key} ?"


def sanitize_redis(text: str) -> str:
    """Redis and Valkey (the Collector's ``redis`` and ``valkey``): each command (one a line,
    as instrumentations write pipelines) keeps its name and its key (the first argument); the
    other arguments become one ``?`` (``SET user:1 top-secret`` -> ``SET user:1 ?``). The
    arguments of ``AUTH`` (credentials) and a quoted first argument become ``?`` too."""
    lines = (_redis_line(line) for line in text.splitlines())
    return "\n".join(line for line in lines if line)


def sanitize_memcached(text: str) -> str:
    """The command line (up to the first CRLF) kept, what follows (a storage command's data)
    dropped: ``set mykey 0 60 5\\r\\nsecret\\r\\n`` -> ``set mykey 0 60 5``."""
    return text.split("\r\n", 1)[0].strip()


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
    (?P<path>[^?#]*+)  # what follows (query, fragment) is dropped
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


def sanitize_url(text: str) -> str:
    """A URL (or a path with its query, ``http.target``, or a span name ``GET /users/42``)
    with the path's dynamic segments (see :func:`_dynamic`) replaced by ``*``, the query and
    the fragment dropped (``/api/users?id=123&name=john`` -> ``/api/users``) and any user
    info replaced by ``*``; scheme, host, port and the route's fixed segments kept."""
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
    return "".join(out)


# -- the processor's side ------------------------------------------------------------------
# the Collector's families in its order, with the db.system.name / db.system values each handles
FAMILY_SYSTEMS: dict[str, tuple[str, ...]] = {
    "sql": ("other_sql", "mysql", "postgresql", "mariadb", "sqlite"),
    "redis": ("redis",),
    "valkey": ("valkey",),
    "memcached": ("memcached",),
    "mongo": ("mongodb",),
    "opensearch": ("opensearch",),
    "es": ("elasticsearch",),
}
_SYSTEM_FAMILY = {system: name for name, systems in FAMILY_SYSTEMS.items() for system in systems}
_DB_SANITIZERS: dict[str, Callable[[str], str]] = {
    "sql": sanitize_sql,
    "redis": sanitize_redis,
    "valkey": sanitize_redis,
    "memcached": sanitize_memcached,
    "mongo": sanitize_json,
    "opensearch": sanitize_json,
    "es": sanitize_json,
}
DB_SYSTEM_KEYS = ("db.system.name", "db.system")
# a span with one of these attributes is an HTTP span (its name is a URL sanitizer's too)
HTTP_KEYS = frozenset((
    "http.route", "http.request.method", "http.request.method_original",
    "http.response.status_code", "url.full", "http.scheme", "http.target", "http.method",
    "http.url",
))  # fmt: skip
SPAN_KIND_INTERNAL, SPAN_KIND_SERVER, SPAN_KIND_CLIENT = 1, 2, 3
URL_RULE = "url_sanitizer"
CACHE_ENTRIES = 1024  # at most ~4 MiB of texts and results
CACHE_TEXT_MAX = 2048


def idle_options(url: URLSanitizerConfig, db: DBSanitizerConfig, signal: str) -> list[str]:
    """The sanitizers enabled that change nothing in a ``signal`` ("traces", "metrics",
    "logs") pipeline: no ``attributes`` (the Collector's: no attribute sanitized) and no span
    names or log bodies there to act on."""
    out = []
    if url.enabled and not url.attributes and signal != "traces":
        out.append("url_sanitizer")
    # a family without attributes acts on log bodies, and on span names when asked to
    nothing = signal == "metrics" or (signal == "traces" and not db.sanitize_span_name)
    for name in _DB_SANITIZERS:
        option = getattr(db, name)
        if nothing and option.enabled and not option.attributes:
            out.append(f"db_sanitizer.{name}")
    return out


def _db_system(attrs: Any) -> str:
    """The lower-cased ``db.system.name`` (else ``db.system``) of ``attrs``, "" when none."""
    found = {}
    for kv in attrs:
        if kv.key in DB_SYSTEM_KEYS and kv.value.WhichOneof("value") == "string_value":
            found[kv.key] = kv.value.string_value
    return (found.get("db.system.name") or found.get("db.system") or "").lower()


URL_NAME_BYTES = (b"/", b"?", b"#")  # a span name without any of them: the URL sanitizer keeps it
_URL_NAME_KINDS = (SPAN_KIND_SERVER, SPAN_KIND_CLIENT)


class Sanitizers:
    """The enabled sanitizers, as the Collector applies them:

    - attributes: a ``url_sanitizer`` key gets the URL sanitizer; a key of a db family gets
      the family of the span's database (``db.system.name``, else ``db.system``) when that
      family is enabled and lists the key; without a database nothing on spans and metric
      points, while a log record's value (logs have no database attribute to rely on, as
      in the Collector) goes through every enabled family listing the key, in turn;
    - span names (:meth:`span_name`): ``sanitize_span_name`` and ``url_sanitizer``;
    - log bodies' string values (:meth:`body`): every enabled family without ``attributes``,
      in turn.

    ``keys`` are the attribute keys any of them handles (the processor's fast check looks for
    them, and :meth:`needles`, in a request's bytes)."""

    def __init__(self, url: URLSanitizerConfig, db: DBSanitizerConfig, logs: bool = False) -> None:
        self.url_keys = frozenset(url.attributes) if url.enabled else frozenset()
        self.url_names = url.enabled
        # key -> the db families (by option name) that list it, in the Collector's order
        self.db_keys: dict[str, list[str]] = {}
        enabled = [name for name in _DB_SANITIZERS if getattr(db, name).enabled]
        for name in enabled:
            for key in getattr(db, name).attributes:
                self.db_keys.setdefault(key, []).append(name)
        self.db_names = frozenset(enabled) if db.sanitize_span_name else frozenset()
        self.fallback = logs  # the Collector's logs processor: no db.system needed
        # the families that sanitize log bodies: those enabled without an attribute list
        self.body_families = tuple(n for n in enabled if not getattr(db, n).attributes)
        self.keys = self.url_keys | frozenset(self.db_keys)
        self.span_names = self.url_names or bool(self.db_names)
        # results of recent texts by sanitizer: the same statement comes again and again
        # (parameterized queries, db.statement and db.query.text both set); bounded, emptied
        # when full, long texts never kept
        self._cache: dict[tuple[str, str], str] = {}

    def __bool__(self) -> bool:
        return bool(self.keys) or self.span_names or bool(self.body_families)

    def needles(self, traces: bool, logs: bool, url_names: bool = True) -> list[bytes]:
        """What a request must hold for anything here to change it (beside ``keys``): a
        database span (``db.system``) or a name a URL sanitizer changes (``/``, ``?``, ``#``;
        not with ``url_names`` False: the caller looks at the span names themselves, see
        :meth:`url_names_may_change`); any log record when bodies are sanitized (the empty
        needle)."""
        out: list[bytes] = []
        if traces and self.db_names:
            out.append(b"db.system")
        if traces and self.url_names and url_names:
            out += [b"/", b"?", b"#"]
        if logs and self.body_families:
            out.append(b"")
        return out

    def apply(self, key: str, text: str, attrs: Any) -> tuple[list[str], str]:
        """``(rules, new text)`` for the value ``text`` of attribute ``key`` (``attrs``: the
        attributes it is one of, where the database is looked up); ``([], text)`` when no
        sanitizer handles the key or nothing changed."""
        if key in self.url_keys:
            new = self._run("url", sanitize_url, text)
            return ([URL_RULE], new) if new != text else ([], text)
        names = self.db_keys.get(key)
        if not names:
            return [], text
        system = _db_system(attrs)
        if system:
            name = _SYSTEM_FAMILY.get(system)
            names = [name] if name in names else []
        elif not self.fallback:
            names = []
        return self._db(names, text)

    def span_name(self, name: str, kind: int, attrs: Any) -> tuple[list[str], str]:
        """``(rules, new name)`` for a span: a client, server or internal span of a database
        whose family is enabled (``sanitize_span_name``) gets that family's sanitizer; a
        client or server span with an HTTP attribute or a ``/`` in its name the URL
        sanitizer, unless the result would be nothing but ``*`` segments."""
        rules: list[str] = []
        if self.db_names and kind in (SPAN_KIND_INTERNAL, SPAN_KIND_SERVER, SPAN_KIND_CLIENT):
            family = _SYSTEM_FAMILY.get(_db_system(attrs))
            if family in self.db_names:
                rules, name = self._db([family], name)
        if (
            self.url_names
            and kind in (SPAN_KIND_SERVER, SPAN_KIND_CLIENT)
            and ("/" in name or any(kv.key in HTTP_KEYS for kv in attrs))
        ):
            new = self._run("url", sanitize_url, name)
            if new != name and any(s not in ("", "*") for s in new.split("/")):
                rules.append(URL_RULE)
                name = new
        return rules, name

    def url_names_may_change(self, raw: bytes) -> bool:
        """Whether the URL sanitizer could change a span name of the encoded traces request
        ``raw`` (:meth:`span_name`): a server or client span whose name holds ``/``, ``?`` or
        ``#`` and that the sanitizer changes into more than ``*`` segments (only the spans'
        names and kinds are read; ``True`` when the request or a name does not parse, for the
        processor to say why)."""
        if not any(b in raw for b in URL_NAME_BYTES):
            return False
        try:
            request = SkeletonTraces.FromString(raw)
        except Exception:
            return True
        seen: set[bytes] = set()
        for rs in request.resource_spans:
            for ss in rs.scope_spans:
                for span in ss.spans:
                    if span.kind not in _URL_NAME_KINDS:
                        continue
                    raw_name = span.name
                    if raw_name in seen or not any(b in raw_name for b in URL_NAME_BYTES):
                        continue
                    seen.add(raw_name)
                    try:
                        name = raw_name.decode()
                    except UnicodeDecodeError:
                        return True
                    new = self._run("url", sanitize_url, name)
                    if new != name and any(s not in ("", "*") for s in new.split("/")):
                        return True
        return False

    def body(self, text: str) -> tuple[list[str], str]:
        """``(rules, new text)`` for a string value of a log record's body: every enabled
        family without an attribute list, in turn."""
        return self._db(self.body_families, text)

    def _db(self, names: Any, text: str) -> tuple[list[str], str]:
        rules = []
        for name in names:
            new = self._run(name, _DB_SANITIZERS[name], text)
            if new != text:
                rules.append(f"db_sanitizer.{name}")
                text = new
        return rules, text

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
