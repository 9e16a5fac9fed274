"""Layer 1: the task registry, the ``@task`` decorator and the run context tasks receive."""

from __future__ import annotations

from .context import Cancelled, Progress, RunContext
from .registry import ArgumentError, Task, TaskRegistry, UnknownTask, registry, task

__all__ = [
    "ArgumentError",
    "Cancelled",
    "Progress",
    "RunContext",
    "Task",
    "TaskRegistry",
    "UnknownTask",
    "registry",
    "task",
]
