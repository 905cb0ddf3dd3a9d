"""The composition root: every collaborator of every program, built from one ``Config``.

:func:`build` makes what each program shares between its threads (:class:`Components`): the
Redis client (:func:`redis_client`), the Docker runtime, the store, the journal, the replay
scheduler and drainer, the upstream pool, the agent service, health and metrics records, the
janitor and its loop, the heartbeat, the callers policy, the response follower, and the
webhooks' outbox, deliverer and pump. :func:`monitor` makes the monitor and its restart
policy over them; :func:`replay_worker` the worker's RQ worker. Nothing else constructs a
Redis or Docker client, a journal or a service: ``agentainer-server`` gives its components
to ``api.app.create_app``, which only registers routes; ``agentainer-worker`` gives its
drainer and deliverer to the RQ job class (replay.job_class) and runs the webhook pump;
``agentainer-monitor`` runs :func:`monitor`'s.
The HTTP transport (waitress listeners, their sockets) stays in server.py.
"""

from collections.abc import Callable
from dataclasses import dataclass

import redis
import rq
from redis.backoff import ExponentialBackoff
from redis.retry import Retry
from rq.serializers import JSONSerializer

from agentainer import redis_password
from agentainer.agents.callers import Callers
from agentainer.agents.docker_runtime import DockerRuntime
from agentainer.agents.mounts import MountPolicy
from agentainer.agents.observations import HealthRecords, MetricsHistory
from agentainer.agents.runtime import Runtime
from agentainer.agents.service import AgentService, Networks
from agentainer.agents.store import AgentStore
from agentainer.agents.swarm_runtime import SwarmRuntime
from agentainer.config import Config
from agentainer.journal.completions import Completions
from agentainer.journal.follow import ResponseFollower
from agentainer.journal.janitor import Janitor
from agentainer.journal.journal import Journal
from agentainer.journal.liveness import Liveness, new_holder
from agentainer.journal.replay import (
    DRAIN_JOB, LEASE_GRACE, QUEUE, Drainer, ReplayScheduler, job_class,
)
from agentainer.journal.upstream import Upstream
from agentainer.monitor.reconcile import Monitor, MonitorSettings
from agentainer.monitor.restarts import RestartPolicy
from agentainer.periodic import Periodic
from agentainer.webhooks import outbox
from agentainer.webhooks.delivery import Deliverer
from agentainer.webhooks.outbox import EventType, Webhooks

# NOTE: resends to a restarting Redis: 50 ms doubling to 500 ms, for redis_wait in all
RETRY_BASE, RETRY_CAP = 0.05, 0.5
PUMP_INTERVAL = 0.5  # NOTE: seconds between a worker's webhook pumps (outbox -> RQ jobs)


@dataclass(frozen=True)
class Components:
    """The collaborators one process shares between its threads."""

    redis: redis.Redis
    store: AgentStore
    runtime: Runtime
    journal: Journal
    scheduler: ReplayScheduler
    upstream: Upstream
    agents: AgentService
    health: HealthRecords
    history: MetricsHistory
    holder: str          # this process, as its leases and claims name it (liveness.py)
    heartbeat: Periodic  # started before the process takes any work
    janitor: Janitor
    janitor_loop: Periodic  # the janitor's passes on a thread (servers; the monitor's
                            # control loop runs them itself)
    drainer: Drainer
    callers: Callers     # who calls on the network gateways, and whom it may call
    follower: ResponseFollower  # follows responses live (GET .../response, held callers)
    completions: Completions  # records the proxy's answers off the request threads
    webhooks: Webhooks   # webhook events (emit) and delivery outcomes
    deliverer: Deliverer  # one webhook delivery attempt per RQ job (workers)
    webhook_pump: Periodic  # outbox -> due delivery jobs (workers)


def redis_client(config: Config) -> redis.Redis:
    """Return the Redis client every program uses.

    A command that meets a closed connection or a loading Redis (a restart) is resent,
    backing off, for about ``redis_wait`` seconds before the error reaches the caller.
    NOTE: that is safe because every journal script may run twice (journal/scripts.py).
    It authenticates with ``redis_url``'s password, or the embedded Redis's from
    ``redis_password_path`` (generated here if this program starts first), or an external
    one's from ``redis_password_file``. A ``rediss://`` URL's TLS parameters
    (``ssl_ca_certs``, ``ssl_cert_reqs``, ...) reach every connection of the pool, and the
    journal's own (journal._LeanCalls), which are made like the pool's.

    Raises:
        InvalidConfig: the Redis password's file is unreadable or unusable.
    """
    retries, waited = 0, 0.0
    while waited < config.redis_wait:
        retries += 1
        waited += min(RETRY_CAP, RETRY_BASE * 2 ** retries)
    # NOTE: from_url lets the URL's own password win over this keyword. redis-py's pool
    # refuses a 101st connection (MaxConnectionsError) and a proxied stream calls Redis as
    # it relays: this pool holds one per thread that may call, and a caller past that
    # waits for one (redis_wait) rather than fail.
    pool = redis.BlockingConnectionPool.from_url(
        config.redis_url, password=redis_password.for_settings(config),
        max_connections=redis_connections(config), timeout=config.redis_wait,
        socket_connect_timeout=2, socket_timeout=30,
        health_check_interval=30,
        retry=Retry(ExponentialBackoff(cap=RETRY_CAP, base=RETRY_BASE), retries))
    return redis.Redis(connection_pool=pool)


def redis_connections(config: Config) -> int:
    """Return the Redis connections one process may open: one per thread that may call
    Redis (the server's worker and gateway threads) and some for its own loops."""
    return config.threads + config.proxy_threads + 32


def build(config: Config, *, kind: str) -> Components:
    """Return real collaborators wired from ``config`` (nothing connects yet).

    Args:
        kind: the program (``server``, ``worker``, ``monitor``), in this process's
            liveness holder ID.
    """
    client = redis_client(config)
    holder = new_holder(kind)
    liveness = Liveness(client, timeout=config.liveness_timeout)
    store = AgentStore(client, lock_timeout=config.lock_timeout, holder=holder)
    runtime: DockerRuntime = (
        SwarmRuntime(base_url=config.docker_host, stop_timeout=config.stop_timeout)
        if config.runtime == "swarm" else DockerRuntime(base_url=config.docker_host))
    # NOTE: an in-flight lease must outlast the longest wait for an answer, which cannot
    # renew it (the holder is blocked reading): connect + read timeout, plus a grace.
    lease = config.connect_timeout + config.read_timeout + LEASE_GRACE
    journal = Journal(client, holder=holder, queue_limit=config.queue_limit,
                      queue_max_bytes=config.queue_max_bytes,
                      max_bytes=config.journal_max_bytes, max_attempts=config.max_attempts,
                      retention=config.retention, body_retention=config.body_retention,
                      lease=lease, history_limit=config.history_limit)
    scheduler = ReplayScheduler(client, claim_ttl=lease)
    webhooks = Webhooks(client, lease=config.webhook_timeout + outbox.LEASE_GRACE)

    def purge(agent_id: str) -> None:
        """A removed agent's journal and webhook deliveries."""
        journal.purge(agent_id)
        webhooks.purge(agent_id)

    agents = AgentService(
        store, runtime, purge_requests=purge, on_running=scheduler.schedule,
        networks=Networks(config.network, config.internal_network, config.port,
                          config.agent_proxy_host),
        mounts=MountPolicy(config.volume_roots, config.data_dir,
                           docker_root=runtime.docker_root,
                           allowed_volumes=config.allowed_volumes),
        default_app_port=config.default_app_port, stop_timeout=config.stop_timeout,
        on_idle=lambda agent_id, action: webhooks.emit(agent_id, EventType.AGENT_IDLE,
                                                       {"action": action.value}),
        on_woken=lambda agent_id: webhooks.emit(agent_id, EventType.AGENT_WOKEN))
    upstream = Upstream(connect_timeout=config.connect_timeout,
                        read_timeout=config.read_timeout, pool_size=config.threads)
    drainer = Drainer(store=store, journal=journal, scheduler=scheduler, upstream=upstream,
                      holder=holder, drain_wait=config.drain_wait,
                      retry_base=config.retry_base, retry_cap=config.retry_cap,
                      capture_limit=config.capture_limit)
    janitor = Janitor(store, journal, scheduler, liveness)
    return Components(client, store, runtime, journal, scheduler, upstream, agents,
                      HealthRecords(client), MetricsHistory(client),
                      holder, Periodic("heartbeat", liveness.interval,
                                       lambda: liveness.beat(holder)),
                      janitor, Periodic("janitor", Janitor.INTERVAL, janitor.run_once),
                      drainer,
                      Callers(store, runtime, (config.network, config.internal_network)),
                      ResponseFollower(client, journal),
                      Completions(journal),
                      webhooks,
                      Deliverer(webhooks, store, attempts=config.webhook_attempts,
                                retry_base=config.webhook_retry_base,
                                retry_cap=config.webhook_retry_cap,
                                timeout=config.webhook_timeout),
                      Periodic("webhooks", PUMP_INTERVAL, webhooks.pump))


def monitor(config: Config, components: Components) -> Monitor:
    """Return the monitor over ``components`` (built with ``kind="monitor"``)."""
    c = components
    return Monitor(c.agents, c.store, c.runtime, c.health, c.history, c.janitor, c.journal,
                   RestartPolicy(base=config.restart_base, cap=config.restart_cap,
                                 limit=config.restart_limit, window=config.restart_window),
                   MonitorSettings(reconcile_interval=config.reconcile_interval,
                                   metrics_interval=config.metrics_interval),
                   emit=c.webhooks.emit)


def replay_worker(components: Components) -> rq.SimpleWorker:
    """Return the RQ worker that runs drain jobs on ``components``' drainer and webhook
    delivery jobs on its deliverer, in its own process (no fork per job), named after the
    process's liveness holder.

    NOTE: the webhook queue comes first: a delivery is one POST of at most
    ``webhook_timeout``, while drains hand off every time slice anyway (replay.py).
    """
    c = components
    jobs: dict[str, Callable[..., object]] = {DRAIN_JOB: c.drainer.run,
                                              outbox.DELIVER_JOB: c.deliverer.run}
    return rq.SimpleWorker([outbox.QUEUE, QUEUE], connection=c.redis, name=c.holder,
                           job_class=job_class(jobs), serializer=JSONSerializer)
