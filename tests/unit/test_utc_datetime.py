"""``UTCDateTime`` binds on SQLite as the very text SQLAlchemy's own ``DATETIME`` stores: the
stored times are compared as text (``scheduled_for <= ?``), so one differing digit or a
missing microsecond part would order runs wrongly."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

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
]


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
