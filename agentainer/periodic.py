"""Periodic: one action, every few seconds, on a daemon thread of its own."""

import logging
import threading
from collections.abc import Callable

from agentainer.errors import AgentainerError

logger = logging.getLogger(__name__)


class Periodic:
    """Calls ``action`` every ``interval`` seconds until :meth:`stop`; what it raises is
    logged and the next call goes ahead (the heartbeat, the janitor)."""

    def __init__(self, name: str, interval: float, action: Callable[[], object]) -> None:
        self.name = name
        self._interval = interval
        self._action = action
        self._stop = threading.Event()

    def start(self, *, now: bool = False) -> threading.Thread:
        """Start the thread; with ``now``, make the first call here first."""
        if now:
            self._run()
        thread = threading.Thread(target=self._loop, name=self.name, daemon=True)
        thread.start()
        return thread

    def stop(self) -> None:
        self._stop.set()

    def _loop(self) -> None:
        while not self._stop.wait(self._interval):
            self._run()

    def _run(self) -> None:
        try:
            self._action()
        except AgentainerError as ex:
            logger.warning("%s: %s", self.name, ex.message)
        except Exception:  # noqa: BLE001 - keep the thread alive; the log has the cause
            logger.exception("%s: unexpected error", self.name)
