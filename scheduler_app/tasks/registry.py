"""The task registry: the only things this service will ever run by name.

A task is a plain function whose first parameter receives the run context; its other
parameters are keyword arguments described by type hints. A pydantic model is built from the
signature once, at registration, so every entry point (HTTP, CLI, config, a firing job)
validates arguments the same way and ``GET /api/tasks`` publishes the same JSON Schema.
"""

from __future__ import annotations

import inspect
import json
import re
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, TypeVar, overload

import pydantic

from .controls import NO_CONTROLS, ControlError, Controls

_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)+$")


class ArgumentError(ValueError):
    """A task's keyword arguments do not match its signature.

    ``problems`` is a list of ``{"field": "kwargs.<name>", "message": ...}``.
    """

    def __init__(self, problems: list[dict[str, str]]) -> None:
        self.problems = problems
        super().__init__("; ".join(f"{p['field']}: {p['message']}" for p in problems))


class UnknownTask(LookupError):
    """No task is registered under that name."""


@dataclass(frozen=True)
class Task:
    """A registered task and its options.

    ``fn`` takes the run context first, whatever ``function`` (the developer's own) takes."""

    name: str
    fn: Callable[..., Any]
    description: str
    params_model: type[pydantic.BaseModel]
    timeout: float | None = None
    max_attempts: int = 1
    max_running: int | None = None
    retry_backoff: float | None = None
    ref: str = field(default="")
    function: Callable[..., Any] | None = None
    takes_context: bool = True
    # "thread", "process", or None: the node's SCHEDULER_ISOLATION decides.
    isolation: str | None = None
    memory_limit_mb: int | None = None
    controls: Controls = NO_CONTROLS

    def validate(self, kwargs: object, encoded: str | None = None) -> dict[str, Any]:
        """Return the arguments converted to the annotated types, or raise ArgumentError.

        Validation runs in pydantic's strict JSON mode: ``"5"`` is not an int, extra or
        missing arguments are errors, and values must be what JSON can carry. ``encoded``:
        ``kwargs`` already encoded by ``encode_kwargs`` (the caller measured its size).
        """
        if not isinstance(kwargs, dict):
            raise ArgumentError([{"field": "kwargs", "message": "must be a JSON object"}])
        raw = encode_kwargs(kwargs) if encoded is None else encoded
        try:
            model = self.params_model.model_validate_json(raw, strict=True)
        except pydantic.ValidationError as exc:
            raise ArgumentError(_problems(exc)) from None
        # The fields' values as pydantic holds them (its instance dict holds the fields, and
        # only them): one copy, where reading each through ``model_fields`` costs a call each.
        return dict(model.__dict__)

    def json_schema(self) -> dict[str, Any]:
        schema = self.params_model.model_json_schema()
        schema.pop("title", None)
        return schema


# Built once: ``json.dumps`` with any option builds a new encoder per call.
_KWARGS_ENCODER = json.JSONEncoder(allow_nan=False, separators=(",", ":"))


def encode_kwargs(kwargs: dict[str, Any]) -> str:
    """``kwargs`` as compact JSON text, or ArgumentError if it is not plain JSON (a value JSON
    cannot carry, NaN or an infinity)."""
    try:
        return _KWARGS_ENCODER.encode(kwargs)
    except (TypeError, ValueError) as exc:
        problem = {"field": "kwargs", "message": f"not plain JSON: {exc}"}
        raise ArgumentError([problem]) from None


ISOLATIONS = ("thread", "process")


def _check_isolation(name: str, isolation: object, memory_limit_mb: object) -> None:
    if isolation is not None and isolation not in ISOLATIONS:
        raise ValueError(f"task {name}: isolation must be 'thread' or 'process', "
                         f"got {isolation!r}")
    if memory_limit_mb is None:
        return
    if isinstance(memory_limit_mb, bool) or not isinstance(memory_limit_mb, int) or \
            memory_limit_mb < 1:
        raise ValueError(f"task {name}: memory_limit_mb must be a positive whole number of "
                         f"megabytes, got {memory_limit_mb!r}")
    if isolation != "process":
        raise ValueError(f"task {name}: memory_limit_mb needs isolation='process' (a thread "
                         "shares its process's memory and cannot be limited)")


def _problems(exc: pydantic.ValidationError) -> list[dict[str, str]]:
    problems = []
    for error in exc.errors(include_url=False):
        loc = ".".join(str(part) for part in error["loc"])
        message = error["msg"]
        if error["type"] == "extra_forbidden":
            message = "unexpected argument"
        problems.append({"field": f"kwargs.{loc}" if loc else "kwargs", "message": message})
    return problems


def _takes_context(fn: Callable[..., Any], hints: dict[str, Any]) -> bool:
    """Whether ``fn``'s first parameter receives the run context: annotated ``RunContext``
    or named ``ctx``."""
    from .context import RunContext

    params = list(inspect.signature(fn).parameters.values())
    if not params or params[0].kind not in (inspect.Parameter.POSITIONAL_ONLY,
                                            inspect.Parameter.POSITIONAL_OR_KEYWORD):
        return False
    first = params[0]
    return first.name == "ctx" or hints.get(first.name) is RunContext


def _params_model(name: str, fn: Callable[..., Any], hints: dict[str, Any],
                  takes_context: bool) -> type[pydantic.BaseModel]:
    params = list(inspect.signature(fn).parameters.values())
    if takes_context:
        params = params[1:]
    fields: dict[str, Any] = {}
    for param in params:
        if param.kind in (inspect.Parameter.VAR_POSITIONAL, inspect.Parameter.VAR_KEYWORD):
            raise TypeError(f"task {name}: *args and **kwargs cannot be validated; name each one")
        if param.kind is inspect.Parameter.POSITIONAL_ONLY:
            raise TypeError(f"task {name}: parameter {param.name} must accept a keyword")
        annotation = hints.get(param.name, Any)
        default = ... if param.default is inspect.Parameter.empty else param.default
        fields[param.name] = (annotation, default)
    config = pydantic.ConfigDict(extra="forbid", arbitrary_types_allowed=False)
    return pydantic.create_model(  # type: ignore[call-overload, no-any-return]
        f"{name}.kwargs", __config__=config, **fields
    )


def _with_context(fn: Callable[..., Any]) -> Callable[..., Any]:
    """``fn`` called the way the runner calls every task: context first."""

    def call(ctx: Any, /, **kwargs: Any) -> Any:
        return fn(**kwargs)

    return call


def _type_hints(fn: Callable[..., Any]) -> dict[str, Any]:
    import typing

    try:
        return typing.get_type_hints(fn, include_extras=True)
    except Exception as exc:  # an unresolvable forward reference is the author's bug
        raise TypeError(f"cannot resolve the type hints of {fn.__qualname__}: {exc}") from exc


class TaskRegistry:
    """Name → Task. Registration happens at import time of the task modules."""

    def __init__(self) -> None:
        self._tasks: dict[str, Task] = {}
        self._lock = threading.Lock()
        # Bumped by every registration: what is derived from the tasks (a runner's names and
        # caps, read at every settle that claims) is kept until it changes.
        self.version = 0

    def register(
        self,
        fn: Callable[..., Any],
        *,
        name: str | None = None,
        timeout: float | None = None,
        max_attempts: int = 1,
        max_running: int | None = None,
        retry_backoff: float | None = None,
        context: bool | None = True,
        full_name: bool = False,
        isolation: str | None = None,
        memory_limit_mb: int | None = None,
        **controls: Any,
    ) -> Task:
        """Register ``fn``. ``context``: whether its first parameter takes the run context
        (None: decide from the signature, as ``Scheduler.task`` does). Its default name is
        ``<last module part>.<function>``, or ``<module>.<function>`` with ``full_name``.
        ``controls``: the concurrency controls (``unique``, ``unique_key``, ``concurrency_key``,
        ``concurrency_limit``, ``rate_limit``, ``rate_key``; see ``controls.Controls``)."""
        module = fn.__module__ if full_name else fn.__module__.rsplit(".", 1)[-1]
        task_name = name or f"{module}.{fn.__name__}"
        if not _NAME.match(task_name):
            raise ValueError(f"task name {task_name!r} must be dotted, like 'reports.build'")
        if timeout is not None and timeout <= 0:
            raise ValueError(f"task {task_name}: timeout must be positive")
        if max_attempts < 1:
            raise ValueError(f"task {task_name}: max_attempts must be at least 1")
        if max_running is not None and max_running < 1:
            raise ValueError(f"task {task_name}: max_running must be at least 1")
        if retry_backoff is not None and retry_backoff <= 0:
            raise ValueError(f"task {task_name}: retry_backoff must be positive")
        _check_isolation(task_name, isolation, memory_limit_mb)
        try:
            checked = Controls.checked(**controls)
        except TypeError as exc:  # an option that is not one
            raise TypeError(f"task {task_name}: {exc}") from None
        except ControlError as exc:
            raise ValueError(f"task {task_name}: {exc}") from None
        hints = _type_hints(fn)
        takes_context = _takes_context(fn, hints) if context is None else context
        params = list(inspect.signature(fn).parameters.values())
        if takes_context and (not params or params[0].kind not in (
                inspect.Parameter.POSITIONAL_ONLY, inspect.Parameter.POSITIONAL_OR_KEYWORD)):
            raise TypeError(f"task {task_name}: the first parameter must receive the run context")
        doc = inspect.getdoc(fn) or ""
        task = Task(
            name=task_name,
            fn=fn if takes_context else _with_context(fn),
            function=fn,
            takes_context=takes_context,
            description=doc.split("\n\n", 1)[0].replace("\n", " "),
            params_model=_params_model(task_name, fn, hints, takes_context),
            timeout=timeout,
            max_attempts=max_attempts,
            max_running=max_running,
            retry_backoff=retry_backoff,
            ref=f"{fn.__module__}:{fn.__qualname__}",
            isolation=isolation,
            memory_limit_mb=memory_limit_mb,
            controls=checked,
        )
        with self._lock:
            existing = self._tasks.get(task_name)
            if existing is not None and existing.ref != task.ref:
                raise ValueError(f"task name {task_name!r} is already taken by {existing.ref}")
            self._tasks[task_name] = task
            self.version += 1
        return task

    def get(self, name: object) -> Task:
        task = self._tasks.get(name) if isinstance(name, str) else None
        if task is None:
            raise UnknownTask(f"no task named {name!r} is registered")
        return task

    def by_ref(self, ref: str) -> Task:
        """Find a task by its ``module:function`` reference (Flask-APScheduler's ``func``)."""
        for task in self._tasks.values():
            if task.ref == ref:
                return task
        raise UnknownTask(f"{ref!r} is not a registered task")

    def of_function(self, function: Callable[..., Any]) -> Task | None:
        """The task registered from ``function`` (the developer's function, or the one the
        runner calls), or None."""
        ref = f"{getattr(function, '__module__', '')}:{getattr(function, '__qualname__', '')}"
        for task in self._tasks.values():
            if task.function is function or task.fn is function or task.ref == ref:
                return task
        return None

    def __contains__(self, name: object) -> bool:
        return isinstance(name, str) and name in self._tasks

    def all(self) -> list[Task]:
        return sorted(self._tasks.values(), key=lambda t: t.name)


registry = TaskRegistry()


F = TypeVar("F", bound=Callable[..., Any])


@overload
def task(fn: F) -> F: ...


@overload
def task(
    *,
    name: str | None = None,
    timeout: float | None = None,
    max_attempts: int = 1,
    max_running: int | None = None,
    retry_backoff: float | None = None,
    isolation: str | None = None,
    memory_limit_mb: int | None = None,
    **controls: Any,
) -> Callable[[F], F]: ...


def task(
    fn: F | None = None,
    *,
    name: str | None = None,
    timeout: float | None = None,
    max_attempts: int = 1,
    max_running: int | None = None,
    retry_backoff: float | None = None,
    isolation: str | None = None,
    memory_limit_mb: int | None = None,
    **controls: Any,
) -> F | Callable[[F], F]:
    """Register a function as a task: ``@task`` or ``@task(name="reports.build", timeout=60)``;
    ``controls``: its concurrency controls (``unique=True``, ``rate_limit="100/m"``...).

    The function is returned unchanged, so it can still be called directly in tests.
    """

    def decorate(f: F) -> F:
        registry.register(
            f,
            name=name,
            timeout=timeout,
            max_attempts=max_attempts,
            max_running=max_running,
            retry_backoff=retry_backoff,
            isolation=isolation,
            memory_limit_mb=memory_limit_mb,
            **controls,
        )
        return f

    return decorate(fn) if fn is not None else decorate
