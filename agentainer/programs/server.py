"""``agentainer-server``: the REST API and the proxy under waitress.

Several server processes may run at once (supervisord starts two): each binds its
sockets with ``SO_REUSEPORT`` and the kernel spreads connections between them. Its
collaborators come from the composition root (wiring.py); the HTTP transport (the sockets,
the waitress listeners) is built here.
"""

import argparse
import logging
import resource
import socket

from agentainer import redis_password, tokens
from agentainer.agents.service import AgentService
from agentainer.api import lifecycle as agents_api
from agentainer.api.app import ProxyCap, create_app
from agentainer.api.hosts import HostPolicy
from agentainer.api.listeners import Gateway, HostRouting
from agentainer.api.serving import Deadlines, Listener
from agentainer.config import Config
from agentainer.errors import AgentainerError, InvalidConfig
from agentainer.exit_codes import ExitStatus
from agentainer.programs import startup as daemon
from agentainer.wiring import build, redis_connections

logger = logging.getLogger(__name__)

# NOTE: waitress reads a whole body before the app sees it, and refuses (413, plain text)
# one that reaches its limit; the app's own 413 (JSON) covers the first BODY_SLACK bytes over.
BODY_SLACK = 64 * 1024


def make_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="agentainer-server", allow_abbrev=False,
        description="Serve the Agentainer REST API and proxy (normally run by supervisord).")
    daemon.add_options(parser)
    parser.add_argument("--host", help="listen address (setting: host)")
    parser.add_argument("--port", help="listen port (setting: port)")
    parser.add_argument("--threads", help="worker threads (setting: threads)")
    return parser


def listen(host: str, port: int) -> socket.socket:
    """Return a listening socket that other server processes may share."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    sock.bind((host, port))
    sock.listen(1024)
    return sock


def gateway_sockets(settings: Config, agents: AgentService) -> list[socket.socket]:
    """Listen on each Agentainer network's gateway, where agents reach the proxy."""
    sockets = []
    for egress in (True, False):
        try:
            network, gateway = agents.gateway(egress=egress)
            sockets.append(listen(gateway, settings.port))
        except (AgentainerError, OSError) as ex:
            logger.warning("agents cannot reach the proxy on the %s network (%s)",
                           "egress" if egress else "internal", ex)
    return sockets


def open_files_needed(settings: Config) -> int:
    """Return the descriptors a server process may hold at its limits: every client
    connection, one upstream socket per proxied request and per gateway call, its Redis
    connections (its pool's, and as many for admissions), and a margin (Docker, logs)."""
    return (settings.connection_limit + settings.gateway_connection_limit
            + settings.threads + settings.proxy_threads + 2 * redis_connections(settings)
            + 256)


def raise_open_files(needed: int) -> int:
    """Raise this process's soft limit of open files to its hard limit (as nginx's
    ``worker_rlimit_nofile`` does); return the limit, warning when it is below ``needed``.

    NOTE: past it, waitress stops accepting (EMFILE) and upstream connects fail; the
    I/O loops poll() rather than select(), so descriptors past 1,024 are fine.
    """
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    limit = max(soft, needed) if hard == resource.RLIM_INFINITY else hard
    if limit > soft:
        resource.setrlimit(resource.RLIMIT_NOFILE, (limit, hard))
    if limit < needed:
        logger.warning("this process may open %d files (ulimit -n), fewer than the %d its "
                       "connection_limit, gateway_connection_limit and threads may need; "
                       "raise the hard limit (supervisord.conf: minfds)", limit, needed)
    return limit


def serve(settings: Config) -> int:
    """Serve until interrupted; return the exit status.

    Raises:
        InvalidConfig: ``api_threads`` leaves no thread for the proxy, or ``follow_limit``
            none for the rest of the API; a secret's file is missing or unusable.
    """
    if settings.api_threads >= settings.threads:
        raise InvalidConfig(f"api_threads = {settings.api_threads} must be less than "
                            f"threads = {settings.threads}")
    if settings.follow_limit >= settings.api_threads:
        raise InvalidConfig(f"follow_limit = {settings.follow_limit} must be less than "
                            f"api_threads = {settings.api_threads}")
    raise_open_files(open_files_needed(settings))
    components = build(settings, kind="server")
    named = settings.token_file is not None and not redis_password.is_embedded(settings)
    admin_token = tokens.load_or_create(settings.token, settings.token_path, generate=not named)
    app = create_app(settings, components, admin_token=admin_token)
    try:
        address = (components.runtime.network_gateway(settings.listen_network)
                   if settings.listen_network else settings.host)
        sock = listen(address, settings.port)
    except AgentainerError as ex:
        logger.error("cannot listen on network %s: %s", settings.listen_network, ex.message)
        return ExitStatus.UNAVAILABLE
    except OSError as ex:
        logger.error("cannot listen on %s:%s: %s", address, settings.port, ex)
        return ExitStatus.UNAVAILABLE
    deadlines = Deadlines(settings.header_timeout, settings.body_min_rate)
    options = {"ident": "agentainer", "clear_untrusted_proxy_headers": True}
    hosts = HostPolicy.from_settings(settings.host, settings.allowed_hosts)
    # APPSEC: an oversized body is refused as it arrives, not buffered whole (1 GiB default)
    main = Listener(
        HostRouting(ProxyCap(app, settings.threads - settings.api_threads), hosts),
        [sock], name="api", deadlines=deadlines, idle_timeout=settings.idle_timeout,
        threads=settings.threads, connection_limit=settings.connection_limit,
        max_request_body_size=max(settings.max_body, agents_api.MAX_BODY) + BODY_SLACK,
        **options)
    gateways = gateway_sockets(settings, components.agents)
    # APPSEC: agents' connections get their own loop, threads and connection limit
    gateway = Listener(Gateway(app, components.callers), gateways, name="gateway",
                       deadlines=deadlines, idle_timeout=settings.idle_timeout,
                       threads=settings.proxy_threads,
                       connection_limit=settings.gateway_connection_limit,
                       max_request_body_size=settings.max_body + BODY_SLACK,
                       **options) if gateways else None
    components.heartbeat.start(now=True)
    components.janitor_loop.start()
    if gateway is not None:
        gateway.start()
    logger.info("listening on http://%s:%s%s (config: %s)", address, settings.port,
                "".join(f", proxy only on {s.getsockname()[0]}" for s in gateways),
                settings.source)
    try:
        main.run()
    finally:
        components.janitor_loop.stop()
        # NOTE: the answers still on their way land while this process's heartbeat holds
        # their leases
        components.completions.stop()
        components.heartbeat.stop()
    return ExitStatus.SUCCESS


def main(argv: list[str] | None = None) -> int:
    args = make_parser().parse_args(argv)
    return daemon.run("agentainer-server", args, serve, host=args.host, port=args.port,
                      threads=args.threads)
