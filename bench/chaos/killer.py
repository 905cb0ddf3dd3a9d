"""The chaos killer: kills the agent and each program of the stack at random moments.

Targets: the agent's container (``docker kill``), ``server:server-0``, ``server:server-1``,
``worker:worker-0``, ``worker:worker-1`` and ``monitor`` (``kill -9`` of the PID that
``supervisorctl pid`` gives; supervisord starts a new one), and ``redis``
(``supervisorctl restart redis``: SIGTERM, so it writes its append-only file, then a start).
"""

import os
import random
import signal
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

import docker

from tests.integration.supervised import Supervised

PROGRAMS = ("server:server-0", "server:server-1", "worker:worker-0", "worker:worker-1",
            "monitor")
TARGETS = ("agent", *PROGRAMS, "redis")
READY_WAIT = 15.0  # seconds a kill waits for its target to be running again


def kind(target: str) -> str:
    """The kind of a target, as the report groups them: agent server worker monitor redis."""
    return target.split(":")[0]


@dataclass
class Kill:
    """One kill: what, when it started and when it was done (Unix time), and how it went."""

    target: str
    planned: float              # seconds after the start of sending
    at: float = 0.0
    done: float = 0.0
    outstanding: int = 0        # client requests under way at that moment
    note: str = ""              # why it was skipped or failed; "" when it happened

    @property
    def kind(self) -> str:
        return kind(self.target)

    @property
    def happened(self) -> bool:
        return self.at > 0 and not self.note


def schedule(kills_per_target: int, seconds: float, rng: random.Random) -> list[Kill]:
    """Spread ``kills_per_target`` kills of every target over ``seconds``, in random order.

    The window is cut into one slot per kill (plus a quiet one at each end, so the first
    kill finds traffic and the last leaves time to recover); each kill falls at a random
    moment in the middle half of its slot, so two kills are never closer than half a slot.
    """
    targets = [target for target in TARGETS for _ in range(kills_per_target)]
    rng.shuffle(targets)
    slot = seconds / (len(targets) + 1)
    return [Kill(target, slot * (index + 0.75 + rng.random() / 2))
            for index, target in enumerate(targets)]


class Killer:
    """Carries out a schedule against a supervised stack and its agent."""

    def __init__(self, stack: Supervised, docker_client: docker.DockerClient, agent_id: str,
                 kills: list[Kill], *, outstanding: Callable[[], int],
                 clock: Callable[[], float] = time.time) -> None:
        self._stack = stack
        self._docker = docker_client
        self._container = f"agentainer-{agent_id}"
        self.kills = kills
        self._outstanding = outstanding
        self._clock = clock

    def run(self, started: float, stop: threading.Event) -> None:
        """Kill each target at its moment (``started`` is a monotonic time) until ``stop``."""
        for kill in self.kills:
            if stop.wait(max(0.0, started + kill.planned - time.monotonic())):
                kill.note = "skipped: the client had finished"
                continue
            try:
                self._wait_running(kill.target, stop)
                kill.outstanding = self._outstanding()
                kill.at = self._clock()
                self._kill(kill.target)
            except Exception as ex:  # noqa: BLE001 - a failed kill is reported, not fatal
                kill.note = f"failed: {ex}"
            kill.done = self._clock()

    def _wait_running(self, target: str, stop: threading.Event) -> None:
        """Wait (at most READY_WAIT s) until the target runs: a kill needs something to kill."""
        deadline = time.monotonic() + READY_WAIT
        while not self._running(target):
            if time.monotonic() > deadline or stop.wait(0.2):
                raise RuntimeError(f"{target} was not running within {READY_WAIT:g} s")

    def _running(self, target: str) -> bool:
        if target == "agent":
            return self._docker.containers.get(self._container).status == "running"
        return self._stack.pid(target) > 0

    def _kill(self, target: str) -> None:
        if target == "agent":
            self._docker.containers.get(self._container).kill()
            return
        if target == "redis":
            done = self._stack.ctl("restart", "redis", timeout=60)
            if done.returncode != 0:
                raise RuntimeError(f"supervisorctl restart redis: {done.stdout}{done.stderr}")
            return
        pid = self._stack.pid(target)
        if not pid:
            raise RuntimeError(f"{target} is not running (supervisorctl pid gave no PID)")
        os.kill(pid, signal.SIGKILL)
