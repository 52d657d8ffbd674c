"""Reports: one result, four forms and a PDF; each finding with its section and evidence,
and no secret of the site in any of them."""

from __future__ import annotations

import io
import json
import subprocess
import textwrap

import pytest
from rich.console import Console

from engine import report as forms
from engine.inventory import load_site
from engine.loader import load_catalog
from engine.registry import default_registry
from engine.runs import Session, walk
from engine.store import Store

PASSWORD, TOKEN, KEY = "hunter2-Pw!", "tok-9f8e7d6c5b", "/srv/keys/det_support_ed25519"

LEAKY = """\
id: leaky
title: A check whose command and output carry the site's secrets
kind: diagnosis
source: "11.3#1"
params:
  instrument: {type: instrument}
start: probe
steps:
  probe:
    source: "11.3#1"
    check: local.command
    with:
      argv:
        - sh
        - -c
        - "echo {{ vars.db_password }} {{ vars.api_token }}; echo {{ site.transport.ssh.identity }}
          ; exit 1"
    on: {ok: end, fail: leaked, unknown: end}
  leaked:
    source: "11.3#1"
    finding: "The probe printed what it was given"
    evidence: [probe]
    remedy: "Never print {{ vars.db_password }}."
"""


@pytest.fixture
def leaky(tmp_path, monkeypatch):
    """The `local` site plus a password, a token and a private-key path, as a site would
    carry them, and a runbook that puts all three into its command, output and remedy."""
    site = tmp_path / "sites" / "secret"
    site.mkdir(parents=True)
    site.joinpath("site.yaml").write_text(textwrap.dedent(f"""\
        site: secret
        extends: local
        transport:
          ssh: {{identity: "{KEY}"}}
        vars:
          db_password: "{PASSWORD}"
          api_token: "{TOKEN}"
        """))
    monkeypatch.setenv("RUNBOOK_INVENTORY_PATH", str(tmp_path / "sites"))
    (tmp_path / "runbooks").mkdir()
    (tmp_path / "runbooks" / "leaky.yaml").write_text(LEAKY)
    registry = default_registry()
    session = Session(load_catalog([tmp_path / "runbooks"], registry), registry,
                      load_site("secret"))
    store = Store.open(tmp_path / "state.sqlite")
    report, run_id = walk(session, "diagnose", "leaky", {}, instrument="LAB", store=store)
    return report, store, run_id


def _terminal(report) -> str:
    out = io.StringIO()
    forms.print_report(report, Console(file=out, width=200), "leaky")
    return out.getvalue()


def _pdf_text(report, tmp_path) -> str:
    path = tmp_path / "r.pdf"
    path.write_bytes(forms.to_pdf(report, "leaky"))
    return subprocess.run(["pdftotext", str(path), "-"], capture_output=True, text=True,
                          check=True).stdout


def test_no_secret_in_any_form(leaky, tmp_path):
    report, store, run_id = leaky
    assert len(report.findings) == 1
    rendered = {
        "terminal": _terminal(report),
        "markdown": forms.to_markdown(report),
        "html": forms.to_html(report),
        "json": forms.to_json(report),
        "pdf": _pdf_text(report, tmp_path),
        "store": json.dumps(store.run(run_id)),
    }
    for form, text in rendered.items():
        for secret in (PASSWORD, TOKEN, KEY):
            assert secret not in text, f"{secret!r} in the {form} form"
        assert "***" in text, f"the {form} form lost the (masked) evidence"


def test_finding_links_its_section_and_shows_its_evidence(leaky):
    report, _, _ = leaky
    html = forms.to_html(report, "Leaky")
    assert '<a href="#section-11-3">section 11.3#1</a>' in html
    assert 'id="section-11-3"' in html and "Calibration Parameters are not loaded" in html
    assert "evidence from probe at " in html and "UTC" in html
    assert "local.command(argv=" in html  # the command, as it was run
    assert "<style>" in html and "<svg" in html  # one file: nothing to fetch
    assert not any(f'{attr}="http' in html for attr in ("src", "href"))
    md = forms.to_markdown(report, "Leaky")
    assert "section 11.3#1 (Calibration Parameters are not loaded)" in md
    assert "- evidence from probe at" in md and "```\n$ sh -c" in md


def test_pdf_is_a_pdf_with_the_finding(leaky, tmp_path):
    report, _, _ = leaky
    text = _pdf_text(report, tmp_path)
    assert "The probe printed what it was given" in text
    assert "Section 11.3" in text
