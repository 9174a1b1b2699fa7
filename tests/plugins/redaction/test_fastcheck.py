"""``redaction``'s check of a request's bytes (is there anything a rule could change?): its
grouped searches find exactly what searching every needle and pattern on its own finds."""

from __future__ import annotations

import random
import re

from plugins.redactionprocessor.config import DEFAULT_CONTENT_KEY_PATTERNS, DEFAULT_CONTENT_KEYS
from plugins.redactionprocessor.processor import (
    _event_name_pattern,
    _group_patterns,
    _leading_literal,
    _minimal_needles,
    _needle_searches,
)

PIECES = [
    b"\x12", b"\x05", b"\x85", b"\x80", b"\x7f", b"a", b"x", b".", b"_", b"4", b"1234567",
    b"gen_ai.", b"gen_ai.input.messages", b"gen_ai.prompt", b"gen_ai.prompt.0.", b"events",
    b"traceloop.entity.", b"traceloop.entity.input", b"input.value", b"llm.", b"llm.prompt",
    b"llm.prompts.", b"llm.tools.", b"tool_", b"tool_response", b"ab",
]  # fmt: skip


def haystacks(n: int = 30000) -> list[bytes]:
    rnd = random.Random(7)
    return [b"".join(rnd.choice(PIECES) for _ in range(rnd.randint(0, 10))) for _ in range(n)]


def test_leading_literal() -> None:
    assert _leading_literal(rb"llm\.prompts?\.") == b"llm.prompt"
    assert _leading_literal(rb"4[0-9]{12}") == b"4"
    assert _leading_literal(rb"(?:ab)c") == b"abc"
    assert _leading_literal(rb"a|b") == b""
    assert _leading_literal(rb"(?i)abc") == b""  # case folded: no literal bytes
    assert _leading_literal(rb"ab*") == b"a"


def test_needle_groups_find_what_every_needle_finds() -> None:
    needles = _minimal_needles([k.encode() for k in [*DEFAULT_CONTENT_KEYS, "gen_ai.", "ab"]])
    assert b"gen_ai.prompt" not in needles  # contains "gen_ai.": found wherever it is
    searches = _needle_searches(needles)
    assert any(isinstance(s, re.Pattern) for s in searches)
    for h in haystacks():
        expected = any(n in h for n in needles)
        got = any(s in h if isinstance(s, bytes) else s.search(h) for s in searches)
        assert got == expected, h


def test_event_name_pattern_is_the_field_then_the_prefix() -> None:
    plain = re.compile(rb"\x12(?:[\x01-\x7f]|[\x80-\xff][\x01-\x7f])(?:gen_ai\.|ab)")
    fast = _event_name_pattern([b"gen_ai.", b"ab"])
    for h in haystacks():
        assert bool(fast.search(h)) == bool(plain.search(h)), h


def test_grouped_patterns_match_where_one_of_them_does() -> None:
    patterns = [*DEFAULT_CONTENT_KEY_PATTERNS, r"4[0-9]{6}", r"tool_\w?x|ab", r"(a)llm\.\1"]
    compiled = [re.compile(p.encode()) for p in patterns]
    grouped = _group_patterns([(_leading_literal(r.pattern), r) for r in compiled])
    assert len(grouped) < len(compiled)
    for h in haystacks():
        expected = any(r.search(h) for r in compiled)
        got = any((not lit or lit in h) and r.search(h) for lit, r in grouped)
        assert got == expected, h
