"""A rate limit held across a cluster (issue 13): ``rate_limit="60/m"`` on three hosts sharing
one PostgreSQL database, for three minutes.

Three gunicorn processes of this service (gunicorn.conf.py, one worker each, the default
DISPATCH_POLL_SECONDS), on a database created for the bench and dropped afterwards. More runs
of ``demo.echo`` with ``rate_limit: "60/m"`` than three minutes allow are sent at once,
round-robin over the hosts' APIs, so every host claims from one backlog for the whole
measurement. Then, from the runs table:

- no sliding 60 s window (one starting at every recorded start) holds more than 60 starts;
- the starts within the first ``--seconds`` after the first one reach at least 95 % of what the
  limit allows in that time (60 a minute, the first 60 at once);
- no attempt was used up by throttling: every run that started did so on its first attempt
  with no error recorded, and the runs still queued are on attempt 1 too;
- the starts are spread over the hosts.

    .venv/bin/python -m bench.rate_limit                # 3 minutes
    .venv/bin/python -m bench.rate_limit --seconds 60   # a shorter look
"""

from __future__ import annotations

import argparse
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta
from itertools import cycle
from typing import Any

import requests
import sqlalchemy as sa

from bench.cluster import host, scratch_database, wait_alive
from bench.run import Server
from scheduler_app.store import schema

RATE, PERIOD = 60, 60.0
HOSTS = 3


def send_backlog(servers: list[Server], count: int) -> list[int]:
    targets = cycle(servers)
    body = {"task": "demo.echo", "kwargs": {"value": 1}, "rate_limit": f"{RATE}/m"}

    def send(server: Server) -> int:
        response = requests.post(server.url + "/api/runs", json=body, timeout=30)
        if response.status_code != 202:
            raise RuntimeError(f"{response.status_code} {response.text[:200]}")
        return int(response.json()["id"])

    with ThreadPoolExecutor(8) as pool:
        return list(pool.map(send, [next(targets) for _ in range(count)]))


def runs(engine: sa.Engine) -> list[dict[str, Any]]:
    query = sa.text("SELECT id, state, node, attempt, errors, started_at, throttled_until "
                    f"FROM {schema.runs.name}")
    with engine.connect() as conn:
        return [dict(r) for r in conn.execute(query).mappings()]


def busiest_window(starts: list[Any]) -> int:
    """The most starts in any window of PERIOD seconds beginning at a start."""
    period = timedelta(seconds=PERIOD)
    best, j = 0, 0
    for i, start in enumerate(starts):
        while j < len(starts) and starts[j] < start + period:
            j += 1
        best = max(best, j - i)
    return best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=180.0)
    args = parser.parse_args()
    allowed = RATE * (int(args.seconds // PERIOD) + (1 if args.seconds % PERIOD else 0))
    with scratch_database() as url:
        servers = [Server(host(url)) for _ in range(HOSTS)]
        engine = sa.create_engine(url)
        try:
            wait_alive(servers)
            ids = send_backlog(servers, allowed + 2 * RATE)
            began = time.monotonic()
            while time.monotonic() - began < args.seconds + 5:
                for server in servers:
                    if server.proc.poll() is not None:
                        raise RuntimeError("a host exited during the bench")
                time.sleep(1)
            rows = runs(engine)
        finally:
            for server in servers:
                server.stop()
            engine.dispose()
    starts = sorted(r["started_at"] for r in rows if r["started_at"] is not None)
    first = starts[0]
    within = [s for s in starts if s < first + timedelta(seconds=args.seconds)]
    busiest = busiest_window(starts)
    attempts_used = [r for r in rows if r["attempt"] != 1 or r["errors"]]
    per_node = Counter(r["node"] for r in rows if r["node"] is not None)
    reached = len(within) / allowed
    print(f"{len(ids)} runs sent to {HOSTS} hosts at {RATE}/m; over {args.seconds:.0f} s from "
          f"the first start: {len(within)} starts of {allowed} allowed ({reached:.1%})")
    print(f"busiest {PERIOD:.0f} s window: {busiest} starts (limit {RATE})")
    print(f"attempts used by throttling: {len(attempts_used)}; runs still queued: "
          f"{sum(r['state'] == 'queued' for r in rows)}, all on attempt 1: "
          f"{all(r['attempt'] == 1 for r in rows if r['state'] == 'queued')}")
    print(f"starts per host: {sorted(per_node.values(), reverse=True)}")
    ok = busiest <= RATE and reached >= 0.95 and not attempts_used and len(per_node) == HOSTS
    print("PASS" if ok else "FAIL")
    if not ok:
        raise SystemExit(1)


if __name__ == "__main__":
    main()
