"""Agentainer chaos run: ``make chaos`` (or ``.venv/bin/python -m bench.chaos``).

Starts an isolated supervisord stack of its own (``tests/integration/supervised.py``: a
temporary HOME holding its data dir, socket and logs, free API and Redis ports, networks
named with a random prefix), deploys the stream agent with its delivery log on a volume,
and sends numbered requests through the proxy while the agent, each server, each worker
and the monitor are killed with SIGKILL and Redis is restarted, at random moments from the
seed. Then it waits (bounded) until the journal holds nothing unfinished, joins what the
client was told, what the agent received and what the journal says, prints the figures and
whether each target is met, and exits 1 when one is missed (0 with ``--report-only``).
Without ``--no-readme`` the table goes into README.md between ``<!-- chaos:start -->`` and
``<!-- chaos:end -->``. Everything it created is removed at the end, whatever happens.
"""

import argparse
import datetime
import enum
import json
import random
import shutil
import signal
import sys
import tempfile
import threading
import time
from dataclasses import asdict
from pathlib import Path

import docker
import requests

from bench.chaos.client import Client, Plan
from bench.chaos.killer import TARGETS, Killer, schedule
from bench.chaos.report import render, render_details, render_kills, render_verdicts, verdicts
from bench.chaos.tally import TERMINAL, Figures, read_deliveries, tally
from bench.readme import README, git_commit, machine, write_block
from tests.helpers import wait_for
from tests.stack import _clean_docker
from tests.integration.supervised import Supervised

AGENT_IMAGE = "agentainer/stream-agent:latest"
CHAT_PATH = "/v1/chat/completions"  # every request the client sends goes here
DELIVERY_LOG = "/app/data/deliveries.jsonl"
# The defaults, except a short read timeout (a lease runs out connect + read + 5 s = 18 s
# after a crash) and a restart limit no number of agent kills reaches.
STACK_SETTINGS = {"AGENTAINER_READ_TIMEOUT": "10s", "AGENTAINER_RESTART_LIMIT": "1000"}
PAGE = 500


class Exit(enum.IntEnum):
    MET = 0
    MISSED = 1
    BROKEN = 2
    INTERRUPTED = 130


def log(message: str) -> None:
    print(f"[chaos {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def make_parser() -> argparse.ArgumentParser:
    """The command line of ``python -m bench.chaos`` (``make chaos CHAOS_ARGS=...``)."""
    parser = argparse.ArgumentParser(prog="python -m bench.chaos",
                                     description=__doc__.split("\n\n")[0])
    parser.add_argument("--requests", type=int, default=1000, help="requests to send (1000)")
    parser.add_argument("--kills", type=int, default=3,
                        help=f"kills of each of the {len(TARGETS)} targets (3)")
    parser.add_argument("--seed", type=int, default=1, help="seed of the plan and kills (1)")
    parser.add_argument("--rate", type=float, default=10.0, help="requests per second (10)")
    parser.add_argument("--threads", type=int, default=8, help="client threads (8)")
    parser.add_argument("--stream-share", type=float, default=0.2,
                        help="share of streamed requests (0.2)")
    parser.add_argument("--retry-for", type=float, default=30.0,
                        help="seconds a client keeps retrying one request (30)")
    parser.add_argument("--settle", type=float, default=120.0,
                        help="seconds to wait for every request to finish (120)")
    parser.add_argument("--report-only", action="store_true",
                        help="exit 0 even when a target is missed")
    parser.add_argument("--no-readme", action="store_true", help="do not write README.md")
    parser.add_argument("--json", metavar="FILE", help="also write the raw figures here")
    parser.add_argument("--keep-logs", action="store_true", help="keep the stack's home")
    return parser


def journal(stack: Supervised, agent_id: str) -> dict[str, dict]:
    """The agent's journal records of the client's requests, by ID (summary fields).

    NOTE: the readiness probe's ``GET /health`` through the proxy is journaled too; it is
    no request of the client's and the agent does not log it, so it is left out.
    """
    session = stack.api().session
    records: dict[str, dict] = {}
    offset, total = 0, 1
    while offset < total:
        reply = session.get(f"{stack.url}/agents/{agent_id}/requests",
                            params={"limit": PAGE, "offset": offset}, timeout=30)
        reply.raise_for_status()
        data = reply.json()["data"]
        total = data["total"]
        records.update((r["id"], r) for r in data["requests"] if r["path"] == CHAT_PATH)
        offset += PAGE
    return records


def settle(stack: Supervised, agent_id: str, timeout: float) -> dict[str, dict]:
    """Wait until no record of the agent is queued or in flight; return the records."""
    deadline = time.monotonic() + timeout
    records: dict[str, dict] = {}
    while time.monotonic() < deadline:
        try:
            records = journal(stack, agent_id)
        except (requests.RequestException, KeyError, ValueError) as ex:
            log(f"journal not readable yet ({ex})")
        else:
            unfinished = sum(r["status"] not in TERMINAL for r in records.values())
            if not unfinished:
                return records
            log(f"{unfinished} request(s) not finished yet")
        time.sleep(2)
    log(f"gave up waiting after {timeout:.0f} s")
    return journal(stack, agent_id)


def deploy(stack: Supervised, client: docker.DockerClient) -> dict:
    """Deploy and start the agent, its delivery log on a bind mount in the stack's home."""
    api = stack.api()
    name = f"{stack.prefix}-agent"
    reply = api.post("/agents", json={
        "name": name, "image": AGENT_IMAGE, "auto_restart": True, "start": True,
        "env_vars": {"DELIVERY_LOG": DELIVERY_LOG},
        "volumes": [{"host_path": str(stack.home / "deliveries"),
                     "container_path": str(Path(DELIVERY_LOG).parent)}]})
    if reply.status_code != 201:
        raise RuntimeError(f"deploy: {reply.status_code} {reply.text[:300]}")
    agent = reply.json()["data"]
    container = client.containers.get(f"agentainer-{agent['id']}")
    if container.exec_run(["grep", "-q", "DELIVERY_LOG", "/app/app.py"]).exit_code != 0:
        raise RuntimeError(f"{AGENT_IMAGE} has no DELIVERY_LOG: rebuild it (make images)")
    wait_for(lambda: requests.get(f"{stack.url}/agent/{name}/health", timeout=5).ok,
             timeout=30, message=f"{name} to answer through the proxy")
    return agent


def run(args: argparse.Namespace) -> tuple[Figures, dict[str, str], float]:
    """Run the chaos against a fresh stack.

    Returns:
        The figures, the run's context for the report and when sending began (Unix time).
    """
    docker_client = docker.from_env()
    try:
        docker_client.images.get(AGENT_IMAGE)
    except docker.errors.ImageNotFound:
        raise SystemExit(f"{AGENT_IMAGE} is missing; run `make images` first") from None
    home = Path(tempfile.mkdtemp(prefix="agentainer-chaos-"))
    stack = Supervised.create(home, STACK_SETTINGS, prefix_stem="agchaos")
    rng = random.Random(args.seed)
    plan = Plan.make(args.requests, rng=rng, stream_share=args.stream_share, rate=args.rate)
    kills = schedule(args.kills, plan.seconds, rng)
    ok = False
    try:
        log(f"starting the stack (home {home}, prefix {stack.prefix})")
        stack.start()
        agent = deploy(stack, docker_client)
        client = Client(f"{stack.url}/agent/{agent['name']}{CHAT_PATH}", plan,
                        run_id=f"{args.seed}-{stack.prefix}", threads=args.threads,
                        retry_for=args.retry_for)
        killer = Killer(stack, docker_client, agent["id"], kills,
                        outstanding=lambda: client.outstanding)
        stop = threading.Event()
        started, started_at = time.monotonic(), time.time()
        chaos = threading.Thread(target=killer.run, args=(started, stop), daemon=True)
        log(f"sending {plan.requests} requests over ~{plan.seconds:.0f} s, "
            f"{len(kills)} kills")
        chaos.start()
        client.run()
        stop.set()
        chaos.join(timeout=120)
        log(f"sent in {time.monotonic() - started:.0f} s; waiting for the journal to settle")
        records = settle(stack, agent["id"], args.settle)
        deliveries, unreadable = read_deliveries(home / "deliveries" / Path(DELIVERY_LOG).name)
        figures = tally(client.outcomes, deliveries, records, kills, unreadable=unreadable)
        context = {
            "command": "make chaos" + (f" CHAOS_ARGS=\"{' '.join(args.argv)}\""
                                       if args.argv else ""),
            "when": f"{machine()}, {datetime.date.today().isoformat()} (commit {git_commit()})",
            "plan": f"seed {args.seed}, {len(plan.keyed):,} with an Idempotency-Key, "
                    f"{len(plan.streamed):,} streamed, {args.rate:g} req/s from "
                    f"{args.threads} threads, {len(kills)} kills",
            "settings": ", ".join(f"`{k.removeprefix('AGENTAINER_').lower()}` {v}"
                                  for k, v in STACK_SETTINGS.items()) + ", the rest default",
            "retry_for": f"{args.retry_for:g}",
        }
        ok = True
        return figures, context, started_at
    finally:
        cleanup(stack, docker_client, home, keep=args.keep_logs or not ok)


def cleanup(stack: Supervised, docker_client: docker.DockerClient, home: Path, *,
            keep: bool) -> None:
    """Stop the stack and remove its agent, containers, networks and (unless kept) home."""
    log("cleaning up")
    try:
        if stack.ctl("status").returncode != 4:
            stack.shutdown()
    except Exception as ex:  # noqa: BLE001 - the Docker cleanup goes on regardless
        log(f"cleanup: supervisord did not shut down cleanly ({ex})")
    try:
        _clean_docker(docker_client, stack.prefix, stack.redis_url, only_prefix=True)
    finally:
        docker_client.close()
        if keep:
            log(f"logs kept in {home}/.agentainer/logs")
        else:
            shutil.rmtree(home, ignore_errors=True)


def main(argv: list[str] | None = None) -> int:
    """Run, print the figures and the verdicts; return an :class:`Exit` status."""
    argv = sys.argv[1:] if argv is None else argv
    args = make_parser().parse_args(argv)
    args.argv = argv
    # NOTE: SIGTERM (make interrupted, a test's timeout) still runs the cleanup in run()
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    try:
        figures, context, started = run(args)
    except KeyboardInterrupt:
        return Exit.INTERRUPTED
    except (RuntimeError, AssertionError, requests.RequestException,
            docker.errors.DockerException) as ex:
        log(f"the chaos run could not finish: {ex}")
        return Exit.BROKEN
    table = render(figures, context)
    print(table)
    print("\nkills:\n" + render_kills(figures, started))
    print("\nrequests behind the counts:\n" + render_details(figures))
    print("\ntargets:\n" + render_verdicts(figures))
    met = all(v.met for v in verdicts(figures))
    if args.json:
        Path(args.json).write_text(json.dumps(
            {"figures": asdict(figures), "context": context, "started": started,
             "verdicts": [asdict(v) for v in verdicts(figures)]}, indent=2))
    if not args.no_readme:
        write_block("chaos", table, heading="## Chaos")
        log(f"wrote the table into {README}")
    return Exit.MET if met or args.report_only else Exit.MISSED
