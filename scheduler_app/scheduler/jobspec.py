"""A job's stored definition (the JSON in the ``jobs.spec`` column) and how it becomes an
APScheduler ``Job``, without unpickling anything."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from datetime import datetime
from typing import Any

from apscheduler.job import Job
from apscheduler.triggers.base import BaseTrigger

from .triggers import build_trigger

# The function every stored job points at, so an APScheduler Job has a valid reference; nothing
# calls it (a fire becomes a run).
TRAMPOLINE_REF = "scheduler_app.scheduler.jobspec:fire_task"


def fire_task(task: str, **kwargs: Any) -> None:
    """Stand-in target of every stored job; running a job inline is never what this service does."""
    raise RuntimeError(f"job for task {task} must be fired through the run queue")


@dataclass(frozen=True)
class JobSpec:
    name: str
    task: str
    kwargs: dict[str, Any]
    trigger: dict[str, Any]
    max_instances: int = 1
    coalesce: bool = True
    misfire_grace_time: float | None = 60

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> JobSpec:
        return cls(
            name=str(data["name"]),
            task=str(data["task"]),
            kwargs=dict(data.get("kwargs") or {}),
            trigger=dict(data["trigger"]),
            max_instances=int(data.get("max_instances", 1)),
            coalesce=bool(data.get("coalesce", True)),
            misfire_grace_time=data.get("misfire_grace_time", 60),
        )

    def build_trigger(self, timezone: str) -> BaseTrigger:
        return build_trigger(self.trigger, timezone)[1]


def to_apscheduler_job(job_id: str, spec: JobSpec, next_run_time: datetime | None,
                       trigger: BaseTrigger) -> Job:
    """The APScheduler Job the scheduler loop plans from, built through the pickle protocol
    (``Job.__setstate__``), which takes the fields as stored: ``Job()`` needs a scheduler and
    validates every field again. Not attached to a scheduler or a job store: nothing calls
    APScheduler's job API on it."""
    job = Job.__new__(Job)
    job.__setstate__({
        "version": 1,
        "id": job_id,
        "func": TRAMPOLINE_REF,
        "trigger": trigger,
        "executor": "default",
        "args": (spec.task,),
        "kwargs": spec.kwargs,
        "name": spec.name,
        "misfire_grace_time": spec.misfire_grace_time,
        "coalesce": spec.coalesce,
        "max_instances": spec.max_instances,
        "next_run_time": next_run_time,
    })
    return job
