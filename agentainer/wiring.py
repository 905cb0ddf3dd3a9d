"""Wiring: the domain collaborators every process builds from its settings."""

from dataclasses import dataclass

import redis

from agentainer.agents import AgentService, Networks
from agentainer.config import Config
from agentainer.health import HealthRecords
from agentainer.journal import Journal
from agentainer.metrics import MetricsHistory
from agentainer.mounts import MountPolicy
from agentainer.proxy import Upstream
from agentainer.replay import ReplayScheduler, journal_from
from agentainer.runtime import DockerRuntime
from agentainer.store import AgentStore


@dataclass(frozen=True)
class Components:
    """The collaborators one process shares between its threads."""

    redis: redis.Redis
    store: AgentStore
    runtime: DockerRuntime
    journal: Journal
    scheduler: ReplayScheduler
    upstream: Upstream
    agents: AgentService
    health: HealthRecords
    history: MetricsHistory


def build(config: Config, *, client: redis.Redis | None = None,
          runtime: DockerRuntime | None = None) -> Components:
    """Return real collaborators wired from ``config`` (nothing connects yet)."""
    client = client or redis.Redis.from_url(config.redis_url, socket_connect_timeout=5,
                                            socket_timeout=30, health_check_interval=30)
    store = AgentStore(client, lock_timeout=config.lock_timeout)
    runtime = runtime or DockerRuntime(base_url=config.docker_host)
    journal = journal_from(client, config)
    scheduler = ReplayScheduler(client, claim_ttl=journal.lease_seconds)
    agents = AgentService(
        store, runtime, journal, on_running=scheduler.schedule,
        networks=Networks(config.network, config.internal_network, config.port),
        mounts=MountPolicy(config.volume_roots, config.data_dir),
        default_app_port=config.default_app_port, stop_timeout=config.stop_timeout)
    upstream = Upstream(connect_timeout=config.connect_timeout,
                        read_timeout=config.read_timeout, pool_size=config.threads)
    return Components(client, store, runtime, journal, scheduler, upstream, agents,
                      HealthRecords(client), MetricsHistory(client))
