"""Lanes: a bounded thread pool that runs at most one task per agent at a time, for the
monitor's probes and metric samples (a slow agent delays only its own next task)."""

import logging
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

from agentainer.errors import AgentainerError

logger = logging.getLogger(__name__)


class Lanes:
    """A bounded thread pool that runs at most one task per agent at a time."""

    def __init__(self, workers: int, name: str) -> None:
        self._pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix=name)
        self._busy: set[str] = set()
        self._closed = False
        self._lock = threading.Lock()

    def submit(self, agent_id: str, task: Callable[[], object]) -> bool:
        """Queue ``task`` unless the agent's previous one still runs or the lanes were shut
        down; return True if queued."""
        with self._lock:
            if self._closed or agent_id in self._busy:
                return False
            self._busy.add(agent_id)
        try:
            self._pool.submit(self._run, agent_id, task)
        except RuntimeError:  # NOTE: shut down meanwhile (the monitor is ending)
            with self._lock:
                self._busy.discard(agent_id)
            return False
        return True

    def shutdown(self) -> None:
        """Drop the queued tasks and take no more; the running ones end on their own."""
        with self._lock:
            self._closed = True
        self._pool.shutdown(wait=False, cancel_futures=True)

    def _run(self, agent_id: str, task: Callable[[], object]) -> None:
        try:
            task()
        except AgentainerError as ex:
            logger.warning("agent %s: %s", agent_id, ex.message)
        except Exception:  # noqa: BLE001 - one agent's failure must not end the pool
            logger.exception("agent %s: task failed", agent_id)
        finally:
            with self._lock:
                self._busy.discard(agent_id)
