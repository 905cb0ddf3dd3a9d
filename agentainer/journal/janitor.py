"""Journal upkeep: take back dead processes' work, sweep expired leases, restart stalled
drains, trim listings and drop old bodies."""

import logging

from agentainer.agents.store import AgentStore
from agentainer.errors import AgentainerError
from agentainer.journal.journal import Journal
from agentainer.journal.liveness import Liveness
from agentainer.journal.replay import ReplayScheduler
from agentainer.statuses import AgentStatus

logger = logging.getLogger(__name__)


class Janitor:
    """Journal upkeep, one pass per :meth:`run_once` (every second, in each server and in
    the monitor).

    Every step is idempotent and atomic in Redis, so several processes may each run one.
    """

    INTERVAL = 1.0   # NOTE: seconds between passes
    TRIM_EVERY = 60  # NOTE: listings only need trimming now and then

    def __init__(self, store: AgentStore, journal: Journal, scheduler: ReplayScheduler,
                 liveness: Liveness) -> None:
        self._store = store
        self._journal = journal
        self._scheduler = scheduler
        self._liveness = liveness
        self._runs = 0

    def run_once(self) -> None:
        for holder in self._liveness.dead():
            self.reap(holder)
        for agent_id in self._journal.sweep():
            logger.info("agent %s: expired lease(s) swept back to the queue", agent_id)
            self._scheduler.schedule(agent_id)
        for agent_id in self._journal.agents_with_queues():
            try:
                status, route = self._store.routing(agent_id)
            except AgentainerError:
                continue
            if status is AgentStatus.RUNNING and route:
                self._scheduler.schedule(agent_id)  # NOTE: a no-op while its drain is pending
        self._journal.drop_bodies()
        self._runs += 1
        if self._runs % self.TRIM_EVERY == 1:
            for agent in self._store.all():
                self._journal.trim(agent.id)

    def reap(self, holder: str) -> None:
        """Take back what a dead process held: its leases go back to the front of their
        queues; its drain claims, lifecycle locks and name reservations are freed."""
        requeued = self._journal.reap(holder)
        freed = self._scheduler.reap(holder)
        released = self._store.release_reservations(holder)
        unlocked = self._store.release_locks(holder)
        self._liveness.forget(holder)
        logger.info("%s died: %d agent(s) got requests back, %d drain(s), %d lock(s) and "
                    "%d reservation(s) freed", holder, len(requeued), len(freed), unlocked,
                    len(released))
        for agent_id in requeued | freed:
            self._scheduler.schedule(agent_id)
