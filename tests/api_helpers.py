"""Helpers shared by the HTTP contract tests."""

from __future__ import annotations

from datetime import datetime
from typing import Any


def parse_time(text: str) -> datetime:
    """An ISO 8601 time from the API; it must carry a UTC offset."""
    value = datetime.fromisoformat(text)
    assert value.utcoffset() is not None, f"{text!r} has no UTC offset"
    return value


def all_pages(api: Any, path: str, limit: int, **params: Any) -> list[list[dict[str, Any]]]:
    """Every page of a list, following next_cursor; fails on a cursor loop."""
    pages: list[list[dict[str, Any]]] = []
    cursor = None
    while True:
        query = {"limit": limit, **params}
        if cursor is not None:
            query["cursor"] = cursor
        response = api.get(path, query_string=query)
        assert response.status_code == 200, response.json
        assert set(response.json) == {"items", "next_cursor"}
        assert len(response.json["items"]) <= limit
        pages.append(response.json["items"])
        cursor = response.json["next_cursor"]
        if cursor is None:
            return pages
        assert len(pages) < 50, "next_cursor never ends"
