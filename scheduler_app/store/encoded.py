"""A task's result encoded as JSON once, outside the write transaction that stores it.

Why: the runner must encode a result to know it is JSON (a run whose task returns something
else fails ``ResultNotJSON``). The settle then bound the value through the column's JSON type,
which encoded it again, and read it back decoded, both inside the write transaction: on SQLite
while this process holds the file's one writer, so every other write on the host waited for
them (a 67 KiB result: about 2 ms of encoding and decoding in the writer's turn; bench/README.md,
"2026-12-05, 06:42–09:42 UTC", and ``make bench-result-size``). An ``EncodedJSON`` carries
the text the runner made (or the settle, before its transaction, for a result handed to it as a
value), which the engine's JSON serializer (``dumps``) passes through as it is, and the value
that text decodes to, which the settled run holds without reading the column back.
"""

from __future__ import annotations

import json
from typing import Any

# Decoding gives these back unchanged: a str, an int or a float (not NaN nor infinity, which
# are refused) encodes to text that decodes to an equal value of the same type.
_SCALARS = frozenset({str, int, float, bool})


class EncodedJSON(str):
    """JSON text made from a value (``of``), and ``value``: what the text decodes to (the
    value as a later read of the column gives it: tuples as lists, keys as strings)."""

    value: Any

    @classmethod
    def of(cls, value: Any) -> EncodedJSON:
        """``value`` as JSON; TypeError or ValueError (NaN, infinity) when it is not JSON."""
        encoded = cls(json.dumps(value, allow_nan=False))
        exact = value is None or type(value) in _SCALARS
        encoded.value = value if exact else json.loads(encoded)
        return encoded

    @classmethod
    def made(cls, text: str, value: Any) -> EncodedJSON:
        """``text`` that a caller already encoded from ``value`` (a run's kwargs, encoded by
        their validation), taken as it is."""
        encoded = cls(text)
        encoded.value = value
        return encoded


def dumps(value: Any) -> str:
    """The JSON serializer of the service's engines: an ``EncodedJSON`` as it is, anything
    else as SQLAlchemy's default (``json.dumps``) encodes it."""
    if isinstance(value, EncodedJSON):
        return str.__str__(value)
    return json.dumps(value)
