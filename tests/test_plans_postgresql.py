"""Every statement the store sends about runs and jobs searches an index on PostgreSQL, in the
generic plan a prepared statement can come to, on tables of a size where it matters.

psycopg prepares a statement on the server once a connection has run it five times, and the
server may then plan it once for every value, a generic plan: a condition whose index only a
value would have chosen (a partial index on a state given as a parameter) finds none, and the
statement reads through every row. The runs table grows without end (a million rows in
bench/scale.py) and the jobs table to thousands, so here each table holds a history (20,000
finished runs, 2,000 jobs), analysed, and each statement is planned generically with the
planner free to choose: none may read its table through. Only a statement bounded by a value
(the jobs due up to now, the dashboard's last hour) may, in its generic plan, if its plan for
that value searches and costs less: the server then keeps planning it per value.
"""

from __future__ import annotations

import re
from datetime import timedelta
from typing import Any

import pytest
import sqlalchemy as sa

from scheduler_app.errors import AlreadyQueued
from scheduler_app.store import RunState
from scheduler_app.store.overview import OverviewQueries
from scheduler_app.store.schema import jobs as jobs_table
from scheduler_app.store.schema import runs as runs_table
from scheduler_app.timeutil import utcnow
from tests.conftest import captured_statements, custom_plan, generic_plan, new_run

TASKS = {"demo.echo", "demo.sleep"}


def exercise(store) -> None:
    """What a cluster's nodes ask of the runs table in a day: create (plain, unique, with a
    concurrency key, already running, of a job), claim (counted and by id), progress, logs,
    cancel, settle, hand back, lost nodes, pruning, lists, the metrics' gauges, the dashboard's
    overview."""
    runs = store.runs
    ago = utcnow() - timedelta(seconds=2)
    first = runs.create(new_run(scheduled_for=ago))
    runs.create(new_run(unique_key="nightly"))
    with pytest.raises(AlreadyQueued):  # the unique key's holder is looked up
        runs.create(new_run(unique_key="nightly"))
    runs.create(new_run(concurrency_key="k", concurrency_limit=1))
    for run in runs.claim("node-a", 5, {"demo.sleep": 1}, tasks=TASKS):
        runs.finish(run.id, "node-a", RunState.SUCCEEDED)
    running = runs.create(new_run(), running_on="node-a")
    runs.claim_named(running.id, "node-a", {"demo.echo"})
    runs.request_cancel(running.id)
    of_job = runs.create(new_run(job_id="job-1", fire_time=utcnow()), running_on="node-a")
    runs.save_progress(of_job.id, 1, 2, "half way")
    runs.add_logs(of_job.id, [(utcnow(), "INFO", "a line")])
    runs.logs(of_job.id)
    runs.cancel_requested_ids("node-a")
    runs.running_with_key("k")
    runs.last_runs(["job-1"])
    runs.next_due_time()
    runs.hand_back(of_job.id, "node-a")
    runs.claim_run(first.id, "node-a")
    runs.create(new_run(), running_on="node-lost")
    runs.settle_lost(utcnow() + timedelta(seconds=1), ["node-lost"])
    runs.prune(utcnow() - timedelta(days=30))  # the look for what to prune; the history stays
    for filters in ({}, {"state": RunState.QUEUED}, {"task": "demo.echo"}, {"job_id": "job-1"}):
        runs.find(limit=10, **filters)
    store.stats.snapshot(lease_seconds=30)
    overview = OverviewQueries(store.db)  # the dashboard's
    overview.active_counts()
    overview.finished_counts(utcnow() - timedelta(hours=1))
    overview.per_minute(utcnow())
    overview.recent_failures(utcnow() - timedelta(hours=1))


def statements_about(store, table: str, work) -> dict[str, Any]:
    """The distinct statements naming ``table`` that ``work()`` sends, each with the parameters
    of its first run; the table is analysed after, so its plans come from its statistics, not
    from whether autovacuum got to it."""
    statements: dict[str, Any] = {}
    for sql, params in captured_statements(store, work):
        if re.search(rf"\b{table}\b", sql):
            statements.setdefault(sql, params[0] if isinstance(params, list) else params)
    with store.db.engine.connect() as conn:
        conn.exec_driver_sql(f"ANALYZE {table}")
        conn.commit()
    return statements


def add_run_history(store, count: int) -> None:
    """``count`` finished runs in one statement: a third of a job's, a tenth failed, spread
    over the past hours, as a long-lived database holds them."""
    with store.db.engine.begin() as conn:
        conn.execute(sa.text(f"""
            INSERT INTO {runs_table.name} (task, kwargs, job_id, fire_time, state, attempt,
                max_attempts, retry_backoff, cancel_requested, errors, node, created_at,
                scheduled_for, started_at, finished_at)
            SELECT CASE WHEN mod(i, 2) = 0 THEN 'demo.echo' ELSE 'demo.sleep' END, '{{}}',
                CASE WHEN mod(i, 3) = 0 THEN 'job-' || mod(i, 50) END,
                CASE WHEN mod(i, 3) = 0 THEN now() - make_interval(secs => i) END,
                CASE WHEN mod(i, 10) = 0 THEN 'failed' ELSE 'succeeded' END, 1, 1, 2.0, false,
                '[]', 'node-b', now() - make_interval(secs => i),
                now() - make_interval(secs => i), now() - make_interval(secs => i),
                now() - make_interval(secs => i - 1)
            FROM generate_series(1, :count) AS i"""), {"count": count})


def add_jobs(store, count: int) -> None:
    """``count`` jobs, one in ten paused, due over the next hours."""
    with store.db.engine.begin() as conn:
        conn.execute(sa.text(f"""
            INSERT INTO {jobs_table.name} (id, task, spec, next_run_time, version, created_at,
                updated_at)
            SELECT 'bulk-' || i, CASE WHEN mod(i, 2) = 0 THEN 'demo.echo' ELSE 'demo.sleep' END,
                '{{}}', CASE WHEN mod(i, 10) = 0 THEN NULL
                        ELSE extract(epoch FROM now()) + i END, 1, now(), now()
            FROM generate_series(1, :count) AS i"""), {"count": count})


def test_no_statement_about_runs_reads_the_table_through(pg_store):
    add_run_history(pg_store, 20_000)
    statements = statements_about(pg_store, runs_table.name, lambda: exercise(pg_store))
    assert len(statements) >= 25, list(statements)  # the exercise reached the store
    for sql, params in statements.items():
        assert searches(pg_store, sql, params, runs_table)


def test_no_statement_about_jobs_reads_the_table_through(pg_store):
    """The scheduler's look for due jobs, a job's fire and edits, the lists by task and paused.
    Not ``all()`` and ``delete_all()``, which read every job by what they are for."""
    jobs = pg_store.jobs
    now = utcnow()

    def work() -> None:
        for i in range(3):
            jobs.insert(f"job-{i}", "demo.echo", {"trigger": "interval"},
                        now + timedelta(seconds=i))
        jobs.insert("paused", "demo.sleep", {"trigger": "interval"}, None)
        record = jobs.get("job-0")
        assert record is not None
        jobs.advance("job-0", now + timedelta(minutes=1), record.version)
        jobs.update("job-1", "demo.echo", {"trigger": "interval"}, None, expected_version=1)
        jobs.due(now + timedelta(seconds=5))
        jobs.next_run_time()
        first = jobs.page(limit=2)
        jobs.page(limit=2, after=jobs.key(first[-1]))
        jobs.page(task="demo.echo", limit=10)
        jobs.page(paused=True, limit=10)
        jobs.page(paused=True, limit=10, after=(None, "job-1"))
        jobs.delete("job-2")

    add_jobs(pg_store, 2_000)
    statements = statements_about(pg_store, jobs_table.name, work)
    assert len(statements) >= 9, list(statements)
    for sql, params in statements.items():
        assert searches(pg_store, sql, params, jobs_table)


def searches(store, sql: str, params: Any, table: sa.Table) -> bool:
    """Whether PostgreSQL runs ``sql`` as a search of ``table``, once prepared: its generic plan
    searches an index, or, where only a value can narrow it (the due jobs, up to now: a
    generic plan guesses a third of the table), the plan for the value searches one and costs
    less than the generic plan, so the server keeps planning it for each value (it settles on
    a generic plan only when that costs no more than the plans for the values did)."""
    generic = generic_plan(store, sql, seqscan=True)
    if not reads_through(generic, table):
        return True
    if not RANGE_ON_A_VALUE.search(generic):
        # A state, a node, a key: what the statement looks for is fixed, and named as a
        # literal (schema.IS_QUEUED, IS_RUNNING, IS_ACTIVE) no value is needed to find its index.
        raise AssertionError(f"{sql}\n  generic: {generic}")
    custom = custom_plan(store, sql, params)
    if not reads_through(custom, table) and cost(custom) < cost(generic):
        return True
    raise AssertionError(f"{sql}\n  generic: {generic}\n  for {params}: {custom}")


# A comparison of a column with a parameter's value as a bound (``next_run_time <= $1``).
RANGE_ON_A_VALUE = re.compile(r"[<>]=? \(?\$\d")


def cost(plan: str) -> float:
    """A plan's total estimated cost (its first node's)."""
    found = re.search(r"cost=[\d.]+\.\.([\d.]+)", plan)
    assert found is not None, plan
    return float(found.group(1))


def active_only(table: sa.Table) -> frozenset[str]:
    """A table's partial indexes of active rows (queued, running runs): they hold only the few
    rows not yet finished, so walking one whole is a search in itself. Not those of every run
    with a job or a finish time, which hold most of the table."""
    return frozenset(
        index.name for index in table.indexes
        if index.dialect_options["postgresql"]["where"] is not None
        and "state" in str(index.dialect_options["postgresql"]["where"]))


def reads_through(plan: str, table: sa.Table) -> bool:
    """Whether a plan (``generic_plan``'s lines) reads ``table`` through: a sequential scan,
    or a scan of a whole index over its rows (no condition on it, and not an index of the
    active rows only), unless a ``LIMIT`` on top stops it early (a page of the newest runs
    walks the primary key backwards, as it should)."""
    indexes = {index.name for index in table.indexes} | {f"{table.name}_pkey"}
    exempt = active_only(table)
    lines = plan.split(" / ")
    limited = lines[0].startswith("Limit")
    for i, line in enumerate(lines):
        node = line.removeprefix("->").strip()
        if node.startswith(f"Seq Scan on {table.name}"):
            return True
        scan = re.match(r"(?:Index Scan(?: Backward)?|Index Only Scan(?: Backward)?) using "
                        rf"(\w+) on {table.name}\b|Bitmap Index Scan on (\w+)", node)
        if scan is None:
            continue
        index = scan.group(1) or scan.group(2)
        if index not in indexes or index in exempt or limited:
            continue
        details = []
        for following in lines[i + 1:]:
            if following.startswith("->"):
                break
            details.append(following)
        if not any(d.startswith("Index Cond") for d in details):
            return True
    return False


def reads_through_runs(plan: str) -> bool:
    return reads_through(plan, runs_table)


def test_the_plan_check_tells_a_search_from_a_read_through() -> None:
    searched = ("Index Scan using ix_scheduler_runs_job on scheduler_runs  (cost=0.14..8.16) / "
                "Index Cond: ((job_id)::text = ANY ($1))")
    filtered = ("Index Scan using scheduler_runs_pkey on scheduler_runs  (cost=0.29..80.1) / "
                "Filter: (lower((job_id)::text) = ANY ($1))")
    page = ("Limit  (cost=0.29..1.01) / ->  Index Scan Backward using scheduler_runs_pkey on "
            "scheduler_runs  (cost=0.29..720.3)")
    assert not reads_through_runs(searched)
    assert reads_through_runs(filtered)
    assert reads_through_runs("Seq Scan on scheduler_runs  (cost=10000000000.00..1)")
    assert not reads_through_runs(page)
    assert "ix_scheduler_runs_state_due" in active_only(runs_table)
    assert "ix_scheduler_runs_finished" not in active_only(runs_table)
    assert not reads_through_runs("Index Only Scan using ix_scheduler_runs_state_due on "
                                  "scheduler_runs  (cost=0.14..8.15 rows=1 width=8)")
    whole = ("Aggregate  (cost=18.60..18.61) / ->  Bitmap Heap Scan on scheduler_runs  "
             "(cost=8.20..18.60) / Recheck Cond: (concurrency_key IS NOT NULL) / Filter: "
             "(lower((concurrency_key)::text) = ($1)::text) / ->  Bitmap Index Scan on "
             "ix_scheduler_runs_concurrency  (cost=0.00..8.20)")
    assert reads_through_runs(whole)
