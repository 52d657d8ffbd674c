"""`runbook coverage`: every actionable bullet of the guidelines is encoded, or a person's."""

from __future__ import annotations

import io
import re
import textwrap
from collections.abc import Callable
from pathlib import Path

import pytest
from rich.console import Console

from engine.coverage import OUTLINE, coverage, coverage_json, load_outline, render_coverage
from engine.errors import ValidationError
from engine.loader import Catalog

OUTLINE_TEXT = """\
sections:
  - id: "1"
    title: Logging onto exflgateway
    items:
      - id: "1#1"
        text: Log on to bastion.
      - id: "1#2"
        text: Log on to exflgateway.
  - id: "6"
    title: Connecting a Single Module's Raw Data to the Bridge
    items:
      - id: "6#1"
        label: "0"
        text: Talk to the users.
        human_only: a conversation
      - id: "6#2"
        text: Stop the detector.
  - id: "10"
    title: General Detector DAQ Troubleshooting
    items: []
  - id: "10.1"
    title: No data written to disk
    items:
      - id: "10.1#1"
        text: Check the file sizes.
"""

RUNBOOK = """\
id: demo
title: Demo
kind: procedure
source: "1"
start: bastion
steps:
  bastion:
    source: "1#1"
    manual: Log on to bastion.
    next: users
  users:
    source: "6#2"
    manual: Stop the detector.
    next: sizes
  sizes:
    source: "10.1"
    manual: Look at the sizes.
"""


@pytest.fixture
def outline(tmp_path: Path) -> Path:
    path = tmp_path / "outline.yaml"
    path.write_text(OUTLINE_TEXT, encoding="utf-8")
    return path


@pytest.fixture
def catalog(write_runbook: Callable[[str, str], Path], load: Callable[[Path], Catalog],
            tmp_path: Path) -> Callable[[str], Catalog]:
    def make(text: str = RUNBOOK) -> Catalog:
        write_runbook("demo.yaml", text)
        cat = load(tmp_path / "runbooks")
        assert cat.problems == []
        return cat
    return make


def _line_of(path: Path, needle: str) -> int:
    lines = path.read_text(encoding="utf-8").splitlines()
    return next(i for i, line in enumerate(lines, start=1) if needle in line)


def test_items_are_covered_human_only_or_missing(catalog, outline):
    report = coverage(catalog(), outline)
    status = {i.id: (i.status, i.covered_by) for i in report.items}
    assert status == {
        "1#1": ("covered", ["demo:bastion"]),
        "1#2": ("missing", []),
        "6#1": ("human-only", []),
        "6#2": ("covered", ["demo:users"]),
        "10.1#1": ("missing", []),  # a step naming only the section covers no item
    }
    assert report.problems == []
    assert not report.ok
    doc = coverage_json(report)
    assert doc["summary"] == {"items": 5, "covered": 2, "human_only": 1, "missing": 2,
                              "problems": 0}
    assert doc["items"][2]["human_only"] == "a conversation"


def test_covering_every_item_makes_the_report_ok(catalog, outline):
    text = RUNBOOK.replace('source: "10.1"', 'source: "10.1#1"').replace(
        "    next: users\n", "    next: gateway\n  gateway:\n    source: \"1#2\"\n"
        "    manual: Log on to exflgateway.\n    next: users\n")
    report = coverage(catalog(text), outline)
    assert [i.status for i in report.items] == ["covered", "covered", "human-only", "covered",
                                                "covered"]
    assert report.ok


def test_a_step_naming_an_unknown_item_is_a_problem_at_its_source(catalog, outline, tmp_path):
    report = coverage(catalog(RUNBOOK.replace('"6#2"', '"6#3"')), outline)
    path = tmp_path / "runbooks" / "demo.yaml"
    line = _line_of(path, '"6#3"')
    assert report.problems == [
        f"{path}:{line}:5: demo:users: source '6#3' names no item of the outline: section 6 "
        "has 2 actionable item(s) (did you mean '6#2'?)"]
    assert not report.ok
    assert next(i for i in report.items if i.id == "6#2").status == "missing"


def test_runbook_and_step_sources_naming_unknown_sections_are_problems(catalog, outline,
                                                                       tmp_path):
    text = RUNBOOK.replace('source: "1"\n', 'source: "14"\n').replace('"10.1"', '"10.3"')
    report = coverage(catalog(text), outline)
    path = tmp_path / "runbooks" / "demo.yaml"
    assert report.problems == [
        f"{path}:4:1: demo: source '14' names unknown section '14' (did you mean '1'?)",
        f"{path}:{_line_of(path, '10.3')}:5: demo:sizes: source '10.3' names unknown section "
        "'10.3' (did you mean '10.1'?)",
    ]


def test_sections_restrict_the_report_and_its_verdict(catalog, outline):
    cat = catalog(RUNBOOK.replace('"6#2"', '"6#7"'))
    only_1 = coverage(cat, outline, ["1"])  # "1" selects 1 and 1.x, never 10
    assert [i.id for i in only_1.items] == ["1#1", "1#2"]
    assert [s.id for s in only_1.sections] == ["1"]
    assert only_1.problems == []  # the typo is in section 6, not selected
    ten = coverage(cat, outline, ["10"])
    assert [s.id for s in ten.sections] == ["10", "10.1"]
    assert [i.id for i in ten.items] == ["10.1#1"]
    six = coverage(cat, outline, ["6"])
    assert len(six.problems) == 1 and "'6#7'" in six.problems[0]
    human = coverage(cat, outline, ["10"]).items
    assert [i.status for i in human] == ["missing"]


@pytest.mark.parametrize(("sections", "message"), [
    pytest.param(["7"], "unknown section '7'", id="unknown"),
    pytest.param(["1x"], "'1x' is not a section number (e.g. 11 or 11.3)", id="malformed"),
    pytest.param(["10.2"], "unknown section '10.2' (did you mean '10.1'?)", id="hint"),
])
def test_an_unknown_section_selection_is_an_error(catalog, outline, sections, message):
    with pytest.raises(ValidationError) as exc:
        coverage(catalog(), outline, sections)
    assert exc.value.problems == [message]


@pytest.mark.parametrize(("edit", "line", "col", "message"), [
    pytest.param(('id: "1#2"', 'id: "1#3"'), 7, 9,
                 "item 2 of section 1 must have id '1#2', not '1#3' (items count from 1 in "
                 "the guidelines' order)", id="numbering"),
    pytest.param(('    title: No data', '    titel: No data'), 22, 5,
                 "unknown key 'titel' (did you mean 'title'?)", id="unknown-key"),
    pytest.param(('human_only: a conversation', 'human_only: " "'), 15, 9,
                 "sections.1.items.0.human_only: String should have at least 1 character",
                 id="empty-reason"),
    pytest.param(('id: "10.1"', 'id: "9.1"'), 21, 5,
                 "section '9.1' comes after '10'; keep the guidelines' order", id="order"),
    pytest.param(('id: "10.1#1"', 'id: "10.1#1": x'), 24, 21,
                 "mapping values are not allowed in this context", id="yaml-syntax"),
])
def test_a_malformed_outline_is_reported_at_its_position(tmp_path, edit, line, col, message):
    path = tmp_path / "outline.yaml"
    assert edit[0] in OUTLINE_TEXT
    path.write_text(OUTLINE_TEXT.replace(edit[0], edit[1]), encoding="utf-8")
    with pytest.raises(ValidationError) as exc:
        load_outline(path)
    assert f"{path}:{line}:{col}: {message}" in exc.value.problems


def test_render_lists_each_item_with_its_status(catalog, outline):
    report = coverage(catalog(RUNBOOK.replace('"6#2"', '"6#9"')), outline)
    out = io.StringIO()
    render_coverage(report, Console(file=out, width=200, color_system=None))
    text = out.getvalue()
    assert re.search(r"1#1 .*Log on to bastion\..*covered .*demo:bastion", text)
    assert re.search(r"6#1 .*Talk to the users\..*human-only .*a conversation", text)
    assert re.search(r"10 .*General Detector DAQ Troubleshooting.*no actionable item", text)
    assert "source '6#9' names no item of the outline" in text
    assert text.rstrip().endswith("5 items: 1 covered, 1 human-only, 3 missing; 1 problem(s): "
                                  "incomplete")


# The guidelines' table of contents, as printed (release 0.1, Mar 02 2021).
CONTENTS = textwrap.dedent("""\
    1	Logging onto exflgateway
    2	Initializing a Karabo Environment for an Instrument
    2.1	In the Hutch/Control Room
    2.2	On exflgateway - GUI only
    2.3	On exflgateway - iKarabo
    3	Restarting Online Calibration
    3.1	Preface
    3.2	Before Restart
    3.3	Restart via GUI
    3.4	Remote restart via command line
    3.5	After restart - push initial data
    3.6	Restarting only parts of the pipeline
    4	Restart Offline Calibration
    4.1	Preface
    4.2	Checking Status
    4.3	Restarting the Service
    4.4	Restarting the overview webpage
    5	Requesting Dark Characterization
    6	Connecting a Single Module's Raw Data to the Bridge
    7	Disabling Calibration Constants
    7.1	Screencast of Procedure
    7.2	Step by Step Instructions
    8	Offline Characterization Reports
    8.1	No Report is Generated
    8.2	Report is Generated with many errors.
    9	Webservice Overview
    9.1	Maxwell Status
    9.2	Running Calibration Jobs
    9.3	Last Characterization Runs
    9.4	Webservice Log
    10	General Detector DAQ Troubleshooting
    10.1	No data written to disk
    10.2	No data on Online Views
    11	General Online Calibration Troubleshooting
    11.1	Restart Servers Script does not run through
    11.2	Start Pipeline Times Out on Initializing Devices
    11.3	Calibration Parameters are not loaded
    11.4	“Wrong” Calibration parameters are loaded
    11.5	Pipeline Initialized but no Image Updates on the GUI
    11.6	Pipeline is slow
    11.7	GPU related
    12	Debugging the CalibrationDbRemote Devices
    12.1	Inspecting Logs
    12.2	Error Scenarios
    13	Indices and tables
""")
TOC = [tuple(line.split("\t")) for line in CONTENTS.splitlines()]
GUIDELINES = Path("/work/shared/reference/detector-support-guidelines.txt")


def test_the_real_outline_has_every_section_of_the_contents_with_its_title():
    outline = load_outline(OUTLINE)
    titles = {s.id: s.title for s in outline.sections}
    assert [(sid, titles.get(sid)) for sid, _ in TOC] == TOC
    extra = [s.id for s in outline.sections if s.id not in dict(TOC)]
    assert extra == ["4.2.1", "4.2.2", "4.2.3"]  # numbered in the text, not in the contents


@pytest.mark.skipif(not GUIDELINES.exists(), reason="the guidelines text is not on this machine")
def test_the_contents_above_are_those_of_the_guidelines():
    lines = GUIDELINES.read_text(encoding="utf-8").splitlines()
    printed = [m.groups() for line in lines
               if (m := re.fullmatch(r"(\d+(?:\.\d+)?)\t(.+?)\t\d+", line.strip()))]
    assert printed == TOC


def test_the_real_outline_ids_are_unique_and_in_the_guidelines_order():
    outline = load_outline(OUTLINE)
    ids = [item.id for s in outline.sections for item in s.items]
    assert len(ids) == len(set(ids))
    keys = [(tuple(int(p) for p in i.partition("#")[0].split(".")), int(i.partition("#")[2]))
            for i in ids]
    assert keys == sorted(keys)
    assert [s.id for s in outline.sections] == sorted(
        (s.id for s in outline.sections), key=lambda sid: tuple(int(p) for p in sid.split(".")))
    # the sections that the online runbooks encode all have actionable items
    for sid in ("1", "2.1", "2.2", "2.3", "3.2", "3.4", "3.6", "6", "10.1", "10.2", "11.1",
                "11.2", "11.3", "11.4", "11.5", "11.6", "11.7"):
        assert outline.section(sid).items, sid
    human = {item.id for s in outline.sections for item in s.items if item.human_only}
    assert human == {"4.3#1", "6#1", "7.2#1", "12.2#6"}
