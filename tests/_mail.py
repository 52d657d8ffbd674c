"""What the mail tests share: a self-signed certificate for loopback, and a fixture body
that starts real SMTP sinks (`sim.smtp`) and stops each by PID at the end."""

from __future__ import annotations

import datetime
import ipaddress
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from sim.mailbox import Delivered, SinkServer, start_sink

START, END = "2026-12-06 09:40", "2026-12-06 10:05"


@dataclass(frozen=True)
class CertPair:
    cert: Path
    key: Path


def self_signed(folder: Path) -> CertPair:
    """A certificate for localhost and 127.0.0.1 that is its own CA (so it can be `cafile`)."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "twin smtp sink")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name).issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.SubjectAlternativeName([
            x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
            critical=False)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()),
                       critical=False)
        .sign(key, hashes.SHA256())
    )
    folder.mkdir(parents=True, exist_ok=True)
    pair = CertPair(folder / "sink.crt", folder / "sink.key")
    pair.cert.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    pair.key.write_bytes(key.private_bytes(serialization.Encoding.PEM,
                                           serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    return pair


SinkFactory = Callable[..., SinkServer]


def sinks(root: Path) -> Iterator[SinkFactory]:
    """Body of a fixture: ``start(*options, name="mail")`` starts one sink in `root/name`."""
    started: list[SinkServer] = []

    def start(*options: str, name: str = "mail") -> SinkServer:
        sink = start_sink(root / name, *options)
        started.append(sink)
        return sink

    try:
        yield start
    finally:
        for sink in started:
            sink.stop()


def assert_restart_notice(delivered: Delivered, start: str = START, end: str = END) -> None:
    """The notice of guidelines 4.3 step 4, in both parts: window, advice, contact."""
    assert delivered.subject == "Restart of Calibration Webservice"
    assert delivered.message.get_content_type() == "multipart/alternative"
    text, html = delivered.part("plain"), delivered.part("html")
    for body in (text, html):
        assert f"from {start} to {end}" in " ".join(body.replace("<strong>", "")
                                                   .replace("</strong>", "").split())
        assert "det-support@xfel.eu" in body
        assert "resubmitting" in body and "forward this information to your users" in body
    assert '<a href="mailto:det-support@xfel.eu">' in html
