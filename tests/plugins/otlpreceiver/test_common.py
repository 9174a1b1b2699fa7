"""What the OTLP receiver's servers share (``plugins/otlpreceiver/common.py``): bounded
inflation, on the event loop for small bodies and in a worker thread for large ones."""

from __future__ import annotations

import asyncio
import gzip
import os
import threading
import zlib

import pytest

from plugins.otlpreceiver import common
from plugins.otlpreceiver.common import INLINE_INFLATE, RequestError, inflate_off_loop


@pytest.mark.parametrize("size", [1000, INLINE_INFLATE * 4])
async def test_small_bodies_inline_large_ones_in_a_thread(
    size: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    data = os.urandom(size)  # incompressible: the gzip body is as large as the data
    threads: list[str] = []
    real = common.inflate

    def spy(body: bytes, limit: int, wbits: int, name: str) -> bytes:
        threads.append(threading.current_thread().name)
        return real(body, limit, wbits, name)

    monkeypatch.setattr(common, "inflate", spy)
    assert await inflate_off_loop(gzip.compress(data), size, 31, "gzip") == data
    assert await inflate_off_loop(zlib.compress(data), size, 15, "deflate") == data
    main = threading.main_thread().name
    if size <= INLINE_INFLATE:
        assert threads == [main, main]
    else:
        assert len(threads) == 2 and main not in threads


async def test_limits_hold_in_the_thread_too() -> None:
    body = gzip.compress(os.urandom(INLINE_INFLATE * 2) + b"\0" * (4 << 20))
    assert len(body) > INLINE_INFLATE
    with pytest.raises(RequestError) as err:
        await inflate_off_loop(body, 1 << 20, 31, "gzip")
    assert err.value.status == 413
    with pytest.raises(RequestError) as err:
        await inflate_off_loop(body[: len(body) // 2], 8 << 20, 31, "gzip")
    assert err.value.status == 400


async def test_the_loop_keeps_running_while_a_large_body_inflates() -> None:
    body = gzip.compress(os.urandom(1 << 20) * 8)  # 8 MiB of data, ~8 MiB compressed
    ticks = 0

    async def tick() -> None:
        nonlocal ticks
        while True:
            ticks += 1
            await asyncio.sleep(0)

    ticker = asyncio.create_task(tick())
    out = await inflate_off_loop(body, 16 << 20, 31, "gzip")
    ticker.cancel()
    assert len(out) == 8 << 20
    assert ticks > 1
