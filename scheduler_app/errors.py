"""One exception hierarchy for the whole service, mapped to HTTP in one place (``api.errors``).

Each exception's docstring is its default message, so raising ``NotFound()`` already says
something useful; ``details`` carries field-level problems for validation errors.
"""

from __future__ import annotations

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
