"""gzip for what the gateway sends (``pipeline/compression.py``): any gzip reader decodes it,
on ISA-L and on the zlib fallback, at every level."""

from __future__ import annotations

import gzip
import os
import random
import zlib

import pytest

from pipeline import compression
from pipeline.compression import gzip_compress, isal_level


def bodies() -> list[bytes]:
    rng = random.Random(7)
    return [
        b"",
        b"a",
        os.urandom(100_000),  # incompressible: stored blocks
        b"span" * 250_000,  # highly compressible, 1 MB
        bytes(rng.randrange(8) for _ in range(300_000)),
    ]


@pytest.fixture(params=["isal", "zlib"])
def backend(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    if request.param == "zlib":
        monkeypatch.setattr(compression, "_isal", None)
    return str(request.param)


@pytest.mark.parametrize("level", [0, 1, 5, 9])
def test_any_gzip_reader_decodes_it(backend: str, level: int) -> None:
    for body in bodies():
        packed = gzip_compress(body, level)
        assert packed[:2] == b"\x1f\x8b"  # one gzip member, not a zlib or raw deflate stream
        assert gzip.decompress(packed) == body
        d = zlib.decompressobj(31)
        assert d.decompress(packed) == body and d.eof and not d.unused_data


def test_isal_is_used_where_it_is_installed_and_compresses_as_well_as_zlib() -> None:
    assert compression.BACKEND == "isal"  # the wheels cover the machines the tests run on
    body = bodies()[4]
    assert len(gzip_compress(body)) <= 1.1 * len(zlib.compress(body, 1, wbits=31))


def test_levels_map_onto_isal_s_and_a_bad_level_is_refused() -> None:
    assert [isal_level(n) for n in range(10)] == [0, 1, 1, 1, 2, 2, 2, 3, 3, 3]
    for bad in (-1, 10):
        with pytest.raises(ValueError, match="gzip level must be 0-9"):
            gzip_compress(b"x", bad)


def pieces_cases() -> list[list[bytes]]:
    """Hostile ways to cut a body: no pieces, empty pieces, one piece, many one-byte pieces,
    huge pieces, pieces cut at random."""
    rng = random.Random(11)
    body = bodies()[4]
    cuts = sorted(rng.sample(range(1, len(body)), 40))
    return [
        [],
        [b""],
        [b"", b"", b""],
        [b"a"],
        [bodies()[3]],
        [bytes([i % 7]) for i in range(5_000)],  # many tiny pieces
        [b"", bodies()[2], b"", bodies()[3], b""],  # huge pieces between empty ones
        [body[a:b] for a, b in zip([0, *cuts], [*cuts, len(body)], strict=True)],
    ]


@pytest.mark.parametrize("level", [0, 1, 9])
def test_pieces_compress_to_their_concatenation(backend: str, level: int) -> None:
    for pieces in pieces_cases():
        whole = b"".join(pieces)
        for data in (pieces, tuple(pieces)):
            packed = gzip_compress(data, level)
            assert packed[:2] == b"\x1f\x8b"
            d = zlib.decompressobj(31)
            assert d.decompress(packed) == whole and d.eof and not d.unused_data
            assert gzip.decompress(packed) == gzip.decompress(gzip_compress(whole, level))
        assert compression.joined(pieces) == whole
        assert compression.total_size(pieces) == len(whole)
    for bad in (-1, 10):
        with pytest.raises(ValueError, match="gzip level must be 0-9"):
            gzip_compress([b"x", b"y"], bad)


@pytest.mark.skipif(compression.BACKEND != "isal", reason="ISA-L not installed")
@pytest.mark.parametrize("level", [0, 1, 9])
def test_isal_takes_long_pieces_as_they_are_and_short_ones_joined_in_runs(
    level: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    """With ISA-L a piece of STREAM_PIECE bytes or more goes to the compressor as it is (not
    copied into a join of the whole batch); consecutive shorter pieces are joined into runs of
    about STREAM_PIECE (a call costs about what joining that much does); the member decodes to
    the concatenation."""
    fed: list[bytes] = []
    real = compression._isal.compressobj

    class Spy:
        def __init__(self, *args: object, **kwargs: object) -> None:
            self.comp = real(*args, **kwargs)

        def compress(self, data: bytes) -> bytes:
            fed.append(data)
            return bytes(self.comp.compress(data))

        def flush(self) -> bytes:
            return bytes(self.comp.flush())

    monkeypatch.setattr(compression._isal, "compressobj", Spy)
    big = compression.STREAM_PIECE
    rng = random.Random(5)
    long1, long2 = rng.randbytes(big), bytes(rng.randrange(4) for _ in range(3 * big))
    short = [bytes(rng.randrange(4) for _ in range(big // 3 + 1)) for _ in range(4)]
    pieces = [short[0], long1, short[1], short[2], short[3], long2, short[0]]
    packed = gzip_compress(pieces, level)
    assert gzip.decompress(packed) == b"".join(pieces)
    assert fed[1] is long1 and fed[3] is long2  # the long pieces themselves: no copy
    assert fed == [short[0], long1, b"".join(short[1:4]), long2, short[0]]


def test_pieces_compress_as_well_as_the_whole() -> None:
    body = bodies()[4]
    pieces = [body[i : i + 30_000] for i in range(0, len(body), 30_000)]
    assert len(gzip_compress(pieces)) <= 1.02 * len(gzip_compress(body))


def test_joined_does_not_copy_a_single_buffer() -> None:
    body = b"x" * 1000
    assert compression.joined(body) is body
    assert compression.joined((body,)) is body
    assert compression.total_size(body) == 1000
