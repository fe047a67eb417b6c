"""Intervals and crontab expressions: next runs across day, month and year boundaries."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import pytest

from bootkit import ConfigError
from bootkit.testing import make_settings
from bootkit_amqp_consumer import App
from bootkit_beat.schedules import Crontab, Every, ScheduleError, crontab, parse_entry, schedule_of
from bootkit_beat.steps import entries


def at(text: str) -> datetime:
    return datetime.fromisoformat(text).replace(tzinfo=UTC)


@pytest.mark.parametrize(
    ("expression", "after", "due"),
    [
        ("*/15 * * * *", "2026-11-24 10:07:30", "2026-11-24 10:15:00"),
        ("*/15 * * * *", "2026-11-24 10:15:00", "2026-11-24 10:30:00"),  # strictly after
        ("30 23 * * *", "2026-11-24 23:31:00", "2026-11-25 23:30:00"),  # across a day
        ("0 0 * * *", "2026-11-30 23:59:59", "2026-12-01 00:00:00"),  # across a month
        ("0 0 1 * *", "2026-12-15 08:00:00", "2027-01-01 00:00:00"),  # across a year
        ("0 12 31 * *", "2026-11-01 00:00:00", "2026-12-31 12:00:00"),  # skips 30-day months
        ("0 9 29 2 *", "2026-03-01 00:00:00", "2028-02-29 09:00:00"),  # the next leap day
        ("0 7 * * mon", "2026-11-24 08:00:00", "2026-11-30 07:00:00"),  # Tuesday -> Monday
        ("0 7 * * 0", "2026-11-24 08:00:00", "2026-11-29 07:00:00"),  # Sunday as 0
        ("0 7 * * 7", "2026-11-24 08:00:00", "2026-11-29 07:00:00"),  # and as 7
        ("0 0 13 * fri", "2026-11-24 00:00:00", "2026-11-27 00:00:00"),  # either day field
        ("5-10/5 1,2 * jan-mar *", "2026-11-24 00:00:00", "2027-01-01 01:05:00"),
    ],
)
def test_crontab_next_run(expression: str, after: str, due: str) -> None:
    assert Crontab.parse(expression).next_after(at(after)) == at(due)


def test_crontab_by_field_and_errors() -> None:
    assert crontab(minute="0", hour="7").next_after(at("2026-11-24 07:00:00")) == at(
        "2026-11-25 07:00:00"
    )
    for bad, why in (
        ("* * * *", "expected 5 fields"),
        ("61 * * * *", "outside 0-59"),
        ("* * * * funday", "not a number or a name"),
        ("0 0 31 2 *", "never matches"),
    ):
        with pytest.raises(ScheduleError, match=why):
            Crontab.parse(bad).next_after(at("2026-01-01 00:00:00"))


def test_intervals_and_entries() -> None:
    assert schedule_of(10) == Every(10.0)
    assert schedule_of("5m") == Every(300.0)
    assert schedule_of("1.5") == Every(1.5)
    assert Every(2.0).next_after(at("2026-11-24 10:00:00")) == at("2026-11-24 10:00:02")
    entry = parse_entry("tick every 1s proj.add [1, 2]")
    assert (entry.name, entry.schedule, entry.task, entry.args) == (
        "tick",
        Every(1.0),
        "proj.add",
        (1, 2),
    )
    report = parse_entry("report cron 0 7 * * mon proj.report")
    assert (report.task, str(report.schedule)) == ("proj.report", "cron 0 7 * * mon")
    for bad in (
        "x",
        "x hourly proj.t",
        "x every 1s",
        "x every 1s proj.t {",
        "x every 1s proj.t {}",
    ):
        with pytest.raises(ScheduleError, match="beat schedule"):
            parse_entry(bad)
    with pytest.raises(ScheduleError, match="above 0"):
        schedule_of(0)


def test_the_schedule_joins_config_lines_and_the_apps_periodic_tasks(tmp_path: Path) -> None:
    app = App("periodic")
    app.add_periodic_task(crontab(minute="0", hour="7"), "proj.report", name="report")
    app.add_periodic_task("5m", "proj.poll", args=(1,))
    with pytest.raises(ValueError, match="exists"):
        app.add_periodic_task(10, "proj.poll")
    settings = make_settings(tmp_path, options={"beat_schedule": ("tick every 1s proj.tick",)})
    found = {e.name: (str(e.schedule), e.task, e.args) for e in entries(settings, app)}
    assert found == {
        "tick": ("every 1s", "proj.tick", ()),
        "report": ("cron 0 7 * * *", "proj.report", ()),
        "proj.poll": ("every 300s", "proj.poll", (1,)),
    }
    clash = make_settings(tmp_path, options={"beat_schedule": ("report every 1s proj.x",)})
    with pytest.raises(ConfigError, match="'report' is used twice"):
        entries(clash, app)
