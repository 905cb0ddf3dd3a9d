"""``agentainer``: the command-line client of the Agentainer API, one handler per command.

Its arguments are parsed by :func:`agentainer.cli.parser.make_parser`.
"""

import argparse
import json
import os
import time
from collections.abc import Callable, Mapping
from typing import Any

from agentainer import __version__, config as configuration, tokens, units
from agentainer.cli.client import ApiError, Client, find_server
from agentainer.cli.output import Output, cut, human_bytes, show_record, utc_time, yes_no
from agentainer.cli.parser import make_parser
from agentainer.errors import AgentainerError, Unauthorized
from agentainer.exit_codes import ExitStatus
from agentainer.statuses import OPERATIONS


# -- commands -------------------------------------------------------------------------

def cmd_deploy(client: Client, args: argparse.Namespace, out: Output) -> int:
    body: dict[str, Any] = {"name": args.name, "image": args.image,
                            "env_vars": parse_env(args.env),
                            "volumes": [parse_volume(v) for v in args.volume]}
    optional = {"cpu_limit": args.cpu, "memory_limit": args.memory,
                "pids_limit": args.pids_limit, "token": args.agent_token,
                "manage_token": args.manage_token,
                "app_port": args.app_port, "max_concurrency": args.max_concurrency,
                "on_busy": args.on_busy, "hold": args.hold, "idle_timeout": args.idle_timeout,
                "idle_action": args.idle_action, "webhook": args.webhook,
                "webhook_secret": args.webhook_secret, "replicas": args.replicas}
    body.update({key: value for key, value in optional.items() if value is not None})
    flags = {"auto_restart": args.auto_restart, "private": args.private, "start": args.start,
             "pull": args.pull}
    body.update({key: True for key, value in flags.items() if value})
    if args.constraint:
        body["constraints"] = args.constraint
    if args.no_egress:
        body["egress"] = False
    if args.no_persist:
        body["persist"] = False
    if args.unordered:
        body["ordered"] = False
    if args.may_call is not None:
        body["may_call"] = [ref.strip() for ref in args.may_call.split(",") if ref.strip()]
    health = {"endpoint": args.health_endpoint, "interval": args.health_interval,
              "timeout": args.health_timeout, "retries": args.health_retries}
    if any(value is not None for value in health.values()):
        body["health_check"] = {k: v for k, v in health.items() if v is not None}
    _, agent = client.call("POST", "/agents", body=body)
    out.agent_line(agent, f"deployed {agent['name']} ({agent['id']}), {agent['status']}")
    if agent.get("webhook_secret") and not args.json:
        out.line(f"webhook secret (shown this once: give it to the receiver): "
                 f"{agent['webhook_secret']}")
    return ExitStatus.SUCCESS


def cmd_lifecycle(client: Client, args: argparse.Namespace, out: Output) -> int:
    _, agent = client.call("POST", f"/agents/{args.agent}/{args.command}")
    out.agent_line(agent, f"{agent['name']}: {agent['status']}")
    return ExitStatus.SUCCESS


def cmd_remove(client: Client, args: argparse.Namespace, out: Output) -> int:
    params = {"volumes": "true"} if args.volumes else None
    message, data = client.call("DELETE", f"/agents/{args.agent}", params=params)
    out.agent_line(data, message)
    return ExitStatus.SUCCESS


def cmd_list(client: Client, args: argparse.Namespace, out: Output) -> int:
    params = {key: value for key, value in (("status", args.status), ("name", args.name))
              if value}
    _, agents = client.call("GET", "/agents", params=params or None)
    if args.json:
        out.json(agents)
    elif args.quiet:
        for agent in agents:
            out.line(agent["id"])
    elif not agents:
        out.line("no agents")
    else:
        out.table(("ID", "NAME", "IMAGE", "STATUS", "RESTARTS", "CREATED", "LAST FAILURE"),
                  [(a["id"], a["name"], a["image"], _status(a), str(a["restarts"]),
                    a["created_at"][:19], cut(a["last_error"] or "-", 40)) for a in agents])
    return ExitStatus.SUCCESS


def _status(agent: dict[str, Any]) -> str:
    """The agent's status, and ``(idle)`` when the idle rule (not its user) put it there."""
    return agent["status"] + (" (idle)" if agent.get("idle") else "")


def cmd_inspect(client: Client, args: argparse.Namespace, out: Output) -> int:
    _, agent = client.call("GET", f"/agents/{args.agent}")
    if args.json:
        out.json(agent)
        return ExitStatus.SUCCESS
    for key, value in agent.items():
        if isinstance(value, (dict, list)):
            value = json.dumps(value) if value else "-"
        out.line(f"{key + ':':<15} {'-' if value is None else value}")
    return ExitStatus.SUCCESS


def cmd_logs(client: Client, args: argparse.Namespace, out: Output) -> int:
    since = args.since and units.since_param(args.since, time.time())
    params = {"follow": args.follow, "tail": args.tail, "since": since,
              "timestamps": args.timestamps}
    params = {k: (str(v).lower() if isinstance(v, bool) else v) for k, v in params.items()
              if v not in (None, False)}
    for chunk in client.stream(f"/agents/{args.agent}/logs", params=params):
        out.raw(chunk)
    return ExitStatus.SUCCESS


def cmd_health(client: Client, args: argparse.Namespace, out: Output) -> int:
    if args.agent:
        _, report = client.call("GET", f"/agents/{args.agent}/health")
        if args.json:
            out.json(report)
        else:
            for key in ("name", "status", "monitored", "healthy", "failures", "status_code",
                        "message", "restarts", "last_error"):
                value = report.get(key)
                out.line(f"{key + ':':<13} {'-' if value is None else value}")
            if report.get("last_check"):
                out.line(f"{'last check:':<13} {utc_time(report['last_check'])}")
        return ExitStatus.SUCCESS
    _, agents = client.call("GET", "/agents")
    reports = [client.call("GET", f"/agents/{a['id']}/health")[1] for a in agents]
    out.listing(reports, ("NAME", "STATUS", "HEALTHY", "FAILURES", "RESTARTS", "LAST CHECK",
                          "MESSAGE"),
                [(r["name"], r["status"], yes_no(r["healthy"]), str(r["failures"]),
                  str(r["restarts"]), utc_time(r["last_check"]) if r["last_check"] else "-",
                  cut(r["message"], 40)) for r in reports], empty="no agents")
    return ExitStatus.SUCCESS


def cmd_metrics(client: Client, args: argparse.Namespace, out: Output) -> int:
    while True:
        if args.history:
            _, data = client.call("GET", f"/agents/{args.agent}/metrics/history",
                                  params={"duration": args.duration})
            if args.json:
                out.json(data)
            else:
                out.table(("TIME", "CPU %", "MEMORY", "NET RX", "NET TX", "PIDS"),
                          [(utc_time(m["timestamp"]), f"{m['cpu_percent']:.1f}",
                            human_bytes(m["memory_bytes"]), human_bytes(m["network_rx_bytes"]),
                            human_bytes(m["network_tx_bytes"]), str(m["pids"]))
                           for m in data["samples"]])
        else:
            _, m = client.call("GET", f"/agents/{args.agent}/metrics")
            if args.json:
                out.json(m)
            else:
                limit = m["memory_limit_bytes"]
                share = f" ({m['memory_bytes'] / limit * 100:.1f}%)" if limit else ""
                out.line(f"cpu:       {m['cpu_percent']:.1f}%\n"
                         f"memory:    {human_bytes(m['memory_bytes'])} of "
                         f"{human_bytes(limit)}{share}\n"
                         f"network:   rx {human_bytes(m['network_rx_bytes'])}, "
                         f"tx {human_bytes(m['network_tx_bytes'])}\n"
                         f"block i/o: read {human_bytes(m['block_read_bytes'])}, "
                         f"write {human_bytes(m['block_write_bytes'])}\n"
                         f"pids:      {m['pids']}")
        if not args.watch:
            return ExitStatus.SUCCESS
        time.sleep(args.interval)
        out.line("")


REQUEST_ACTIONS = ("show", "replay", "cancel")
FOLLOW_TRIES = 120  # NOTE: of a response that has not started: about an hour of waiting


def cmd_requests(client: Client, args: argparse.Namespace, out: Output) -> int:
    target = args.target
    if len(target) == 3 and target[0] in REQUEST_ACTIONS:
        action, agent, request_id = target
        path = f"/agents/{agent}/requests/{request_id}"
        if action == "show" and args.follow:
            return follow_response(client, path + "/response", out)
        if args.follow:
            raise ValueError("requests: --follow goes with 'requests show AGENT REQUEST_ID'")
        if action == "show":
            _, record = client.call("GET", path)
            show_record(record, out, as_json=args.json)
            return ExitStatus.SUCCESS
        method, path = ("DELETE", path) if action == "cancel" else ("POST", path + "/replay")
        message, data = client.call(method, path)
        out.agent_line(data, message)
        return ExitStatus.SUCCESS
    if len(target) != 1:
        raise ValueError("requests: use 'requests AGENT' or 'requests show|replay|cancel "
                         "AGENT REQUEST_ID'")
    params = {"status": args.status, "limit": args.limit, "offset": args.offset}
    _, page = client.call("GET", f"/agents/{target[0]}/requests",
                          params={k: v for k, v in params.items() if v is not None})
    out.listing(page, ("REQUEST", "METHOD", "PATH", "STATUS", "ATTEMPTS", "RESPONSE", "ARRIVED"),
                [(r["id"], r["method"], cut(r["path"] + (f"?{r['query']}" if r["query"]
                                                         else ""), 40),
                  r["status"], str(r["attempts"]), str(r["resp_status"] or "-"),
                  utc_time(r["created_at"])) for r in page["requests"]], empty="no requests")
    if not args.json and page["requests"] and page["total"] > len(page["requests"]):
        out.line(f"({len(page['requests'])} of {page['total']}; --offset/--limit for more)")
    return ExitStatus.SUCCESS


def follow_response(client: Client, path: str, out: Output) -> int:
    """Print a request's response body as it comes (GET .../response), waiting while the
    request is queued; resume where a broken stream stopped."""
    received = 0
    for _ in range(FOLLOW_TRIES):
        headers = {"Range": f"bytes={received}-"} if received else None
        try:
            for chunk in client.stream(path, headers=headers):
                received += len(chunk)
                out.raw(chunk)
            return ExitStatus.SUCCESS
        except ApiError as ex:
            # NOTE: the server waits 30 s for a queued request's response to start
            if ex.code != "response_pending" and (ex.code != "stream_interrupted"
                                                  or not received):
                raise
    raise ApiError(f"the response at {path} did not start after {FOLLOW_TRIES} tries",
                   status=None, code="response_pending")


def cmd_webhooks(client: Client, args: argparse.Namespace, out: Output) -> int:
    _, page = client.call("GET", f"/agents/{args.agent}/webhooks",
                          params={"limit": args.limit})
    out.listing(page, ("EVENT", "TYPE", "STATUS", "ATTEMPTS", "LAST ANSWER", "OCCURRED",
                       "NEXT TRY"),
                [(d["id"], d["type"], d["status"], str(d["attempts"]),
                  cut(str(d["last_status"] or d["last_error"] or "-"), 40),
                  utc_time(d["occurred_at"]), utc_time(d["next_at"]) if d["next_at"] else "-")
                 for d in page["deliveries"]], empty="no webhook deliveries")
    return ExitStatus.SUCCESS


def cmd_token(client: Client, args: argparse.Namespace, out: Output) -> int:
    settings = configuration.load()
    if args.path:
        out.agent_line({"path": str(settings.token_path)}, str(settings.token_path))
        return ExitStatus.SUCCESS
    token = settings.token or tokens.read(settings.token_path)
    if not token:
        out.error(f"no admin token at {settings.token_path}; start the server once "
                  "(make run) or set token in the conf file")
        return ExitStatus.AUTH
    out.agent_line({"token": token}, token)
    return ExitStatus.SUCCESS


def cmd_version(client: Client, args: argparse.Namespace, out: Output) -> int:
    try:
        _, health = client.call("GET", "/health")
        server = health.get("version", "unknown")
    except ApiError as ex:
        server = f"unreachable ({ex.message})" if ex.status is None else "unknown"
    if args.json:
        out.json({"client": __version__, "server": server})
    else:
        out.line(f"client: {__version__}\nserver: {server}")
    return ExitStatus.SUCCESS


HANDLERS: dict[str, Callable[[Client, argparse.Namespace, Output], int]] = {
    "deploy": cmd_deploy, **{name: cmd_lifecycle for name in OPERATIONS},
    "remove": cmd_remove, "list": cmd_list, "inspect": cmd_inspect, "logs": cmd_logs,
    "requests": cmd_requests, "webhooks": cmd_webhooks, "health": cmd_health,
    "metrics": cmd_metrics, "token": cmd_token, "version": cmd_version,
}


# -- argument parsing helpers ---------------------------------------------------------

def parse_env(items: list[str]) -> dict[str, str]:
    """Turn ``KEY=VALUE`` items into a dict; the value is everything after the first '='."""
    env = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise ValueError(f"--env {item!r}: use KEY=VALUE")
        env[key] = value
    return env


def parse_volume(item: str) -> dict[str, Any]:
    """Turn ``SRC:DEST[:ro|rw]`` into an API volume; relative paths resolve here."""
    parts = item.split(":")
    if len(parts) not in (2, 3) or not parts[0] or not parts[1]:
        raise ValueError(f"--volume {item!r}: use SRC:DEST or SRC:DEST:ro")
    mode = parts[2] if len(parts) == 3 else "rw"
    if mode not in ("ro", "rw"):
        raise ValueError(f"--volume {item!r}: the mode must be ro or rw, not {mode!r}")
    source, target = parts[0], parts[1]
    volume: dict[str, Any] = {"container_path": target, "read_only": mode == "ro"}
    if source.startswith(("/", ".", "~")):
        volume["host_path"] = os.path.abspath(os.path.expanduser(source))
    else:
        volume["volume"] = source
    return volume


def main(argv: list[str] | None = None, *, environ: Mapping[str, str] = os.environ) -> int:
    """Run one command from ``argv`` and return its exit status."""
    args = make_parser().parse_args(argv)
    out = Output(as_json=getattr(args, "json", False))
    try:
        url, token = find_server(args, environ)
        return HANDLERS[args.command](Client(url, token), args, out)
    except ApiError as ex:
        out.error(ex.message, ex.code)
        return ex.exit_status
    except ValueError as ex:
        out.error(str(ex))
        return ExitStatus.USAGE
    except Unauthorized as ex:
        out.error(ex.message, ex.code)
        return ExitStatus.AUTH
    except AgentainerError as ex:
        out.error(ex.message, ex.code)
        return ExitStatus.CONFIG
    except KeyboardInterrupt:
        return ExitStatus.INTERRUPTED
    except BrokenPipeError:
        return ExitStatus.SUCCESS
