"""``UTCDateTime`` binds on SQLite as the very text SQLAlchemy's own ``DATETIME`` stores: the
stored times are compared as text (``scheduled_for <= ?``), so one differing digit or a
missing microsecond part would order runs wrongly."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone
from zoneinfo import ZoneInfo

import pytest
import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite

from scheduler_app.store.schema import UTCDateTime

MOMENTS = [
    datetime(1, 1, 1, tzinfo=UTC),
    datetime(999, 5, 6, 7, 8, 9, tzinfo=UTC),
    datetime(2026, 12, 4, 13, 0, 0, tzinfo=UTC),  # no microseconds: still written
    datetime(2026, 12, 4, 13, 0, 0, 1, tzinfo=UTC),
    datetime(9999, 12, 31, 23, 59, 59, 999999, tzinfo=UTC),
    datetime(2026, 3, 4, 5, 6, 7, 800, tzinfo=timezone(timedelta(hours=5, minutes=30))),
    datetime(2026, 3, 4, 5, 6, 7, 800, tzinfo=timezone(timedelta(0), "Z")),  # UTC, not ``UTC``
    datetime(2026, 3, 4, 5, 6, 7, 800, tzinfo=ZoneInfo("America/New_York")),
]

# Texts a SQLite file may hold: this code's, SQLAlchemy's, SQLite's own CURRENT_TIMESTAMP, and
# one written with an offset by hand.
TEXTS = ["2026-12-04 13:10:53.906193", "2026-12-04 13:00:00.000000", "2026-12-04 13:00:00",
         "0001-01-01 00:00:00.000000", "2026-12-04T13:10:53.906", "2026-03-04 05:06:07+05:30"]


@pytest.mark.parametrize("moment", MOMENTS, ids=str)
def test_sqlite_text_is_sqlalchemys(moment: datetime) -> None:
    dialect = sqlite.dialect()
    ours = UTCDateTime().dialect_impl(dialect).bind_processor(dialect)
    theirs = sa.DateTime().dialect_impl(dialect).bind_processor(dialect)
    assert ours(moment) == theirs(moment.astimezone(UTC).replace(tzinfo=None))
    assert ours(None) is None


def test_naive_times_are_refused_on_every_dialect() -> None:
    for dialect in (sqlite.dialect(), postgresql.dialect()):
        process = UTCDateTime().dialect_impl(dialect).bind_processor(dialect)
        with pytest.raises(ValueError, match="naive"):
            process(datetime(2026, 1, 1))


@pytest.mark.parametrize("text", TEXTS)
def test_sqlite_text_reads_back_as_the_decorator_reads_it(text: str) -> None:
    """The one-function read on SQLite gives what SQLAlchemy's parse followed by
    ``process_result_value`` gives: an aware UTC datetime, the same instant."""
    dialect = sqlite.dialect()
    ours = UTCDateTime().dialect_impl(dialect).result_processor(dialect, None)
    impl = UTCDateTime().dialect_impl(dialect)
    theirs = sa.types.TypeDecorator.result_processor(impl, dialect, None)
    moment = ours(text)
    assert moment == theirs(text) and moment.tzinfo is UTC
    assert ours(None) is None


@pytest.mark.parametrize("moment", MOMENTS, ids=str)
def test_a_time_written_on_sqlite_reads_back_the_same_instant(moment: datetime) -> None:
    dialect = sqlite.dialect()
    write = UTCDateTime().dialect_impl(dialect).bind_processor(dialect)
    read = UTCDateTime().dialect_impl(dialect).result_processor(dialect, None)
    assert read(write(moment)) == moment
