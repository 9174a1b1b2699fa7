"""Durable storage for the engine: an append-only log of records in segment files, written with
group commit, each record marked done when its data is no longer needed.

Two users: the write-ahead log of ``service.durability`` (the requests receivers acknowledged,
until the pipeline delivered them) and the exporters' persistent sending queue
(``sending_queue.storage``). Both get their log from a storage extension (``file_storage``),
which owns the directory and the fsync policy: :class:`StorageExtension`.

On disk, a log is a directory of segments ``<seq>.seg`` (an 8-byte magic, then records: a
16-byte header - body length, CRC-32 of the body, record id - and the body) with a side file
``<seq>.done`` per segment listing the ids of its records that are done (8 bytes each). A
segment is deleted once it is full (a new one was started) and all its records are done. On
open, every record not listed as done is handed back (in write order) to be replayed; a record
cut short or failing its CRC at the end of the last segment (a write the process died in, never
acknowledged) is cut off.

Writes are done by one thread per log: records appended while it writes wait and go out
together in the next ``writev`` (group commit); with ``fsync`` the thread calls ``fdatasync``
before any of them is acknowledged, so concurrent requests share one fsync. Without ``fsync``
a record is acknowledged once it is in the page cache (it survives the process being killed,
not a power loss) and the log is fsynced in the background every ``fsync_interval``. Done
marks are written by the same thread every ``DONE_TICK`` without fsync: one lost in a crash
only means its record is replayed once more (a duplicate, never a loss).
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import errno
import fcntl
import logging
import os
import struct
import threading
import time
import zlib
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

log = logging.getLogger("pipeline.storage")

MAGIC = b"PLOGv1\r\n"
HEADER = struct.Struct("<IIQ")  # body length, crc32(body), record id
DONE = struct.Struct("<Q")
SEGMENT_BYTES = 8 << 20
DONE_TICK = 0.05  # seconds between two passes over the records completed meanwhile
MAX_RECORD = (1 << 32) - 1
_IOV_MAX = 512  # buffers per writev call (the kernel's limit is 1024)
_RESYNC_WINDOW = 1 << 16  # how far the next good record's id may be after the last one


class StorageError(OSError):
    """A log could not be opened, written or read."""


@runtime_checkable
class StorageExtension(Protocol):
    """What a storage extension (``file_storage``) offers the engine and the components: a
    log of their own for each owner (``"service_wal"``, ``"exporter_otlp__traces"``)."""

    def log(self, owner: str) -> SegmentLog:
        """The log of ``owner`` (created on first use; not opened yet)."""
        ...


def safe_name(text: str) -> str:
    """``text`` usable as a file name, as the Collector's file storage writes component names:
    every character but ASCII letters, digits, ``.``, ``-`` and ``_`` becomes ``~`` and its
    code point in hex (``/`` -> ``~002F``)."""
    out = []
    for ch in text:
        if ch.isascii() and (ch.isalnum() or ch in "._-"):
            out.append(ch)
        else:
            out.append(f"~{ord(ch):04X}")
    return "".join(out)


class Record:
    """A handle on one record of a log: where it is and whether it is done. Holds no data."""

    __slots__ = ("length", "measured", "offset", "rid", "segment")

    def __init__(self) -> None:
        self.rid = -1
        self.segment: _Segment | None = None
        self.measured: Any = None  # what a recovery's ``measure`` said of its body
        self.offset = 0
        self.length = 0

    def __repr__(self) -> str:
        seq = self.segment.seq if self.segment is not None else None
        return f"Record(rid={self.rid}, segment={seq}, offset={self.offset}, len={self.length})"


class _Segment:
    __slots__ = (
        "deleted",
        "done_fd",
        "fd",
        "live",
        "path",
        "read_fd",
        "records",
        "sealed",
        "seq",
        "size",
    )

    def __init__(self, seq: int, path: Path) -> None:
        self.seq = seq
        self.path = path
        self.fd = -1  # for appending (the current segment only)
        self.read_fd = -1
        self.done_fd = -1
        self.size = 0
        self.live = 0  # records written and not done
        self.records = 0
        self.sealed = False
        self.deleted = False

    @property
    def done_path(self) -> Path:
        return self.path.with_suffix(".done")


class _Write:
    __slots__ = ("abandon", "error", "future", "loop", "parts", "record")

    def __init__(
        self,
        record: Record,
        parts: Sequence[bytes],
        loop: asyncio.AbstractEventLoop,
        future: asyncio.Future[None],
    ) -> None:
        self.record = record
        self.parts = parts
        self.loop = loop
        self.future = future
        self.error: BaseException | None = None
        # the caller gave the record up while it waited: called with it once it is written
        self.abandon: Callable[[Record], None] | None = None


class LogStats:
    """What a log holds, read by the self-metrics (approximate while the writer runs)."""

    __slots__ = (
        "bytes",
        "commits",
        "corrupt",
        "errors",
        "failed",
        "fsyncs",
        "live",
        "records_written",
        "segments",
    )

    def __init__(self) -> None:
        self.errors = 0  # writer errors (I/O or internal), each logged
        self.corrupt = 0  # damaged records skipped when the log was read at open, each logged
        self.failed = False  # the log refuses writes until it is opened again
        self.live = 0
        self.bytes = 0
        self.segments = 0
        self.commits = 0
        self.fsyncs = 0
        self.records_written = 0


class SegmentLog:
    """One log: :meth:`open`, then :meth:`append` records and :meth:`complete` them; records
    not completed when the process ends are returned by the next :meth:`open`."""

    def __init__(
        self,
        directory: Path | str,
        *,
        fsync: bool = False,
        fsync_interval: float = 1.0,
        segment_bytes: int = SEGMENT_BYTES,
        lock_timeout: float = 1.0,
        dir_mode: int = 0o750,
        name: str = "",
    ) -> None:
        self.directory = Path(directory)
        self.fsync = fsync
        self.fsync_interval = fsync_interval
        self.segment_bytes = segment_bytes
        self.lock_timeout = lock_timeout
        self.dir_mode = dir_mode
        self.name = name or self.directory.name
        self.stats = LogStats()
        self._segments: dict[int, _Segment] = {}
        self._current: _Segment | None = None
        self._next_rid = 0
        self._next_seq = 0
        self._lock_fd = -1
        self._cond = threading.Condition()
        self._pending: list[_Write] = []
        self._completed: collections.deque[Record] = collections.deque()
        self._fd_lock = threading.Lock()
        self._thread: threading.Thread | None = None
        self._closing = False
        self._frozen = False
        self._dirty = False  # written since the last fsync
        self._failed: BaseException | None = None
        self._writer_gone = False  # the writer thread ended (closed, or died)
        self._last_fail_log = 0.0
        self._last_error_log = float("-inf")
        self._inflight: list[_Write] | None = None  # the batch the writer is writing
        self._recovery: Recovery | None = None  # an incremental recovery under way
        self.opened = False

    # -- opening -------------------------------------------------------------------------
    def open(self) -> list[Record]:
        """Lock the directory, recover its segments and start the writer. Returns the records
        not done, in the order they were written (read their bodies with :meth:`read`)."""
        self._begin_open()
        try:
            pending = self._recover()
        except BaseException:
            self._unlock()
            raise
        self._start_writer()
        return pending

    def open_incremental(self, measure: Callable[[bytes], Any] | None = None) -> Recovery:
        """Open the log reading only its last segment now (where a write the process died in
        is cut off, and where the next record id is found); the records not done of the other
        segments are read by the returned :class:`Recovery`, one segment per call, while the
        log already takes writes. For a large backlog (a persistent queue after an outage):
        the caller calls :meth:`Recovery.next` in a thread, so neither the open nor the event
        loop waits for every record to be read. ``measure`` is called with each record's
        body as it is read (its result in :attr:`Record.measured`)."""
        self._begin_open()
        try:
            seqs = self._segment_seqs()
            tail: list[Record] = []
            last_rid = -1
            tail_seg = None
            if seqs:
                tail_seg, tail, last_rid = self._recover_segment(seqs[-1], True, measure, -1)
                self._next_seq = seqs[-1] + 1
            self._next_rid = last_rid + 1
            recovery = Recovery(self, seqs[:-1], tail_seg, tail, measure)
            self._recovery = recovery
        except BaseException:
            self._unlock()
            raise
        self._start_writer()
        return recovery

    def _begin_open(self) -> None:
        """What both ways of opening do first: refuse a second open, make and lock the
        directory, reset the recovery's counts."""
        if self.opened:
            raise StorageError(errno.EALREADY, f"log {self.directory} is already open")
        self.directory.mkdir(mode=self.dir_mode, parents=True, exist_ok=True)
        self._lock()
        self.stats.live = 0
        self.stats.corrupt = 0

    def _start_writer(self) -> None:
        self.opened = True
        self._failed = None
        self._writer_gone = False
        self.stats.failed = False
        self._thread = threading.Thread(target=self._run, name=f"storage-{self.name}", daemon=True)
        self._thread.start()

    def _lock(self) -> None:
        path = self.directory / "LOCK"
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o640)
        deadline = time.monotonic() + self.lock_timeout
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() >= deadline:
                    os.close(fd)
                    raise StorageError(
                        errno.EWOULDBLOCK,
                        f"{self.directory} is locked by another process (waited "
                        f"{self.lock_timeout:g}s): two gateways cannot share a storage directory",
                    ) from None
                time.sleep(0.02)
        self._lock_fd = fd

    def _unlock(self) -> None:
        if self._lock_fd >= 0:
            os.close(self._lock_fd)  # releases the flock
            self._lock_fd = -1

    def _recover(self) -> list[Record]:
        seqs = self._segment_seqs()
        pending: list[Record] = []
        last_rid = -1
        for i, seq in enumerate(seqs):
            seg, records, last_rid = self._recover_segment(seq, i == len(seqs) - 1, None, last_rid)
            self._register(seg)
            pending.extend(records)
        self._next_rid = last_rid + 1
        if seqs:
            self._next_seq = seqs[-1] + 1
        return pending

    def _segment_seqs(self) -> list[int]:
        return sorted(int(p.stem) for p in self.directory.glob("*.seg") if p.stem.isdigit())

    def _recover_segment(
        self, seq: int, last: bool, measure: Callable[[bytes], Any] | None, after_rid: int
    ) -> tuple[_Segment, list[Record], int]:
        """Read one segment: the segment (to :meth:`_register`), its records not done and the
        last record id it holds (``after_rid`` if none)."""
        seg = _Segment(seq, self.directory / f"{seq:012d}.seg")
        done = self._read_done(seg)
        records, good_end, problem, skipped = self._scan(seg, measure, after_rid)
        if skipped:
            self.stats.corrupt += skipped
        if problem:
            if last:
                # the end of the last segment: a write the process died in, never
                # acknowledged; cut it off so the file stays well-formed
                log.warning(
                    "storage %s: cutting off an unfinished record at the end of %s (%s)",
                    self.name,
                    seg.path.name,
                    problem,
                )
                with open(seg.path, "r+b") as f:
                    f.truncate(good_end)
            else:
                self.stats.corrupt += 1
                log.error(
                    "storage %s: %s is damaged after byte %d (%s); the records after it "
                    "cannot be read",
                    self.name,
                    seg.path.name,
                    good_end,
                    problem,
                )
        seg.size = good_end
        seg.records = len(records)
        seg.sealed = True
        pending: list[Record] = []
        last_rid = after_rid
        for rec in records:
            rec.segment = seg
            last_rid = max(last_rid, rec.rid)
            if rec.rid not in done:
                pending.append(rec)
                seg.live += 1
        return seg, pending, last_rid

    def _register(self, seg: _Segment, recovery: Recovery | None = None) -> bool:
        """Make a segment read at open part of the log (deleted if all its records are done).
        ``recovery``: the incremental recovery reading it, which the log may have closed
        meanwhile: then nothing is registered (returns ``False``; the segment stays on disk
        for the next open)."""
        if seg.live == 0:
            self._delete(seg)  # (all done: safe whatever happened meanwhile)
            return recovery is None or self._recovery is recovery
        with self._fd_lock:
            if recovery is not None and self._recovery is not recovery:
                return False
            self._segments[seg.seq] = seg
            self.stats.bytes += seg.size
            self.stats.live += seg.live
            self.stats.segments = len(self._segments)
        return True

    @staticmethod
    def _read_done(seg: _Segment) -> set[int]:
        try:
            data = seg.done_path.read_bytes()
        except FileNotFoundError:
            return set()
        n = len(data) // DONE.size
        return set(struct.unpack_from(f"<{n}Q", data)) if n else set()

    def _scan(
        self,
        seg: _Segment,
        measure: Callable[[bytes], Any] | None = None,
        after_rid: int = -1,
    ) -> tuple[list[Record], int, str, int]:
        """The records of a segment, where the readable part ends, what stopped the scan and
        how many damaged records were skipped. A record failing its checksum, or a header
        that makes no sense, with whole records after it is damage in the middle (a bad
        sector, a bit flip), not a write the process died in: it is skipped (counted and
        logged) and the scan goes on at the next record found (:meth:`_resync`).
        ``measure``: called with each good record's body; its result (or the exception it
        raised) is kept in :attr:`Record.measured` (one pass over the data). ``after_rid``:
        the last id of the segment before (-1 if unknown)."""
        records: list[Record] = []
        skipped = 0
        with open(seg.path, "rb") as f:
            data_size = os.fstat(f.fileno()).st_size
            magic = f.read(len(MAGIC))
            if magic != MAGIC:
                return records, 0, "not a segment file (bad magic)", 0
            pos = len(MAGIC)
            last_rid = after_rid
            while True:
                f.seek(pos)
                header = f.read(HEADER.size)
                if not header:
                    return records, pos, "", skipped
                problem = ""
                if len(header) < HEADER.size:
                    problem = "truncated record header"
                else:
                    length, crc, rid = HEADER.unpack(header)
                    if pos + HEADER.size + length > data_size:
                        problem = "truncated record"
                    else:
                        body = f.read(length)
                        if len(body) < length:
                            problem = "truncated record"
                        elif zlib.crc32(body) != crc:
                            problem = "record checksum mismatch"
                if problem:
                    found = self._resync(f, pos + 1, data_size, last_rid)
                    if found < 0:
                        return records, pos, problem, skipped
                    skipped += 1
                    log.error(
                        "storage %s: a damaged record in %s at byte %d (%s); skipping %d "
                        "bytes to the next good record",
                        self.name,
                        seg.path.name,
                        pos,
                        problem,
                        found - pos,
                    )
                    pos = found
                    continue
                rec = Record()
                rec.rid = rid
                rec.offset = pos + HEADER.size
                rec.length = length
                if measure is not None:
                    try:
                        rec.measured = measure(body)
                    except Exception as exc:
                        rec.measured = exc
                del body
                records.append(rec)
                last_rid = rid
                pos += HEADER.size + length

    @staticmethod
    def _resync(f: Any, start: int, size: int, last_rid: int) -> int:
        """The offset of the next good record at or after ``start`` (-1 if none): a header
        with a body (every record the engine writes has one: an empty body's checksum is 0,
        which zero bytes in a payload would imitate), an id that follows ``last_rid`` closely
        (ids grow within a segment), a body that fits and passes its checksum, and after it
        the end of the file or another such record. A torn write leaves nothing good after
        it."""

        def good(pos: int, after: int) -> int:
            """The end of a good record at ``pos`` (-1 if not)."""
            f.seek(pos)
            header = f.read(HEADER.size)
            if len(header) < HEADER.size:
                return -1
            length, crc, rid = HEADER.unpack(header)
            if not 0 < length <= size - pos - HEADER.size:
                return -1
            if rid <= after or (after >= 0 and rid > after + _RESYNC_WINDOW):
                return -1
            if zlib.crc32(f.read(length)) != crc:
                return -1
            return pos + HEADER.size + length

        pos = start
        chunk_at = -1
        chunk = b""
        while pos + HEADER.size <= size:
            if not chunk_at <= pos <= chunk_at + len(chunk) - HEADER.size:
                f.seek(pos)
                chunk = f.read(1 << 16)
                chunk_at = pos
                if len(chunk) < HEADER.size:
                    return -1
            length, _, rid = HEADER.unpack_from(chunk, pos - chunk_at)
            if (
                0 < length <= size - pos - HEADER.size
                and rid > last_rid
                and (last_rid < 0 or rid <= last_rid + _RESYNC_WINDOW)
            ):
                end = good(pos, last_rid)
                if end == size or (end > 0 and good(end, rid) > 0):
                    return pos
            pos += 1
        return -1

    # -- writing -------------------------------------------------------------------------
    async def append(
        self,
        parts: Sequence[bytes],
        record: Record | None = None,
        *,
        abandon_on_cancel: bool = False,
    ) -> Record:
        """Write one record whose body is ``parts`` joined; returns once it is durable as the
        fsync policy says (in the page cache, or on disk with ``fsync``). Records appended
        while the writer is busy are written together. Raises :class:`StorageError`.

        With ``abandon_on_cancel``, a caller cancelled while it waits gives the record up: it
        is marked done once written (whoever sent its data was never told it is stored)."""
        if not self.opened or self._closing:
            raise StorageError(errno.EBADF, f"log {self.directory} is not open")
        if self._failed is not None:
            raise self._failed_error()
        rec = record if record is not None else Record()
        loop = asyncio.get_running_loop()
        future: asyncio.Future[None] = loop.create_future()
        write = _Write(rec, parts, loop, future)
        with self._cond:
            if self._writer_gone:  # (checked under the lock the writer's last pass takes)
                raise self._failed_error()
            self._pending.append(write)
            self._cond.notify()
        try:
            await future
        except asyncio.CancelledError:
            if abandon_on_cancel:
                if future.cancelled():  # not written yet, or not answered yet: once it is
                    write.abandon = self.complete
                elif rec.segment is not None:  # answered before the cancellation reached
                    self.complete(rec)
            raise
        finally:
            # A failed write's error keeps this frame in its traceback: the frame must not
            # keep the future, which holds the error (a cycle that would keep the record's
            # parts, and the caller's payload, until the cyclic garbage collector runs).
            del future, write
        return rec

    def complete(self, record: Record) -> None:
        """Mark a record done: its space is reclaimed and it is not returned after a restart.
        Cheap and safe from any thread (token finalizers); applied by the writer shortly."""
        self._completed.append(record)

    def freeze(self) -> None:
        """From now on, records completed are not marked done (the service's shutdown deadline
        passed: what is dropped now is replayed at the next start, not lost)."""
        self._frozen = True

    def read(self, record: Record) -> bytes:
        """The body of a record written and not done. Raises :class:`StorageError`."""
        seg = record.segment
        if seg is None or seg.deleted:
            raise StorageError(errno.ENOENT, f"{record!r} is not in log {self.directory}")
        with self._fd_lock:
            if seg.read_fd < 0:
                seg.read_fd = os.open(seg.path, os.O_RDONLY)
            fd = seg.read_fd
        data = os.pread(fd, record.length, record.offset)
        if len(data) != record.length:
            raise StorageError(errno.EIO, f"{record!r}: short read in {seg.path}")
        return data

    # -- the writer thread ---------------------------------------------------------------
    def _run(self) -> None:
        try:
            self._loop()
        except BaseException as exc:  # whatever ends the writer must not leave anyone waiting
            self._fail(exc, "the storage writer stopped")
        finally:
            # whatever ends the writer, nobody waits for it any more: what is still pending is
            # answered with an error, and appends from now on are refused at once
            with self._cond:
                self._writer_gone = True
                batch, self._pending = self._pending, []
            if self._inflight is not None:
                batch = self._inflight + batch
            if batch:
                self._refuse(batch)

    def _loop(self) -> None:
        last_sync = time.monotonic()
        while True:
            with self._cond:
                if not self._pending and not self._closing:
                    self._cond.wait(DONE_TICK)
                batch, self._pending = self._pending, []
                closing = self._closing
            if batch:
                self._inflight = batch  # answered by _run if the writer dies with it
                if self._failed is not None:
                    self._refuse(batch)
                else:
                    self._write_batch(batch)
            try:
                self._apply_completed()
            except OSError as exc:
                # (a segment that cannot be deleted): costs disk space or, after a crash,
                # duplicates; the log goes on
                self._error(f"cannot apply done marks: {exc}")
            except Exception as exc:
                self._fail(exc, "applying done marks failed unexpectedly")
            try:
                now = time.monotonic()
                if (
                    self._dirty
                    and not self.fsync
                    and self.fsync_interval > 0
                    and now - last_sync >= self.fsync_interval
                    and self._failed is None
                ):
                    self._sync()
                    last_sync = now
            except Exception as exc:
                # (an OSError of the background fsync included: the page cache may have lost
                # what was acknowledged; the log cannot be trusted to keep more)
                self._fail(exc, "the background fsync failed")
            if closing:
                with self._cond:
                    if self._pending:
                        continue
                return

    def _fail(self, exc: BaseException, what: str) -> None:
        """The log fails: counted, logged, and every write refused until it is opened again
        (the records already acknowledged stay on disk and are replayed by the next open)."""
        self.stats.errors += 1
        first = self._failed is None
        if first:
            self._failed = exc
            self.stats.failed = True
        else:
            now = time.monotonic()
            if now - self._last_fail_log < 1.0:
                return  # counted; logged at most once a second while it goes on
            self._last_fail_log = now
        # the message, not the error (its traceback may hold payloads); the type, since a
        # non-OS error here is a bug
        log.error(
            "storage %s: %s (%s: %s); %s",
            self.name,
            what,
            type(exc).__name__,
            exc,
            "writes are refused until the log is opened again (restart or reload); what "
            "was acknowledged stays on disk"
            if first
            else "the log had already failed",
        )

    def _error(self, message: str) -> None:
        """An I/O error the log survives: counted, logged (at most once a second)."""
        self.stats.errors += 1
        now = time.monotonic()
        if now - self._last_error_log >= 1.0:
            self._last_error_log = now
            log.warning("storage %s: %s", self.name, message)

    def _failed_error(self) -> StorageError:
        failed = self._failed
        reason = f"{type(failed).__name__}: {failed}" if failed is not None else "writer stopped"
        return StorageError(errno.EIO, f"log {self.directory} failed ({reason})")

    def _refuse(self, batch: list[_Write]) -> None:
        """Answer writes that were not written with the log's failure."""
        error = self._failed_error()
        for w in batch:
            # with fsync, a record written and not fsynced was not acknowledged
            if w.error is None and (self.fsync or w.record.segment is None):
                w.error = error
        self._answer(batch)

    def _answer(self, batch: list[_Write]) -> None:
        self._inflight = None
        by_loop: dict[asyncio.AbstractEventLoop, list[_Write]] = {}
        for w in batch:
            by_loop.setdefault(w.loop, []).append(w)
        for loop, writes in by_loop.items():
            with contextlib.suppress(RuntimeError):  # the loop was closed meanwhile
                loop.call_soon_threadsafe(_resolve, writes)

    def _open_segment(self) -> _Segment:
        seq = self._next_seq
        self._next_seq += 1
        seg = _Segment(seq, self.directory / f"{seq:012d}.seg")
        seg.fd = os.open(seg.path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_APPEND, 0o640)
        try:
            os.write(seg.fd, MAGIC)
            if self.fsync:
                os.fdatasync(seg.fd)
                self._sync_directory()
        except OSError:
            # (a full disk): no descriptor nor empty file left behind for each failed write
            os.close(seg.fd)
            with contextlib.suppress(OSError):
                seg.path.unlink()
            raise
        seg.size = len(MAGIC)
        with self._fd_lock:  # (a recovery thread registers segments too)
            self._segments[seq] = seg
            self.stats.segments = len(self._segments)
            self.stats.bytes += seg.size
        self._current = seg
        return seg

    def _seal(self, seg: _Segment) -> None:
        seg.sealed = True
        if self._current is seg:
            self._current = None
        if seg.fd >= 0 and (self.fsync or self.fsync_interval > 0):
            # its last records are on disk before the file is closed (the policy's promise
            # does not stop at a segment boundary)
            os.fdatasync(seg.fd)
            self.stats.fsyncs += 1
        with self._fd_lock:
            if seg.fd >= 0:
                os.close(seg.fd)
                seg.fd = -1
        if seg.live == 0:
            self._delete(seg)

    def _sync_directory(self) -> None:
        fd = os.open(self.directory, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)

    def _sync(self) -> None:
        seg = self._current
        if seg is not None and seg.fd >= 0:
            os.fdatasync(seg.fd)
            self.stats.fsyncs += 1
        self._dirty = False

    def _write_batch(self, batch: list[_Write]) -> None:
        try:
            self._write_records(batch)
            if self.fsync:
                self._sync()
        except OSError as exc:
            self.stats.errors += 1
            if exc.errno not in (errno.ENOSPC, errno.EDQUOT):
                # an I/O error: the log cannot be trusted any more; a full disk may clear
                self._failed = exc
                self.stats.failed = True
            error = StorageError(exc.errno or errno.EIO, f"cannot write {self.directory}: {exc}")
            # (the message, not the error: a record kept by a handler must not keep the
            # traceback it gets when raised, nor the frames and data in it)
            log.error("storage %s: %s", self.name, str(error))
            for w in batch:
                # with fsync nothing of the batch is acknowledged; without, what reached the
                # page cache is
                if w.error is None and (self.fsync or w.record.segment is None):
                    w.error = error
        except Exception as exc:
            # not an I/O error: a bug in the writer. What it did to the current segment is
            # unknown, so the log fails (as on an I/O error) rather than write after it; the
            # records written before stay on disk for the next open.
            self._fail(exc, "a write failed unexpectedly")
            error = self._failed_error()
            for w in batch:
                if w.error is None and (self.fsync or w.record.segment is None):
                    w.error = error
        self.stats.commits += 1
        self._answer(batch)

    def _write_records(self, batch: list[_Write]) -> None:
        seg = self._current or self._open_segment()
        iov: list[bytes] = []
        staged: list[_Write] = []
        size = seg.size
        for w in batch:
            parts = w.parts
            length = 0
            crc = 0
            for part in parts:
                length += len(part)
                crc = zlib.crc32(part, crc)
            if length > MAX_RECORD:
                w.error = StorageError(errno.EFBIG, f"a record of {length} bytes is too large")
                continue
            if size > len(MAGIC) and size + HEADER.size + length > self.segment_bytes:
                self._flush(seg, iov, staged)
                iov, staged = [], []
                self._seal(seg)
                seg = self._open_segment()
                size = seg.size
            rec = w.record
            rec.rid = self._next_rid
            self._next_rid += 1
            rec.offset = size + HEADER.size
            rec.length = length
            iov.append(HEADER.pack(length, crc, rec.rid))
            iov.extend(parts)
            staged.append(w)
            size += HEADER.size + length
        self._flush(seg, iov, staged)
        if seg.size >= self.segment_bytes:
            self._seal(seg)

    def _flush(self, seg: _Segment, iov: list[bytes], staged: list[_Write]) -> None:
        if not staged:
            return
        start = seg.size
        total = sum(len(b) for b in iov)
        try:
            written = 0
            for i in range(0, len(iov), _IOV_MAX):
                chunk = iov[i : i + _IOV_MAX]
                n = os.writev(seg.fd, chunk)
                want = sum(len(b) for b in chunk)
                if n != want:
                    raise OSError(errno.ENOSPC, f"short write ({n} of {want} bytes)")
                written += n
        except OSError:
            # leave the segment as it was: a later record must not follow a torn one
            with contextlib.suppress(OSError):
                os.ftruncate(seg.fd, start)
            raise
        seg.size = start + total
        for w in staged:
            w.record.segment = seg
            seg.live += 1
            seg.records += 1
        with self._fd_lock:
            self.stats.bytes += total
            self.stats.live += len(staged)
        self.stats.records_written += len(staged)
        self._dirty = True

    def _apply_completed(self) -> None:
        completed = self._completed
        if not completed:
            return
        marks: dict[_Segment, list[int]] = {}
        n = 0
        while completed:
            rec = completed.popleft()
            seg = rec.segment
            if seg is None or seg.deleted or self._frozen:
                continue
            seg.live -= 1
            n += 1
            marks.setdefault(seg, []).append(rec.rid)
        with self._fd_lock:
            self.stats.live -= n
        for seg, rids in marks.items():
            if seg.sealed and seg.live == 0:
                self._delete(seg)
                continue
            try:
                if seg.done_fd < 0:
                    seg.done_fd = os.open(
                        seg.done_path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o640
                    )
                os.write(seg.done_fd, struct.pack(f"<{len(rids)}Q", *rids))
            except OSError as exc:
                # only costs duplicates after a crash: the records are replayed once more
                self._error(f"cannot write done marks: {exc}")

    def _delete(self, seg: _Segment) -> None:
        seg.deleted = True
        with self._fd_lock:
            for attr in ("fd", "read_fd", "done_fd"):
                fd = getattr(seg, attr)
                if fd >= 0:
                    os.close(fd)
                    setattr(seg, attr, -1)
        for path in (seg.path, seg.done_path):
            with contextlib.suppress(FileNotFoundError):
                path.unlink()
        with self._fd_lock:
            if self._segments.pop(seg.seq, None) is not None:
                self.stats.bytes -= seg.size
            self.stats.segments = len(self._segments)

    # -- recovering from a failure ------------------------------------------------------
    def restart_writer(self) -> bool:
        """A failed log takes writes again, within the process (what a restart's :meth:`open`
        does, for a config reload): the writer stops, the segment being written when the log
        failed is sealed (its end is not trusted: no record is written after it, and nothing
        after it was acknowledged), new records go to a new segment, and a new writer starts.
        The records written before keep their segments and tokens. Returns ``False`` if the
        log had not failed (nothing done). If the storage still fails, the next write fails
        the log again."""
        if not self.opened or (self._failed is None and not self._writer_gone):
            return False
        with self._cond:
            self._closing = True
            self._cond.notify()
        if self._thread is not None:
            self._thread.join()  # (writes waiting are refused by the failed log: answered)
            self._thread = None
        with contextlib.suppress(Exception):  # (counted by the failure already)
            self._apply_completed()
        seg = self._current
        if seg is not None:
            self._current = None
            seg.sealed = True
            with self._fd_lock:
                if seg.fd >= 0:
                    with contextlib.suppress(OSError):
                        os.fdatasync(seg.fd)
                    os.close(seg.fd)
                    seg.fd = -1
            if seg.live == 0:
                self._delete(seg)
        with self._cond:
            self._closing = False
            self._failed = None
            self._writer_gone = False
            self.stats.failed = False
        self._thread = threading.Thread(target=self._run, name=f"storage-{self.name}", daemon=True)
        self._thread.start()
        log.warning("storage %s: the failed log takes writes again (new segment)", self.name)
        return True

    # -- closing -------------------------------------------------------------------------
    def close(self) -> None:
        """Write what is pending and the done marks, fsync, stop the writer and unlock.
        Records not done stay for the next :meth:`open`."""
        if not self.opened:
            return
        with self._fd_lock:
            self._recovery = None  # (segments it did not read stay on disk as they are)
        with self._cond:
            self._closing = True
            self._cond.notify()
        if self._thread is not None:
            self._thread.join()
            self._thread = None
        self._apply_completed()
        try:
            if self._dirty:
                self._sync()
            for seg in list(self._segments.values()):
                if seg.done_fd >= 0:
                    os.fsync(seg.done_fd)
        except OSError as exc:
            self.stats.errors += 1
            log.warning("storage %s: fsync on close failed: %s", self.name, exc)
        with self._fd_lock:
            for seg in self._segments.values():
                for attr in ("fd", "read_fd", "done_fd"):
                    fd = getattr(seg, attr)
                    if fd >= 0:
                        os.close(fd)
                        setattr(seg, attr, -1)
        self._segments.clear()
        self._current = None
        self._unlock()
        self.opened = False
        self._closing = False

    def describe(self) -> dict[str, Any]:
        """What the log holds now (for logs and tests)."""
        s = self.stats
        return {
            "records_not_done": s.live,
            "bytes": s.bytes,
            "segments": s.segments,
            "commits": s.commits,
            "records_written": s.records_written,
        }


class Recovery:
    """The records not done of a log opened with :meth:`SegmentLog.open_incremental`, read
    one segment per :meth:`next` call, oldest first (the last segment, read at open, at the
    end). The memory it takes is one segment's record handles (and one body at a time)."""

    def __init__(
        self,
        wal: SegmentLog,
        older: list[int],
        tail_seg: _Segment | None,
        tail: list[Record],
        measure: Callable[[bytes], Any] | None,
    ) -> None:
        self._log = wal
        self._older = collections.deque(older)
        self._tail_seg = tail_seg
        self._tail = tail
        self._measure = measure
        self._last_rid = -1
        self.segments_left = len(older) + (1 if tail_seg is not None else 0)
        self.bytes_left = sum(_size_of(wal.directory / f"{seq:012d}.seg") for seq in older) + (
            tail_seg.size if tail_seg is not None else 0
        )

    @property
    def corrupt(self) -> int:
        """Damaged records skipped so far (each logged by the log)."""
        return self._log.stats.corrupt

    def next(self) -> list[Record] | None:
        """The records not done of the next segment (may be empty), or ``None`` once every
        segment was read or the log was closed meanwhile (what was not read stays on disk for
        the next open). Blocking (file reads): call it in a thread, one call at a time."""
        wal = self._log
        if wal._recovery is not self:
            return None
        if self._older:
            seq = self._older.popleft()
            path = wal.directory / f"{seq:012d}.seg"
            size = _size_of(path)
            seg, records, self._last_rid = wal._recover_segment(
                seq, False, self._measure, self._last_rid
            )
            self.segments_left -= 1
            self.bytes_left = max(self.bytes_left - size, 0)
            if not wal._register(seg, self):
                return None
            return records
        tail_seg, self._tail_seg = self._tail_seg, None
        if tail_seg is not None:
            records, self._tail = self._tail, []
            self.segments_left = 0
            self.bytes_left = 0
            if not wal._register(tail_seg, self):
                return None
            return records
        with wal._fd_lock:
            if wal._recovery is self:
                wal._recovery = None
        return None


def _size_of(path: Path) -> int:
    try:
        return path.stat().st_size
    except OSError:
        return 0


def _resolve(writes: list[_Write]) -> None:
    for w in writes:
        if w.future.done():  # cancelled: its caller is gone
            if w.abandon is not None and w.record.segment is not None:
                w.abandon(w.record)
            continue
        if w.error is not None:
            w.future.set_exception(w.error)
        else:
            w.future.set_result(None)
