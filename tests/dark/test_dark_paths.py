"""Section 8's report-path pattern and section 10.1's raw path, filled from the xfel site."""

from __future__ import annotations

from datetime import datetime
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest

from detectors.dark._paths import raw_run_dir, report_dir, report_name
from detectors.dark.errors import DarkError
from detectors.dark.resolve import parse_numbers, resolve_job

WHEN = datetime(2020, 7, 23, 12, 5, 10, tzinfo=ZoneInfo("Europe/Berlin"))


def test_report_name_is_the_facilitys():
    # 8: "dark_900146_r67_r68_r69_200723_120510.pdf" on the webservice page
    assert report_name(900146, (67, 68, 69), WHEN) == "dark_900146_r67_r68_r69_200723_120510"
    assert report_name(2700, (4,), WHEN) == "dark_002700_r4_200723_120510"


def test_the_xfel_site_gives_the_standardized_report_location():
    job = resolve_job(instrument="SPB", detector="SPB_DET_AGIPD1M-1", runs="67,68,69",
                      proposal=900146, cycle="202031", when=WHEN)
    assert job.report_dir == Path("/gpfs/exfel/d/cal/caldb_store/xfel/reports/SPB/"
                                  "SPB_DET_AGIPD1M-1/dark/dark_900146_r67_r68_r69_200723_120510")
    assert job.run_dirs[0] == Path("/gpfs/exfel/exp/SPB/202031/p900146/raw/r0067")
    assert job.detector.name == "AGIPD"


def test_report_root_replaces_the_root_before_instrument(tmp_path):
    pattern = "/gpfs/x/reports/{instrument}/{det_instance}/dark/dark_{proposal}_{runs}_{time_stamp}"
    got = report_dir(pattern, instrument="SQS", det_instance="SQS_NQS_PNCCD1MP", proposal=900166,
                     runs=(39,), when=WHEN, report_root=tmp_path)
    assert got == tmp_path / "SQS/SQS_NQS_PNCCD1MP/dark/dark_900166_r39_200723_120510"


@pytest.mark.parametrize(("kwargs", "message"), [
    pytest.param({"pattern": "/gpfs/{instrument}/{run}"}, "needs the cycle", id="no-cycle"),
    pytest.param({"pattern": "/gpfs/{nope}", "cycle": "202031"}, "cannot be filled",
                 id="unknown-placeholder"),
    pytest.param({}, "no raw_path pattern", id="no-pattern"),
])
def test_raw_paths_that_cannot_be_resolved(kwargs, message):
    with pytest.raises(DarkError, match=message):
        raw_run_dir(67, instrument="SPB", proposal=900146, **kwargs)


@pytest.mark.parametrize(("text", "numbers"), [
    ("67,68,69", (67, 68, 69)), ("0-3,8", (0, 1, 2, 3, 8)), (" 5 ", (5,)), ([1, 2], (1, 2)),
])
def test_numbers(text, numbers):
    assert parse_numbers(text, "runs") == numbers


@pytest.mark.parametrize("text", ["", "a,b", "67,67", "1-x"])
def test_bad_numbers(text):
    with pytest.raises(DarkError):
        parse_numbers(text, "runs")


def test_a_detector_not_in_the_inventory_needs_its_type():
    with pytest.raises(DarkError, match="not in the inventory of SPB"):
        resolve_job(instrument="SPB", detector="SPB_OTHER", runs="1,2,3", proposal=1,
                    cycle="202031")
    job = resolve_job(instrument="SPB", detector="SPB_OTHER", runs="1,2,3", proposal=1,
                      cycle="202031", detector_type="jungfrau")
    assert job.detector.name == "JUNGFRAU" and job.karabo_id == "SPB_OTHER"
