"""GET /metrics: Prometheus exposition of the whole cluster, read from the database.

One custom collector reads ``store.stats.snapshot()`` at scrape time. Counters and histograms
are cumulative totals kept in the ``stats`` table, written in the same transaction as the run
changes they count (``store/stats.py`` says why prometheus_client's in-process metrics would
be wrong here); gauges are counted from the runs, nodes, jobs and alerts tables. So whichever
gunicorn worker or host answers a scrape, it tells the same cluster-wide truth, and neither a
restart nor pruning old runs makes a counter go back. Scrape any one node, or all of them behind one
load balancer address; summing the answers of several nodes would count everything twice.

Per-process metrics (prometheus_client's process and platform collectors) are deliberately
absent: they would change with the worker that answers, the one thing this endpoint must not
do. The node that answered is named in the ``X-Scheduler-Node`` response header instead.

prometheus_client does the exposition (text format, or OpenMetrics when the scraper asks for
it); only the collector is written here.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Mapping

from flask import Blueprint, Flask, Response, current_app, request
from prometheus_client.exposition import choose_encoder
from prometheus_client.metrics_core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.registry import CollectorRegistry
from prometheus_client.utils import floatToGoString
from sqlalchemy.exc import SQLAlchemyError

from . import security
from .api.errors import error_response
from .services import services
from .settings import ROLES
from .store.alerts import DELIVERED, GIVEN_UP, PENDING
from .store.stats import Histogram, Snapshot, StatsStore
from .tasks import registry as task_registry

EXTENSION_KEY = "scheduler_app.metrics"
ALERT_STATES = (PENDING, DELIVERED, GIVEN_UP)

bp = Blueprint("metrics", __name__)


class DatabaseCollector:
    """A prometheus_client collector whose every sample comes from one database snapshot."""

    def __init__(self, stats: StatsStore, lease_seconds: float,
                 task_names: Callable[[], Iterable[str]]) -> None:
        self.stats = stats
        self.lease_seconds = lease_seconds
        self.task_names = task_names

    def collect(self) -> Iterator[Metric]:
        snap = self.stats.snapshot(self.lease_seconds)
        yield from _counters(snap)
        yield _histogram("scheduler_run_duration_seconds",
                         "Duration of each attempt that ended on its node (succeeded, failed, "
                         "cancelled or failed and retried), by task.", snap.run_duration)
        yield _histogram("scheduler_run_queue_wait_seconds",
                         "Time from a run being due to a node starting it, per attempt, by "
                         "task.", snap.queue_wait)
        yield from self._gauges(snap)

    def _gauges(self, snap: Snapshot) -> Iterator[Metric]:
        # Every known task and role gets a sample, 0 included, so an alert on a gauge sees a
        # zero rather than a missing series.
        tasks = sorted({*self.task_names(), *snap.queued, *snap.running})
        queued = GaugeMetricFamily("scheduler_runs_queued",
                                   "Runs waiting in the queue now (due, or scheduled for "
                                   "later), by task.", labels=["task"])
        running = GaugeMetricFamily("scheduler_runs_running", "Runs executing now, by task.",
                                    labels=["task"])
        for task in tasks:
            queued.add_metric([task], snap.queued.get(task, 0))
            running.add_metric([task], snap.running.get(task, 0))
        yield queued
        yield running
        nodes = GaugeMetricFamily("scheduler_nodes_alive",
                                  "Nodes (processes holding a scheduler) whose heartbeat is "
                                  "within the lease, by role.", labels=["role"])
        for role in sorted({*ROLES, *snap.nodes_alive}):
            nodes.add_metric([role], snap.nodes_alive.get(role, 0))
        yield nodes
        jobs = GaugeMetricFamily("scheduler_jobs", "Jobs in the job table: scheduled (with a "
                                 "next fire time) or paused.", labels=["state"])
        jobs.add_metric(["scheduled"], snap.jobs_scheduled)
        jobs.add_metric(["paused"], snap.jobs_paused)
        yield jobs
        alerts = GaugeMetricFamily(
            "scheduler_alerts", "Webhook alerts in the database, by state: pending (waiting "
            "for the receiver), delivered or given_up (kept as long as their run).",
            labels=["state"])
        for state in ALERT_STATES:
            alerts.add_metric([state], snap.alerts.get(state, 0))
        yield alerts


def _counters(snap: Snapshot) -> Iterator[Metric]:
    finished = CounterMetricFamily("scheduler_runs_finished",
                                   "Runs that reached a final state, by task and state.",
                                   labels=["task", "state"])
    for (task, state), count in sorted(snap.runs_finished.items()):
        finished.add_metric([task, state], count)
    yield finished
    yield _by_task(CounterMetricFamily(
        "scheduler_misfires", "Job fires skipped because they came later than the job's "
        "misfire_grace_time, by task.", labels=["task"]), snap.misfires)
    yield _by_task(CounterMetricFamily(
        "scheduler_node_lost", "Attempts settled as NodeLost (their node stopped heartbeating "
        "while running them), by task.", labels=["task"]), snap.node_lost)
    yield _by_task(CounterMetricFamily(
        "scheduler_runs_deduplicated", "Runs not made because a queued or running run held "
        "their unique key (an enqueue answered already_queued, or a job's fire skipped), by "
        "task.", labels=["task"]), snap.deduplicated)
    yield _by_task(CounterMetricFamily(
        "scheduler_runs_throttled", "Runs a claim left queued because their rate limit had "
        "no slot (each counted once, however long it waits), by task.", labels=["task"]),
        snap.throttled)


def _by_task(family: CounterMetricFamily, counts: Mapping[str, int]) -> CounterMetricFamily:
    for task, count in sorted(counts.items()):
        family.add_metric([task], count)
    return family


def _histogram(name: str, documentation: str,
               per_task: Mapping[str, Histogram]) -> HistogramMetricFamily:
    family = HistogramMetricFamily(name, documentation, labels=["task"])
    for task, histogram in sorted(per_task.items()):
        buckets = [(floatToGoString(bound), count)  # type: ignore[no-untyped-call]
                   for bound, count in histogram.buckets]
        family.add_metric([task], buckets, histogram.sum)
    return family


@bp.get("/metrics")
def metrics() -> Response:
    security.authorize()
    registry: CollectorRegistry = current_app.extensions[EXTENSION_KEY]
    encode, content_type = choose_encoder(request.headers.get("Accept", ""))
    try:
        body = encode(registry)
    except SQLAlchemyError as exc:
        return error_response(503, "unavailable", f"the database did not answer: {exc}")
    response = Response(body, content_type=content_type)
    response.headers["X-Scheduler-Node"] = services().scheduler.node.id
    response.headers["Cache-Control"] = "no-store"
    return response


def init_app(app: Flask) -> None:
    svc = services(app)
    registry = CollectorRegistry(auto_describe=False)
    registry.register(DatabaseCollector(
        svc.store.stats, svc.settings.lease_seconds,
        lambda: (task.name for task in task_registry.all())))
    app.extensions[EXTENSION_KEY] = registry
