"""Creating, changing and reading scheduled jobs.

Writes go straight to the job table (validated, as JSON specs) and then wake the local
scheduler loop; they never go through APScheduler's ``add_job``, whose not-yet-started
scheduler keeps jobs in process memory. Every change is a compare-and-set on the row's version,
retried on a conflict, so a scheduler fire happening at the same moment cannot undo it.
"""

from __future__ import annotations

import base64
import json
import uuid
from collections.abc import Callable
from datetime import datetime
from typing import TYPE_CHECKING, Any

from ..errors import Conflict, InvalidRequest, NotFound
from ..scheduler.engine import Engine
from ..scheduler.jobspec import JobSpec
from ..scheduler.triggers import TriggerError, build_trigger
from ..settings import Settings
from ..store import JobExists, JobRecord, Run, Store
from ..store.jobs import JobKey
from ..tasks import UnknownTask, registry
from ..timeutil import utcnow
from .models import JobCreate, JobPatch, collect, invalid
from .runs import RunService, resolve_task, unstorable, validate_kwargs
from .views import job_view

if TYPE_CHECKING:
    from apscheduler.triggers.base import BaseTrigger

MAX_CAS_ATTEMPTS = 5


class JobService:
    def __init__(self, store: Store, scheduler: Engine, settings: Settings,
                 runs: RunService) -> None:
        self.store = store
        self.scheduler = scheduler
        self.settings = settings
        self.runs = runs

    # -- validation -------------------------------------------------------------------------
    def _trigger(self, spec: object) -> tuple[dict[str, Any], BaseTrigger]:
        try:
            return build_trigger(spec, self.settings.timezone)
        except TriggerError as exc:
            raise InvalidRequest(str(exc), details=exc.problems) from None

    def _first_fire(self, trigger_spec: dict[str, Any], trigger: BaseTrigger,
                    grace: float | None) -> datetime:
        now = utcnow()
        first: datetime | None = trigger.get_next_fire_time(None, now)
        if first is None:
            raise InvalidRequest.field("trigger", "this trigger will never fire")
        # Compare seconds, not datetimes: now - timedelta(grace) overflows for a huge grace.
        if trigger_spec["type"] == "date" and grace is not None and \
                (now - first).total_seconds() > grace:
            raise InvalidRequest.field("trigger.run_date", "is in the past")
        return first

    # -- writes -----------------------------------------------------------------------------
    def _spec(self, request: JobCreate) -> tuple[JobSpec, datetime]:
        """The stored definition a create request describes, and its first fire time."""
        problems: list[dict[str, str]] = []  # report every bad field at once
        task = collect(problems, lambda: resolve_task(request.task))
        if task is not None:
            max_bytes = self.settings.kwargs_max_bytes
            collect(problems, lambda: validate_kwargs(task, request.kwargs, max_bytes))
        built = collect(problems, lambda: self._trigger(request.trigger))
        if problems or task is None or built is None:
            raise invalid(problems)
        trigger_spec, trigger = built
        spec = JobSpec(
            name=request.name or request.id or task.name,
            task=task.name,
            kwargs=request.kwargs,
            trigger=trigger_spec,
            max_instances=request.max_instances or self.settings.max_instances,
            coalesce=self.settings.coalesce if request.coalesce is None else request.coalesce,
            misfire_grace_time=request.misfire_grace_time or self.settings.misfire_grace_time,
        )
        return spec, self._first_fire(trigger_spec, trigger, spec.misfire_grace_time)

    def create(self, request: JobCreate) -> JobRecord:
        spec, first = self._spec(request)
        job_id = request.id or uuid.uuid4().hex
        try:
            self.store.jobs.insert(job_id, spec.task, spec.to_json(),
                                   None if request.paused else first,
                                   max_jobs=self.settings.max_jobs)
        except JobExists:
            raise Conflict(f"a job with id {job_id!r} already exists") from None
        record = self.get(job_id)  # before the wake-up: a job due now may fire and leave at once
        self.scheduler.jobs_changed()
        return record

    def update(self, job_id: str, patch: JobPatch) -> JobRecord:
        changes = patch.model_dump(exclude_unset=True)
        if not changes:
            raise InvalidRequest.field("body", "name at least one field to change")
        nulls = [k for k, v in changes.items() if v is None]
        if nulls:
            raise invalid([{"field": k, "message": "must not be null"} for k in nulls])

        def change(record: JobRecord, spec: JobSpec) -> tuple[JobSpec, datetime | None]:
            task = resolve_task(spec.task)
            data = spec.to_json()
            data.update({k: v for k, v in changes.items() if k != "trigger"})
            problems: list[dict[str, str]] = []  # report every bad field at once
            if "kwargs" in changes:
                collect(problems, lambda: validate_kwargs(
                    task, changes["kwargs"], self.settings.kwargs_max_bytes))
            if "trigger" in changes:
                collect(problems, lambda: self._trigger(changes["trigger"]))
            if problems:
                raise invalid(problems)
            next_run = record.next_run_time
            if "trigger" in changes:
                trigger_spec, trigger = self._trigger(changes["trigger"])
                data["trigger"] = trigger_spec
                first = self._first_fire(trigger_spec, trigger, data["misfire_grace_time"])
                if next_run is not None:  # a paused job stays paused with its new trigger
                    next_run = first
            return JobSpec.from_json(data), next_run

        return self._compare_and_set(job_id, change)

    def pause(self, job_id: str) -> JobRecord:
        return self._compare_and_set(job_id, lambda record, spec: (spec, None))

    def resume(self, job_id: str) -> JobRecord:
        def change(record: JobRecord, spec: JobSpec) -> tuple[JobSpec, datetime | None]:
            if record.next_run_time is not None:
                return spec, record.next_run_time
            trigger = self._trigger(spec.trigger)[1]
            now = utcnow()
            first = trigger.get_next_fire_time(None, now)
            late = first is not None and (now - first).total_seconds() > (
                spec.misfire_grace_time or 0)
            if first is None or late:
                raise Conflict(f"job {job_id} has no future fire time; give it a new trigger "
                               "or delete it")
            return spec, first

        return self._compare_and_set(job_id, change)

    def delete(self, job_id: str) -> None:
        if unstorable(job_id) or not self.store.jobs.delete(job_id):
            raise NotFound(f"no job with id {job_id!r}")
        self.scheduler.jobs_changed()

    def run_now(self, job_id: str) -> Run:
        """Start a run of the job's task with its arguments now; the schedule is unchanged."""
        record = self._get_record(job_id)
        try:
            task = registry.get(record.task)
        except UnknownTask:
            raise Conflict(f"job {job_id}'s task {record.task!r} is not registered here") \
                from None
        return self.runs.queue(task, dict(record.spec.get("kwargs") or {}), utcnow(),
                               job_id=job_id)

    def ensure(self, request: JobCreate) -> JobRecord:
        """Create the job, or bring an existing one with the same id to this definition
        (config-declared and built-in jobs; idempotent across processes starting at once)."""
        assert request.id is not None
        existing = self.store.jobs.get(request.id)
        if existing is None:
            try:
                return self.create(request)
            except Conflict:
                existing = self.store.jobs.get(request.id)
                if existing is None:
                    raise
        wanted, first = self._spec(request)
        current = existing.spec
        if _comparable(current) == _comparable(wanted.to_json()):
            return existing

        def replace(record: JobRecord, spec: JobSpec) -> tuple[JobSpec, datetime | None]:
            same_trigger = _comparable(spec.to_json())["trigger"] == \
                _comparable(wanted.to_json())["trigger"]
            if same_trigger:  # keep the phase and pause state it already has
                return JobSpec(**{**wanted.to_json(), "trigger": spec.trigger}), \
                    record.next_run_time
            return wanted, (None if record.next_run_time is None else first)

        return self._compare_and_set(request.id, replace)

    # -- reads ------------------------------------------------------------------------------
    def get(self, job_id: str) -> JobRecord:
        return self._get_record(job_id)

    def find(self, *, task: str | None, paused: bool | None, limit: int,
             cursor: str | None) -> tuple[list[JobRecord], str | None]:
        after = _decode_cursor(cursor) if cursor else None
        if unstorable(task):
            return [], None
        items = self.store.jobs.page(task=task, paused=paused, limit=limit, after=after)
        next_cursor = None
        if len(items) == limit:
            next_cursor = _encode_cursor(self.store.jobs.key(items[-1]))
        return items, next_cursor

    def views(self, records: list[JobRecord]) -> list[dict[str, Any]]:
        """The jobs as every entry point shows them: with their last run (one query for all)
        and why this process would not fire them, if it would not."""
        last = self.store.runs.last_runs([r.id for r in records])
        return [job_view(r, last.get(r.id), self.problem(r)) for r in records]

    def problem(self, record: JobRecord) -> str | None:
        """Why this process would not fire the job, if it would not."""
        broken = self.scheduler.jobstore.broken.get(record.id)
        if broken:
            return broken
        if record.task not in registry:
            return f"task {record.task!r} is not registered in this deployment; fires are skipped"
        return None

    # -- helpers ----------------------------------------------------------------------------
    def _get_record(self, job_id: str) -> JobRecord:
        record = None if unstorable(job_id) else self.store.jobs.get(job_id)
        if record is None:
            raise NotFound(f"no job with id {job_id!r}")
        return record

    def _compare_and_set(
        self, job_id: str,
        change: Callable[[JobRecord, JobSpec], tuple[JobSpec, datetime | None]],
    ) -> JobRecord:
        for _ in range(MAX_CAS_ATTEMPTS):
            record = self._get_record(job_id)
            try:
                spec = JobSpec.from_json(record.spec)
            except (KeyError, TypeError, ValueError):
                raise Conflict(f"job {job_id}'s stored definition cannot be read") from None
            new_spec, next_run = change(record, spec)
            if self.store.jobs.update(job_id, new_spec.task, new_spec.to_json(), next_run,
                                      expected_version=record.version):
                updated = self._get_record(job_id)  # before the wake-up, as in create()
                self.scheduler.jobs_changed()
                return updated
        raise Conflict(f"job {job_id} is being changed by others; try again")


def _comparable(spec: dict[str, Any]) -> dict[str, Any]:
    """A spec without the start date an interval trigger resolves when it is created."""
    trigger = dict(spec.get("trigger") or {})
    if trigger.get("type") == "interval":
        trigger.pop("start_date", None)
    return {**spec, "trigger": trigger}


def _encode_cursor(key: JobKey) -> str:
    return base64.urlsafe_b64encode(json.dumps(list(key)).encode()).decode().rstrip("=")


def _decode_cursor(cursor: str) -> JobKey:
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
        nrt, job_id = json.loads(raw)
        if (nrt is None or isinstance(nrt, float | int)) and isinstance(job_id, str) \
                and not unstorable(job_id):
            return (None if nrt is None else float(nrt)), job_id
    except (ValueError, TypeError, UnicodeDecodeError):
        pass
    raise InvalidRequest.field("cursor", "is not a cursor this API gave out")
