"""The control plane's Prometheus metrics: the shared counters (``counters`` HASH of counts
and latency-histogram buckets, written by the journal's Lua scripts and the monitor, so
every process's work shows in one ``/metrics``: any server answers it), agents by status,
queue depths and the journal's size.
"""

from collections.abc import Callable, Iterator

from prometheus_client.core import (
    CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily, Metric,
)

from agentainer.agents.store import AgentStore
from agentainer.journal.journal import LATENCY_BUCKETS
from agentainer.statuses import AgentStatus

COUNTER_HELP = (
    ("proxied", "agentainer_proxied_requests", "requests forwarded live to a running agent"),
    ("queued", "agentainer_queued_requests", "requests queued for an agent that could not "
                                             "take them"),
    ("replayed", "agentainer_replayed_requests", "queued requests delivered by a worker"),
    ("failed", "agentainer_failed_requests", "requests that exhausted their delivery "
                                             "attempts (dead letter)"),
    ("restarts", "agentainer_agent_restarts", "agent restarts made by the monitor"),
)

class ControlPlaneCollector:
    """A Prometheus collector reading the shared counters and the agents' state."""

    def __init__(self, store: AgentStore, queue_length: Callable[[str], int],
                 stored_bytes: Callable[[], int]) -> None:
        self._store = store
        self._queue_length = queue_length
        self._stored_bytes = stored_bytes

    def collect(self) -> Iterator[Metric]:
        raw = self._store.counters()
        for key, name, help_text in COUNTER_HELP:
            yield CounterMetricFamily(name, help_text, value=float(raw.get(key, 0)))
        agents = self._store.all()
        by_status = GaugeMetricFamily("agentainer_agents", "agents by status", labels=["status"])
        for status in AgentStatus:
            by_status.add_metric([status], sum(1 for a in agents if a.status is status))
        yield by_status
        depth = GaugeMetricFamily("agentainer_queue_depth", "queued requests per agent",
                                  labels=["agent"])
        for agent in agents:
            depth.add_metric([agent.name], self._queue_length(agent.id))
        yield depth
        yield GaugeMetricFamily("agentainer_journal_bytes",
                                "bytes the request journal holds (against journal_max_bytes)",
                                value=float(self._stored_bytes()))
        buckets, cumulative = [], 0
        for bound in LATENCY_BUCKETS:
            cumulative += int(raw.get(f"latency_le_{bound}", 0))
            buckets.append((str(bound), cumulative))
        cumulative += int(raw.get("latency_le_inf", 0))
        buckets.append(("+Inf", cumulative))
        yield HistogramMetricFamily(
            "agentainer_proxy_latency_seconds",
            "time from a request's arrival to the agent's response headers (journaled requests)",
            buckets=buckets, sum_value=float(raw.get("latency_sum", 0)))
