"""The ``agentainer`` command line's arguments: one parser, built a subcommand group at a time.

:func:`make_parser` is also what the man page is generated from (argparse-manpage, see the
Makefile's ``MAN_PROGRAMS``). The parsed ``command`` names the subcommand;
:data:`agentainer.cli.commands.HANDLERS` runs it.
"""

import argparse

from agentainer.cli.output import PROG
from agentainer.statuses import OPERATIONS, AgentStatus, IdleAction, OnBusy, RequestStatus

AGENT_HELP = "agent ID or name"


class _Subcommands:
    """Adds subcommands, each with ``--json`` unless its output is raw."""

    def __init__(self, parser: argparse.ArgumentParser) -> None:
        self._commands = parser.add_subparsers(dest="command", metavar="COMMAND",
                                               required=True)
        self._common = argparse.ArgumentParser(add_help=False, allow_abbrev=False)
        self._common.add_argument("--json", action="store_true", help="print JSON for scripts")

    def add(self, name: str, help_text: str, *, json_output: bool = True
            ) -> argparse.ArgumentParser:
        """Add the subcommand ``name`` and return its parser."""
        return self._commands.add_parser(name, help=help_text, description=help_text,
                                         parents=[self._common] if json_output else [],
                                         allow_abbrev=False)


def make_parser() -> argparse.ArgumentParser:
    """Return the parser for every command (also used to generate the man page)."""
    parser = argparse.ArgumentParser(
        prog=PROG, allow_abbrev=False,
        description="Deploy and manage LLM agents running as Docker containers.",
        epilog="Environment: AGENTAINER_URL (server URL), AGENTAINER_TOKEN (token), "
               "AGENTAINER_CONFIG (conf file). Without them the local server and its "
               "admin token file are found from the conf file. The local admin token is "
               "only ever sent to the local server (a loopback address or the conf file's "
               "host, at the conf file's port); any other server needs --token or "
               "AGENTAINER_TOKEN.")
    parser.add_argument("--url", help="server URL (default: $AGENTAINER_URL, else "
                                      "http://HOST:PORT from the conf file)")
    parser.add_argument("--token", help="API token (default: $AGENTAINER_TOKEN, else, for "
                                        "the local server only, the admin token file in the "
                                        "data dir)")
    commands = _Subcommands(parser)
    _add_deploy(commands)
    _add_lifecycle(commands)
    _add_inventory(commands)
    _add_logs(commands)
    _add_requests(commands)
    _add_webhooks(commands)
    _add_observation(commands)
    _add_local(commands)
    return parser


def _add_deploy(commands: _Subcommands) -> None:
    """``deploy``: the agent's image, environment, mounts, limits, tokens, network, probe."""
    deploy = commands.add("deploy", "deploy an agent from a local image (created, not started)")
    deploy.add_argument("--name", "-n", required=True, help="unique name: a-z 0-9 _ . -")
    deploy.add_argument("--image", "-i", required=True, help="a local Docker image")
    deploy.add_argument("--pull", action="store_true",
                        help="pull the image from its registry first (even when present "
                             "locally); a failed pull deploys nothing")
    deploy.add_argument("--env", "-e", action="append", default=[], metavar="KEY=VALUE",
                        help="environment variable (repeatable; values may hold , and =)")
    deploy.add_argument("--volume", "-v", action="append", default=[],
                        metavar="SRC:DEST[:ro]",
                        help="bind mount (SRC a path: /abs, ./rel, ~/x) or named volume "
                             "(SRC a name); repeatable")
    deploy.add_argument("--cpu", "-c", help="CPU limit: 1, 0.5, 500m or nanoCPUs")
    deploy.add_argument("--memory", "-m", help="memory limit: 512m, 1g, 512Mi or bytes")
    deploy.add_argument("--pids-limit", type=int, help="maximum number of processes")
    deploy.add_argument("--replicas", type=int, metavar="N",
                        help="runtime = swarm: run N tasks of a stateless agent, the proxy "
                             "spreading requests over them (default 1)")
    deploy.add_argument("--constraint", action="append", default=[], metavar="EXPR",
                        help="runtime = swarm: place the agent's tasks by this Swarm "
                             "constraint (node.labels.gpu==true, node.role!=manager); "
                             "repeatable")
    deploy.add_argument("--auto-restart", "-r", action="store_true",
                        help="restart the agent when it crashes")
    _add_deploy_access(deploy)
    deploy.add_argument("--start", action="store_true", help="start the agent at once")
    deploy.add_argument("--health-endpoint", help="HTTP path probed for health (e.g. /health)")
    deploy.add_argument("--health-interval", help="time between probes (default 30s)")
    deploy.add_argument("--health-timeout", help="probe timeout (default 5s)")
    deploy.add_argument("--health-retries", type=int,
                        help="failed probes before unhealthy (default 3)")


def _add_deploy_access(deploy: argparse.ArgumentParser) -> None:
    """``deploy``'s tokens, app port, network access and journaling."""
    deploy.add_argument("--token", "-t", dest="agent_token", metavar="TOKEN",
                        help="invoke token (16+ characters) of a --private agent: callers "
                             "send it on its proxy path; it manages nothing")
    deploy.add_argument("--manage-token", metavar="TOKEN",
                        help="manage token (16+ characters): this agent's management "
                             "routes (inspect, lifecycle, logs, requests, replay, remove), "
                             "not its proxy path")
    deploy.add_argument("--app-port", type=int,
                        help="port the app listens on (default: the image's single EXPOSE, "
                             "else 8000)")
    deploy.add_argument("--no-egress", action="store_true",
                        help="no network access outside Agentainer (internal network)")
    deploy.add_argument("--may-call", metavar="AGENTS",
                        help="agents (names or IDs, comma separated; '*': any; '': none) "
                             "this one may call through $AGENTAINER_PROXY_URL (default: any; "
                             "none with --no-egress)")
    deploy.add_argument("--private", action="store_true",
                        help="require the agent's invoke token (--token) on its proxy path")
    deploy.add_argument("--no-persist", action="store_true",
                        help="do not journal requests to this agent")
    traffic = deploy.add_argument_group("traffic")
    traffic.add_argument("--unordered", action="store_true",
                         help="let live requests overtake the agent's queued backlog "
                              "(default: a new request waits behind it)")
    traffic.add_argument("--max-concurrency", metavar="N",
                         help="at most N requests in flight to the agent (default: 0, no "
                              "limit); the rest wait in its queue, in order")
    traffic.add_argument("--on-busy", choices=list(OnBusy),
                         help="at --max-concurrency: queue (default) or reject with 429 "
                              "and Retry-After")
    traffic.add_argument("--hold", metavar="D",
                         help="how long a request that must queue holds its connection for "
                              "the answer before it gets 202 (e.g. 30s, 0: at once; "
                              "default: the server's hold setting)")
    traffic.add_argument("--idle-timeout", metavar="D",
                         help="stop or pause (--idle-action) the agent after D (30s, 5m, 1h) "
                              "with no request; a request wakes it (default 0: never; needs "
                              "journaling)")
    traffic.add_argument("--idle-action", choices=list(IdleAction),
                         help="what --idle-timeout does: stop (default; a request starts it) "
                              "or pause (a request unpauses it, quicker)")
    deploy.add_argument("--webhook", metavar="URL",
                        help="POST the agent's events to this http(s) URL, signed as "
                             "Standard Webhooks says: request.completed, request.failed, "
                             "agent.crashed, agent.restarted, agent.failed, agent.idle, "
                             "agent.woken")
    deploy.add_argument("--webhook-secret", metavar="SECRET",
                        help="the webhook's signing secret (whsec_ and base64 of 24+ bytes); "
                             "default: generated, and printed once by deploy")


def _add_lifecycle(commands: _Subcommands) -> None:
    """One subcommand per lifecycle operation, then ``remove``."""
    for operation in OPERATIONS.values():
        commands.add(operation.name, operation.summary).add_argument("agent", help=AGENT_HELP)
    remove = commands.add("remove", "remove an agent, its container and its records")
    remove.add_argument("agent", help=AGENT_HELP)
    remove.add_argument("--volumes", action="store_true",
                        help="also remove the named volumes Agentainer created for this agent "
                             "(volumes that existed before, or are still in use, are kept)")


def _add_inventory(commands: _Subcommands) -> None:
    """``list`` and ``inspect``."""
    listing = commands.add("list", "list agents")
    listing.add_argument("--status", choices=[status.value for status in AgentStatus],
                         help="only agents in this status")
    listing.add_argument("--name", help="only agents whose name contains this")
    listing.add_argument("-q", "--quiet", action="store_true", help="print IDs only")
    commands.add("inspect", "show everything about one agent").add_argument(
        "agent", help=AGENT_HELP)


def _add_logs(commands: _Subcommands) -> None:
    """``logs`` (raw output: no ``--json``)."""
    logs = commands.add("logs", "print an agent's output (stdout and stderr), as it wrote it",
                        json_output=False)
    logs.add_argument("agent", help=AGENT_HELP)
    logs.add_argument("--follow", "-f", action="store_true", help="keep printing new output")
    logs.add_argument("--tail", type=int, metavar="N", help="only the last N lines")
    logs.add_argument("--since", metavar="WHEN",
                      help="only output since WHEN: 10m, 2h, a Unix time or ISO-8601")
    logs.add_argument("--timestamps", action="store_true", help="prefix lines with their time")


def _add_requests(commands: _Subcommands) -> None:
    """``requests``: list, show, replay or cancel journaled requests."""
    requests = commands.add("requests", "list an agent's journaled requests, or show, replay "
                                        "or cancel one")
    requests.add_argument("target", nargs="+", metavar="ARG",
                          help="AGENT (list), or show|replay|cancel AGENT REQUEST_ID")
    requests.add_argument("--status", choices=[status.value for status in RequestStatus],
                          help="only requests in this status")
    requests.add_argument("--limit", type=int, default=50, help="how many (newest first)")
    requests.add_argument("--offset", type=int, default=0, help="skip this many")
    requests.add_argument("--follow", "-f", action="store_true",
                          help="with show: print the response's body instead, as the agent "
                               "writes it, until the request ends")


def _add_webhooks(commands: _Subcommands) -> None:
    """``webhooks``: an agent's webhook deliveries and their outcomes."""
    webhooks = commands.add("webhooks", "list an agent's webhook deliveries, newest event "
                                        "first: status, attempts, last answer")
    webhooks.add_argument("agent", help=AGENT_HELP)
    webhooks.add_argument("--limit", type=int, default=20,
                          help="how many (newest first; at most 100 are kept)")


def _add_observation(commands: _Subcommands) -> None:
    """``health`` and ``metrics``."""
    health = commands.add("health", "show health probe results: one agent, or a table of all")
    health.add_argument("agent", nargs="?", help="agent ID or name (default: all agents)")
    metrics = commands.add("metrics", "show an agent's resource use: now, or its sampled history")
    metrics.add_argument("agent", help=AGENT_HELP)
    metrics.add_argument("--history", action="store_true", help="the sampled history")
    metrics.add_argument("--duration", default="1h",
                         help="how far back --history goes (e.g. 10m, 1h; at most 24h)")
    metrics.add_argument("--watch", action="store_true",
                         help="refresh every --interval until Ctrl-C")
    metrics.add_argument("--interval", type=float, default=2.0, help="seconds between refreshes")


def _add_local(commands: _Subcommands) -> None:
    """``token`` and ``version``."""
    token = commands.add("token", "print the admin token (for curl and scripts)")
    token.add_argument("--path", action="store_true", help="print the token file's path")
    commands.add("version", "print the client's and the server's versions")
