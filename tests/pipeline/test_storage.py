"""The segment log under the write-ahead log and the persistent queue: group commit, done marks,
recovery after a crash (a torn tail, a damaged segment), segment deletion, the directory lock."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from pipeline.storage import MAGIC, SegmentLog, StorageError, safe_name
from tests.support import logged


async def wait_for(predicate, within: float = 5.0) -> None:  # type: ignore[no-untyped-def]
    loop = asyncio.get_running_loop()
    deadline = loop.time() + within
    while not predicate():
        if loop.time() > deadline:
            raise AssertionError("condition not met in time")
        await asyncio.sleep(0.01)


def segments(path: Path) -> list[str]:
    return sorted(p.name for p in path.glob("*.seg"))


async def test_append_read_complete_and_reopen(tmp_path: Path) -> None:
    wal = SegmentLog(tmp_path / "log")
    assert wal.open() == []
    recs = [await wal.append([b"head-", str(i).encode()]) for i in range(5)]
    assert [r.rid for r in recs] == [0, 1, 2, 3, 4]
    assert wal.read(recs[3]) == b"head-3"
    wal.complete(recs[0])
    wal.complete(recs[2])
    await wait_for(lambda: wal.stats.live == 3)
    wal.close()
    again = SegmentLog(tmp_path / "log")
    pending = again.open()
    assert [r.rid for r in pending] == [1, 3, 4]
    assert [again.read(r) for r in pending] == [b"head-1", b"head-3", b"head-4"]
    new = await again.append([b"more"])
    assert new.rid == 5  # ids go on after a restart
    again.close()


async def test_concurrent_appends_share_a_commit(tmp_path: Path) -> None:
    wal = SegmentLog(tmp_path / "log", fsync=True)
    wal.open()
    recs = await asyncio.gather(*(wal.append([bytes(1000)]) for _ in range(200)))
    assert len({r.rid for r in recs}) == 200
    # 200 appends while the writer wrote and fsynced: far fewer commits than records
    assert wal.stats.records_written == 200
    assert wal.stats.commits < 100
    assert wal.stats.fsyncs == wal.stats.commits
    wal.close()


async def test_full_segments_are_deleted_when_every_record_is_done(tmp_path: Path) -> None:
    wal = SegmentLog(tmp_path / "log", segment_bytes=4096)
    wal.open()
    recs = [await wal.append([bytes(1000)]) for _ in range(20)]
    assert len(segments(tmp_path / "log")) >= 5
    for r in recs[:-1]:
        wal.complete(r)
    # every full segment went; the current one (holding the last record) stays
    await wait_for(lambda: len(segments(tmp_path / "log")) == 1)
    assert wal.stats.live == 1
    wal.close()
    again = SegmentLog(tmp_path / "log", segment_bytes=4096)
    assert [r.rid for r in again.open()] == [19]
    again.close()


async def test_a_torn_tail_is_cut_off(tmp_path: Path) -> None:
    wal = SegmentLog(tmp_path / "log")
    wal.open()
    for i in range(3):
        await wal.append([b"x" * 100 + bytes([i])])
    wal.close()
    [seg] = (tmp_path / "log").glob("*.seg")
    size = seg.stat().st_size
    # a record the process died writing: half a header
    seg.write_bytes(seg.read_bytes() + b"\x10\x00\x00")
    again = SegmentLog(tmp_path / "log")
    assert len(again.open()) == 3
    assert seg.stat().st_size == size
    rec = await again.append([b"after"])
    again.close()
    third = SegmentLog(tmp_path / "log")
    pending = third.open()
    assert [third.read(r) for r in pending][-1] == b"after"
    assert rec.rid == 3
    third.close()


async def test_a_corrupt_record_in_an_older_segment_keeps_the_ones_before(
    tmp_path: Path,
) -> None:
    wal = SegmentLog(tmp_path / "log", segment_bytes=400)
    wal.open()
    for i in range(6):
        await wal.append([bytes([i]) * 150])
    wal.close()
    first = sorted((tmp_path / "log").glob("*.seg"))[0]
    data = bytearray(first.read_bytes())
    data[-5] ^= 0xFF  # the last record of the first segment fails its checksum
    first.write_bytes(bytes(data))
    again = SegmentLog(tmp_path / "log", segment_bytes=400)
    pending = again.open()
    bodies = [again.read(r)[0] for r in pending]
    assert 0 in bodies and 5 in bodies and len(bodies) == 5
    again.close()


async def test_frozen_log_keeps_what_is_completed_afterwards(tmp_path: Path) -> None:
    wal = SegmentLog(tmp_path / "log")
    wal.open()
    a = await wal.append([b"a"])
    b = await wal.append([b"b"])
    wal.complete(a)
    await wait_for(lambda: wal.stats.live == 1)
    wal.freeze()  # the shutdown deadline passed: b is dropped, not delivered
    wal.complete(b)
    wal.close()
    again = SegmentLog(tmp_path / "log")
    assert [again.read(r) for r in again.open()] == [b"b"]
    again.close()


async def test_a_second_process_cannot_open_a_locked_log(tmp_path: Path) -> None:
    wal = SegmentLog(tmp_path / "log")
    wal.open()
    code = textwrap.dedent(
        f"""
        from pipeline.storage import SegmentLog, StorageError
        try:
            SegmentLog({str(tmp_path / "log")!r}, lock_timeout=0.2).open()
        except StorageError as exc:
            print("locked:", exc)
        """
    )
    out = await asyncio.to_thread(
        subprocess.run,
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        cwd=Path.cwd(),
        check=True,
    )
    assert "locked:" in out.stdout and "another process" in out.stdout
    wal.close()
    # once closed (or the process died: the kernel drops the lock), it opens
    again = SegmentLog(tmp_path / "log", lock_timeout=0.2)
    again.open()
    again.close()


async def test_a_record_after_a_failed_write_does_not_follow_garbage(tmp_path: Path) -> None:
    wal = SegmentLog(tmp_path / "log")
    wal.open()
    await wal.append([b"good"])
    assert wal._current is not None
    real_fd = wal._current.fd
    wal._current.fd = os.open(os.devnull, os.O_RDONLY)  # writes to it fail (EBADF)
    with pytest.raises(StorageError):
        await wal.append([b"lost"])
    os.close(wal._current.fd)
    wal._current.fd = real_fd
    wal._failed = None
    await wal.append([b"next"])
    wal.close()
    again = SegmentLog(tmp_path / "log")
    assert [again.read(r) for r in again.open()] == [b"good", b"next"]
    again.close()


def test_segment_files_start_with_the_magic(tmp_path: Path) -> None:
    async def main() -> None:
        wal = SegmentLog(tmp_path / "log")
        wal.open()
        await wal.append([b"x"])
        wal.close()

    asyncio.run(main())
    [seg] = (tmp_path / "log").glob("*.seg")
    assert seg.read_bytes().startswith(MAGIC)


def test_safe_name_as_the_collector_writes_component_names() -> None:
    assert safe_name("exporter_otlp_backend_traces") == "exporter_otlp_backend_traces"
    assert safe_name("logs/container") == "logs~002Fcontainer"
    assert safe_name("a~b") == "a~007Eb"


# -- the writer fails with an error that is not an OSError (a bug): nobody hangs ---------------
def _raise_value_error(*args: object, **kwargs: object) -> None:
    raise ValueError("injected: the writer's bug")


@pytest.mark.parametrize("fsync", [False, True])
async def test_a_writer_bug_fails_the_log_and_answers_every_writer(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, fsync: bool
) -> None:
    """A ValueError raised by the writer's own write code: the appends waiting for it and the
    ones after get a StorageError (none waits forever); the failure is counted (``errors``,
    ``failed``) and logged; what was acknowledged before is kept (and replayed by the next
    open, which gives a working log again); done marks are still applied meanwhile."""
    wal = SegmentLog(tmp_path / "log", fsync=fsync)
    wal.open()
    acked = [await wal.append([b"acked-", str(i).encode()]) for i in range(3)]
    monkeypatch.setattr(SegmentLog, "_flush", _raise_value_error)
    with logged() as records:
        outcomes = await asyncio.wait_for(
            asyncio.gather(*(wal.append([b"lost"]) for _ in range(20)), return_exceptions=True),
            timeout=30,  # a guard against a hang only: it answers at its next turn
        )
        assert all(isinstance(o, StorageError) for o in outcomes), outcomes
        assert "ValueError" in str(outcomes[0])
        with pytest.raises(StorageError, match="failed"):
            await asyncio.wait_for(wal.append([b"later"]), timeout=30)
        wal.complete(acked[0])  # done marks still go on
        await wait_for(lambda: wal.stats.live == 2)
    assert wal.stats.failed and wal.stats.errors >= 1
    errors = [r for r in records if r.levelname == "ERROR" and "ValueError" in r.getMessage()]
    assert errors, [r.getMessage() for r in records]
    monkeypatch.undo()
    wal.close()
    again = SegmentLog(tmp_path / "log", fsync=fsync)
    pending = again.open()
    assert [again.read(r) for r in pending] == [b"acked-1", b"acked-2"]
    assert not again.stats.failed
    await again.append([b"after"])  # opened again: it works
    again.close()


async def test_a_writer_thread_that_dies_answers_what_it_held(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The writer thread itself ends on an error raised outside the guarded write (injected in
    its batch handling): the batch it held and the appends after are answered with an
    error, counted and logged; close still works and the log opens again."""
    wal = SegmentLog(tmp_path / "log")
    wal.open()
    kept = await wal.append([b"kept"])
    monkeypatch.setattr(SegmentLog, "_write_batch", _raise_value_error)
    with logged() as records:
        with pytest.raises(StorageError):
            await asyncio.wait_for(wal.append([b"held"]), timeout=30)
        assert wal._thread is not None
        await wait_for(lambda: not wal._thread.is_alive())
        with pytest.raises(StorageError, match="failed"):
            await wal.append([b"after"])  # refused at once: nobody left to write it
    assert wal.stats.failed and wal.stats.errors == 1
    assert any("writer stopped" in r.getMessage() for r in records)
    monkeypatch.undo()
    wal.close()
    again = SegmentLog(tmp_path / "log")
    assert [again.read(r) for r in again.open()] == [b"kept"]
    again.close()
    assert kept.rid == 0


async def test_a_done_mark_pass_that_fails_unexpectedly_fails_the_log(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A non-OS error while applying done marks: counted, logged at most once a second while
    it goes on, writes refused from then on; nothing acknowledged is lost."""
    wal = SegmentLog(tmp_path / "log")
    wal.open()
    rec = await wal.append([b"kept"])
    monkeypatch.setattr(SegmentLog, "_apply_completed", _raise_value_error)
    with logged() as records:
        await wait_for(lambda: wal.stats.errors >= 3)
        with pytest.raises(StorageError, match="ValueError"):
            await wal.append([b"refused"])
    assert wal.stats.failed
    assert 1 <= len([r for r in records if "ValueError" in r.getMessage()]) < wal.stats.errors
    monkeypatch.undo()
    wal.close()
    again = SegmentLog(tmp_path / "log")
    assert [again.read(r) for r in again.open()] == [b"kept"]
    again.close()
    assert rec.rid == 0


async def test_a_segment_that_cannot_be_deleted_is_counted_and_the_log_goes_on(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An OSError while applying done marks (here: deleting a segment all of whose records
    are done) costs disk space only: counted, logged, the log does not fail."""

    def refuse(self: SegmentLog, seg: object) -> None:
        raise PermissionError(13, "injected: cannot delete")

    wal = SegmentLog(tmp_path / "log", segment_bytes=64)
    wal.open()
    first = await wal.append([b"a" * 40])
    await wal.append([b"b" * 40])  # the first segment is full: sealed
    monkeypatch.setattr(SegmentLog, "_delete", refuse)
    with logged() as records:
        wal.complete(first)
        await wait_for(lambda: wal.stats.errors == 1)
    monkeypatch.undo()
    assert not wal.stats.failed
    assert any("cannot delete" in r.getMessage() for r in records)
    await wal.append([b"c"])  # the log goes on
    wal.close()


@pytest.mark.parametrize("how", ["_flush", "_write_batch"])  # the write fails; the thread dies
async def test_a_failed_log_restarts_its_writer_in_place(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, how: str
) -> None:
    """``restart_writer`` (a config reload) after the log failed: writes are taken again in a
    new segment (the one being written when it failed is never written again), the records
    acknowledged before keep their handles (marking one done works), and the next open reads
    the records before and after, in order. On a log that did not fail it does nothing."""
    wal = SegmentLog(tmp_path / "log")
    wal.open()
    assert not wal.restart_writer()
    before = [await wal.append([b"before-", str(i).encode()]) for i in range(3)]
    failed_segment = before[0].segment
    monkeypatch.setattr(SegmentLog, how, _raise_value_error)
    with logged():
        with pytest.raises(StorageError):
            await asyncio.wait_for(wal.append([b"lost"]), timeout=30)
        with pytest.raises(StorageError, match="failed"):
            await asyncio.wait_for(wal.append([b"lost"]), timeout=30)
    assert wal.stats.failed
    monkeypatch.undo()
    assert wal.restart_writer()
    assert not wal.stats.failed
    after = await asyncio.wait_for(wal.append([b"after"]), timeout=30)
    assert after.segment is not failed_segment and failed_segment.sealed
    wal.complete(before[0])
    await wait_for(lambda: wal.stats.live == 3)
    wal.close()
    again = SegmentLog(tmp_path / "log")
    assert [again.read(r) for r in again.open()] == [b"before-1", b"before-2", b"after"]
    again.close()


def _damage(path: Path, offset: int, span: int = 1) -> None:
    data = bytearray(path.read_bytes())
    for i in range(offset, offset + span):
        data[i] ^= 0xFF
    path.write_bytes(bytes(data))


@pytest.mark.parametrize("where", ["body", "header"])
async def test_a_damaged_record_in_the_middle_is_skipped_counted_and_the_rest_kept(
    tmp_path: Path, where: str
) -> None:
    """A record in the middle of the last segment fails its checksum (a flipped bit in its
    body) or has a header that makes no sense (its length): not a write the process died in,
    since whole records follow it. It is skipped, counted (``stats.corrupt``) and logged; the
    records after it are kept and the file is not cut. Before, the scan stopped there and cut
    the segment: every acknowledged record after the damage was lost."""
    wal = SegmentLog(tmp_path / "log")
    wal.open()
    # 8 zero bytes then a small number in the bodies (as in OTLP payloads: a trace id's zero
    # half) read as the header of an empty record (checksum 0): not taken for one
    recs = [
        await wal.append([bytes(8) + (1000 + i).to_bytes(8, "little") + bytes([i]) * 200])
        for i in range(10)
    ]
    wal.close()
    [seg] = (tmp_path / "log").glob("*.seg")
    size = seg.stat().st_size
    target = recs[4]
    if where == "body":
        _damage(seg, target.offset + 50)
    else:
        _damage(seg, target.offset - 16 + 2)  # the length's third byte: a huge length
    again = SegmentLog(tmp_path / "log")
    with logged() as records:
        pending = again.open()
    assert [again.read(r)[16] for r in pending] == [0, 1, 2, 3, 5, 6, 7, 8, 9]
    assert again.stats.corrupt == 1
    assert seg.stat().st_size == size
    assert any("damaged record" in r.getMessage() for r in records)
    after = await again.append([b"after"])
    assert after.rid == 10
    again.close()


async def test_an_incremental_open_reads_one_segment_at_a_time_while_taking_writes(
    tmp_path: Path,
) -> None:
    """``open_incremental`` reads the last segment at open and the others one per
    ``Recovery.next`` call, oldest first; the log takes writes meanwhile (not handed to the
    recovery), records completed during the recovery are done, and a close in the middle
    leaves what was not read on disk for the next open."""
    wal = SegmentLog(tmp_path / "log", segment_bytes=1000)
    wal.open()
    for i in range(30):  # 4 records (~216 bytes) a segment: 8 segments
        await wal.append([bytes([i]) * 200])
    wal.close()
    assert len(segments(tmp_path / "log")) == 8

    def measure(body: bytes) -> tuple[int, int]:
        if body[0] == 7:
            raise ValueError("not readable")
        return body[0], len(body)

    log = SegmentLog(tmp_path / "log", segment_bytes=1000)
    recovery = log.open_incremental(measure)
    assert recovery.segments_left == 8 and recovery.bytes_left > 30 * 200
    new = await log.append([b"new"])
    first = await asyncio.to_thread(recovery.next)
    assert first is not None
    assert [r.measured for r in first] == [(i, 200) for i in range(4)]
    assert recovery.segments_left == 7
    second = await asyncio.to_thread(recovery.next)
    assert second is not None
    assert [r.rid for r in second] == [4, 5, 6, 7]
    assert isinstance(second[3].measured, ValueError)
    for r in first:
        log.complete(r)
    await wait_for(lambda: log.stats.live == 1 + 4)  # the new one and the second segment's
    log.close()  # in the middle of the recovery
    assert await asyncio.to_thread(recovery.next) is None

    again = SegmentLog(tmp_path / "log", segment_bytes=1000)
    pending = again.open()
    assert [again.read(r) for r in pending] == [bytes([i]) * 200 for i in range(4, 30)] + [b"new"]
    assert new.rid == 30
    again.close()

    full = SegmentLog(tmp_path / "log", segment_bytes=1000)
    recovery = full.open_incremental()
    got = []
    while (chunk := await asyncio.to_thread(recovery.next)) is not None:
        got.extend(chunk)
    assert [full.read(r) for r in got] == [bytes([i]) * 200 for i in range(4, 30)] + [b"new"]
    assert full.stats.live == len(got) == 27
    assert recovery.segments_left == 0 and recovery.bytes_left == 0
    full.close()
