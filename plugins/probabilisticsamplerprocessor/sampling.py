"""The arithmetic of consistent probability sampling, as the OpenTelemetry Collector's
``probabilistic_sampler`` does it, so that this gateway, another one and the Collector keep the
same traces.

Two families of decisions:

* ``hash_seed`` (the Collector's original mode): a 32-bit FNV-1a hash of the seed (4 bytes,
  little-endian) followed by the trace id (or a record attribute); the lower 14 bits are
  compared with ``sampling_percentage`` scaled to 2^14 buckets (``uint32(float32(pct) *
  163.84)``, as the Collector computes it in single precision). Expressed as an OTel
  threshold/randomness pair so the tracestate it writes (``ot=rv:...;th:...``) matches.
* ``proportional`` / ``equalizing`` (W3C trace context level 2 randomness): the lower 56 bits
  of the trace id (or an explicit ``rv`` in the tracestate) against a 56-bit rejection
  threshold (``th``), per the OTel "TraceState: Probability Sampling" specification.

A value is sampled when ``randomness >= threshold``; threshold 0 always samples, 2^56 never.
"""

from __future__ import annotations

import math
import re
import struct

MAX_ADJUSTED_COUNT = 1 << 56
NUM_HEX_DIGITS = 14
MIN_SAMPLING_PROBABILITY = 1.0 / MAX_ADJUSTED_COUNT
ALWAYS = 0
NEVER = MAX_ADJUSTED_COUNT

NUM_HASH_BUCKETS_LG2 = 14
NUM_HASH_BUCKETS = 0x4000
BIT_MASK_HASH_BUCKETS = NUM_HASH_BUCKETS - 1

_FNV32_OFFSET = 0x811C9DC5
_FNV32_PRIME = 0x01000193


def fnv1a_32(data: bytes, seed: int) -> int:
    """FNV-1a (32 bit) of the seed's four little-endian bytes followed by ``data``."""
    h = _FNV32_OFFSET
    for b in struct.pack("<I", seed & 0xFFFFFFFF) + data:
        h = ((h ^ b) * _FNV32_PRIME) & 0xFFFFFFFF
    return h


def _f32(x: float) -> float:
    return float(struct.unpack("<f", struct.pack("<f", x))[0])


def hash_seed_scaled_rate(percentage: float) -> int:
    """``uint32(pct * percentageScaleFactor)`` computed in float32, as the Collector does."""
    pct = min(_f32(percentage), 100.0)
    return int(_f32(pct * _f32(NUM_HASH_BUCKETS / 100.0)))


def hash_seed_threshold(percentage: float) -> int:
    """The rejection threshold (56 bits) of ``hash_seed`` mode; NEVER when it rounds to 0."""
    scaled = hash_seed_scaled_rate(percentage)
    if scaled == 0:
        return NEVER
    return (NUM_HASH_BUCKETS - scaled) << 42


def randomness_from_bytes(data: bytes, seed: int) -> int:
    """The 56-bit randomness ``hash_seed`` mode derives from ``data`` (the trace id): the
    14-bit bucket reflected into the top bits, so ``threshold <= randomness`` is the
    Collector's ``bucket < scaled rate``."""
    hashed32 = fnv1a_32(data, seed)
    hashed = hashed32 & BIT_MASK_HASH_BUCKETS
    rprime14 = NUM_HASH_BUCKETS - 1 - hashed
    unused18 = hashed32 >> (32 - NUM_HASH_BUCKETS_LG2)
    mixed28 = (unused18 ^ (unused18 << 10)) & ((1 << 28) - 1)
    return (rprime14 << 42) | (mixed28 << 14) | hashed


def trace_id_randomness(trace_id: bytes) -> int:
    """The W3C randomness of a trace id: its least significant 7 bytes."""
    return int.from_bytes(trace_id[9:16], "big")


def probability_to_threshold(prob: float, precision: int) -> int | None:
    """The rejection threshold for ``prob`` with ``precision`` significant hex digits (0:
    all 14), one more for each leading hex ``0`` or ``f`` (the relative error stays small near
    both extremes); ``None`` when ``prob`` is out of ``[2^-56, 1]``."""
    if precision == 0:
        precision = NUM_HEX_DIGITS
    if not (MIN_SAMPLING_PROBABILITY <= prob <= 1):
        return None
    if prob == 1:
        return ALWAYS
    exp_f = math.frexp(prob)[1]
    exp_r = math.frexp(1 - prob)[1]
    precision = min(NUM_HEX_DIGITS, max(precision + (-exp_f) // 4, precision + (-exp_r) // 4))
    threshold = MAX_ADJUSTED_COUNT - round_half_away(prob * MAX_ADJUSTED_COUNT)
    shift = 4 * (NUM_HEX_DIGITS - precision)
    if shift:
        half = 1 << (shift - 1)
        threshold = ((threshold + half) >> shift) << shift
    return threshold


def round_half_away(x: float) -> int:
    """Go's ``math.Round``: half away from zero."""
    return math.floor(x + 0.5) if x >= 0 else -math.floor(-x + 0.5)


def threshold_probability(threshold: int) -> float:
    return (MAX_ADJUSTED_COUNT - threshold) / MAX_ADJUSTED_COUNT


def tvalue(threshold: int) -> str:
    """The ``th`` encoding: 14 hex digits without trailing zeros; ``0`` for always."""
    if threshold == ALWAYS:
        return "0"
    return f"{threshold:014x}".rstrip("0")


def rvalue(randomness: int) -> str:
    return f"{randomness:014x}"


def parse_tvalue(text: str) -> int:
    if not text:
        raise ValueError("t-value is empty")
    if len(text) > NUM_HEX_DIGITS:
        raise ValueError("t-value exceeds 14 hex digits")
    if not re.fullmatch(r"[0-9a-fA-F]+", text):
        raise ValueError(f"t-value syntax: {text!r}")
    return int(text, 16) << (4 * (NUM_HEX_DIGITS - len(text)))


def parse_rvalue(text: str) -> int:
    if len(text) != NUM_HEX_DIGITS or not re.fullmatch(r"[0-9a-fA-F]+", text):
        raise ValueError("r-value must have 14 hex digits")
    return int(text, 16)


_OT_VALUE = re.compile(r"^[a-z][a-z0-9]*:[a-zA-Z0-9._\-]*(?:;[a-z][a-z0-9]*:[a-zA-Z0-9._\-]*)*$")


class TraceState:
    """A W3C ``tracestate`` with its OpenTelemetry (``ot``) member parsed: ``rv``, ``th`` and
    other ``ot`` sub-keys, then the other vendors' members kept as they came."""

    __slots__ = ("extra_ot", "others", "rnd", "rv", "th", "threshold")

    def __init__(self, raw: str) -> None:
        self.rv = ""
        self.rnd = 0
        self.th = ""
        self.threshold = ALWAYS
        self.extra_ot: list[tuple[str, str]] = []
        self.others: list[str] = []
        if len(raw) > 512:
            raise ValueError("tracestate too long")
        error: ValueError | None = None
        for member in (m.strip() for m in raw.split(",")):
            if not member:
                continue
            key, sep, value = member.partition("=")
            if not sep:
                raise ValueError(f"tracestate member without '=': {member!r}")
            if key != "ot":
                self.others.append(member)
                continue
            if len(value) > 256 or not _OT_VALUE.match(value):
                raise ValueError(f"invalid syntax in the ot tracestate value {value!r}")
            for part in value.split(";"):
                k, _, v = part.partition(":")
                try:
                    if k == "rv":
                        self.rnd, self.rv = parse_rvalue(v), v
                    elif k == "th":
                        self.threshold, self.th = parse_tvalue(v), v
                    else:
                        self.extra_ot.append((k, v))
                except ValueError as exc:
                    error = error or exc
        if error is not None:
            raise error

    def serialize(self) -> str:
        parts = []
        if self.rv:
            parts.append(f"rv:{self.rv}")
        if self.th:
            parts.append(f"th:{self.th}")
        parts.extend(f"{k}:{v}" for k, v in self.extra_ot)
        members = ([f"ot={';'.join(parts)}"] if parts else []) + self.others
        return ",".join(members)
