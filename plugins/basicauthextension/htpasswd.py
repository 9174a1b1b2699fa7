"""Apache htpasswd content: ``user:encoded-password`` lines, with the formats the Collector's
``basicauth`` accepts (its library, go-htpasswd, tries them in this order):

* ``$apr1$`` (Apache MD5, ``htpasswd -m``) and ``$1$`` (MD5-crypt);
* ``{SHA}`` (base64 SHA-1, ``htpasswd -s``);
* ``$2y$`` / ``$2a$`` / ``$2b$`` / ``$2x$`` (bcrypt, ``htpasswd -B``);
* ``{SSHA}`` (salted SHA-1);
* ``$5$`` / ``$6$`` (SHA-256 / SHA-512 crypt, optionally with ``rounds=``);
* anything else: the password in plain text (``{PLAIN}password`` also matches ``password``).

DES ``crypt`` (``htpasswd -d``) is not a format of either: such an entry is read as a plain
text password, as the Collector does. Blank lines are skipped; a line without ``:`` or with a
malformed hash of a known format is skipped with a warning; a user written twice keeps the
last entry.

Plain text, ``{SHA}`` and ``{SSHA}`` are checked at once; the others are deliberately slow
(``Entry.slow``): the extension checks them in a worker thread and remembers the outcome.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

_BCRYPT = ("$2y$", "$2a$", "$2b$", "$2x$")


@dataclass(frozen=True)
class Entry:
    """One user's encoded password and how to check a password against it."""

    encoded: str
    scheme: str
    slow: bool
    _check: Callable[[bytes], bool]

    def verify(self, password: bytes) -> bool:
        try:
            return self._check(password)
        except ValueError:  # a hash a library refuses at check time: no match
            return False


def _plain(stored: str) -> Callable[[bytes], bool]:
    want = stored.encode("utf-8", "surrogateescape")

    def check(pw: bytes) -> bool:
        # both compared, in constant time
        a = hmac.compare_digest(pw, want)
        b = hmac.compare_digest(b"{PLAIN}" + pw, want)
        return a or b

    return check


def _sha(stored: str) -> Callable[[bytes], bool]:
    try:
        digest = base64.b64decode(stored[5:], validate=True)
    except (binascii.Error, ValueError):
        raise ValueError("malformed {SHA} hash (not base64)") from None
    if len(digest) != 20:
        raise ValueError("malformed {SHA} hash (wrong length)")
    return lambda pw: hmac.compare_digest(hashlib.sha1(pw).digest(), digest)


def _ssha(stored: str) -> Callable[[bytes], bool]:
    try:
        raw = base64.b64decode(stored[6:], validate=True)
    except (binascii.Error, ValueError):
        raise ValueError("malformed {SSHA} hash (not base64)") from None
    if len(raw) < 20:
        raise ValueError("malformed {SSHA} hash (too short)")
    digest, salt = raw[:20], raw[20:]
    return lambda pw: hmac.compare_digest(hashlib.sha1(pw + salt).digest(), digest)


def _bcrypt(stored: str) -> Callable[[bytes], bool]:
    import bcrypt

    # $2y$ (PHP, htpasswd -B) and $2x$ are bcrypt as $2b$ computes it
    normal = ("$2b$" + stored[4:]).encode()
    if len(normal) != 60:
        raise ValueError("malformed bcrypt hash (not 60 characters)")
    return lambda pw: bool(bcrypt.checkpw(pw, normal))


def _passlib(handler_name: str, stored: str) -> Callable[[bytes], bool]:
    from passlib import hash as passlib_hash

    handler: Any = getattr(passlib_hash, handler_name)
    try:
        handler.from_string(stored)
    except (ValueError, TypeError) as exc:
        raise ValueError(f"malformed {handler_name} hash: {exc}") from None
    return lambda pw: bool(handler.verify(pw, stored))


def parse_entry(encoded: str) -> Entry:
    """The checker for one encoded password; ``ValueError`` for a malformed known format."""
    if encoded.startswith("$apr1$"):
        return Entry(encoded, "apr1", True, _passlib("apr_md5_crypt", encoded))
    if encoded.startswith("$1$"):
        return Entry(encoded, "md5-crypt", True, _passlib("md5_crypt", encoded))
    if encoded.startswith("{SHA}"):
        return Entry(encoded, "sha", False, _sha(encoded))
    if encoded.startswith(_BCRYPT):
        return Entry(encoded, "bcrypt", True, _bcrypt(encoded))
    if encoded.startswith("{SSHA}"):
        return Entry(encoded, "ssha", False, _ssha(encoded))
    if encoded.startswith("$5$"):
        return Entry(encoded, "sha256-crypt", True, _passlib("sha256_crypt", encoded))
    if encoded.startswith("$6$"):
        return Entry(encoded, "sha512-crypt", True, _passlib("sha512_crypt", encoded))
    return Entry(encoded, "plain", False, _plain(encoded))


def parse(text: str, source: str, warn: Callable[[str], None]) -> dict[str, Entry]:
    """``{user: Entry}`` from htpasswd lines; ``warn`` is told about each line skipped (never
    with the hash in it)."""
    users: dict[str, Entry] = {}
    for number, raw in enumerate(text.splitlines(), 1):
        line = raw.strip()
        if not line:
            continue
        user, sep, encoded = line.partition(":")
        if not sep:
            warn(f"{source} line {number}: malformed line, no ':' (skipped)")
            continue
        try:
            users[user] = parse_entry(encoded)
        except ValueError as exc:
            warn(f"{source} line {number} (user {user!r}): {exc} (skipped)")
    return users
