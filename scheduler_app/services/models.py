"""Request models shared by every entry point (HTTP API, CLI, config jobs, built-in API).

Strict pydantic models with unknown fields forbidden: ``"2"`` is not an integer and a typo in a
field name is an error, not a silently ignored key. The same models feed the OpenAPI document.
"""

from __future__ import annotations

from typing import Annotated, Any, TypeVar

import pydantic
from pydantic import BaseModel, ConfigDict, Field

from ..errors import InvalidRequest

M = TypeVar("M", bound=BaseModel)

JobId = Annotated[str, Field(min_length=1, max_length=191,
                             pattern=r"^[A-Za-z0-9][A-Za-z0-9._:@-]*$")]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)


class RunCreate(_Strict):
    task: str = Field(description="Registered task name, e.g. demo.sleep")
    kwargs: dict[str, Any] = Field(default_factory=dict)
    run_at: str | None = Field(default=None, description="ISO 8601 time with offset; "
                                                          "default now")


class JobCreate(_Strict):
    id: JobId | None = None
    name: Annotated[str, Field(max_length=200)] | None = None
    task: str
    kwargs: dict[str, Any] = Field(default_factory=dict)
    trigger: dict[str, Any]
    max_instances: Annotated[int, Field(ge=1, le=1000)] | None = None
    coalesce: bool | None = None
    misfire_grace_time: Annotated[float, Field(gt=0, allow_inf_nan=False)] | None = None
    paused: bool = False


class JobPatch(_Strict):
    name: Annotated[str, Field(max_length=200)] | None = None
    kwargs: dict[str, Any] | None = None
    trigger: dict[str, Any] | None = None
    max_instances: Annotated[int, Field(ge=1, le=1000)] | None = None
    coalesce: bool | None = None
    misfire_grace_time: Annotated[float, Field(gt=0, allow_inf_nan=False)] | None = None


def parse_model(model: type[M], data: object) -> M:
    """Validate a decoded JSON body against a request model, or raise InvalidRequest naming
    each bad field."""
    if not isinstance(data, dict):
        raise InvalidRequest.field("body", "must be a JSON object")
    try:
        return model.model_validate(data)
    except pydantic.ValidationError as exc:
        details = []
        for error in exc.errors(include_url=False):
            field = ".".join(str(p) for p in error["loc"]) or "body"
            message = "unexpected field" if error["type"] == "extra_forbidden" else error["msg"]
            details.append({"field": field, "message": message})
        summary = "; ".join(f"{d['field']}: {d['message']}" for d in details)
        raise InvalidRequest(summary, details=details) from None
