"""Wake-ups: what one node tells the others so a hand-off takes milliseconds, not a poll.

Four events cross processes: runs were queued (by a web node, a retry, a job fired on a busy
node), a run ended and freed a place other nodes may be waiting for (a task's
``max_running``), a cancel was requested for a run another node executes, and a job was
written (added, edited, paused, resumed: the scheduler loops re-read the schedule). Each is a
short message on the store's transport (``store.notify``); a node that hears one acts as its
own poll or tick would, only now. Messages name their sender, which ignores its own.

A message about one run queued due now and free of every limit names it (``runs <sender>
<id> <task>``): the nodes that run its task try to take it by its id, one statement, and those
that lose the race skip it at once (``Runner.offer``), rather than every node making a full
claim for one run. Any other ``runs`` message, and one a node cannot parse, asks for a full
look at the queue, as an older node's messages do.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

from sqlalchemy.engine import Connection

from ..store import Run, RunState
from ..store.notify import HELLO, Signals
from .runner import Runner

log = logging.getLogger(__name__)

RUNS = "runs"
CANCEL = "cancel"
JOBS = "jobs"


class Wakeups:
    """This node's side of the wake-ups: sends them, and (a node that executes) hears them and
    wakes its runner."""

    def __init__(self, signals: Signals, node_id: str, runner: Runner | None) -> None:
        self.signals = signals
        self.node_id = node_id
        self.runner = runner
        # Set by the engine: wakes this node's scheduler loop to re-read the schedule.
        self.on_jobs_changed: Callable[[], None] | None = None

    def start(self) -> None:
        """Listen (a node that executes). A transport that cannot listen (a folder that cannot
        be made) leaves this node on its poll, said in the log; it never stops the node."""
        if self.runner is None:
            return
        try:
            self.signals.listen(self.node_id, self._heard)
        except OSError as exc:
            log.warning("wake-ups off for node %s (%s): it finds work at its poll",
                        self.node_id, exc, extra={"node": self.node_id})

    def stop(self) -> None:
        self.signals.close()

    # -- sent after the writer's commit -----------------------------------------------------
    def runs_queued(self, run: Run | None = None) -> None:
        """Runs were queued here: whichever node has a free thread should claim them now.
        ``run``: the one run queued, due now and free of every limit, named in the message."""
        self.signals.send(self._runs_message(run))

    def runs_queued_in(self, conn: Connection, run: Run | None = None) -> bool:
        """``runs_queued`` inside the transaction writing the run, delivered at its commit
        where the transport can (PostgreSQL); False: call ``runs_queued`` after the commit."""
        return self.signals.send_in(conn, self._runs_message(run))

    def _runs_message(self, run: Run | None) -> str:
        if run is None:
            return f"{RUNS} {self.node_id}"
        return f"{RUNS} {self.node_id} {run.id} {run.task}"

    def cancel_requested(self, run_id: int) -> None:
        """A cancel was written for a running run: the node executing it should tell it now."""
        self.signals.send(f"{CANCEL} {self.node_id} {run_id}")

    def jobs_changed(self) -> None:
        """A job was written here: the other nodes' loops should re-read the schedule now, or
        a job due sooner than their next pass fires up to a poll late."""
        self.signals.send(f"{JOBS} {self.node_id}")

    def run_settled(self, run: Run) -> None:
        """A run settled here. It matters when it went back to the queue (a retry: this node's
        runner looks too, as it would not otherwise until its poll), or when its task is
        limited cluster-wide and a place just freed up."""
        if run.state is RunState.QUEUED and self.runner is not None:
            self.runner.wake()
        if run.state is RunState.QUEUED or self._limited(run.task):
            self.runs_queued()

    def _limited(self, task_name: str) -> bool:
        if self.runner is None or task_name not in self.runner.tasks:
            return False
        return self.runner.tasks.get(task_name).max_running is not None

    # -- heard from other nodes -------------------------------------------------------------
    def _heard(self, message: str) -> None:
        kind, _, rest = message.partition(" ")
        sender, _, arg = rest.partition(" ")
        if sender == self.node_id or self.runner is None:
            return
        if kind == CANCEL:
            try:
                run_id = int(arg)
            except ValueError:
                log.warning("ignored a malformed wake-up %r", message)
                return
            self.runner.signal_cancel(run_id)
            return
        if kind == JOBS:
            self._reread_jobs()
            return
        if kind == HELLO:
            # The listener (re)connected: a job written or a run queued meanwhile told nobody.
            self._reread_jobs()
            self.runner.wake()
            return
        named, _, task_name = arg.partition(" ")
        if kind == RUNS and named.isdigit() and task_name:
            self.runner.offer(int(named), task_name)
        else:  # "runs", or a message this node cannot parse: look at the queue
            self.runner.wake()

    def _reread_jobs(self) -> None:
        if self.on_jobs_changed is not None:
            self.on_jobs_changed()
