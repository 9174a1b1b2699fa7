"""Credentials kept in files and re-read when the files change, shared by the authenticator
extensions (``bearertokenauth``'s ``filename``, ``basicauth``'s ``htpasswd.file``,
``username_file`` and ``password_file``).

A file is checked once a second with ``os.stat`` (modification time, size, inode and device):
an edited file, a file replaced by a rename, and a Kubernetes secret or config map (whose
files are symbolic links swapped to a new directory) are all seen. A file that cannot be read
at start fails the start; one that cannot be read later keeps the last good content (logged at
most once a second).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
from collections.abc import Callable
from typing import Any

from pipeline import CreateSettings, Host, supervise

CHECK_INTERVAL = 1.0  # seconds between two looks at a file


def _signature(st: os.stat_result) -> tuple[int, int, int, int]:
    return (st.st_mtime_ns, st.st_size, st.st_ino, st.st_dev)


class WatchedFiles:
    """Files whose content is handed to a callback when it changes.

    ``add(path, on_change)`` reads the file now (raising ``OSError`` with its name when it
    cannot) and calls ``on_change(text)``; ``start(host)`` begins watching every added file,
    ``stop()`` ends it.
    """

    def __init__(self, settings: CreateSettings, interval: float | None = None) -> None:
        self.settings = settings
        self.interval = CHECK_INTERVAL if interval is None else interval
        self._files: list[tuple[str, Callable[[str], None], list[Any]]] = []
        self._task: asyncio.Task[None] | None = None

    def add(self, path: str, on_change: Callable[[str], None]) -> None:
        signature, text = self._read(path)
        on_change(text)
        self._files.append((path, on_change, [signature]))

    @staticmethod
    def _read(path: str) -> tuple[tuple[int, int, int, int], str]:
        try:
            signature = _signature(os.stat(path))
            with open(path, encoding="utf-8") as f:
                return signature, f.read()
        except (OSError, UnicodeDecodeError) as exc:
            raise OSError(f"cannot read {path!r}: {exc}") from exc

    def start(self, host: Host | None) -> None:
        if self._files and self._task is None:
            self._task = supervise(self.settings, host, "credentials file watch", self._watch)

    async def stop(self) -> None:
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    async def _watch(self) -> None:
        while True:
            await asyncio.sleep(self.interval)
            self.check()

    def check(self) -> None:
        """Re-read every file that changed since it was last read."""
        for path, on_change, state in self._files:
            try:
                signature = _signature(os.stat(path))
            except OSError as exc:
                self._warn(path, exc)
                continue
            if signature == state[0]:
                continue
            try:
                signature, text = self._read(path)
                on_change(text)
            except (OSError, ValueError) as exc:
                self._warn(path, exc)
                continue
            state[0] = signature
            self.settings.logger.info("credentials reloaded", extra={"file": path})

    def _warn(self, path: str, exc: Exception) -> None:
        self.settings.log_limited(
            logging.ERROR,
            "cannot reload credentials from %s, keeping the last ones read: %s",
            path,
            exc,
            key=f"reload {path}",
        )
