"""waitress listeners with deadlines: one I/O loop, thread pool and connection limit each.

waitress counts its ``connection_limit`` over a whole socket map and serves the map from
one I/O thread, so listeners that share a map share both: the gateways' listener (agents)
gets a map, a loop thread and a pool of its own, and a flood from agents cannot stop the
API's listener from accepting. waitress closes idle connections (``channel_timeout``) but
lets a request trickle in for ever, a byte at a time; :class:`GuardedServer` also cuts a
request whose headers take longer than ``header_timeout`` or whose body arrives slower
than ``body_min_rate``.
"""

import logging
import math
import socket
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from waitress import wasyncore
from waitress.adjustments import Adjustments
from waitress.channel import HTTPChannel
from waitress.server import TcpWSGIServer
from waitress.task import ThreadedTaskDispatcher

logger = logging.getLogger(__name__)

# NOTE: waitress checks its channels every cleanup_interval seconds: deadlines hold to 1 s
CLEANUP_INTERVAL = 1
# NOTE: keep reading a connection while its request is served, so a client that goes away
# is noticed (waitress.client_disconnected) before anything is written to it
LOOKAHEAD = 1


@dataclass(frozen=True)
class Deadlines:
    """How long a request may take to arrive."""

    header_timeout: float
    body_min_rate: int

    def expired(self, elapsed: float, headers_done: bool, body_bytes: int) -> bool:
        """Return whether a request ``elapsed`` seconds after its first byte is too slow.

        Its headers get ``header_timeout``; its body then gets as long again plus one
        second per ``body_min_rate`` bytes received.
        """
        allowed = self.header_timeout
        if headers_done:
            allowed += self.header_timeout + body_bytes / self.body_min_rate
        return elapsed > allowed


class GuardedChannel(HTTPChannel):
    """An HTTP channel that notes when the request it is receiving began."""

    request_started = 0.0

    def received(self, data: bytes) -> bool:
        pending = self.request
        result = super().received(data)
        if self.request is not None and self.request is not pending:
            self.request_started = time.time()
        return result


class GuardedServer(TcpWSGIServer):
    """A waitress listener that closes connections whose request arrives too slowly."""

    channel_class = GuardedChannel

    def __init__(self, *args: Any, deadlines: Deadlines, **kwargs: Any) -> None:
        self.deadlines = deadlines
        super().__init__(*args, **kwargs)

    def maintenance(self, now: float) -> None:
        # NOTE: typeshed's waitress stubs say int and HTTPChannel; waitress passes
        # time.time() and keeps a dict of channels
        super().maintenance(now)  # type: ignore[arg-type]
        for channel in self.active_channels.values():  # type: ignore[attr-defined]
            request = channel.request
            # NOTE: waitress stops reading while it writes a response: only a request
            # that is not waiting on one of ours can be too slow
            if request is None or channel.requests or channel.will_close:
                continue
            if self.deadlines.expired(now - channel.request_started,
                                      request.headers_finished, request.body_bytes_received):
                logger.info("connection from %s: request too slow (%s), closed",
                            channel.addr[0], "body" if request.headers_finished
                            else "headers")
                channel.will_close = True


class _LastIdleFirst(threading.Condition):
    """A condition whose notify() wakes the thread that began waiting last (LIFO).

    NOTE: CPython's Condition keeps its waiters' locks in ``_waiters``, oldest first, and
    wakes them from the left; a woken waiter's lock is no longer in it.
    """

    def notify(self, n: int = 1) -> None:
        waiters = self._waiters  # type: ignore[attr-defined]
        for _ in range(min(n, len(waiters))):
            waiters.pop().release()


class Listener:
    """Sockets served by one I/O loop and one pool of worker threads."""

    def __init__(self, app: Callable, sockets: list[socket.socket], *, name: str,
                 deadlines: Deadlines, idle_timeout: float, **adjustments: Any) -> None:
        self.name = name
        self._map: dict = {}
        self._adj = Adjustments(
            sockets=sockets, channel_timeout=max(1, math.ceil(idle_timeout)),
            cleanup_interval=CLEANUP_INTERVAL, channel_request_lookahead=LOOKAHEAD,
            asyncore_use_poll=True, **adjustments)
        self._dispatcher = ThreadedTaskDispatcher()
        # PERF: the idle thread woken for a task is the one idle the shortest time (its
        # stack still in the caches), not the longest: with 1,024 threads FIFO cost about
        # 150 µs of CPU per request (c=16, measured against 160 threads)
        self._dispatcher.queue_cv = _LastIdleFirst(self._dispatcher.lock)
        self._dispatcher.set_thread_count(self._adj.threads)
        # NOTE: what waitress.create_server does, with our server class
        for sock in sockets:
            GuardedServer(app, self._map, _sock=sock, dispatcher=self._dispatcher,
                          adj=self._adj, bind_socket=False, deadlines=deadlines,
                          sockinfo=(sock.family, sock.type, sock.proto, sock.getsockname()))

    def run(self) -> None:
        """Serve until the loop stops (KeyboardInterrupt, SystemExit), then stop the pool."""
        try:
            wasyncore.loop(timeout=self._adj.asyncore_loop_timeout, map=self._map,
                           use_poll=True)
        except (SystemExit, KeyboardInterrupt):
            pass
        finally:
            self._dispatcher.shutdown()

    def start(self) -> threading.Thread:
        """Serve on a daemon thread of its own; return it."""
        thread = threading.Thread(target=self.run, name=f"{self.name}-io", daemon=True)
        thread.start()
        return thread
