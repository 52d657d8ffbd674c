"""Mail (engine.notify) through a real SMTP sink on loopback: relays, credentials, templates.

Guidelines 4.3 step 4: after the calibration webservice was restarted, every instrument
is told the time window in which its requests may have been lost, and whom to ask.
"""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from engine.errors import RunbookError, TransportError, ValidationError
from engine.inventory import load_site
from engine.notify import MailSettings, compose, render_mail, restart_notice, send
from sim import mailbox, procs
from tests._mail import END, START, assert_restart_notice, self_signed, sinks

PASSWORD = "s3cret-for-the-sink"


@pytest.fixture
def sink(tmp_path):
    yield from sinks(tmp_path)


@pytest.fixture(scope="module")
def pair(tmp_path_factory):
    return self_signed(tmp_path_factory.mktemp("tls"))


@pytest.fixture
def users(tmp_path):
    path = tmp_path / "users"
    path.write_text(f"mailer:{PASSWORD}\n")
    return path


def settings_for(server, **more) -> MailSettings:
    return MailSettings.from_transport({"host": server.host, "port": server.port, **more})


def notice_to_spb():
    return restart_notice("det-support@xfel.eu", ["spb-instrument@xfel.eu"], START, END,
                          cc=["det-support@xfel.eu"])


# --- the three ways to reach a relay ---------------------------------------------------

def test_4_3_restart_notice_in_plain_smtp(sink):
    server = sink()
    accepted = send(settings_for(server, security="plain"), notice_to_spb())
    assert accepted == ["spb-instrument@xfel.eu", "det-support@xfel.eu"]
    [delivered] = mailbox.wait_for_messages(server.folder, 1)
    assert delivered.rcpt_tos == ("spb-instrument@xfel.eu", "det-support@xfel.eu")
    assert delivered.mail_from == "det-support@xfel.eu" and not delivered.tls
    assert delivered.message["To"] == "spb-instrument@xfel.eu"
    assert delivered.message["Cc"] == "det-support@xfel.eu"
    assert_restart_notice(delivered)


def test_4_3_restart_notice_over_starttls(sink, pair):
    server = sink("--cert", str(pair.cert), "--key", str(pair.key))
    send(settings_for(server, security="starttls", cafile=str(pair.cert)), notice_to_spb())
    [delivered] = mailbox.wait_for_messages(server.folder, 1)
    assert delivered.tls
    assert_restart_notice(delivered)


def test_4_3_restart_notice_over_implicit_tls(sink, pair):
    server = sink("--cert", str(pair.cert), "--key", str(pair.key), "--ssl")
    send(settings_for(server, security="ssl", cafile=str(pair.cert)), notice_to_spb())
    [delivered] = mailbox.wait_for_messages(server.folder, 1)
    assert delivered.tls
    assert_restart_notice(delivered)


def test_a_relay_whose_certificate_is_not_trusted_is_refused(sink, pair):
    server = sink("--cert", str(pair.cert), "--key", str(pair.key))
    with pytest.raises(TransportError, match=r"127.0.0.1:\d+ \(starttls\): its certificate "
                                             r"is not trusted .*set transport.smtp.cafile"):
        send(settings_for(server, security="starttls"), notice_to_spb())
    assert mailbox.messages(server.folder) == []


def test_starttls_against_a_relay_without_it_is_an_error(sink):
    server = sink()
    with pytest.raises(RunbookError, match="does not offer STARTTLS"):
        send(settings_for(server, security="starttls"), notice_to_spb())


def test_a_relay_that_does_not_answer_is_named():
    port = procs.free_port()
    with pytest.raises(TransportError, match=f"cannot reach mail relay 127.0.0.1:{port} "
                                             r"\(plain\): Connection refused"):
        send(MailSettings(host="127.0.0.1", port=port, security="plain", timeout=2),
             notice_to_spb())


# --- credentials: from the environment or a file, never from the site --------------------

@pytest.mark.parametrize("source", ["env", "file"])
def test_credentials_from_env_or_file_log_in_over_starttls(sink, pair, users, tmp_path,
                                                           monkeypatch, source):
    server = sink("--cert", str(pair.cert), "--key", str(pair.key), "--auth-file", str(users))
    if source == "env":
        monkeypatch.setenv("RUNBOOK_TEST_SMTP_PASSWORD", PASSWORD)
        where = {"password_env": "RUNBOOK_TEST_SMTP_PASSWORD"}
    else:
        (tmp_path / "password").write_text(PASSWORD + "\n")
        where = {"password_file": str(tmp_path / "password")}
    settings = settings_for(server, security="starttls", cafile=str(pair.cert),
                            user="mailer", **where)
    send(settings, notice_to_spb())
    [delivered] = mailbox.wait_for_messages(server.folder, 1)
    assert (delivered.auth_user, delivered.tls) == ("mailer", True)


def test_a_wrong_password_is_refused_without_echoing_it(sink, pair, users, monkeypatch):
    server = sink("--cert", str(pair.cert), "--key", str(pair.key), "--auth-file", str(users))
    monkeypatch.setenv("RUNBOOK_TEST_SMTP_PASSWORD", "not-the-password")
    settings = settings_for(server, security="starttls", cafile=str(pair.cert),
                            user="mailer", password_env="RUNBOOK_TEST_SMTP_PASSWORD")
    with pytest.raises(TransportError, match="refused the login of 'mailer': 535") as info:
        send(settings, notice_to_spb())
    assert "not-the-password" not in str(info.value)
    assert mailbox.messages(server.folder) == []


def test_a_missing_password_variable_is_named(monkeypatch):
    monkeypatch.delenv("RUNBOOK_TEST_SMTP_PASSWORD", raising=False)
    settings = MailSettings(host="127.0.0.1", user="mailer",
                            password_env="RUNBOOK_TEST_SMTP_PASSWORD")
    with pytest.raises(RunbookError, match="environment variable RUNBOOK_TEST_SMTP_PASSWORD, "
                                           "which is not set"):
        send(settings, notice_to_spb())


def test_an_unreadable_password_file_is_named(tmp_path):
    missing = tmp_path / "nowhere" / "password"
    settings = MailSettings(host="127.0.0.1", user="mailer", password_file=str(missing))
    with pytest.raises(RunbookError, match=f"from {missing}: No such file"):
        send(settings, notice_to_spb())


def test_credentials_are_not_sent_in_plain_beyond_loopback(monkeypatch):
    monkeypatch.setenv("RUNBOOK_TEST_SMTP_PASSWORD", PASSWORD)
    settings = MailSettings(host="relay.example.org", security="plain", user="mailer",
                            password_env="RUNBOOK_TEST_SMTP_PASSWORD")
    with pytest.raises(RunbookError, match="refused to send the mail password of 'mailer' "
                                           "unencrypted to relay.example.org:25"):
        send(settings, notice_to_spb())


def test_a_site_without_a_relay_sends_no_mail():
    smtp = load_site("xfel").context(None)["site"]["transport"]["smtp"]
    assert "host" not in smtp and smtp["security"] == "starttls"
    with pytest.raises(RunbookError, match="mail is not configured for this site: "
                                           "transport.smtp.host is null"):
        send(MailSettings.from_transport(smtp), notice_to_spb())


SITE = """\
site: tiny
transport:
  smtp:
    host: 127.0.0.1
    password: hunter2
instruments:
  LAB: {sase: 1, karabo: {gui_server: gui, broker: "tcp://b:7777", topic: LAB}}
"""


@pytest.mark.parametrize(("change", "where", "message"), [
    pytest.param(("", ""), "5:5", "transport.smtp.password: a password is never written "
                 "into a site file: name an environment variable with password_env, or a file "
                 "with password_file", id="password-in-yaml"),
    pytest.param(("password: hunter2", "user: mailer"), "3:3",
                 "user 'mailer' needs password_env or password_file", id="user-alone"),
    pytest.param(("password: hunter2", "security: tls"), "5:5",
                 "transport.smtp.security: Input should be 'plain', 'starttls' or 'ssl'",
                 id="bad-security"),
])
def test_site_mail_settings_are_checked_where_written(tmp_path, monkeypatch, change, where,
                                                      message):
    folder = tmp_path / "tiny"
    folder.mkdir()
    (folder / "site.yaml").write_text(SITE.replace(*change))
    monkeypatch.setenv("RUNBOOK_INVENTORY_PATH", str(tmp_path))
    with pytest.raises(ValidationError) as info:
        load_site("tiny")
    [problem] = info.value.problems
    assert problem.startswith(f"{folder / 'site.yaml'}:{where}: "), problem
    assert message in problem and "hunter2" not in problem


# --- templates and messages ------------------------------------------------------------

def test_4_3_notice_says_why_and_formats_times():
    start = datetime(2026, 12, 6, 9, 40, tzinfo=UTC)
    subject, text, html = render_mail("restart-notice", start=start, end=END,
                                      reason="a <stuck> worker", contact="help@example.org")
    assert subject == "Restart of Calibration Webservice"
    assert "restart due to a <stuck> worker." in text
    assert "restart due to a &lt;stuck&gt; worker." in html
    assert "from 2026-12-06 09:40 UTC to 2026-12-06 10:05" in text
    assert "please contact help@example.org" in text
    _, text, _ = render_mail("restart-notice", start=start.timestamp(), end=END)
    assert "from 2026-12-06 09:40 UTC to" in text


def test_a_missing_template_variable_is_named():
    with pytest.raises(RunbookError, match="mail template 'restart-notice': 'end' is undefined"):
        render_mail("restart-notice", start=START)
    with pytest.raises(RunbookError, match=r"no mail template 'digets' \(templates: "):
        render_mail("digets")


def test_compose_refuses_what_is_not_an_address():
    with pytest.raises(RunbookError, match="to: not a mail address: 'spb instrument'"):
        compose("det-support@xfel.eu", ["spb instrument"], "s", "t", "<p>h</p>")
