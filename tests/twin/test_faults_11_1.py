"""11.1: the restart-servers script stalls; each cause, and its documented remedy."""

from __future__ import annotations

import re

import pytest

from tests.twin._kit import dev, finishes, heal, inject, karabo_check, spbonc, stalls_at

pytestmark = pytest.mark.twin


def test_new_server_not_omitted_stalls_restart_11_1(spb):
    inject(spb, kind="new_server", host="spb-br-sys-cal-4")
    try:
        stalls_at("Restarting mlspb_spb_new_4 on spb-br-sys-cal-4")
        dev("restart").omitFromRestart = "webserver, _new_"  # the documented remedy
        finishes()
    finally:
        heal(spb, "SPB")
    assert "mlspb_spb_new_4" not in "".join(karabo_check(spbonc(spb, "spb-br-sys-cal-4")))


def test_webserver_down_stalls_restart_11_1(spb):
    inject(spb, kind="webserver_down", host="spb-br-sys-cal-3")
    try:
        lines = karabo_check(spbonc(spb, "spb-br-sys-cal-3"))
        assert any(re.match(r"webserver: down \d+ seconds", x) for x in lines), lines
        stalls_at("Restarting servers on spb-br-sys-cal-3")
    finally:
        heal(spb, "SPB")
    finishes()


def test_webserver_filter_mismatch_stalls_restart_11_1(spb):
    inject(spb, kind="webserver_filter", host="spb-br-sys-cal-2")
    try:
        run = (spbonc(spb, "spb-br-sys-cal-2") / "var/service/webserver/run").read_text()
        assert run.rstrip().endswith("--filter cppspb_spb_cal_2 pyspb_spb_cal_2 mlspb_spb_cal_")
        stalls_at("Restarting mlspb_spb_cal_2 on spb-br-sys-cal-2")
    finally:
        heal(spb, "SPB")
    finishes()


def test_bad_webserver_template_stalls_restart_11_1(spb):
    inject(spb, kind="bad_webserver_template", template="http://{host}:8008")
    try:
        stalls_at("Restarting servers on spb-br-sys-cal-0")
    finally:
        heal(spb, "SPB")
    finishes()
