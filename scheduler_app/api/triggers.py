"""POST /api/triggers/preview: what a trigger would do, before a job is made with it.

``{"trigger": {...}, "count": 5}`` → ``{"trigger": <as it would be stored>, "description":
"At 02:00", "fire_times": [...]}``: the next ``count`` fire times from now, as ISO 8601 UTC
times (fewer when the trigger ends sooner; none for a date in the past). The trigger is judged
by the same ``build_trigger`` that job creation uses, so a bad one is the same 400 naming
every bad field and its range (``trigger.minute``: ``99 is out of range 0-59``). Nothing is
stored. It is a POST, so it takes an admin, like every change: the dashboard's job form, its
only caller, is shown to admins only.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any

from flask import Blueprint
from pydantic import AwareDatetime, BaseModel, ConfigDict, Field

from ..errors import InvalidRequest
from ..scheduler.triggers import TriggerError, build_trigger, describe
from ..services import services
from ..services.models import parse_model
from ..timeutil import iso, utcnow
from .common import json_body
from .openapi import operation

bp = Blueprint("triggers", __name__)

MAX_COUNT = 50


class TriggerPreview(BaseModel):
    """A trigger to try out, in the shape ``POST /api/jobs`` takes."""

    model_config = ConfigDict(extra="forbid", strict=True)

    trigger: dict[str, Any] = Field(description="A cron, interval or date trigger, as for a job")
    count: Annotated[int, Field(ge=1, le=MAX_COUNT,
                                description="How many fire times to list")] = 5


class TriggerPreviewResult(BaseModel):
    """The trigger as a job would store it, in words, and when it would fire next."""

    model_config = ConfigDict(extra="forbid")

    trigger: dict[str, Any]
    description: str
    fire_times: list[AwareDatetime]


@bp.post("/triggers/preview")
@operation({200: TriggerPreviewResult}, body=TriggerPreview)
def preview_trigger() -> dict[str, Any]:
    """Preview a trigger: its next fire times and description; nothing is stored."""
    request = parse_model(TriggerPreview, json_body())
    try:
        spec, trigger = build_trigger(request.trigger, services().settings.timezone)
    except TriggerError as exc:
        raise InvalidRequest(str(exc), details=exc.problems) from None
    times: list[datetime] = []
    previous: datetime | None = None
    now = utcnow()
    while len(times) < request.count:
        try:
            fire = trigger.get_next_fire_time(previous, previous or now)
        except (OverflowError, ValueError):  # ran past year 9999
            break
        if fire is None:
            break
        if fire >= now:  # a date trigger's time in the past is no coming fire
            times.append(fire)
        previous = fire
    return {"trigger": spec, "description": describe(spec),
            "fire_times": [iso(t) for t in times]}
