"""The twin's SMTP sink (`sim.smtp`) as a real process, and the reader of what it kept."""

from __future__ import annotations

import json
import smtplib
import ssl
from datetime import UTC, datetime
from email.message import EmailMessage

import pytest
from ruamel.yaml import YAML

from sim import mailbox, procs, site
from tests._mail import self_signed, sinks


@pytest.fixture
def sink(tmp_path):
    yield from sinks(tmp_path)


def _message(subject: str, to: str) -> EmailMessage:
    msg = EmailMessage()
    msg["From"], msg["To"], msg["Subject"] = "det-support@xfel.eu", to, subject
    msg.set_content(f"body of {subject}")
    return msg


def test_sink_keeps_each_message_with_its_envelope(sink):
    server = sink()
    info = mailbox.server_info(server.folder)
    assert info == {"host": "127.0.0.1", "port": server.port, "pid": server.proc.pid,
                    "security": "plain", "auth": False}
    with smtplib.SMTP(server.host, server.port, timeout=5) as client:
        client.send_message(_message("first", "spb@xfel.eu"))
        client.send_message(_message("second", "mid@xfel.eu"),
                            to_addrs=["mid@xfel.eu", "hidden@xfel.eu"])
    first, second = mailbox.wait_for_messages(server.folder, 2)
    assert (first.seq, first.subject, first.rcpt_tos) == (1, "first", ("spb@xfel.eu",))
    assert second.rcpt_tos == ("mid@xfel.eu", "hidden@xfel.eu")
    assert second.mail_from == "det-support@xfel.eu" and not second.tls
    assert second.part("plain").strip() == "body of second"
    assert abs((datetime.now(UTC) - second.received).total_seconds()) < 60
    assert sorted(p.name for p in server.folder.iterdir()) == [
        "000001.eml", "000001.json", "000002.eml", "000002.json", "server.json"]


def test_sink_stops_on_sigterm_and_forgets_its_port(sink):
    server = sink()
    server.stop()
    assert not procs.alive(server.proc.pid)
    assert mailbox.server_info(server.folder) is None
    assert not procs.port_open(server.host, server.port, 0.2)


def test_wait_for_messages_names_what_it_waited_for(tmp_path):
    folder = tmp_path / "mail"
    with pytest.raises(AssertionError, match=r"waited 0.1 s for 1 message\(s\) in .*mail, got 0"):
        mailbox.wait_for_messages(folder, 1, timeout=0.1)


def test_sink_offers_starttls_and_insists_on_auth(sink, tmp_path):
    pair = self_signed(tmp_path / "tls")
    users = tmp_path / "users"
    users.write_text("mailer:s3cret\n")
    server = sink("--cert", str(pair.cert), "--key", str(pair.key), "--auth-file", str(users))
    assert mailbox.server_info(server.folder)["security"] == "starttls"
    with smtplib.SMTP(server.host, server.port, timeout=5) as client:
        client.ehlo()
        assert client.has_extn("starttls") and not client.has_extn("auth")
        client.starttls(context=ssl.create_default_context(cafile=str(pair.cert)))
        client.ehlo()
        assert "PLAIN" in client.esmtp_features["auth"]
        with pytest.raises(smtplib.SMTPSenderRefused) as refused:
            client.send_message(_message("anonymous", "spb@xfel.eu"))
        assert refused.value.smtp_code == 530
    assert mailbox.messages(server.folder) == []


def test_sim_site_mails_the_sink(tmp_path, monkeypatch):
    """What `sim.twin.up` writes: the `sim` site extends xfel and sends to the sink."""
    from engine.inventory import load_site
    from engine.notify import MailSettings

    data = site.site_overlay(tmp_path, None, {}, smtp_port=2525)
    assert data["transport"]["smtp"] == {"host": "127.0.0.1", "port": 2525,
                                         "security": "plain"}
    assert "smtp" not in site.site_overlay(tmp_path, None, {})["transport"]
    path = site.write_site(tmp_path, None, {}, smtp_port=2525)
    assert YAML(typ="safe").load(path)["transport"]["smtp"]["port"] == 2525
    monkeypatch.setenv("RUNBOOK_INVENTORY_PATH", str(tmp_path / "inventory"))
    smtp = load_site("sim").context(None)["site"]["transport"]["smtp"]
    settings = MailSettings.from_transport(smtp)
    assert (settings.address, settings.security) == ("127.0.0.1:2525", "plain")
    assert settings.sender == "det-support@xfel.eu"
    assert json.loads(json.dumps(smtp)) == smtp
