"""``processors.redaction``: the Collector's options and the GenAI content handling."""

from __future__ import annotations

import re
from typing import Literal

from pydantic import Field, model_validator

from pipeline import ComponentConfig, ConfigModel

# the content attributes of the GenAI conventions and of the common dialects (exact keys)
DEFAULT_CONTENT_KEYS = [
    # OpenTelemetry GenAI semantic conventions
    "gen_ai.input.messages",
    "gen_ai.output.messages",
    "gen_ai.system_instructions",
    "gen_ai.tool.call.arguments",
    "gen_ai.tool.call.result",
    "gen_ai.tool.definitions",
    # the older conventions' event attributes
    "gen_ai.prompt",
    "gen_ai.completion",
    # OpenInference
    "input.value",
    "output.value",
    # pydantic-ai (tool spans; older versions' messages)
    "tool_arguments",
    "tool_response",
    "final_result",
    "all_messages_events",
    "pydantic_ai.all_messages",
    "events",
    # MCP SDK / OpenLLMetry MCP
    "mcp.request.argument",
    "traceloop.entity.input",
    "traceloop.entity.output",
]
# key patterns (regular expressions, searched from the start)
DEFAULT_CONTENT_KEY_PATTERNS = [
    r"gen_ai\.prompt\.[0-9]+\.",  # OpenLLMetry
    r"gen_ai\.completion\.[0-9]+\.",
    r"llm\.input_messages\.",  # OpenInference
    r"llm\.output_messages\.",
    r"llm\.prompts?\.",
    r"llm\.prompt_template\.",
    r"llm\.tools\.",
]
# keys of a GenAI event's body (or attributes) that hold content
EVENT_CONTENT_KEYS = ["content", "arguments", "tool_calls", "message", "parts", "result"]
# keys inside structured content that describe it rather than carry it: left as they are
STRUCTURE_KEYS = ["role", "type", "finish_reason", "id", "name", "index", "mime_type", "modality"]

BUILTIN_PATTERNS: dict[str, str] = {
    "email": r"[A-Za-z0-9._%+\-]+@[A-Za-z0-9\-]+(?:\.[A-Za-z0-9\-]+)*\.[A-Za-z]{2,}",
    # 13-19 digits, optionally grouped by spaces or dashes; only Luhn-valid numbers are masked
    "card_number": r"(?<![\w-])\d(?:[ -]?\d){12,18}(?![\w-])",
    "api_key": (
        r"\b(?:sk|pk|rk)-(?:[A-Za-z0-9]+-)*[A-Za-z0-9_\-]{16,}"
        r"|\bAKIA[0-9A-Z]{16}\b"
        r"|\bgh[pousr]_[A-Za-z0-9]{30,}\b"
        r"|\bxox[abprs]-[A-Za-z0-9\-]{10,}"
        r"|\bAIza[0-9A-Za-z_\-]{35}"
    ),
    "bearer_token": r"(?i)\bbearer\s+[A-Za-z0-9._~+/=\-]{8,}",
    "phone": r"(?<![\w+])\+?\d{1,3}?[ .\-]?\(?\d{2,4}\)?[ .\-]\d{3,4}[ .\-]?\d{3,4}(?![\w])",
}

HashFunction = Literal["", "none", "md5", "sha1", "sha3", "sha256", "hmac-sha256", "hmac-sha512"]


class CustomPattern(ConfigModel):
    name: str
    regex: str


class GenAIContentConfig(ConfigModel):
    """``genai_content``: what happens to prompts, completions, system instructions and tool
    call arguments/results (attributes, span events and GenAI event log records)."""

    enabled: bool = True
    action: Literal["drop", "hash", "truncate", "mask", "keep"] = "mask"
    truncate_length: int = Field(256, ge=0)
    patterns: list[str] = Field(
        default_factory=lambda: ["email", "card_number", "api_key", "bearer_token", "phone"]
    )
    custom_patterns: list[CustomPattern] = Field(default_factory=list)
    keys: list[str] = Field(default_factory=lambda: list(DEFAULT_CONTENT_KEYS))
    key_patterns: list[str] = Field(default_factory=lambda: list(DEFAULT_CONTENT_KEY_PATTERNS))
    extra_keys: list[str] = Field(default_factory=list)
    # a log record (or span event) whose event name starts with one of these is a GenAI event
    event_prefixes: list[str] = Field(default_factory=lambda: ["gen_ai."])

    @model_validator(mode="after")
    def _check(self) -> GenAIContentConfig:
        unknown = [p for p in self.patterns if p not in BUILTIN_PATTERNS]
        if unknown:
            raise ValueError(
                f"genai_content.patterns: unknown pattern(s) {unknown}; "
                f"built-in: {sorted(BUILTIN_PATTERNS)} (add others in custom_patterns)"
            )
        for p in [*self.key_patterns, *(c.regex for c in self.custom_patterns)]:
            _compile(p, "genai_content")
        return self


class SanitizerOption(ConfigModel):
    """``enabled`` and the ``attributes`` whose string values are sanitized (the Collector's:
    none when the list is empty)."""

    enabled: bool = False
    attributes: list[str] = Field(default_factory=list)


class URLSanitizerConfig(SanitizerOption):
    """``url_sanitizer``: ids, numbers, hashes and tokens in URL paths become ``*``, the
    query and fragment are dropped; also the names of HTTP client and server spans."""


class DBSanitizerOption(SanitizerOption):
    """One database family of ``db_sanitizer``: its literals become ``?`` in the listed
    attributes; with no ``attributes``, in the string values of log records' bodies."""


class DBSanitizerConfig(ConfigModel):
    """``db_sanitizer``: the Collector's database families and span-name switch."""

    sql: DBSanitizerOption = Field(default_factory=DBSanitizerOption)
    redis: DBSanitizerOption = Field(default_factory=DBSanitizerOption)
    valkey: DBSanitizerOption = Field(default_factory=DBSanitizerOption)
    memcached: DBSanitizerOption = Field(default_factory=DBSanitizerOption)
    mongo: DBSanitizerOption = Field(default_factory=DBSanitizerOption)
    opensearch: DBSanitizerOption = Field(default_factory=DBSanitizerOption)
    es: DBSanitizerOption = Field(default_factory=DBSanitizerOption)
    # the names of database spans sanitized by their database's family
    sanitize_span_name: bool = True


class RedactionConfig(ComponentConfig):
    """``processors.redaction``."""

    allow_all_keys: bool = False
    allowed_keys: list[str] = Field(default_factory=list)
    ignored_keys: list[str] = Field(default_factory=list)
    ignored_key_patterns: list[str] = Field(default_factory=list)
    blocked_key_patterns: list[str] = Field(default_factory=list)
    blocked_values: list[str] = Field(default_factory=list)
    allowed_values: list[str] = Field(default_factory=list)
    redact_all_types: bool = False
    hash_function: HashFunction = ""
    hmac_key: str = ""
    summary: Literal["", "debug", "info", "silent"] = ""
    genai_content: GenAIContentConfig | None = None
    url_sanitizer: URLSanitizerConfig = Field(default_factory=URLSanitizerConfig)
    db_sanitizer: DBSanitizerConfig = Field(default_factory=DBSanitizerConfig)

    @model_validator(mode="after")
    def _check(self) -> RedactionConfig:
        for name in ("ignored_key_patterns", "blocked_key_patterns", "blocked_values",
                     "allowed_values"):  # fmt: skip
            for p in getattr(self, name):
                _compile(p, name)
        if self.hash_function.startswith("hmac") and not self.hmac_key:
            raise ValueError(f"hash_function {self.hash_function} needs hmac_key")
        return self


def _compile(pattern: str, where: str) -> re.Pattern[str]:
    try:
        return re.compile(pattern)
    except re.error as exc:
        raise ValueError(f"{where}: invalid regular expression {pattern!r}: {exc}") from None
