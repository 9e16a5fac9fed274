"""UTC-aware time helpers: everything inside is aware UTC; naive times are refused at the edge."""

from __future__ import annotations

import functools
from collections.abc import Callable
from datetime import UTC, datetime

# Now, aware, in UTC. A partial, not a function: called several times on every run's path,
# and a partial of a C function adds no Python call of its own.
utcnow: Callable[[], datetime] = functools.partial(datetime.now, UTC)


def parse_aware(value: object, field: str) -> datetime:
    """Parse an ISO 8601 time that carries an offset; raise ValueError naming ``field`` if not.

    Naive times are refused rather than guessed: a job meant for 02:00 in Paris must not run at
    02:00 UTC because a client forgot the offset.
    """
    if isinstance(value, datetime):
        parsed = value
    elif isinstance(value, str):
        try:
            parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
        except ValueError:
            raise ValueError(f"{field} is not an ISO 8601 time: {value!r}") from None
    else:
        raise ValueError(f"{field} must be an ISO 8601 time string")
    if parsed.tzinfo is None or parsed.utcoffset() is None:
        raise ValueError(f"{field} must include a UTC offset, for example {value}+00:00")
    return parsed.astimezone(UTC)


def iso(value: datetime | None) -> str | None:
    return None if value is None else value.astimezone(UTC).isoformat()
