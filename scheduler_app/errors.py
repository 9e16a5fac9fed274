"""One exception hierarchy for the whole service, mapped to HTTP in one place (``api.errors``).

Each exception's docstring is its default message, so raising ``NotFound()`` already says
something useful; ``details`` carries field-level problems for validation errors.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any


class ServiceError(Exception):
    """The request could not be served."""

    status = 500
    code = "internal_error"

    def __init__(self, message: str | None = None, details: Any = None) -> None:
        self.message = message or (self.__doc__ or self.code).strip()
        self.details = details
        super().__init__(self.message)


class InvalidRequest(ServiceError, ValueError):
    """The request is invalid. A ValueError, so Python callers can catch it as one."""

    status = 400
    code = "invalid_request"

    @classmethod
    def field(cls, field: str, message: str) -> InvalidRequest:
        """One problem with one named field, in the contract's ``details`` shape."""
        return cls(f"{field}: {message}", details=[{"field": field, "message": message}])


class Unauthorized(ServiceError):
    """A valid bearer token is required."""

    status = 401
    code = "unauthorized"


class Forbidden(ServiceError):
    """This token's role may not do that."""

    status = 403
    code = "forbidden"


class NotFound(ServiceError, LookupError):
    """No such resource."""

    status = 404
    code = "not_found"


class Conflict(ServiceError):
    """The resource already exists."""

    status = 409
    code = "conflict"


class AlreadyFinished(Conflict):
    """The run has already finished."""

    code = "already_finished"


class QueueFull(ServiceError):
    """Too many runs are waiting; try again later."""

    status = 429
    code = "queue_full"
    retry_after = 5


class JobLimitReached(Conflict):
    """The job table is full (MAX_JOBS); delete a job first."""

    code = "job_limit_reached"


class ConfigError(Exception):
    """A setting has a value the service cannot work with; the message names the setting."""


class AlreadyQueued(Conflict):
    """A run with the same unique key is already queued or running.

    ``run`` is the ``RunHandle`` of that run. Unique runs are ``shared/PYTHON_API.md``'s
    concurrency controls; the class is part of the public names from the start."""

    code = "already_queued"

    def __init__(self, message: str | None = None, details: Any = None,
                 run: Any = None) -> None:
        super().__init__(message, details)
        self.run = run


@dataclass(frozen=True)
class KeyConflict:
    """Item ``index`` of a batch cannot be queued: its ``unique_key`` is held by the active run
    ``run_id`` (in ``state``), or by the batch's own item ``duplicate_of``."""

    index: int
    unique_key: str
    run_id: int | None = None
    state: str | None = None
    duplicate_of: int | None = None


class BatchConflict(AlreadyQueued):
    """Runs of the batch have unique keys that are taken; nothing was written.

    ``conflicts`` lists each of them (``KeyConflict``); ``details`` says the same for HTTP
    callers, one entry per item, named ``runs[<index>].unique_key``."""

    def __init__(self, conflicts: Sequence[KeyConflict]) -> None:
        self.conflicts = list(conflicts)
        details = [_detail(c) for c in self.conflicts]
        shown = "; ".join(f"{d['field']} {d['message']}" for d in details[:3])
        more = f" (and {len(details) - 3} more)" if len(details) > 3 else ""
        super().__init__(f"{len(details)} run(s) of the batch have a unique key that is "
                         f"taken, so none was queued: {shown}{more}", details=details)


def _detail(conflict: KeyConflict) -> dict[str, Any]:
    if conflict.duplicate_of is not None:
        message = f"repeats the unique key of runs[{conflict.duplicate_of}]"
    elif conflict.run_id is None:
        message = "was held by a run that ended as the batch was written; try again"
    else:
        message = f"is held by run {conflict.run_id} ({conflict.state})"
    return {"field": f"runs[{conflict.index}].unique_key", "message": message,
            "unique_key": conflict.unique_key, "run_id": conflict.run_id}
