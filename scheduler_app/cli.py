"""Command line: ``flask scheduler tasks|jobs|runs|db|worker|nodes ...`` in a host app (``db``:
``cli_db.py``); the standalone service also keeps them at the top level (``flask --app wsgi
jobs list``).

Thin click commands over the same services the HTTP API uses, so a job added here is validated
exactly like one posted to ``/api/jobs``. Output is JSON for single objects (pipe it to ``jq``)
and aligned columns for lists. (A top-level ``run`` command is impossible: Flask's development
server owns that name.)
"""

from __future__ import annotations

import json
import signal
import sys
import threading
import time
from typing import Any

import click
from flask import Flask, current_app
from flask.cli import AppGroup, with_appcontext

from .cli_db import db_cli
from .errors import ServiceError
from .services import services
from .services.models import JobCreate, JobPatch, RunCreate, parse_model
from .services.views import log_view, node_view, run_view, task_view
from .store import Run
from .tasks import registry

tasks_cli = AppGroup("tasks", help="Registered tasks: list them, run one.")
jobs_cli = AppGroup("jobs", help="Scheduled jobs: list, show, add, pause, resume, remove, run.")
runs_cli = AppGroup("runs", help="Runs: list, show, cancel, read logs.")
scheduler_cli = AppGroup("scheduler", help="Background tasks, jobs, runs and nodes.")
for _group in (tasks_cli, jobs_cli, runs_cli, db_cli):
    scheduler_cli.add_command(_group)


@with_appcontext
def _require_schema() -> None:
    """Before any command that reads or writes runs and jobs: one line telling the operator
    to upgrade, instead of a database traceback, when the schema is not there yet."""
    problem = services().store.db.schema_problem()
    if problem is not None:
        raise click.ClickException(problem)


for _group in (tasks_cli, jobs_cli, runs_cli):
    _group.callback = _require_schema


def init_app(app: Flask) -> None:
    """``flask scheduler ...``: one group, so nothing clashes with the host's commands (its
    own ``db`` from Flask-Migrate, say)."""
    app.cli.add_command(scheduler_cli)


def add_top_level_commands(app: Flask) -> None:
    """The standalone service's commands as they always were: ``flask --app wsgi jobs ...``."""
    for group in (tasks_cli, jobs_cli, runs_cli, db_cli):
        app.cli.add_command(group)


def _json(data: Any) -> None:
    click.echo(json.dumps(data, indent=2, default=str))


def _json_arg(text: str | None, name: str) -> Any:
    if text is None:
        return None
    try:
        return json.loads(text)
    except ValueError as exc:
        raise click.BadParameter(f"not valid JSON: {exc}", param_hint=name) from None


def _table(rows: list[list[Any]], headers: list[str]) -> None:
    cells = [headers] + [["" if c is None else str(c) for c in row] for row in rows]
    widths = [max(len(row[i]) for row in cells) for i in range(len(headers))]
    for row in cells:
        click.echo("  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip())


def _fail(exc: ServiceError) -> None:
    if isinstance(exc.details, list) and exc.details:
        raise click.ClickException("\n  ".join(
            ["invalid input:"] + [f"{d.get('field')}: {d.get('message')}" for d in exc.details]))
    raise click.ClickException(exc.message)


def _call(fn: Any, *args: Any, **kwargs: Any) -> Any:
    try:
        return fn(*args, **kwargs)
    except ServiceError as exc:
        _fail(exc)


# -- tasks --------------------------------------------------------------------------------------
@tasks_cli.command("list")
def tasks_list() -> None:
    """List registered tasks and their parameters."""
    rows = []
    for task in registry.all():
        params = ", ".join(task.json_schema().get("properties", {}))
        rows.append([task.name, params, task.description])
    _table(rows, ["TASK", "PARAMETERS", "DESCRIPTION"])


@tasks_cli.command("show")
@click.argument("name")
def tasks_show(name: str) -> None:
    """Show one task with the JSON Schema of its arguments."""
    task = next((t for t in registry.all() if t.name == name), None)
    if task is None:
        raise click.ClickException(f"unknown task {name!r}")
    _json(task_view(task))


@tasks_cli.command("run")
@click.argument("task")
@click.option("--kwargs", "kwargs_text", default="{}", help="Keyword arguments as a JSON object.")
@click.option("--at", "run_at", default=None, help="ISO 8601 time with offset; default now.")
@click.option("--wait", is_flag=True, help="Show progress until the run ends; exit 0 only on "
              "success.")
@click.option("--unique", is_flag=True, default=None,
              help="At most one queued or running run of TASK with these kwargs.")
@click.option("--unique-key", default=None, help="At most one queued or running run with this "
              "key; a duplicate fails naming the run holding it.")
@click.option("--concurrency-key", default=None, help="At most --concurrency-limit runs with "
              "this key run at once.")
@click.option("--concurrency-limit", type=int, default=None, help="Default 1.")
@click.option("--rate-limit", default=None, help="At most this many starts per sliding "
              "window: <count>/<s|m|h>, e.g. 100/m.")
@click.option("--rate-key", default=None, help="The rate limit's partition (default: TASK).")
def tasks_run(task: str, kwargs_text: str, run_at: str | None, wait: bool,
              **controls: Any) -> None:
    """Start a run of TASK. Without a running server or worker, --wait executes it here. The
    concurrency options override the task's own for this run."""
    body = {"task": task, "kwargs": _json_arg(kwargs_text, "--kwargs"),
            **{name: value for name, value in controls.items() if value is not None}}
    if run_at:
        body["run_at"] = run_at
    svc = services()
    run = _call(svc.runs.submit, _call(parse_model, RunCreate, body))
    if not wait:
        _json(run_view(run))
        return
    started_here = _ensure_executor()
    try:
        final = _follow_progress(run)
    finally:
        if started_here:
            svc.scheduler.shutdown()
    _json(run_view(final))
    sys.exit(0 if final.state.value == "succeeded" else 1)


@tasks_cli.command("run-batch")
@click.argument("runs_file", type=click.File("r"))
def tasks_run_batch(runs_file: Any) -> None:
    """Start many runs at once, all or none, from RUNS_FILE ("-": stdin): JSON lines, each a
    run as POST /api/runs takes it ({"task": ..., "kwargs": {...}}). Prints their ids in the
    file's order; a bad line, a taken unique key or a full queue stores none of them."""
    items = []
    for number, line in enumerate(runs_file, start=1):
        if not line.strip():
            continue
        try:
            items.append(json.loads(line))
        except ValueError as exc:
            raise click.BadParameter(f"line {number} is not valid JSON: {exc}",
                                     param_hint="RUNS_FILE") from None
    created = _call(services().batch.submit, {"runs": items})
    _json({"ids": [run.id for run in created]})


def _ensure_executor() -> bool:
    """Start a node in this process when no live node can execute runs."""
    svc = services()
    lease = svc.settings.lease_seconds
    if any(n.alive(lease) and n.capacity > 0 for n in svc.store.nodes.all()):
        return False
    if not svc.settings.executes:
        raise click.ClickException("no live worker node, and this process's role cannot "
                                   "execute runs")
    click.echo("no running node found: executing here", err=True)
    svc.extension.start(app=current_app._get_current_object(),  # type: ignore[attr-defined]
                        as_worker=True)
    return True


def _follow_progress(run: Run) -> Run:
    svc = services()
    with click.progressbar(length=100, label=f"run {run.id} {run.task}",
                           file=sys.stderr, show_eta=False) as bar:
        shown = 0
        while True:
            current = svc.store.runs.get(run.id)
            assert current is not None
            percent = 0
            if current.progress_total:
                percent = int(min(100, 100 * (current.progress_done or 0)
                                  / current.progress_total))
            if current.is_final and current.state.value == "succeeded":
                percent = 100
            if percent > shown:
                bar.update(percent - shown)
                shown = percent
            if current.is_final:
                return current
            time.sleep(0.2)


# -- jobs ---------------------------------------------------------------------------------------
@jobs_cli.command("list")
@click.option("--task", default=None)
@click.option("--paused/--active", default=None)
@click.option("--limit", default=500, show_default=True)
def jobs_list(task: str | None, paused: bool | None, limit: int) -> None:
    """List jobs by next run time."""
    svc = services()
    items, _ = _call(svc.jobs.find, task=task, paused=paused, limit=limit, cursor=None)
    rows = []
    for view in svc.jobs.views(items):
        rows.append([view["id"], view["task"], view["trigger"]["description"],
                     view["next_run_time"] or "paused",
                     (view["last_run"] or {}).get("state", "-"), view["problem"] or ""])
    _table(rows, ["ID", "TASK", "TRIGGER", "NEXT RUN", "LAST", "PROBLEM"])


@jobs_cli.command("show")
@click.argument("job_id")
def jobs_show(job_id: str) -> None:
    """Show one job as JSON."""
    svc = services()
    record = _call(svc.jobs.get, job_id)
    _json(svc.jobs.views([record])[0])


@jobs_cli.command("add")
@click.argument("task")
@click.option("--id", "job_id", default=None, help="Job id (generated if absent).")
@click.option("--name", default=None)
@click.option("--kwargs", "kwargs_text", default="{}", help="Keyword arguments as JSON.")
@click.option("--cron", default=None, help='Crontab expression, e.g. "*/5 * * * *".')
@click.option("--every", "every", type=float, default=None, help="Interval in seconds.")
@click.option("--at", "run_date", default=None, help="Run once at this ISO 8601 time.")
@click.option("--trigger", "trigger_text", default=None, help="A trigger object as JSON.")
@click.option("--timezone", default=None, help="Time zone for --cron.")
@click.option("--max-instances", type=int, default=None)
@click.option("--paused", is_flag=True)
def jobs_add(task: str, job_id: str | None, name: str | None, kwargs_text: str,
             cron: str | None, every: float | None, run_date: str | None,
             trigger_text: str | None, timezone: str | None, max_instances: int | None,
             paused: bool) -> None:
    """Schedule TASK with one of --cron, --every, --at or --trigger."""
    given = [x for x in (cron, every, run_date, trigger_text) if x is not None]
    if len(given) != 1:
        raise click.UsageError("give exactly one of --cron, --every, --at, --trigger")
    if cron is not None:
        trigger: Any = {"type": "cron", "expr": cron}
        if timezone:
            trigger["timezone"] = timezone
    elif every is not None:
        trigger = {"type": "interval", "seconds": every}
    elif run_date is not None:
        trigger = {"type": "date", "run_date": run_date}
    else:
        trigger = _json_arg(trigger_text, "--trigger")
    body: dict[str, Any] = {"task": task, "kwargs": _json_arg(kwargs_text, "--kwargs"),
                            "trigger": trigger, "paused": paused}
    for key, value in (("id", job_id), ("name", name), ("max_instances", max_instances)):
        if value is not None:
            body[key] = value
    svc = services()
    record = _call(svc.jobs.create, _call(parse_model, JobCreate, body))
    _json(svc.jobs.views([record])[0])


@jobs_cli.command("update")
@click.argument("job_id")
@click.option("--patch", "patch_text", required=True, help="Fields to change, as JSON.")
def jobs_update(job_id: str, patch_text: str) -> None:
    """Change a job's name, kwargs, trigger or options."""
    svc = services()
    _call(svc.jobs.get, job_id)
    record = _call(svc.jobs.update, job_id,
                   _call(parse_model, JobPatch, _json_arg(patch_text, "--patch")))
    _json(svc.jobs.views([record])[0])


@jobs_cli.command("pause")
@click.argument("job_id")
def jobs_pause(job_id: str) -> None:
    """Pause a job: it does not fire until resumed."""
    record = _call(services().jobs.pause, job_id)
    click.echo(f"paused {record.id}")


@jobs_cli.command("resume")
@click.argument("job_id")
def jobs_resume(job_id: str) -> None:
    """Resume a paused job."""
    record = _call(services().jobs.resume, job_id)
    click.echo(f"resumed {record.id}; next run {record.next_run_time.isoformat()}")


@jobs_cli.command("remove")
@click.argument("job_id")
def jobs_remove(job_id: str) -> None:
    """Delete a job (runs already started go on)."""
    _call(services().jobs.delete, job_id)
    click.echo(f"removed {job_id}")


@jobs_cli.command("run")
@click.argument("job_id")
def jobs_run(job_id: str) -> None:
    """Run a job's task now; its schedule is unchanged."""
    _json(run_view(_call(services().jobs.run_now, job_id)))


# -- runs ---------------------------------------------------------------------------------------
@runs_cli.command("list")
@click.option("--state", default=None)
@click.option("--task", default=None)
@click.option("--job", "job_id", default=None)
@click.option("--limit", default=50, show_default=True)
def runs_list(state: str | None, task: str | None, job_id: str | None, limit: int) -> None:
    """List runs, newest first."""
    items, _ = _call(services().runs.find, state=state, task=task, job_id=job_id, limit=limit,
                     cursor=None)
    rows = []
    for run in items:
        view = run_view(run)
        percent = (view["progress"] or {}).get("percent")
        rows.append([view["id"], view["task"], view["state"], view["attempt"],
                     "" if percent is None else f"{percent:.0f}%", view["created_at"],
                     view["duration_s"], view["job_id"] or ""])
    _table(rows, ["ID", "TASK", "STATE", "ATTEMPT", "PROGRESS", "CREATED", "SECONDS", "JOB"])


@runs_cli.command("show")
@click.argument("run_id", type=int)
def runs_show(run_id: int) -> None:
    """Show one run as JSON."""
    _json(run_view(_call(services().runs.get, run_id)))


@runs_cli.command("cancel")
@click.argument("run_id", type=int)
def runs_cancel(run_id: int) -> None:
    """Cancel a queued run, or ask a running one to stop."""
    run = _call(services().runs.cancel, run_id)
    click.echo(f"run {run.id}: {run.state.value}, cancel requested")


@runs_cli.command("logs")
@click.argument("run_id", type=int)
@click.option("--follow", "-f", is_flag=True, help="Keep printing new lines until the run ends.")
def runs_logs(run_id: int, follow: bool) -> None:
    """Print a run's log lines."""
    svc = services()
    cursor: str | None = None
    while True:
        items, next_cursor = _call(svc.runs.logs, run_id, limit=500, cursor=cursor)
        for entry in items:
            line = log_view(entry)
            click.echo(f"{line['at']} {line['level']:<7} {line['message']}")
        if items:
            cursor = str(items[-1].id)
        if next_cursor:
            continue
        if not follow or svc.runs.get(run_id).is_final:
            if follow:  # one last read: lines flushed as the run finished
                for entry in svc.store.runs.logs(run_id, limit=500,
                                                 after_id=int(cursor) if cursor else None):
                    line = log_view(entry)
                    click.echo(f"{line['at']} {line['level']:<7} {line['message']}")
            return
        time.sleep(0.5)


# -- scheduler ----------------------------------------------------------------------------------
@scheduler_cli.command("worker")
def scheduler_worker() -> None:
    """Run a worker-only node: fires jobs and executes runs, serves no HTTP. Stops gracefully
    on SIGTERM or Ctrl-C (running tasks get SHUTDOWN_GRACE_SECONDS, then are handed back)."""
    _require_schema()
    app = current_app._get_current_object()  # type: ignore[attr-defined]
    svc = services(app)
    if not svc.settings.executes:
        raise click.ClickException("SCHEDULER_ROLE=web cannot execute runs; unset it or use "
                                   "worker")
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    svc.extension.start(app=app, as_worker=True)
    click.echo(f"worker node {svc.scheduler.node.id} started "
               f"({svc.settings.worker_threads} threads); Ctrl-C to stop", err=True)
    while not stop.wait(1.0):
        pass
    click.echo("stopping: waiting for running tasks", err=True)
    svc.scheduler.shutdown()


@scheduler_cli.command("nodes")
def scheduler_nodes() -> None:
    """List nodes with their heartbeats: alive, stopped (exited cleanly) or lost (silent past
    NODE_LEASE_SECONDS), as the dashboard says."""
    _require_schema()
    svc = services()
    rows = []
    for node in svc.store.nodes.all():
        view = node_view(node, svc.settings.lease_seconds)
        state = "alive" if view["alive"] else "stopped" if view["stopped_at"] else "lost"
        rows.append([view["id"], view["role"], state,
                     f"{view['running']}/{view['capacity']}", view["heartbeat_at"]])
    _table(rows, ["NODE", "ROLE", "STATE", "BUSY", "HEARTBEAT"])
