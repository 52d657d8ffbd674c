"""The `notify.send` action in a procedure: it mails in `run` mode, and a plan shows whom it
would mail without sending anything (guidelines 4.3 step 4)."""

from __future__ import annotations

import textwrap

import pytest

import checks.notify
from engine.context import Context
from engine.inventory import load_site
from engine.loader import load_catalog
from engine.registry import MutationRefused, Registry
from engine.walk import Walker
from sim import mailbox
from tests._mail import END, START, assert_restart_notice, sinks


@pytest.fixture
def sink(tmp_path):
    yield from sinks(tmp_path)


@pytest.fixture
def registry() -> Registry:
    """The installed checks, with notify.send even before its entry point is installed."""
    reg = Registry()
    reg.load_entry_points()
    if "notify.send" not in reg:
        reg.register_module(checks.notify)
    return reg


RUNBOOK = """\
id: webservice-restarted
title: Tell the instruments that the calibration webservice was restarted
kind: procedure
source: "4.3"
params:
  instrument: {type: instrument}
  start: {type: str}
  end: {type: str}
start: notify
steps:
  notify:
    source: "4.3"
    title: Notify the instruments that the service was down
    action: notify.send
    with:
      template: restart-notice
      to: "{{ instrument.mail }}"
      cc: ["{{ site.vars.support_mail }}"]
      vars: {start: "{{ params.start }}", end: "{{ params.end }}"}
"""


@pytest.fixture
def mail_site(tmp_path, monkeypatch, sink):
    """The `local` site, with its mail going to a fresh sink."""
    server = sink()
    folder = tmp_path / "sites" / "mailing"
    folder.mkdir(parents=True)
    (folder / "site.yaml").write_text(textwrap.dedent(f"""\
        site: mailing
        extends: local
        transport:
          smtp: {{host: 127.0.0.1, port: {server.port}, security: plain}}
        """))
    monkeypatch.setenv("RUNBOOK_INVENTORY_PATH", str(tmp_path / "sites"))
    return load_site("mailing"), server


def walk(registry, write_runbook, inventory, mode):
    catalog = load_catalog([write_runbook("webservice-restarted.yaml", RUNBOOK).parent],
                           registry)
    catalog.raise_problems()
    walker = Walker(catalog, registry, inventory, mode=mode, instrument="LAB", yes=True)
    return walker.walk("webservice-restarted",
                       {"instrument": "LAB", "start": START, "end": END})


def test_4_3_notify_step_mails_the_instrument_in_run_mode(registry, write_runbook, mail_site):
    inventory, server = mail_site
    report = walk(registry, write_runbook, inventory, "run")
    assert report.aborted is None, report.aborted
    [step] = report.steps
    assert (step.id, step.outcome) == ("notify", "done")
    assert step.observed["accepted"] == ["lab@example.org", "det-support@example.org"]
    assert "'Restart of Calibration Webservice'" in step.evidence
    assert f"127.0.0.1:{server.port}" in step.evidence
    [delivered] = mailbox.wait_for_messages(server.folder, 1)
    assert delivered.rcpt_tos == ("lab@example.org", "det-support@example.org")
    assert_restart_notice(delivered)


def test_4_3_plan_shows_the_recipients_and_sends_nothing(registry, write_runbook, mail_site):
    inventory, server = mail_site
    report = walk(registry, write_runbook, inventory, "plan")
    [step] = report.steps
    assert step.outcome == "planned"
    assert step.resolved["with"]["to"] == ["lab@example.org"]
    assert step.resolved["with"]["cc"] == ["det-support@example.org"]
    assert step.resolved["with"]["vars"] == {"start": START, "end": END}
    assert mailbox.messages(server.folder) == []


def test_a_run_on_a_site_without_a_relay_stops_at_the_notify_step(registry, write_runbook,
                                                                  local_site):
    report = walk(registry, write_runbook, local_site, "run")
    [step] = report.steps
    assert step.outcome == "failed"
    assert "mail is not configured for this site" in step.reason
    assert report.aborted and report.exit_code == 1


def test_notify_send_refuses_outside_run_mode(registry, mail_site):
    inventory, server = mail_site
    params = checks.notify.NotifySend(template="restart-notice", to=["lab@example.org"],
                                      vars={"start": START, "end": END})
    ctx = Context(mode="plan", site="mailing",
                  transport=inventory.context(None)["site"]["transport"])
    with pytest.raises(MutationRefused):
        registry.get("notify.send").fn(params, ctx)
    assert mailbox.messages(server.folder) == []


def test_an_unknown_template_is_found_when_the_runbook_loads(registry, write_runbook):
    path = write_runbook("webservice-restarted.yaml",
                         RUNBOOK.replace("template: restart-notice", "template: restart-notise"))
    catalog = load_catalog([path.parent], registry)
    [problem] = catalog.problems
    assert problem.startswith(f"{path}:16:7: template: ")
    assert "no mail template 'restart-notise' (templates: " in problem
    assert "restart-notice" in problem
