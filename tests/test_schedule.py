"""schedules.yaml: its mistakes at file:line:col, next run times, crontab and systemd."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from engine.errors import RunbookError, ValidationError
from engine.schedule import crontab, load_schedules, next_runs, on_calendar, systemd_units

GOOD = """\
site: xfel
schedules:
  spb:
    instrument: SPB
    cron: "*/15 * * * *"
    checks: [pipeline, karabo]
  weekdays:
    instrument: all
    cron: "0 7 * * 1-5"
    email: false
"""


@pytest.fixture
def good(tmp_path):
    path = tmp_path / "schedules.yaml"
    path.write_text(GOOD)
    return load_schedules(path)


def test_next_runs_follow_the_cron_expression(good):
    now = datetime(2026, 12, 6, 22, 50, 1, tzinfo=UTC)  # a Sunday
    runs = next_runs(good, 3, now=now)
    assert [t.strftime("%H:%M") for t in runs["spb"]] == ["23:00", "23:15", "23:30"]
    assert [t.strftime("%a %H:%M") for t in runs["weekdays"]] == [
        "Mon 07:00", "Tue 07:00", "Wed 07:00"]  # cron's 1-5 is Monday to Friday


def test_crontab_and_systemd(good):
    tab = crontab(good)
    assert "*/15 * * * * " in tab and "health --instrument SPB --site xfel --check pipeline " \
        "--check karabo --email  # spb" in tab
    assert "0 7 * * 1-5 " in tab and tab.count("--email") == 1
    units = systemd_units(good)
    assert "OnCalendar=*-*-* *:0/15:00" in units["runbook-health-spb.timer"]
    assert "OnCalendar=Mon..Fri *-*-* 7:0:00" in units["runbook-health-weekdays.timer"]
    assert "ExecStart=" in units["runbook-health-spb.service"]


def test_seconds_only_for_serve(tmp_path):
    path = tmp_path / "s.yaml"
    path.write_text("schedules:\n  fast: {instrument: SPB, cron: '*/5 * * * * *'}\n")
    schedules = load_schedules(path)
    with pytest.raises(RunbookError, match="use `runbook schedule serve`"):
        crontab(schedules)
    with pytest.raises(RunbookError, match="seconds"):
        on_calendar("*/5 * * * * *")


@pytest.mark.parametrize("text, message", [
    pytest.param("schedules:\n  a: {instrument: SPB, cron: '61 * * * *'}\n",
                 "s.yaml:2:24: bad cron expression: Error validating expression '61'",
                 id="bad-minute"),
    pytest.param("schedules:\n  a: {instrument: SPB, cron: '* * *'}\n",
                 "s.yaml:2:24: bad cron expression: '* * *' has 3 fields", id="fields"),
    pytest.param("schedules:\n  a: {instrument: SPB, cronn: '* * * * *'}\n",
                 "unknown key 'cronn' (did you mean 'cron'?)", id="typo"),
    pytest.param("schedules: {}\n",
                 "s.yaml:1:1: schedules: Dictionary should have at least 1 item", id="empty"),
])
def test_mistakes_are_reported_at_their_place(tmp_path, text, message):
    path = tmp_path / "s.yaml"
    path.write_text(text)
    with pytest.raises(ValidationError) as err:
        load_schedules(path)
    assert message in str(err.value)
