"""The simulator over TLS, for Entra ID's token endpoint: azure-identity refuses any ``authority``
that is not https, so tests and benchmarks that exercise ``auth: client_secret`` (or
``workload_identity``) point it at a simulator served by this module, trusting the throwaway
self-signed certificate it makes (the provider's ``auth.ca_bundle``).

``serve_tls`` runs an ASGI app (a simulator from ``create_app``, with its own state and
options) with uvicorn in a background thread until the context exits; the certificate, for
``127.0.0.1`` and ``localhost``, lives one day.
Needs ``cryptography`` (installed with azure-identity's MSAL dependency).
"""

from __future__ import annotations

import asyncio
import datetime
import ipaddress
import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import uvicorn


def self_signed(directory: Path) -> tuple[Path, Path]:
    """(certificate, key) PEM files for ``127.0.0.1`` and ``localhost`` in ``directory``; the
    certificate is its own CA, so it is also what clients trust."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "switchboard simulator")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder().subject_name(name).issuer_name(name)
        .public_key(key.public_key()).serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.SubjectAlternativeName(
            [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
            critical=False)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    cert_path, key_path = directory / "sim-cert.pem", directory / "sim-key.pem"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(key.private_bytes(serialization.Encoding.PEM,
                                           serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    return cert_path, key_path


@contextmanager
def serve_tls(app: Any, directory: Path) -> Iterator[tuple[str, Path]]:
    """``app`` on ``https://127.0.0.1:<port>``: yields its URL and the CA file to trust, until
    exit."""
    cert, key = self_signed(directory)
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    config = uvicorn.Config(app, host="127.0.0.1", port=port,
                            log_level="warning", lifespan="on", loop="asyncio", http="h11",
                            access_log=False, ssl_certfile=str(cert), ssl_keyfile=str(key))
    server = uvicorn.Server(config)
    thread = threading.Thread(target=lambda: asyncio.run(server.serve()), daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            raise RuntimeError("the TLS simulator failed to start")
        time.sleep(0.01)
    try:
        yield f"https://127.0.0.1:{port}", cert
    finally:
        server.should_exit = True
        thread.join(timeout=20)
