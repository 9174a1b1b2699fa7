"""gzip for what the gateway sends (exporters, its own telemetry), on the fastest library there is.

The default export compression is ``gzip`` (as the Collector's and rotel's), and at zlib's
fastest level it cost two thirds of the forward path's instructions per span. Intel's ISA-L
(the ``isal`` package: python bindings of the ISA-L library, manylinux wheels for x86-64 and
arm64) makes the same gzip streams about five times faster at the same ratio (level 1: 0.18 vs
1.0 µs per 300-byte span, ratio 0.185 vs 0.187; see ``benchmarks/results/forward-path.md``).
Where ``isal`` is not installed (a platform without a wheel) zlib is used and
:data:`BACKEND` says so.

Only compression goes through here: receivers inflate untrusted bodies with zlib
(``plugins/otlpreceiver/common.py``), whose behaviour on hostile input the tests pin.
"""

from __future__ import annotations

import zlib
from collections.abc import Sequence
from typing import Final

try:  # ISA-L: the gzip format, several times faster than zlib
    from isal import isal_zlib as _isal
except ImportError:  # pragma: no cover - the wheels cover the platforms CI runs on
    _isal = None  # type: ignore[assignment]

BACKEND: Final[str] = "isal" if _isal is not None else "zlib"
"""Which library compresses: ``"isal"`` (ISA-L) or ``"zlib"`` (the fallback)."""

GZIP_WBITS: Final = 31  # a gzip member (header, deflate stream, CRC-32 and length trailer)

FAST: Final = 1
"""The level the exporters use: zlib's fastest; ISA-L's level 1 compresses as well."""


def isal_level(level: int) -> int:
    """ISA-L has levels 0-3; zlib's 1-9 map onto them (1-3 → 1, 4-6 → 2, 7-9 → 3, 0 → 0:
    ISA-L's 0 still compresses, as zlib's 0 does not, but it is what asks for speed)."""
    if level <= 0:
        return 0
    return min(3, (level + 2) // 3)


Chunks = bytes | Sequence[bytes]
"""What is compressed: one buffer, or consecutive pieces of one (the parts of a merged payload,
:meth:`pipeline.Payload.chunks`), joined into a copy only where that is the cheaper way to
compress them (ISA-L, :func:`gzip_compress`)."""


STREAM_PIECE: Final = 128 * 1024
"""Pieces of at least this many bytes go to ISA-L's compressor as they are; shorter consecutive
pieces are joined into runs of about this size first (see :func:`gzip_compress`)."""


def gzip_compress(data: Chunks, level: int = FAST) -> bytes:
    """``data`` as one gzip member (what ``Content-Encoding: gzip`` and gRPC's ``gzip``
    message encoding carry), decodable by any gzip reader. A sequence of pieces is compressed
    as their concatenation, fed to one compressor (the same bytes once decompressed).

    ISA-L's streaming compressor copies about 64 KiB of every call's input (the first 32 KiB
    plus its look-ahead into its buffer, then the last 32 KiB as history): a call costs about
    what joining ~130 KiB does (callgrind: ~135k instructions a call). So pieces of
    :data:`STREAM_PIECE` and more (the workflow processor's releases of up to 1,024 spans,
    ~500 KB) are fed as they are, without the copy a join makes of the whole batch (~1
    instruction a byte: -0.9M a 2,000-span batch of two releases), and runs of shorter
    pieces are joined into one call each. zlib copies its input into its window either way:
    its pieces are never joined."""
    if not 0 <= level <= 9:
        raise ValueError(f"gzip level must be 0-9, not {level}")
    if not isinstance(data, bytes | bytearray | memoryview):
        if len(data) != 1:
            return _gzip_pieces(data, level)
        data = data[0]
    if _isal is not None:
        return _isal.compress(data, isal_level(level), wbits=GZIP_WBITS)
    return zlib.compress(data, level, wbits=GZIP_WBITS)


def _gzip_pieces(pieces: Sequence[bytes], level: int) -> bytes:
    if _isal is None:
        comp = zlib.compressobj(level, wbits=GZIP_WBITS)
        out = [comp.compress(piece) for piece in pieces]
        out.append(comp.flush())
        return b"".join(out)
    comp = _isal.compressobj(isal_level(level), wbits=GZIP_WBITS)
    out = []
    run: list[bytes] = []  # consecutive short pieces, joined into one call
    run_size = 0
    for piece in pieces:
        size = len(piece)
        if size >= STREAM_PIECE:
            if run:
                out.append(comp.compress(run[0] if len(run) == 1 else b"".join(run)))
                run, run_size = [], 0
            out.append(comp.compress(piece))
            continue
        run.append(piece)
        run_size += size
        if run_size >= STREAM_PIECE:
            out.append(comp.compress(run[0] if len(run) == 1 else b"".join(run)))
            run, run_size = [], 0
    if run:
        out.append(comp.compress(run[0] if len(run) == 1 else b"".join(run)))
    out.append(comp.flush())
    return b"".join(out)


def joined(data: Chunks) -> bytes:
    """``data`` as one buffer (joined only if it is in pieces): for what must send one."""
    if isinstance(data, bytes):
        return data
    if isinstance(data, bytearray | memoryview):
        return bytes(data)
    return data[0] if len(data) == 1 else b"".join(data)


def total_size(data: Chunks) -> int:
    """The length of ``data``, in pieces or not."""
    if isinstance(data, bytes | bytearray | memoryview):
        return len(data)
    return sum(map(len, data))
