"""Test certificates, made with openssl at test time (no private key is kept in the
repository): a CA, a server certificate for 127.0.0.1 / localhost, a client certificate signed
by the same CA, and a client certificate from another CA (which servers must refuse)."""

from __future__ import annotations

import subprocess
from dataclasses import dataclass
from pathlib import Path

from tests.support import require_program


@dataclass(frozen=True)
class PKI:
    ca: Path
    server_cert: Path
    server_key: Path
    client_cert: Path
    client_key: Path
    rogue_ca: Path  # another CA
    rogue_cert: Path  # a client certificate signed by it
    rogue_key: Path


def _openssl(*args: str) -> None:
    openssl = require_program("openssl", "apt-get install -y openssl")
    subprocess.run([openssl, *args], check=True, capture_output=True)


def _ca(directory: Path, name: str) -> tuple[Path, Path]:
    key, cert = directory / f"{name}.key", directory / f"{name}.pem"
    _openssl(
        "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", str(key), "-out", str(cert),
        "-days", "2", "-subj", f"/CN={name}",
    )  # fmt: skip
    return cert, key


def _signed(
    directory: Path, name: str, cn: str, ca: tuple[Path, Path], extensions: str
) -> tuple[Path, Path]:
    key, csr, cert = (directory / f"{name}.{x}" for x in ("key", "csr", "pem"))
    ext = directory / f"{name}.cnf"
    ext.write_text(extensions)
    _openssl(
        "req", "-newkey", "rsa:2048", "-nodes", "-keyout", str(key), "-out", str(csr),
        "-subj", f"/CN={cn}",
    )  # fmt: skip
    _openssl(
        "x509", "-req", "-in", str(csr), "-CA", str(ca[0]), "-CAkey", str(ca[1]),
        "-CAcreateserial", "-out", str(cert), "-days", "2", "-extfile", str(ext),
    )  # fmt: skip
    return cert, key


def make_server_certs(directory: Path) -> tuple[Path, Path, Path]:
    """``(ca, server_cert, server_key)``: a CA and a server certificate for 127.0.0.1 and
    localhost."""
    ca = _ca(directory, "ca")
    cert, key = _signed(
        directory,
        "server",
        "localhost",
        ca,
        "subjectAltName=IP:127.0.0.1,DNS:localhost\nextendedKeyUsage=serverAuth\n",
    )
    return ca[0], cert, key


def make_pki(directory: Path) -> PKI:
    """Everything for mutual TLS, in ``directory``."""
    directory.mkdir(parents=True, exist_ok=True)
    ca = _ca(directory, "ca")
    server = _signed(
        directory,
        "server",
        "localhost",
        ca,
        "subjectAltName=IP:127.0.0.1,DNS:localhost\nextendedKeyUsage=serverAuth\n",
    )
    client = _signed(directory, "client", "agent-1", ca, "extendedKeyUsage=clientAuth\n")
    rogue_ca = _ca(directory, "rogue-ca")
    rogue = _signed(directory, "rogue", "agent-1", rogue_ca, "extendedKeyUsage=clientAuth\n")
    return PKI(ca[0], server[0], server[1], client[0], client[1], rogue_ca[0], *rogue)
